"""``MaxPool2D`` and ``AvgPool2D`` over NCHW inputs, as ``torch.nn.MaxPool2d`` / ``AvgPool2d``."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
from jax import lax

from minitorch.nn.conv import check_window_fits
from minitorch.nn.core import (
    Array,
    Layer,
    Padding,
    Params,
    PRNGKey,
    as_pair,
    check_float,
    check_params,
    check_shape,
    reshape_examples,
    resolve_padding,
    set_fields,
)


@dataclasses.dataclass(frozen=True, init=False)
class _Pool2D(Layer):
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: Padding

    def __init__(self, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] | None = None, padding: Padding = 0):
        owner = type(self).__name__
        kernel_size = as_pair(kernel_size, "kernel_size", owner)
        stride = kernel_size if stride is None else as_pair(stride, "stride", owner)
        pads = resolve_padding(padding, (1, 1), kernel_size, stride, (1, 1), owner)
        too_wide = any(p > k // 2 for (p, _), k in zip(pads, kernel_size))
        if not isinstance(padding, str) and too_wide:
            raise ValueError(f"{owner}: padding {padding!r} must be at most half the kernel "
                             f"size {kernel_size}")
        set_fields(self, kernel_size=kernel_size, stride=stride, padding=padding)

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        check_params(self, params)
        check_float(self, x)
        check_shape(self, x, ("N", "C", "H", "W"))
        pads = resolve_padding(self.padding, x.shape[2:], self.kernel_size, self.stride,
                               (1, 1), type(self).__name__)
        check_window_fits(self, x.shape, self.kernel_size, self.stride, (1, 1), pads)
        if self.stride == self.kernel_size and not any(map(any, pads)):
            # Non-overlapping windows: a reshape and a reduction over channels-last tiles,
            # which XLA:CPU runs and differentiates 3-7x faster than a reduce_window or the
            # same reduction over NCHW tiles (benchmarks/conv_formulations.py); the
            # transposes cancel against a neighbouring Conv2D's.
            (kh, kw), (n, c, h, w) = self.kernel_size, x.shape
            cropped = x[:, :, : h // kh * kh, : w // kw * kw].transpose(0, 2, 3, 1)
            tiles = reshape_examples(cropped, (n, h // kh, kh, w // kw, kw, c))
            return self._reduce_tiles(tiles).transpose(0, 3, 1, 2)
        return self._reduce_window(x, ((0, 0), (0, 0), *pads))

    def _reduce_tiles(self, tiles: Array) -> Array:
        raise NotImplementedError

    def _reduce_window(self, x: Array, pads: tuple[tuple[int, int], ...]) -> Array:
        raise NotImplementedError

    def _window(self) -> dict:
        return {"window_dimensions": (1, 1, *self.kernel_size),
                "window_strides": (1, 1, *self.stride)}


@dataclasses.dataclass(frozen=True, init=False)
class MaxPool2D(_Pool2D):
    """Maximum over ``kernel_size`` windows; padding counts as ``-inf``.

    Args:
      kernel_size: an int or a pair.
      stride: an int or a pair; defaults to ``kernel_size``.
      padding: an int or a pair (at most half the kernel), ``"same"`` or ``"valid"``.

    Shapes: ``x (N, C, H, W) -> y (N, C, H_out, W_out)``,
    ``H_out = (H + 2 * pad_h - kh) // stride_h + 1`` (floor, as PyTorch).
    """

    def _reduce_tiles(self, tiles: Array) -> Array:
        return tiles.max(axis=(2, 4))

    def _reduce_window(self, x: Array, pads: tuple[tuple[int, int], ...]) -> Array:
        # A Python scalar init value: lax.reduce_window then emits reduce_window_max, which
        # has a JVP rule under jit (an array init value becomes a tracer that cannot be
        # linearised).
        return lax.reduce_window(x, -jnp.inf, lax.max, padding=pads, **self._window())


@dataclasses.dataclass(frozen=True, init=False)
class AvgPool2D(_Pool2D):
    """Mean over ``kernel_size`` windows; padded zeros count (PyTorch's ``count_include_pad``).

    Args and shapes as :class:`MaxPool2D`.
    """

    def _reduce_tiles(self, tiles: Array) -> Array:
        return tiles.mean(axis=(2, 4))

    def _reduce_window(self, x: Array, pads: tuple[tuple[int, int], ...]) -> Array:
        total = lax.reduce_window(x, 0.0, lax.add, padding=pads, **self._window())
        return total / math.prod(self.kernel_size)
