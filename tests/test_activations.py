import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from minitorch import nn
from tests.helpers import away_from_zero, check_layer_grads, log_softmax_ref

_erf = np.vectorize(math.erf)

REFERENCES = {
    "ReLU": (nn.ReLU(), lambda x: np.maximum(x, 0)),
    "LeakyReLU": (nn.LeakyReLU(), lambda x: np.where(x >= 0, x, 0.01 * x)),
    "LeakyReLU0.2": (nn.LeakyReLU(0.2), lambda x: np.where(x >= 0, x, 0.2 * x)),
    "Tanh": (nn.Tanh(), np.tanh),
    "Sigmoid": (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    "GELU": (nn.GELU(), lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2)))),
    "GELUtanh": (nn.GELU(approximate=True),
                 lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))),
    "Softmax": (nn.Softmax(), lambda x: np.exp(log_softmax_ref(x))),
    "Softmax1": (nn.Softmax(axis=1), lambda x: np.exp(log_softmax_ref(x, axis=1))),
    "LogSoftmax": (nn.LogSoftmax(), log_softmax_ref),
    "LogSoftmax0": (nn.LogSoftmax(axis=0), lambda x: log_softmax_ref(x, axis=0)),
}


class ActivationTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*REFERENCES)
    def test_matches_numpy(self, name):
        layer, reference = REFERENCES[name]
        x = away_from_zero(np.random.default_rng(0), (4, 3, 5)) * 3
        y = self.variant(layer.apply)({}, x.astype(np.float32))
        np.testing.assert_allclose(y, reference(x), rtol=1e-5, atol=1e-6)
        self.assertEqual(layer.init(jax.random.key(0)), {})

    @parameterized.parameters(*REFERENCES)
    def test_gradients(self, name):
        layer, _ = REFERENCES[name]
        check_layer_grads(layer, {}, away_from_zero(np.random.default_rng(1), (3, 4)), order=2)

    def test_softmax_is_stable_for_huge_logits(self):
        x = jnp.array([[1e4, -1e4, 0.0]])
        np.testing.assert_allclose(nn.Softmax().apply({}, x), [[1, 0, 0]])
        np.testing.assert_allclose(nn.LogSoftmax().apply({}, x), [[0, -2e4, -1e4]])

    def test_relu_gradient_at_zero_is_zero(self):
        grad = jax.grad(lambda x: nn.ReLU().apply({}, x).sum())(jnp.zeros(3))
        np.testing.assert_array_equal(grad, 0)


class PReLUTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((1, (4, 3, 2)), (3, (4, 3, 2)), (3, (4, 3)), (1, (5,)))
    def test_matches_numpy_with_slopes_on_axis_1(self, num, shape):
        layer = nn.PReLU(num)
        params = {"a": jnp.linspace(0.1, 0.5, num)}
        x = away_from_zero(np.random.default_rng(0), shape).astype(np.float32)
        slopes = np.asarray(params["a"]).reshape((-1,) + (1,) * (len(shape) - 2)) if num > 1 \
            else np.asarray(params["a"])
        y = self.variant(layer.apply)(params, x)
        np.testing.assert_allclose(y, np.where(x >= 0, x, slopes * x), rtol=1e-6)

    def test_init_is_a_constant_slope(self):
        np.testing.assert_array_equal(nn.PReLU(4, init=0.1).init(jax.random.key(0))["a"],
                                      np.full(4, 0.1, np.float32))

    def test_gradients(self):
        layer = nn.PReLU(3)
        x = away_from_zero(np.random.default_rng(0), (2, 3, 4))
        check_layer_grads(layer, layer.init(jax.random.key(0)), x)
