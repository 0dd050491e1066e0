import chex
import jax
import numpy as np
import pytest
from absl.testing import parameterized

from minitorch import nn
from minitorch.nn.core import resolve_padding
from tests.helpers import check_layer_grads, conv2d_ref

# (in, out, kernel, stride, padding, dilation, groups, bias, input H x W)
CASES = [
    (1, 4, 3, 1, 0, 1, 1, True, (6, 6)),
    (2, 4, 3, 2, 1, 1, 1, True, (7, 6)),
    (2, 3, (3, 2), (2, 1), (1, 0), 1, 1, False, (6, 5)),
    (3, 4, 3, 1, "same", 1, 1, True, (5, 5)),
    (2, 2, 4, 1, "same", 1, 1, True, (5, 6)),   # even kernel: total//2 before, rest after
    (2, 2, 3, 2, "same", 1, 1, True, (7, 8)),   # strided same: ceil(H / stride) outputs
    (2, 4, 3, 1, "valid", 2, 1, True, (8, 8)),  # dilation
    (4, 6, 3, 1, 1, 1, 2, True, (5, 5)),        # groups
    (4, 4, 3, 1, 1, (2, 1), 4, True, (6, 6)),   # depthwise, dilated in H only
]


class Conv2DTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*CASES)
    def test_matches_numpy(self, cin, cout, kernel, stride, padding, dilation, groups, bias, hw):
        layer = nn.Conv2D(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups,
                          bias=bias)
        params = layer.init(jax.random.key(0))
        if bias:
            params["b"] = jax.random.normal(jax.random.key(1), (cout,))
        x = np.random.default_rng(0).normal(size=(2, cin, *hw)).astype(np.float32)
        y = self.variant(layer.apply)(params, x)
        pads = resolve_padding(padding, hw, layer.kernel_size, layer.stride, layer.dilation, "t")
        expected = conv2d_ref(x, np.asarray(params["W"]), np.asarray(params["b"]) if bias else None,
                              layer.stride, pads, layer.dilation, groups)
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
        if padding == "same":
            self.assertEqual(y.shape[2:], tuple(-(-s // st) for s, st in zip(hw, layer.stride)))

    def test_same_padding_puts_the_extra_pad_after(self):
        # kernel 4, stride 1: total padding 3, so 1 before and 2 after (XLA and PyTorch)
        self.assertEqual(resolve_padding("same", (5, 5), (4, 4), (1, 1), (1, 1), "t"),
                         ((1, 2), (1, 2)))

    def test_params_follow_design(self):
        params = nn.Conv2D(4, 6, (3, 2), groups=2).init(jax.random.key(0))
        self.assertEqual(params["W"].shape, (6, 2, 3, 2))
        self.assertEqual(params["b"].shape, (6,))

    @parameterized.parameters(CASES[1], CASES[6], CASES[7])
    def test_gradients(self, cin, cout, kernel, stride, padding, dilation, groups, bias, hw):
        layer = nn.Conv2D(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups,
                          bias=bias)
        x = np.random.default_rng(2).normal(size=(2, cin, *hw))
        check_layer_grads(layer, layer.init(jax.random.key(3)), x)

    def test_he_init_has_the_right_scale(self):
        w = nn.Conv2D(64, 256, 3).init(jax.random.key(0))["W"]
        fan_in = 64 * 3 * 3
        np.testing.assert_allclose(np.std(w), np.sqrt(2 / fan_in), rtol=0.03)


@pytest.mark.parametrize("cin, cout, kernel, stride, padding, dilation, groups, bias, hw",
                         [c for c in CASES if c[6] == 1])
def test_matmul_formulation_equals_xla_convolution(cin, cout, kernel, stride, padding,
                                                   dilation, groups, bias, hw):
    """The CPU formulation (a matmul over channels-last patches) and XLA's convolution, used
    on other backends and for groups > 1: same outputs and same gradients."""
    from jax import lax

    from minitorch.nn.conv import conv_as_matmul

    layer = nn.Conv2D(cin, cout, kernel, stride, padding, dilation=dilation)
    w = layer.init(jax.random.key(0))["W"]
    x = jax.random.normal(jax.random.key(1), (3, cin, *hw))
    pads = resolve_padding(padding, hw, layer.kernel_size, layer.stride, layer.dilation, "t")

    def by_matmul(x, w):
        return conv_as_matmul(x.transpose(0, 2, 3, 1), w, layer.stride, pads,
                              layer.dilation).transpose(0, 3, 1, 2)

    def by_xla(x, w):
        return lax.conv_general_dilated(x, w, layer.stride, pads, rhs_dilation=layer.dilation,
                                        dimension_numbers=("NCHW", "OIHW", "NCHW"))

    np.testing.assert_allclose(jax.jit(by_matmul)(x, w), jax.jit(by_xla)(x, w), rtol=1e-5,
                               atol=1e-5)
    cotangent = jax.random.normal(jax.random.key(2), jax.eval_shape(by_xla, x, w).shape)
    grads = [jax.jit(lambda x, w, f=f: jax.vjp(f, x, w)[1](cotangent))(x, w)
             for f in (by_matmul, by_xla)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
