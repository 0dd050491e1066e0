import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from minitorch import nn
from minitorch.errors import ShapeError
from minitorch.nn.geometry import resolve_padding
from tests.helpers import assert_matches_torch, check_layer_grads, distinct, pool2d_ref

# (kernel, stride, padding, input H x W)
CASES = [
    (2, None, 0, (8, 8)),        # non-overlapping fast path
    (2, None, 0, (7, 9)),        # fast path with a ragged edge (floor, as PyTorch)
    (3, 2, 1, (7, 7)),           # overlapping, padded
    ((2, 3), (1, 2), (1, 1), (6, 7)),
    (3, 1, "same", (5, 4)),
    (2, None, "same", (5, 5)),   # same with stride 2: ceil(5 / 2) = 3 outputs
]


class PoolingTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(case=CASES, kind=("max", "avg"))
    def test_matches_numpy(self, case, kind):
        kernel, stride, padding, hw = case
        layer = (nn.MaxPool2D if kind == "max" else nn.AvgPool2D)(kernel, stride, padding)
        x = np.random.default_rng(0).normal(size=(2, 3, *hw)).astype(np.float32)
        y = self.variant(layer.apply)({}, x)
        pads = resolve_padding(padding, hw, layer.kernel_size, layer.stride, (1, 1), "t")
        expected = pool2d_ref(x, layer.kernel_size, layer.stride, pads, kind)
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)

    def test_stride_defaults_to_kernel_size(self):
        self.assertEqual(nn.MaxPool2D(3).stride, (3, 3))
        self.assertEqual(nn.AvgPool2D((2, 3)).stride, (2, 3))

    def test_max_pool_pads_with_minus_infinity(self):
        x = -np.ones((1, 1, 2, 2), np.float32)  # all negative: zero padding would win the max
        y = nn.MaxPool2D(2, stride=1, padding=1).apply({}, x)
        np.testing.assert_array_equal(y, -np.ones((1, 1, 3, 3)))

    def test_avg_pool_counts_padded_zeros(self):
        y = nn.AvgPool2D(2, stride=1, padding=1).apply({}, np.ones((1, 1, 2, 2), np.float32))
        np.testing.assert_allclose(y[0, 0], [[0.25, 0.5, 0.25], [0.5, 1, 0.5], [0.25, 0.5, 0.25]])

    @parameterized.product(case=CASES, kind=("max", "avg"))
    def test_gradients(self, case, kind):
        kernel, stride, padding, hw = case
        layer = (nn.MaxPool2D if kind == "max" else nn.AvgPool2D)(kernel, stride, padding)
        check_layer_grads(layer, {}, distinct(np.random.default_rng(1), (2, 2, *hw)))


@pytest.mark.parametrize("layer, shape", [(nn.MaxPool1D(4), (1, 1, 4)),
                                          (nn.MaxPool2D(2), (1, 1, 2, 2)),
                                          (nn.MaxPool3D((1, 2, 2)), (1, 1, 1, 2, 2))])
@pytest.mark.parametrize("jit", [False, True])
def test_max_pool_splits_a_tie_evenly_among_the_equal_maxima(layer, shape, jit):
    """Three equal maxima in one window get a third of the gradient each, as a reduction's
    max gives them (nested elementwise maxima would give 1/4, 1/4, 1/2), in reverse and
    forward mode."""
    x = jnp.array([2.0, 2.0, 2.0, -1.0]).reshape(shape)
    grad = jax.grad(lambda x: jnp.sum(layer.apply({}, x)))
    grad = jax.jit(grad) if jit else grad
    np.testing.assert_allclose(grad(x).ravel(), [1 / 3, 1 / 3, 1 / 3, 0], rtol=1e-6)
    _, tangent = jax.jvp(lambda x: layer.apply({}, x), (x,), (jnp.arange(4.0).reshape(shape),))
    np.testing.assert_allclose(tangent.ravel(), [1.0], rtol=1e-6)  # mean of 0, 1, 2


