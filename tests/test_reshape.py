import chex
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from minitorch import nn
from minitorch.errors import ShapeError


class ReshapeTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(((2, 3, 4, 5), (2, 60)), ((7, 3), (7, 3)), ((1, 2, 1, 1), (1, 2)))
    def test_flatten_keeps_the_batch_axis(self, shape, expected):
        x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        y = self.variant(nn.Flatten().apply)({}, x)
        np.testing.assert_array_equal(y, x.reshape(expected))

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(((4, 12), (3, 4)), ((4, 12), (2, -1)), ((2, 3, 4), (12,)))
    def test_reshape_each_example(self, shape, target):
        x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        y = self.variant(nn.Reshape(target).apply)({}, x)
        np.testing.assert_array_equal(y, x.reshape((shape[0], *target)))

    def test_reshape_accepts_varargs(self):
        self.assertEqual(nn.Reshape(1, 8, 8), nn.Reshape((1, 8, 8)))

    def test_errors(self):
        with self.assertRaisesRegex(ShapeError, r"Reshape: expected .* 12 elements .* \(4, 10\)"):
            nn.Reshape(3, 4).apply({}, jnp.ones((4, 10)))
        with self.assertRaisesRegex(ShapeError, r"Flatten: expected .* at least 2 axes"):
            nn.Flatten().apply({}, jnp.ones(5))
        with self.assertRaisesRegex(ValueError, "at most one -1"):
            nn.Reshape(-1, -1)


def test_finite_difference_gradients():
    from tests.helpers import check_layer_grads

    x = np.random.default_rng(0).normal(size=(2, 3, 4))
    check_layer_grads(nn.Flatten(), {}, x)
    check_layer_grads(nn.Reshape(4, 3), {}, x)
