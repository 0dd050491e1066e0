"""Convolutions as in PyTorch: ``Conv1D`` (NCL), ``Conv2D`` (NCHW), ``Conv3D`` (NCDHW) and
their transposes ``ConvTranspose1D/2D/3D``: one class each for the N-D layer, the 1/2/3-D
ones fix its number of spatial axes."""

from __future__ import annotations

from typing import Any, ClassVar

import jax.numpy as jnp
from jax import lax

from minitorch.errors import ArgumentError, ShapeError
from minitorch.nn import init as initializers
from minitorch.nn.checks import check_float, check_key, check_params, check_shape, name_of
from minitorch.nn.core import Array, Layer, Params, PRNGKey, set_fields, split_key
from minitorch.nn.geometry import Padding, conv_output_size, resolve_padding, spatial_axes
from minitorch.validate import as_tuple, flag, float_dtype, positive_int, renamed_argument


def _check_groups(owner: str, in_channels: Any, out_channels: Any,
                  groups: Any) -> tuple[int, int, int]:
    in_channels = positive_int(in_channels, "in_channels", owner)
    out_channels = positive_int(out_channels, "out_channels", owner)
    groups = positive_int(groups, "groups", owner)
    if in_channels % groups or out_channels % groups:
        raise ArgumentError(f"{owner}: groups={groups} must divide in_channels={in_channels} "
                         f"and out_channels={out_channels}")
    return in_channels, out_channels, groups


def _kernel_params(layer: Any, key: PRNGKey, shape: tuple[int, ...]) -> Params:
    """``{"W": shape, "b": (out_channels,)}``; fans as PyTorch's (axis 1 "in", axis 0 "out")."""
    check_key(layer, key, "init")
    w_key, _ = split_key(key, 2)
    w_init = initializers.resolve(layer.weight_init, in_axis=1, out_axis=0)
    params = {"W": initializers.make(w_init, w_key, shape, layer.dtype, type(layer).__name__)}
    if layer.bias:
        params["b"] = jnp.zeros((layer.out_channels,), layer.dtype)
    return params


class _Conv(Layer):
    """The convolution shared by ``Conv1D``, ``Conv2D`` and ``Conv3D`` (``spatial`` axes
    after N, C); all run :func:`convolve`."""

    spatial: ClassVar[int]
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: Padding
    dilation: tuple[int, ...]
    groups: int
    bias: bool
    weight_init: Any
    dtype: Any

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, ...],
                 stride: int | tuple[int, ...] = 1, padding: Padding = 0, *,
                 dilation: int | tuple[int, ...] = 1, groups: int = 1, bias: bool = True,
                 init: Any = "he", dtype: Any = jnp.float32, weight_init: Any = None):
        owner, n = type(self).__name__, self.spatial
        init = renamed_argument(owner, "init", init, "he", "weight_init", weight_init)
        in_channels, out_channels, groups = _check_groups(owner, in_channels, out_channels,
                                                          groups)
        kernel_size = as_tuple(kernel_size, n, "kernel_size", owner)
        stride = as_tuple(stride, n, "stride", owner)
        dilation = as_tuple(dilation, n, "dilation", owner)
        resolve_padding(padding, (1,) * n, kernel_size, stride, dilation, owner)  # validate
        initializers.resolve(init, owner=owner)
        set_fields(self, in_channels=in_channels, out_channels=out_channels,
                   kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                   groups=groups, bias=flag(bias, "bias", owner), weight_init=init,
                   dtype=float_dtype(dtype, owner))

    def init(self, key: PRNGKey) -> Params:
        return _kernel_params(self, key, (self.out_channels, self.in_channels // self.groups,
                                          *self.kernel_size))

    def tensor_axes(self) -> dict[str, int]:
        """Split by output channels (``W``'s axis 0 and ``b``)."""
        return {"W": 0, "b": 0}

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        check_params(self, params)
        check_float(self, x)
        check_shape(self, x, ("N", self.in_channels, *spatial_axes(self.spatial)))
        pads = resolve_padding(self.padding, x.shape[2:], self.kernel_size, self.stride,
                               self.dilation, type(self).__name__)
        check_window_fits(self, x.shape, self.kernel_size, self.stride, self.dilation, pads)
        return convolve(x, params["W"], params["b"] if self.bias else None, stride=self.stride,
                        pads=pads, dilation=self.dilation, groups=self.groups)


