import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from minitorch import nn
from tests.helpers import check_layer_grads


def layer_norm_ref(x, shape, scale, bias, eps=1e-5):
    axes = tuple(range(-len(shape), 0))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


class LayerNormTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((5, (3, 5)), ((4, 5), (2, 3, 4, 5)), (6, (2, 2, 6)))
    def test_matches_numpy(self, normalized_shape, x_shape):
        layer = nn.LayerNorm(normalized_shape)
        params = layer.init(jax.random.key(0))
        shape = params["scale"].shape
        params = {"scale": jax.random.normal(jax.random.key(1), shape),
                  "bias": jax.random.normal(jax.random.key(2), shape)}
        x = np.random.default_rng(0).normal(2.0, 3.0, size=x_shape).astype(np.float32)
        y = self.variant(layer.apply)(params, x)
        expected = layer_norm_ref(x.astype(np.float64), shape, np.asarray(params["scale"]),
                                  np.asarray(params["bias"]))
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)

    def test_init_is_identity_affine(self):
        params = nn.LayerNorm((2, 3)).init(jax.random.key(0))
        np.testing.assert_array_equal(params["scale"], np.ones((2, 3)))
        np.testing.assert_array_equal(params["bias"], np.zeros((2, 3)))
        self.assertEqual(nn.LayerNorm(3, elementwise_affine=False).init(jax.random.key(0)), {})

    def test_gradients(self):
        layer = nn.LayerNorm(4)
        params = {"scale": jnp.array([1.0, 2.0, 0.5, -1.0]), "bias": jnp.arange(4.0)}
        check_layer_grads(layer, params, np.random.default_rng(0).normal(size=(3, 4)))

    def test_eps_matters_for_constant_rows(self):
        y = nn.LayerNorm(3, eps=1e-5).apply(nn.LayerNorm(3).init(jax.random.key(0)),
                                            jnp.full((1, 3), 7.0))
        np.testing.assert_array_equal(y, np.zeros((1, 3)))
