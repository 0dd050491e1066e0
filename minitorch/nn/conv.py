"""``Conv2D``: 2-D cross-correlation over NCHW inputs, as ``torch.nn.Conv2d``."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from jax import lax

from minitorch.errors import ShapeError
from minitorch.nn import init as initializers
from minitorch.nn.core import (
    Array,
    Layer,
    Padding,
    Params,
    PRNGKey,
    as_pair,
    check_float,
    check_key,
    check_params,
    check_shape,
    conv_output_size,
    positive_int,
    resolve_padding,
    set_fields,
    split_key,
)


@dataclasses.dataclass(frozen=True, init=False)
class Conv2D(Layer):
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

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: Padding
    dilation: tuple[int, int]
    groups: int
    bias: bool
    weight_init: Any
    dtype: Any

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: Padding = 0, *,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
                 init: Any = "he", dtype: Any = jnp.float32):
        owner = "Conv2D"
        in_channels = positive_int(in_channels, "in_channels", owner)
        out_channels = positive_int(out_channels, "out_channels", owner)
        groups = positive_int(groups, "groups", owner)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{owner}: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        kernel_size = as_pair(kernel_size, "kernel_size", owner)
        stride, dilation = as_pair(stride, "stride", owner), as_pair(dilation, "dilation", owner)
        resolve_padding(padding, (1, 1), kernel_size, stride, dilation, owner)  # validate early
        initializers.resolve(init, owner=owner)
        set_fields(self, in_channels=in_channels, out_channels=out_channels,
                   kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                   groups=groups, bias=bool(bias), weight_init=init, dtype=jnp.dtype(dtype))

    def init(self, key: PRNGKey) -> Params:
        check_key(self, key, "init")
        w_key, _ = split_key(key, 2)
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        w_init = initializers.resolve(self.weight_init, in_axis=1, out_axis=0)
        params = {"W": initializers.make(w_init, w_key, shape, self.dtype, "Conv2D")}
        if self.bias:
            params["b"] = jnp.zeros((self.out_channels,), self.dtype)
        return params

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        check_params(self, params)
        check_float(self, x)
        check_shape(self, x, ("N", self.in_channels, "H", "W"))
        pads = resolve_padding(self.padding, x.shape[2:], self.kernel_size, self.stride,
                               self.dilation, "Conv2D")
        check_window_fits(self, x.shape, self.kernel_size, self.stride, self.dilation, pads)
        y = lax.conv_general_dilated(
            x, params["W"], window_strides=self.stride, padding=pads,
            rhs_dilation=self.dilation, dimension_numbers=("NCHW", "OIHW", "NCHW"),
            feature_group_count=self.groups)
        return y + params["b"][:, None, None] if self.bias else y


def check_window_fits(layer: Layer, shape: tuple[int, ...], kernel: tuple[int, int],
                      stride: tuple[int, int], dilation: tuple[int, int],
                      pads: tuple[tuple[int, int], ...]) -> None:
    """Raise ShapeError when the (padded) input is smaller than the kernel's window."""
    out = [conv_output_size(size, k, s, d, p)
           for size, k, s, d, p in zip(shape[2:], kernel, stride, dilation, pads)]
    if min(out) < 1:
        window = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        padded = tuple(size + p[0] + p[1] for size, p in zip(shape[2:], pads))
        raise ShapeError(type(layer).__name__, f"expected input of spatial size (H, W) at "
                         f"least {window} after padding, received {tuple(shape)} (padded "
                         f"to {padded})")