class Pooling1DTest(chex.TestCase):

    @parameterized.product(case=[(2, None, 0, 8), (2, None, 0, 9), (3, 2, 1, 7), (3, 1, "same", 6),
                                 (4, 1, 2, 5)], kind=("max", "avg"))
    def test_values_and_gradients_equal_pytorch(self, case, kind):
        kernel, stride, padding, length = case
        layer = (nn.MaxPool1D if kind == "max" else nn.AvgPool1D)(kernel, stride, padding)
        arrays = {"x": distinct(np.random.default_rng(0), (2, 3, length)).astype(np.float32)}
        pads = resolve_padding(padding, (length,), layer.kernel_size, layer.stride, (1,), "t")

        def theirs(t):
            import torch
            x = torch.nn.functional.pad(t["x"], pads[0], value=-np.inf if kind == "max" else 0)
            pool = torch.nn.functional.max_pool1d if kind == "max" else \
                torch.nn.functional.avg_pool1d
            return pool(x, kernel, layer.stride[0])

        assert_matches_torch(lambda a: layer.apply({}, a["x"]), theirs, arrays)

    def test_gradients_float64_and_under_jit(self):
        for layer in (nn.MaxPool1D(3, 2, 1), nn.AvgPool1D(2)):
            check_layer_grads(layer, {}, distinct(np.random.default_rng(1), (2, 2, 7)))

    def test_bad_inputs_name_the_layer(self):
        net = nn.Net([nn.Conv1D(1, 2, 3), nn.MaxPool1D(2)])
        with pytest.raises(ShapeError, match=r"^layer 1 \(MaxPool1D\): expected input of spatial "
                                             r"size \(L,\) at least \(2,\)"):
            net.apply(net.init(jax.random.key(0)), jnp.ones((1, 1, 3)))
        with pytest.raises(ShapeError, match=r"AvgPool1D: expected input of shape \(N, C, L\), "
                                             r"received \(4, 5\)"):
            nn.AvgPool1D(2).apply({}, jnp.ones((4, 5)))
        with pytest.raises(ValueError, match="MaxPool1D: padding 2 must be at most half"):
            nn.MaxPool1D(3, padding=2)


# (spatial axes, kernel, stride, padding, input size per axis)
CASES_ND = [
    (1, 2, None, 0, (9,)),
    (1, 3, 2, 1, (8,)),
    (2, 2, None, 0, (7, 9)),
    (3, 2, None, 0, (4, 5, 6)),           # non-overlapping tiles, a ragged edge
    (3, (3, 2, 3), (2, 1, 2), (1, 0, 1), (5, 4, 6)),
    (3, 3, 1, "same", (3, 4, 3)),
]


@pytest.mark.parametrize("n, kernel, stride, padding, sizes", CASES_ND)
@pytest.mark.parametrize("kind", ["Max", "Avg"])
def test_nd_pooling_equals_pytorch(n, kernel, stride, padding, sizes, kind):
    """MaxPool1D/2D/3D and AvgPool1D/2D/3D: one pooling path, values and gradients (eager
    and under jit) as torch.nn.functional.{max,avg}_pool{n}d."""
    import torch

    layer = getattr(nn, f"{kind}Pool{n}D")(kernel, stride, padding)
    pads = resolve_padding(padding, sizes, layer.kernel_size, layer.stride, (1,) * n, "t")
    x = distinct(np.random.default_rng(n), (2, 3, *sizes)).astype(np.float32)  # no ties

    def theirs(t):
        padded = torch.nn.functional.pad(t["x"], [p for pair in reversed(pads) for p in pair],
                                         value=-torch.inf if kind == "Max" else 0.0)
        pool = getattr(torch.nn.functional, f"{kind.lower()}_pool{n}d")
        return pool(padded, layer.kernel_size, layer.stride)

    assert_matches_torch(lambda a: layer.apply({}, a["x"]), theirs, {"x": x},
                         rtol=1e-5, atol=1e-6)


def test_3d_pooling_names_its_axes_d_h_w():
    with pytest.raises(ShapeError, match=r"^MaxPool3D: expected input of shape "
                                         r"\(N, C, D, H, W\), received \(2, 3, 4, 4\)$"):
        nn.MaxPool3D(2).apply({}, jnp.ones((2, 3, 4, 4)))
    assert nn.AvgPool3D((1, 2, 3)).stride == (1, 2, 3)
