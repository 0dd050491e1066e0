import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from minitorch import nn
from minitorch.errors import DTypeError


class EmbeddingTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((5,), (2, 3))
    def test_looks_up_rows(self, *shape):
        layer = nn.Embedding(10, 4)
        params = layer.init(jax.random.key(0))
        ids = np.random.default_rng(0).integers(0, 10, size=shape)
        y = self.variant(layer.apply)(params, ids)
        np.testing.assert_array_equal(y, np.asarray(params["W"])[ids])

    def test_init_is_standard_normal(self):
        w = nn.Embedding(1000, 64).init(jax.random.key(0))["W"]
        self.assertEqual(w.shape, (1000, 64))
        np.testing.assert_allclose([np.mean(w), np.std(w)], [0, 1], atol=0.02)

    def test_out_of_range_ids_give_nan_rows(self):
        layer = nn.Embedding(3, 2)
        y = jax.jit(layer.apply)(layer.init(jax.random.key(0)), jnp.array([0, 3, -1, 2]))
        self.assertTrue(np.isfinite(y[0]).all() and np.isfinite(y[3]).all())
        self.assertTrue(np.isnan(y[1]).all() and np.isnan(y[2]).all())

    def test_gradient_accumulates_into_looked_up_rows(self):
        layer = nn.Embedding(4, 2)
        ids = jnp.array([1, 1, 3])
        grad = jax.grad(lambda p: layer.apply(p, ids).sum())(layer.init(jax.random.key(0)))
        np.testing.assert_array_equal(grad["W"], [[0, 0], [2, 2], [0, 0], [1, 1]])

    def test_float_ids_raise(self):
        layer = nn.Embedding(3, 2)
        with self.assertRaisesRegex(DTypeError, "Embedding: expected integer ids, received float"):
            layer.apply(layer.init(jax.random.key(0)), jnp.ones(2))


def test_finite_difference_gradients_of_the_table():
    from jax.test_util import check_grads

    from tests.helpers import to_f64

    layer, ids = nn.Embedding(5, 3), jnp.array([[0, 4], [4, 2]])
    with jax.enable_x64(True):
        check_grads(lambda p: layer.apply(p, ids), (to_f64(layer.init(jax.random.key(0))),),
                    order=2, modes=("fwd", "rev"))