class Conv2D(_Conv):
    """2-D convolution (cross-correlation, as in PyTorch) over ``(N, C, H, W)`` inputs.

    Args:
      in_channels, out_channels: channel counts C_in and C_out.
      kernel_size, stride, dilation: an int or a pair ``(h, w)``.
      padding: an int or a pair (zeros on both sides), ``"valid"`` (none) or ``"same"``
        (``ceil(H / stride)`` outputs; ``total // 2`` before, the rest after).
      groups: split channels into this many independent groups; must divide both counts.
      bias: whether to add ``b``.
      init: initialiser of ``W`` by name or function (fans count the kernel window).
      dtype: dtype of the params (float32 by default).

    Params: ``W (out_channels, in_channels // groups, kh, kw)``, ``b (out_channels,)``.
    Shapes: ``x (N, in_channels, H, W) -> y (N, out_channels, H_out, W_out)`` with
    ``H_out = (H + pad_h - dilation_h * (kh - 1) - 1) // stride_h + 1``.
    """

    spatial: ClassVar[int] = 2


class Conv3D(_Conv):
    """3-D convolution (cross-correlation, as ``torch.nn.Conv3d``) over ``(N, C, D, H, W)``
    volumes.

    Args: as :class:`Conv2D`, each an int or a triple ``(d, h, w)``.

    Params: ``W (out_channels, in_channels // groups, kd, kh, kw)``, ``b (out_channels,)``.
    Shapes: ``x (N, in_channels, D, H, W) -> y (N, out_channels, D_out, H_out, W_out)``,
    each axis as :class:`Conv2D`'s.
    """

    spatial: ClassVar[int] = 3


class Conv1D(_Conv):
    """1-D convolution (cross-correlation, as ``torch.nn.Conv1d``) over ``(N, C, L)`` inputs.

    Args: as :class:`Conv2D`, each an int (or a 1-tuple); ``padding`` an int, ``"valid"``
    or ``"same"``.

    Params: ``W (out_channels, in_channels // groups, k)``, ``b (out_channels,)``.
    Shapes: ``x (N, in_channels, L) -> y (N, out_channels, L_out)`` with
    ``L_out = (L + pad - dilation * (k - 1) - 1) // stride + 1``.
    """

    spatial: ClassVar[int] = 1


def convolve(x: Array, w: Array, b: Array | None, *, stride: tuple[int, ...],
             pads: tuple[tuple[int, int], ...], dilation: tuple[int, ...], groups: int) -> Array:
    """Cross-correlation of ``x (N, C, *spatial)`` with ``w (O, C // groups, *kernel)``, plus
    an optional bias ``(O,)``, as PyTorch's ``conv1d`` / ``conv2d`` / ``conv3d``.

    An ungrouped 2-D convolution lowered for the CPU runs as one matmul over channels-last
    patches (:func:`conv_as_matmul`), which XLA:CPU runs faster than its convolution;
    everything else (1-D, where XLA's convolution measured faster, 3-D, groups, other
    platforms) runs ``lax.conv_general_dilated``. The choice is made per platform at
    lowering (``lax.platform_dependent``), so an export for several platforms carries each
    its own formulation.
    """
    x, w = promote(x, w)  # bfloat16 inputs with float32 params (and the reverse), as Linear

    def xla(x, w):
        return lax.conv_general_dilated(x, w, window_strides=stride, padding=pads,
                                        rhs_dilation=dilation, feature_group_count=groups)

    def im2col(x, w):
        return conv_as_matmul(x.transpose(0, 2, 3, 1), w, stride, pads, dilation
                              ).transpose(0, 3, 1, 2)

    if x.ndim == 4 and groups == 1:
        # Chosen by the platform the computation is lowered for, not the one tracing it:
        # a function exported on a CPU for CUDA (jax.export) runs XLA's convolution there.
        y = lax.platform_dependent(x, w, cpu=im2col, default=xla)
    else:
        y = xla(x, w)
    return y + b.reshape(-1, *(1,) * (x.ndim - 2)) if b is not None else y


