import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from minitorch import nn


class InitTest(parameterized.TestCase):

    @parameterized.parameters(("he", lambda i, o: 2 / i), ("xavier", lambda i, o: 2 / (i + o)),
                              ("lecun", lambda i, o: 1 / i), ("normal", lambda i, o: 1.0))
    def test_named_initialisers_have_their_variance(self, name, variance):
        w = nn.Linear(400, 300, init=name).init(jax.random.key(0))["W"]
        np.testing.assert_allclose(np.var(w), variance(400, 300), rtol=0.03)
        np.testing.assert_allclose(np.mean(w), 0, atol=0.01 * np.sqrt(variance(400, 300)))

    def test_zeros(self):
        np.testing.assert_array_equal(nn.Linear(3, 2, init="zeros").init(jax.random.key(0))["W"],
                                      np.zeros((3, 2)))

    def test_a_function_initialiser_gets_key_shape_dtype(self):
        seen = []

        def constant(key, shape, dtype):
            seen.append((shape, dtype))
            return jnp.full(shape, 0.5, dtype)

        params = nn.Conv2D(2, 3, 2, init=constant).init(jax.random.key(0))
        np.testing.assert_array_equal(params["W"], np.full((3, 2, 2, 2), 0.5))
        self.assertEqual(seen[-1], ((3, 2, 2, 2), jnp.float32))

    def test_an_initialiser_returning_the_wrong_shape_raises(self):
        with self.assertRaisesRegex(ValueError, r"Linear: initialiser .* returned shape \(2,\), "
                                    r"expected \(3, 2\)"):
            nn.Linear(3, 2, init=lambda k, s, d: jnp.zeros(2)).init(jax.random.key(0))

    def test_unknown_name_raises_at_construction(self):
        with self.assertRaisesRegex(ValueError, "Conv2D: unknown initialiser 'kaiming'"):
            nn.Conv2D(1, 1, 1, init="kaiming")
