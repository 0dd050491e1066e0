import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.nn import initializers

from minitorch import nn
from minitorch.nn import init


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


KEYS = {"typed": lambda: jax.random.key(5), "raw": lambda: jax.random.PRNGKey(5),
        "rbg": lambda: jax.random.key(5, impl="rbg")}


@settings(max_examples=10, deadline=None)  # each shape compiles jax.random's reference
@given(shape=st.lists(st.integers(1, 9), max_size=4).map(tuple),
       dtype=st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16]),
       key=st.sampled_from(list(KEYS)))
def test_draws_equal_jax_random_bit_for_bit(shape, dtype, key):
    """Eager draws are cut from a flat draw of a power-of-two length: the same bits as
    jax.random's for the shape, for every key kind and dtype."""
    k = KEYS[key]()
    np.testing.assert_array_equal(init.normal(k, shape, dtype), jax.random.normal(k, shape, dtype))
    np.testing.assert_array_equal(init.uniform(k, shape, dtype, -0.5, 0.25),
                                  jax.random.uniform(k, shape, dtype, -0.5, 0.25))
    assert init.normal(k, shape, dtype).dtype == dtype


@pytest.mark.parametrize("name, scale, mode", [("he", 2.0, "fan_in"),
                                               ("xavier", 1.0, "fan_avg"),
                                               ("lecun", 1.0, "fan_in")])
@pytest.mark.parametrize("shape, axes", [((30, 20), (-2, -1)), ((8, 3, 3, 3), (1, 0)),
                                         ((4, 6, 5), (0, 1))])
def test_named_initialisers_equal_jax_variance_scaling(name, scale, mode, shape, axes):
    k = jax.random.key(1)
    ours = init.resolve(name, in_axis=axes[0], out_axis=axes[1])(k, shape, jnp.float32)
    theirs = initializers.variance_scaling(scale, mode, "normal", in_axis=axes[0],
                                           out_axis=axes[1])(k, shape, jnp.float32)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(init.resolve("normal")(k, shape, jnp.float32),
                                  initializers.normal(1.0)(k, shape, jnp.float32))


def test_draws_under_jit_and_in_float64_are_jax_randoms():
    k = jax.random.key(2)
    np.testing.assert_array_equal(jax.jit(lambda k: init.normal(k, (3, 5)))(k),
                                  jax.random.normal(k, (3, 5)))
    with jax.enable_x64(True):
        np.testing.assert_array_equal(init.normal(k, (7, 3), jnp.float64),
                                      jax.random.normal(k, (7, 3), jnp.float64))


def test_a_new_eager_shape_compiles_no_new_draw():
    """Shapes of one power-of-two size class share one compiled flat draw."""
    k = jax.random.key(3)
    init.normal(k, (5, 7))                   # 35 values: the 64-long draw
    before = init._flat_draw.cache_info().currsize
    for shape in [(6, 7), (2, 3, 7), (40,), (64,)]:
        init.normal(k, shape)
    assert init._flat_draw.cache_info().currsize == before
