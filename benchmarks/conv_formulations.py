"""Formulations of Conv2D and of non-overlapping pooling, forward and backward, compared.

Shapes: the benchmark CNN's layers (benchmarks/workloads.py, batch 128): conv 1->32 on
28x28 and 32->64 on 13x13 (3x3 kernels), and 2x2 max pooling of 128x32x26x26.

- conv: ``nn.conv.conv_as_matmul`` (im2col: one matrix product over the input's patches,
  channels last, what ``Conv2D`` runs on the CPU) against ``lax.conv_general_dilated``
  (NCHW, what it runs on accelerators and for grouped convolutions).
- conv, for AVX-512's 16 float32 lanes: the same im2col with the patch features
  zero-padded to a multiple of 16 (``im2col_lanes``).
- pool: against ``lax.reduce_window``, the reshape-and-reduce over channels-last tiles
  (what ``MaxPool2D`` runs for non-overlapping windows), the same over NCHW tiles, and
  the elementwise maxima of each tile's four corners, channels last
  (``pool_channels_last_maximum``; ``pool_channels_last_maximum_even`` with a gradient
  rule that splits ties evenly, as the tiles' reduction does).

Each candidate is the jit-compiled gradient of ``sum(f(x, w) ** 2)`` (forward and both
backward products), timed interleaved; ratios are medians of per-round ratios.

    python -m benchmarks.conv_formulations [--rounds 15]
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
from jax import lax

from benchmarks.common import interleaved, machine, median, ratio_spread
from minitorch.nn.conv import conv_as_matmul

CONVS = {"conv 1->32 28x28": ((128, 1, 28, 28), (32, 1, 3, 3)),
         "conv 32->64 13x13": ((128, 32, 13, 13), (64, 32, 3, 3))}
POOL = (128, 32, 26, 26)
LANES = 16  # float32 values in one AVX-512 register


def im2col(x, w):
    y = conv_as_matmul(x.transpose(0, 2, 3, 1), w, (1, 1), ((0, 0), (0, 0)), (1, 1))
    return y.transpose(0, 3, 1, 2)


def im2col_lanes(x, w):
    """im2col with the patch features zero-padded to a multiple of 16 (AVX-512's float32
    lanes): the product's contracted axis a whole number of vectors (9 -> 16 for one
    input channel; 288 is one already)."""
    out_channels, channels, kh, kw = w.shape
    n, _, h, width = x.shape
    x = x.transpose(0, 2, 3, 1)
    taps = [x[:, i:h - kh + 1 + i, j:width - kw + 1 + j] for i in range(kh) for j in range(kw)]
    features = kh * kw * channels
    pad = -features % LANES
    patches = jnp.concatenate([*taps, jnp.zeros((*taps[0].shape[:3], pad), x.dtype)], axis=-1)
    kernel = jnp.pad(w.transpose(2, 3, 1, 0).reshape(features, out_channels), ((0, pad), (0, 0)))
    rows = patches.reshape(-1, features + pad)
    y = (rows @ kernel).reshape(n, h - kh + 1, width - kw + 1, out_channels)
    return y.transpose(0, 3, 1, 2)


def xla_conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                    dimension_numbers=("NCHW", "OIHW", "NCHW"))


def pool_channels_last(x):
    n, c, h, w = x.shape
    tiles = x.transpose(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c)
    return tiles.max(axis=(2, 4)).transpose(0, 3, 1, 2)


def _corners(x):
    """The four corners of each 2x2 tile of ``x`` (N, C, H, W), channels last: 4 x (N, H/2,
    W/2, C)."""
    t = x.transpose(0, 2, 3, 1)
    return [t[:, i::2, j::2] for i in range(2) for j in range(2)]


def pool_channels_last_maximum(x):
    """The corners combined by elementwise maxima (``jnp.maximum``'s own derivative):
    every operation runs along whole channel vectors (32 floats: two AVX-512 registers)."""
    return functools.reduce(jnp.maximum, _corners(x)).transpose(0, 3, 1, 2)


@jax.custom_jvp
def maximum_of(*corners):
    """The elementwise maximum of equally shaped arrays, whose derivative splits a tie
    evenly among the equal maxima, as a reduction's ``max`` does."""
    return functools.reduce(jnp.maximum, corners)


@maximum_of.defjvp
def _maximum_of_jvp(primals, tangents):
    top = maximum_of(*primals)
    hits = [corner == top for corner in primals]
    count = sum(hit.astype(top.dtype) for hit in hits)
    picked = sum(jnp.where(hit, t, 0) for hit, t in zip(hits, tangents, strict=True))
    return top, picked / count


def pool_channels_last_maximum_even(x):
    """:func:`pool_channels_last_maximum` whose gradient splits ties evenly (:func:`maximum_of`)."""
    return maximum_of(*_corners(x)).transpose(0, 3, 1, 2)


def pool_nchw(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def pool_reduce_window(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


def gradient(f, *args):
    g = jax.jit(jax.grad(lambda *a: jnp.sum(f(*a) ** 2), argnums=tuple(range(len(args)))))
    return lambda: g(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(machine())
    print("| shapes | reference (ms) | candidate | candidate / reference |")
    print("| --- | --- | --- | --- |")
    keys = jax.random.split(jax.random.key(0), 3)
    for name, (x_shape, w_shape) in CONVS.items():
        x, w = jax.random.normal(keys[0], x_shape), jax.random.normal(keys[1], w_shape)
        times = interleaved({"xla": gradient(xla_conv, x, w), "im2col": gradient(im2col, x, w),
                             "im2col, 16 lanes": gradient(im2col_lanes, x, w)},
                            rounds=args.rounds)
        for candidate in ("im2col", "im2col, 16 lanes"):
            ratio, spread = ratio_spread(times, candidate, "xla")
            print(f"| {name} | lax.conv_general_dilated {median(times['xla']) * 1e3:.1f} | "
                  f"{candidate} | **{ratio:.2f}** (+-{spread:.2f}) |")
    x = jax.random.normal(keys[2], POOL)
    times = interleaved({"reduce_window": gradient(pool_reduce_window, x),
                         "nchw": gradient(pool_nchw, x),
                         "channels_last": gradient(pool_channels_last, x),
                         "channels_last maxima": gradient(pool_channels_last_maximum, x),
                         "channels_last maxima, even ties":
                             gradient(pool_channels_last_maximum_even, x)},
                        rounds=args.rounds)
    for candidate in ("channels_last", "channels_last maxima", "channels_last maxima, even ties",
                      "nchw"):
        ratio, spread = ratio_spread(times, candidate, "reduce_window")
        print(f"| maxpool 2x2 of {POOL} | reduce_window "
              f"{median(times['reduce_window']) * 1e3:.1f} | {candidate} tiles | "
              f"**{ratio:.2f}** (+-{spread:.2f}) |")


if __name__ == "__main__":
    main()
