import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from minitorch import nn
from minitorch.errors import ShapeError
from minitorch.nn.geometry import resolve_padding
from tests.helpers import assert_matches_torch, check_layer_grads, conv2d_ref

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
    x = nn.init.normal(jax.random.key(1), (3, cin, *hw))
    pads = resolve_padding(padding, hw, layer.kernel_size, layer.stride, layer.dilation, "t")

    def by_matmul(x, w):
        return conv_as_matmul(x.transpose(0, 2, 3, 1), w, layer.stride, pads,
                              layer.dilation).transpose(0, 3, 1, 2)

    def by_xla(x, w):
        return lax.conv_general_dilated(x, w, layer.stride, pads, rhs_dilation=layer.dilation,
                                        dimension_numbers=("NCHW", "OIHW", "NCHW"))

    np.testing.assert_allclose(jax.jit(by_matmul)(x, w), jax.jit(by_xla)(x, w), rtol=1e-5,
                               atol=1e-5)
    cotangent = nn.init.normal(jax.random.key(2), jax.eval_shape(by_xla, x, w).shape)
    grads = [jax.jit(lambda x, w, f=f: jax.vjp(f, x, w)[1](cotangent))(x, w)
             for f in (by_matmul, by_xla)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# (in, out, kernel, stride, padding, dilation, groups, bias, input L)
CASES_1D = [
    (2, 4, 3, 1, 0, 1, 1, True, 9),
    (2, 4, 5, 2, 2, 1, 1, True, 10),
    (4, 6, 3, 1, "same", 2, 2, False, 8),
    (3, 3, 4, 1, "same", 1, 3, True, 7),   # depthwise, even kernel
    (2, 2, 3, 3, "valid", 1, 1, True, 11),
]


class Conv1DTest(chex.TestCase):

    @parameterized.parameters(*CASES_1D)
    def test_values_and_gradients_equal_pytorch(self, cin, cout, kernel, stride, padding,
                                                dilation, groups, bias, length):
        layer = nn.Conv1D(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups,
                          bias=bias)
        arrays = {k: np.asarray(v) for k, v in layer.init(jax.random.key(0)).items()}
        if bias:
            arrays["b"] = np.random.default_rng(1).normal(size=cout).astype(np.float32)
        arrays["x"] = np.random.default_rng(0).normal(size=(2, cin, length)).astype(np.float32)

        def theirs(t):
            import torch
            return torch.nn.functional.conv1d(t["x"], t["W"], t.get("b"), stride=stride,
                                              padding=padding, dilation=dilation, groups=groups)

        assert_matches_torch(lambda a: layer.apply({k: a[k] for k in a if k != "x"}, a["x"]),
                             theirs, arrays, rtol=1e-5, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_equals_conv2d_of_height_one(self):
        layer = nn.Conv1D(3, 4, 3, padding=1)
        params = layer.init(jax.random.key(0))
        x = nn.init.normal(jax.random.key(1), (2, 3, 8))
        as_2d = nn.Conv2D(3, 4, (1, 3), padding=(0, 1))
        expected = as_2d.apply({"W": params["W"][:, :, None], "b": params["b"]}, x[:, :, None])
        np.testing.assert_allclose(self.variant(layer.apply)(params, x), expected[:, :, 0],
                                   rtol=1e-6, atol=1e-6)

    def test_gradients_float64_and_under_jit(self):
        layer = nn.Conv1D(2, 3, 3, stride=2, padding=1)
        check_layer_grads(layer, layer.init(jax.random.key(0)),
                          np.random.default_rng(0).normal(size=(2, 2, 7)))

    def test_bad_inputs_name_the_layer(self):
        net = nn.Net([nn.Embedding(10, 4), nn.Conv1D(4, 8, 3)])
        params = net.init(jax.random.key(0))
        with pytest.raises(ShapeError, match=r"^layer 1 \(Conv1D\): expected input of shape "
                                             r"\(N, 4, L\), received \(2, 6, 4\)$"):
            net.apply(params, jnp.zeros((2, 6), jnp.int32))  # NLC, not NCL
        with pytest.raises(ShapeError, match=r"Conv1D: expected input of spatial size \(L,\) "
                                             r"at least \(5,\)"):
            nn.Conv1D(1, 1, 5).apply(nn.Conv1D(1, 1, 5).init(jax.random.key(0)),
                                     jnp.ones((1, 1, 3)))
        with pytest.raises(ValueError, match=r"Conv1D: kernel_size must be a positive int or a "
                                             r"tuple of 1, received \(3, 3\)"):
            nn.Conv1D(1, 1, (3, 3))


# (in, out, kernel, stride, padding, output_padding, dilation, groups, bias, input H x W)
CASES_TRANSPOSE = [
    (2, 3, 3, 1, 0, 0, 1, 1, True, (5, 5)),
    (4, 6, 3, 2, 1, 1, 1, 2, True, (4, 5)),     # the inverse of a padded strided conv, groups
    (3, 2, (2, 3), (2, 1), (0, 1), (1, 0), 1, 1, False, (3, 4)),
    (2, 4, 3, 2, 0, 0, 2, 1, True, (3, 3)),     # dilated
    (2, 2, 4, 2, 1, 0, 1, 1, True, (4, 4)),     # the DCGAN upsampling block
]


class ConvTranspose2DTest(chex.TestCase):

    @parameterized.parameters(*CASES_TRANSPOSE)
    def test_values_and_gradients_equal_pytorch(self, cin, cout, kernel, stride, padding,
                                                output_padding, dilation, groups, bias, hw):
        layer = nn.ConvTranspose2D(cin, cout, kernel, stride, padding,
                                   output_padding=output_padding, dilation=dilation,
                                   groups=groups, bias=bias)
        arrays = {k: np.asarray(v) for k, v in layer.init(jax.random.key(0)).items()}
        if bias:
            arrays["b"] = np.random.default_rng(1).normal(size=cout).astype(np.float32)
        arrays["x"] = np.random.default_rng(0).normal(size=(2, cin, *hw)).astype(np.float32)

        def theirs(t):
            import torch
            return torch.nn.functional.conv_transpose2d(
                t["x"], t["W"], t.get("b"), stride=stride, padding=padding,
                output_padding=output_padding, groups=groups, dilation=dilation)

        assert_matches_torch(lambda a: layer.apply({k: a[k] for k in a if k != "x"}, a["x"]),
                             theirs, arrays, rtol=1e-5, atol=1e-5)

    def test_inverts_the_shape_of_a_strided_conv(self):
        conv = nn.Conv2D(3, 8, 3, stride=2, padding=1)
        up = nn.ConvTranspose2D(8, 3, 3, stride=2, padding=1, output_padding=1)
        x = jnp.ones((1, 3, 8, 8))
        y = conv.apply(conv.init(jax.random.key(0)), x)
        self.assertEqual(up.apply(up.init(jax.random.key(0)), y).shape, x.shape)
        self.assertEqual(up.init(jax.random.key(0))["W"].shape, (8, 3, 3, 3))

    def test_gradients_float64_and_under_jit(self):
        layer = nn.ConvTranspose2D(2, 3, 3, stride=2, padding=1, output_padding=1)
        check_layer_grads(layer, layer.init(jax.random.key(0)),
                          np.random.default_rng(0).normal(size=(2, 2, 3, 3)))

    def test_bad_arguments_and_inputs(self):
        with pytest.raises(ValueError, match=r"ConvTranspose2D: output_padding 2 must be "
                                             r"smaller than stride \(2, 2\)"):
            nn.ConvTranspose2D(2, 2, 3, stride=2, output_padding=2)
        with pytest.raises(ValueError, match="padding and output_padding must be ints or tuples"):
            nn.ConvTranspose2D(2, 2, 3, padding="same")
        layer = nn.ConvTranspose2D(2, 4, 3)
        net = nn.Net([nn.ReLU(), layer])
        with pytest.raises(ShapeError, match=r"^layer 1 \(ConvTranspose2D\): expected input of "
                                             r"shape \(N, 2, H, W\), received \(1, 3, 4, 4\)$"):
            net.apply(net.init(jax.random.key(0)), jnp.ones((1, 3, 4, 4)))


@pytest.mark.parametrize("platforms, convolution, matmul", [
    (("cpu",), False, True), (("cuda",), True, False), (("cpu", "cuda"), True, True)])
def test_the_formulation_follows_the_platform_lowered_for(platforms, convolution, matmul):
    """Exported on this CPU for CUDA, Conv2D carries XLA's convolution, not im2col."""
    from jax import export

    net = nn.Net([nn.Conv2D(1, 4, 3), nn.ReLU()])
    params = net.init(jax.random.key(0))
    exported = export.export(jax.jit(net.apply), platforms=platforms)(
        params, jax.ShapeDtypeStruct((2, 1, 8, 8), jnp.float32))
    text = exported.mlir_module()
    assert ("stablehlo.convolution" in text) == convolution
    assert ("stablehlo.dot_general" in text) == matmul
    if "cpu" in platforms:
        x = nn.init.normal(jax.random.key(1), (2, 1, 8, 8))
        np.testing.assert_allclose(exported.call(params, x), net.apply(params, x),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("make, shape", [
    (lambda dtype: nn.Conv1D(4, 6, 3, padding=1, dtype=dtype), (2, 4, 7)),
    (lambda dtype: nn.Conv2D(4, 6, 3, groups=2, dtype=dtype), (2, 4, 5, 5)),
    (lambda dtype: nn.Conv2D(4, 6, 3, dtype=dtype), (2, 4, 5, 5)),
    (lambda dtype: nn.ConvTranspose2D(4, 6, 3, stride=2, groups=2, dtype=dtype), (2, 4, 3, 3)),
])
@pytest.mark.parametrize("x_dtype, param_dtype", [("bfloat16", "float32"),
                                                  ("float32", "bfloat16"),
                                                  ("float16", "float32")])
def test_mixed_dtypes_promote_as_linear_does(make, shape, x_dtype, param_dtype):
    """A narrow input with float32 params (and the reverse) computes in the promoted dtype,
    as Linear does: the same numbers as float32 on the narrow operand's rounded values."""
    layer = make(param_dtype)
    params = layer.init(jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), x_dtype)
    y = layer.apply(params, x)
    assert y.dtype == jnp.result_type(x, params["W"]) == jnp.float32
    wide = make("float32")
    want = wide.apply(jax.tree.map(lambda p: p.astype(jnp.float32), params),
                      x.astype(jnp.float32))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    grads = jax.jit(jax.grad(lambda p, v: jnp.sum(layer.apply(p, v)), argnums=(0, 1)))(params, x)
    assert grads[1].dtype == x.dtype and grads[0]["W"].dtype == params["W"].dtype


# (spatial axes, kernel, stride, padding, dilation, groups, input size per axis)
CASES_ND = [
    (1, 3, 2, 1, 1, 2, (9,)),
    (2, (2, 3), (1, 2), (1, 0), (2, 1), 1, (6, 7)),
    (3, 3, 1, 1, 1, 1, (4, 5, 3)),
    (3, (2, 3, 1), (2, 1, 1), (0, 1, 0), (1, 2, 1), 2, (5, 6, 3)),
]


@pytest.mark.parametrize("n, kernel, stride, padding, dilation, groups, sizes", CASES_ND)
def test_nd_convolutions_and_transposes_equal_pytorch(n, kernel, stride, padding, dilation,
                                                      groups, sizes):
    """Conv1D/2D/3D and ConvTranspose1D/2D/3D: one N-D class each, values and gradients
    (eager and under jit) as torch.nn.functional.conv{n}d / conv_transpose{n}d."""
    import torch

    conv = getattr(nn, f"Conv{n}D")(4, 6, kernel, stride, padding, dilation=dilation,
                                    groups=groups)
    extra = tuple(s - 1 for s in conv.stride)  # the largest output_padding allowed
    transpose = getattr(nn, f"ConvTranspose{n}D")(4, 6, kernel, stride, padding,
                                                  output_padding=extra,
                                                  dilation=conv.dilation, groups=groups)
    rng = np.random.default_rng(n)
    for layer, theirs in ((conv, lambda t: getattr(torch.nn.functional, f"conv{n}d")(
            t["x"], t["W"], t["b"], stride=conv.stride, padding=conv.padding,
            dilation=conv.dilation, groups=groups)),
                          (transpose, lambda t: getattr(
                              torch.nn.functional, f"conv_transpose{n}d")(
            t["x"], t["W"], t["b"], stride=transpose.stride, padding=transpose.padding,
            output_padding=extra, groups=groups, dilation=transpose.dilation))):
        arrays = {k: np.asarray(v) for k, v in layer.init(jax.random.key(0)).items()}
        arrays["b"] = rng.normal(size=6).astype(np.float32)
        arrays["x"] = rng.normal(size=(2, 4, *sizes)).astype(np.float32)
        assert_matches_torch(lambda a, layer=layer: layer.apply(
            {k: a[k] for k in a if k != "x"}, a["x"]), theirs, arrays, rtol=1e-5, atol=1e-5)


def test_3d_layers_float64_gradients_and_errors_naming_d_h_w():
    conv, up = nn.Conv3D(2, 3, 2, padding=1), nn.ConvTranspose3D(2, 3, 2, stride=2)
    x = np.random.default_rng(0).normal(size=(2, 2, 2, 3, 2))
    check_layer_grads(conv, conv.init(jax.random.key(0)), x)
    check_layer_grads(up, up.init(jax.random.key(1)), x)
    assert conv.init(jax.random.key(0))["W"].shape == (3, 2, 2, 2, 2)
    assert up.init(jax.random.key(0))["W"].shape == (2, 3, 2, 2, 2)
    net = nn.Net([nn.ReLU(), nn.Conv3D(2, 3, 3)])
    with pytest.raises(ShapeError, match=r"^layer 1 \(Conv3D\): expected input of shape "
                                         r"\(N, 2, D, H, W\), received \(1, 2, 4, 4\)$"):
        net.apply(net.init(jax.random.key(0)), jnp.ones((1, 2, 4, 4)))
    with pytest.raises(ShapeError, match=r"\(Conv3D\): expected input of spatial size \(D, H, W\) "
                                         r"at least \(3, 3, 3\)"):
        net.apply(net.init(jax.random.key(0)), jnp.ones((1, 2, 2, 4, 4)))
    with pytest.raises(ShapeError, match=r"^ConvTranspose1D: expected input of shape "
                                         r"\(N, 2, L\)"):
        nn.ConvTranspose1D(2, 2, 3).apply(nn.ConvTranspose1D(2, 2, 3).init(
            jax.random.key(0)), jnp.ones((1, 2, 4, 4)))