class _ConvTranspose(Layer):
    """The transpose (gradient) of a convolution over ``spatial`` axes after N, C, as
    ``torch.nn.ConvTranspose1d/2d/3d``; ``ConvTranspose1D/2D/3D`` fix ``spatial``.

    Args:
      in_channels, out_channels: channel counts C_in and C_out.
      kernel_size, stride, dilation: an int or a tuple of one per spatial axis.
      padding: an int or a tuple: ``dilation * (k - 1) - padding`` zeros are added around
        the stride-dilated input (PyTorch's meaning).
      output_padding: an int or a tuple, smaller than ``stride`` or ``dilation``: extra
        outputs at the end of each axis, to reach the input size of the strided
        convolution this one inverts.
      groups, bias, init, dtype: as :class:`Conv2D`.

    Params: ``W (in_channels, out_channels // groups, *kernel_size)`` (PyTorch's layout),
    ``b (out_channels,)``.
    Shapes: ``x (N, in_channels, *spatial) -> y (N, out_channels, *spatial_out)``, each
    ``out = (size - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1``.
    """

    spatial: ClassVar[int]
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    output_padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    bias: bool
    weight_init: Any
    dtype: Any

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, ...],
                 stride: int | tuple[int, ...] = 1, padding: int | tuple[int, ...] = 0, *,
                 output_padding: int | tuple[int, ...] = 0,
                 dilation: int | tuple[int, ...] = 1, groups: int = 1, bias: bool = True,
                 init: Any = "he", dtype: Any = jnp.float32, weight_init: Any = None):
        owner, n = type(self).__name__, self.spatial
        init = renamed_argument(owner, "init", init, "he", "weight_init", weight_init)
        in_channels, out_channels, groups = _check_groups(owner, in_channels, out_channels,
                                                          groups)
        kernel_size = as_tuple(kernel_size, n, "kernel_size", owner)
        stride = as_tuple(stride, n, "stride", owner)
        dilation = as_tuple(dilation, n, "dilation", owner)
        if isinstance(padding, str) or isinstance(output_padding, str):
            raise ArgumentError(f"{owner}: padding and output_padding must be ints or tuples, "
                                f"received {padding!r} and {output_padding!r}")
        pads = resolve_padding(padding, (1,) * n, kernel_size, stride, dilation, owner)
        extra = resolve_padding(output_padding, (1,) * n, kernel_size, stride, dilation, owner)
        if any(e >= max(s, d) for (e, _), s, d in zip(extra, stride, dilation)):
            raise ArgumentError(f"{owner}: output_padding {output_padding!r} must be smaller "
                                f"than stride {stride} or dilation {dilation}")
        initializers.resolve(init, owner=owner)
        set_fields(self, in_channels=in_channels, out_channels=out_channels,
                   kernel_size=kernel_size, stride=stride, padding=tuple(p for p, _ in pads),
                   output_padding=tuple(e for e, _ in extra), dilation=dilation, groups=groups,
                   bias=flag(bias, "bias", owner), weight_init=init,
                   dtype=float_dtype(dtype, owner))

    def init(self, key: PRNGKey) -> Params:
        return _kernel_params(self, key, (self.in_channels, self.out_channels // self.groups,
                                          *self.kernel_size))

    def tensor_axes(self) -> dict[str, int]:
        """Split by output channels (``W``'s axis 1 and ``b``)."""
        return {"W": 1, "b": 0}

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        check_params(self, params)
        check_float(self, x)
        n = self.spatial
        check_shape(self, x, ("N", self.in_channels, *spatial_axes(n)))
        # A convolution of the stride-dilated input with the kernel flipped and its
        # in/out axes swapped within each group.
        g, kernel = self.groups, self.kernel_size
        w = params["W"].reshape(g, self.in_channels // g, self.out_channels // g, *kernel)
        w = jnp.swapaxes(w, 1, 2).reshape(self.out_channels, self.in_channels // g, *kernel)
        w = jnp.flip(w, axis=tuple(range(2, 2 + n)))
        pads = [(d * (k - 1) - p, d * (k - 1) - p + e) for k, p, e, d in
                zip(kernel, self.padding, self.output_padding, self.dilation)]
        sizes = [(size - 1) * s + lo + hi - d * (k - 1) + 1 for size, s, (lo, hi), k, d in
                 zip(x.shape[2:], self.stride, pads, kernel, self.dilation)]
        if min(sizes) < 1:
            raise ShapeError(name_of(self), f"expected an input whose output is not empty, "
                             f"received {tuple(x.shape)} (output size {tuple(sizes)} with "
                             f"padding {self.padding})")
        x, w = promote(x, w)
        y = lax.conv_general_dilated(x, w, window_strides=(1,) * n, padding=pads,
                                     lhs_dilation=self.stride, rhs_dilation=self.dilation,
                                     feature_group_count=g)
        return y + params["b"].reshape(-1, *(1,) * n) if self.bias else y


class ConvTranspose1D(_ConvTranspose):
    """The transpose of a 1-D convolution over ``(N, C, L)`` inputs, as
    ``torch.nn.ConvTranspose1d``. Args, params and shapes as :class:`_ConvTranspose` with
    one spatial axis: ``W (in_channels, out_channels // groups, k)``."""

    spatial: ClassVar[int] = 1


class ConvTranspose2D(_ConvTranspose):
    """The transpose (gradient) of a 2-D convolution, as ``torch.nn.ConvTranspose2d``.

    Args:
      in_channels, out_channels: channel counts C_in and C_out.
      kernel_size, stride, dilation: an int or a pair.
      padding: an int or a pair: ``dilation * (k - 1) - padding`` zeros are added around
        the stride-dilated input (PyTorch's meaning).
      output_padding: an int or a pair, smaller than ``stride`` or ``dilation``: extra rows
        and columns on the bottom and right, to reach the input size of the strided
        convolution this one inverts.
      groups, bias, init, dtype: as :class:`Conv2D`.

    Params: ``W (in_channels, out_channels // groups, kh, kw)`` (PyTorch's layout),
    ``b (out_channels,)``.
    Shapes: ``x (N, in_channels, H, W) -> y (N, out_channels, H_out, W_out)`` with
    ``H_out = (H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1``.
    """

    spatial: ClassVar[int] = 2


class ConvTranspose3D(_ConvTranspose):
    """The transpose of a 3-D convolution over ``(N, C, D, H, W)`` volumes, as
    ``torch.nn.ConvTranspose3d``. Args, params and shapes as :class:`ConvTranspose2D` with
    three spatial axes: ``W (in_channels, out_channels // groups, kd, kh, kw)``."""

    spatial: ClassVar[int] = 3


def promote(x: Array, w: Array) -> tuple[Array, Array]:
    """``x`` and ``w`` in their promoted dtype: ``lax.conv_general_dilated`` takes one dtype,
    where a matmul promotes mixed ones itself."""
    dtype = jnp.result_type(x, w)
    return x.astype(dtype), w.astype(dtype)


def conv_as_matmul(x: Array, w: Array, stride: tuple[int, int],
                   pads: tuple[tuple[int, int], ...], dilation: tuple[int, int]) -> Array:
    """Convolution as one matrix product over the input's patches (im2col), channels last.

    On XLA:CPU this forward and its two backward products take 0.21x (1 -> 32 channels,
    28x28) and 0.69x (32 -> 64, 13x13) the time of ``lax.conv_general_dilated`` on the
    benchmark CNN's layers (``benchmarks/conv_formulations.py``): XLA:CPU's matmul
    kernels use every core; its convolution kernels do not.

    Args:
      x: ``(N, H, W, C)`` input, channels last.
      w: ``(O, C, kh, kw)`` kernel, as :class:`Conv2D` holds it.
      stride, dilation: pairs; pads: ``((top, bottom), (left, right))``.

    Returns:
      ``(N, H_out, W_out, O)``.
    """
    out_channels, channels, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    n, h, width, _ = x.shape
    ho = (h - dh * (kh - 1) - 1) // sh + 1
    wo = (width - dw * (kw - 1) - 1) // sw + 1
    taps = [lax.slice(x, (0, i * dh, j * dw, 0),
                      (n, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, channels),
                      (1, sh, sw, 1))
            for i in range(kh) for j in range(kw)]
    # Patch features ordered (i, j, c), matching the kernel transposed to (kh, kw, C, O).
    patches = jnp.concatenate(taps, axis=-1) if len(taps) > 1 else taps[0]
    kernel = w.transpose(2, 3, 1, 0).reshape(kh * kw * channels, out_channels)
    # A 2-D product: its backward then contracts the rows in place, where a 4-D one makes
    # XLA copy the output gradient into a transposed layout first (a third of the step).
    rows = patches.reshape(n * ho * wo, kh * kw * channels)
    return (rows @ kernel).reshape(n, ho, wo, out_channels)


def check_window_fits(layer: Layer, shape: tuple[int, ...], kernel: tuple[int, ...],
                      stride: tuple[int, ...], dilation: tuple[int, ...],
                      pads: tuple[tuple[int, int], ...]) -> None:
    """Raise ShapeError when the (padded) input is smaller than the kernel's window."""
    out = [conv_output_size(size, k, s, d, p)
           for size, k, s, d, p in zip(shape[2:], kernel, stride, dilation, pads)]
    if min(out) < 1:
        window = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        padded = tuple(size + p[0] + p[1] for size, p in zip(shape[2:], pads))
        axes = "(" + ", ".join(spatial_axes(len(kernel))) + (",)" if len(kernel) == 1 else ")")
        raise ShapeError(type(layer).__name__, f"expected input of spatial size {axes} at "
                         f"least {window} after padding, received {tuple(shape)} (padded "
                         f"to {padded})")
