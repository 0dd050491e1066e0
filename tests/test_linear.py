import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from minitorch import nn
from tests.helpers import check_layer_grads


class LinearTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((True, (5, 3)), (False, (5, 3)), (True, (2, 4, 3)))
    def test_matches_numpy(self, bias, x_shape):
        layer = nn.Linear(3, 7, bias=bias)
        params = layer.init(jax.random.key(0))
        if bias:  # a nonzero bias, so that adding it is tested
            params["b"] = jax.random.normal(jax.random.key(1), (7,))
        x = np.random.default_rng(0).normal(size=x_shape).astype(np.float32)
        y = self.variant(layer.apply)(params, x)
        expected = x @ np.asarray(params["W"]) + (np.asarray(params["b"]) if bias else 0)
        chex.assert_shape(y, (*x_shape[:-1], 7))
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)

    def test_params_follow_design(self):
        params = nn.Linear(64, 10).init(jax.random.key(0))
        chex.assert_trees_all_equal_shapes_and_dtypes(
            params, {"W": jnp.zeros((64, 10)), "b": jnp.zeros(10)})
        np.testing.assert_array_equal(params["b"], 0)
        self.assertNotIn("b", nn.Linear(64, 10, bias=False).init(jax.random.key(0)))

    def test_gradients(self):
        layer = nn.Linear(4, 3)
        params = layer.init(jax.random.key(0))
        params["b"] = jnp.arange(3.0)
        x = np.random.default_rng(1).normal(size=(5, 4))
        check_layer_grads(layer, params, x, order=2)

    def test_float64_and_bfloat16_are_honoured(self):
        with jax.enable_x64(True):
            layer = nn.Linear(4, 3, dtype=jnp.float64)
            params = layer.init(jax.random.key(0))
            self.assertEqual(params["W"].dtype, jnp.float64)
            self.assertEqual(layer.apply(params, jnp.ones((2, 4), jnp.float64)).dtype, jnp.float64)
        layer = nn.Linear(4, 3, dtype=jnp.bfloat16)
        params = layer.init(jax.random.key(0))
        y = layer.apply(params, jnp.ones((2, 4), jnp.bfloat16))
        self.assertEqual(y.dtype, jnp.bfloat16)
        expected = np.ones((2, 4)) @ np.asarray(params["W"], np.float32)
        np.testing.assert_allclose(np.asarray(y, np.float32), expected, rtol=2e-2, atol=2e-2)
