"""Max and average pooling over NCL, NCHW and NCDHW inputs, as ``torch.nn.MaxPool1d/2d/3d``
and ``AvgPool1d/2d/3d``.

One pooling for every number of spatial axes: non-overlapping windows reduce channels-last
tiles, any other window runs ``lax.reduce_window``; the 1/2/3-D classes fix ``spatial``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax.numpy as jnp
from jax import lax

from minitorch.errors import ArgumentError
from minitorch.nn.checks import check_float, check_params, check_shape
from minitorch.nn.conv import check_window_fits
from minitorch.nn.core import Array, Layer, Params, PRNGKey, set_fields
from minitorch.nn.geometry import Padding, resolve_padding, spatial_axes
from minitorch.nn.reshape import reshape_examples
from minitorch.validate import as_tuple


class _Pool(Layer):
    spatial: ClassVar[int]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: Padding

    def __init__(self, kernel_size: int | tuple[int, ...],
                 stride: int | tuple[int, ...] | None = None, padding: Padding = 0):
        owner, n = type(self).__name__, self.spatial
        kernel_size = as_tuple(kernel_size, n, "kernel_size", owner)
        stride = kernel_size if stride is None else as_tuple(stride, n, "stride", owner)
        pads = resolve_padding(padding, (1,) * n, kernel_size, stride, (1,) * n, owner)
        too_wide = any(p > k // 2 for (p, _), k in zip(pads, kernel_size))
        if not isinstance(padding, str) and too_wide:
            raise ArgumentError(f"{owner}: padding {padding!r} must be at most half the kernel "
                             f"size {kernel_size}")
        set_fields(self, kernel_size=kernel_size, stride=stride, padding=padding)

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        check_params(self, params)
        check_float(self, x)
        n = self.spatial
        check_shape(self, x, ("N", "C", *spatial_axes(n)))
        pads = resolve_padding(self.padding, x.shape[2:], self.kernel_size, self.stride,
                               (1,) * n, type(self).__name__)
        check_window_fits(self, x.shape, self.kernel_size, self.stride, (1,) * n, pads)
        if self.stride == self.kernel_size and not any(map(any, pads)):
            return self._pool_tiles(x)
        return self._reduce_window(x, ((0, 0), (0, 0), *pads), self.kernel_size, self.stride)

    def _pool_tiles(self, x: Array) -> Array:
        """Non-overlapping windows: a reshape and a reduction over channels-last tiles.
        XLA:CPU runs it, forward and backward, in 0.27x the time of a reduce_window and
        0.23x that of the same reduction over NCHW tiles on the benchmark CNN's first
        pooling (benchmarks/conv_formulations.py); the transposes cancel against a
        neighbouring convolution's."""
        n, kernel = self.spatial, self.kernel_size
        batch, channels, *sizes = x.shape
        whole = (slice(None), slice(None), *(slice(0, s // k * k) for s, k in zip(sizes, kernel)))
        last = (0, *range(2, 2 + n), 1)  # channels last
        cropped = x[whole].transpose(last)
        tiled = [d for size, k in zip(sizes, kernel) for d in (size // k, k)]
        tiles = reshape_examples(cropped, (batch, *tiled, channels))
        pooled = self._reduce_tiles(tiles, tuple(range(2, 2 + 2 * n, 2)))
        return pooled.transpose(0, n + 1, *range(1, n + 1))

    def _reduce_tiles(self, tiles: Array, axes: tuple[int, ...]) -> Array:
        raise NotImplementedError

    def _reduce_window(self, x: Array, pads: tuple[tuple[int, int], ...],
                       kernel: tuple[int, ...], stride: tuple[int, ...]) -> Array:
        raise NotImplementedError


def _window(kernel: tuple[int, ...], stride: tuple[int, ...]) -> dict:
    return {"window_dimensions": (1, 1, *kernel), "window_strides": (1, 1, *stride)}


class MaxPool2D(_Pool):
    """Maximum over ``kernel_size`` windows; padding counts as ``-inf``.

    Args:
      kernel_size: an int or a pair.
      stride: an int or a pair; defaults to ``kernel_size``.
      padding: an int or a pair (at most half the kernel), ``"same"`` or ``"valid"``.

    Shapes: ``x (N, C, H, W) -> y (N, C, H_out, W_out)``,
    ``H_out = (H + 2 * pad_h - kh) // stride_h + 1`` (floor, as PyTorch).
    """

    def _reduce_tiles(self, tiles: Array, axes: tuple[int, ...]) -> Array:
        return tiles.max(axis=axes)

    spatial: ClassVar[int] = 2

    def _reduce_window(self, x: Array, pads: tuple[tuple[int, int], ...],
                       kernel: tuple[int, ...], stride: tuple[int, ...]) -> Array:
        # A Python scalar init value: lax.reduce_window then emits reduce_window_max, which
        # has a JVP rule under jit (an array init value becomes a tracer that cannot be
        # linearised).
        return lax.reduce_window(x, -jnp.inf, lax.max, padding=pads, **_window(kernel, stride))


class AvgPool2D(_Pool):
    """Mean over ``kernel_size`` windows; padded zeros count (PyTorch's ``count_include_pad``).

    Args and shapes as :class:`MaxPool2D`.
    """

    def _reduce_tiles(self, tiles: Array, axes: tuple[int, ...]) -> Array:
        return tiles.mean(axis=axes)

    spatial: ClassVar[int] = 2

    def _reduce_window(self, x: Array, pads: tuple[tuple[int, int], ...],
                       kernel: tuple[int, ...], stride: tuple[int, ...]) -> Array:
        total = lax.reduce_window(x, 0.0, lax.add, padding=pads, **_window(kernel, stride))
        return total / math.prod(kernel)


class MaxPool1D(MaxPool2D):
    """Maximum over ``kernel_size`` windows of an ``(N, C, L)`` input; padding counts as
    ``-inf``. Args as :class:`MaxPool2D`, each an int (or a 1-tuple).

    Shapes: ``x (N, C, L) -> y (N, C, L_out)``, ``L_out = (L + 2 * pad - k) // stride + 1``.
    """

    spatial: ClassVar[int] = 1


class AvgPool1D(AvgPool2D):
    """Mean over ``kernel_size`` windows of an ``(N, C, L)`` input; padded zeros count.
    Args and shapes as :class:`MaxPool1D`."""

    spatial: ClassVar[int] = 1


class MaxPool3D(MaxPool2D):
    """Maximum over ``kernel_size`` windows of an ``(N, C, D, H, W)`` volume; padding counts
    as ``-inf``. Args as :class:`MaxPool2D`, each an int or a triple.

    Shapes: ``x (N, C, D, H, W) -> y (N, C, D_out, H_out, W_out)``, each axis as
    :class:`MaxPool2D`'s.
    """

    spatial: ClassVar[int] = 3


class AvgPool3D(AvgPool2D):
    """Mean over ``kernel_size`` windows of an ``(N, C, D, H, W)`` volume; padded zeros
    count. Args and shapes as :class:`MaxPool3D`."""

    spatial: ClassVar[int] = 3
