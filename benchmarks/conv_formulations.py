"""Formulations of Conv2D and of non-overlapping pooling, forward and backward, compared.

Shapes: the benchmark CNN's layers (benchmarks/workloads.py, batch 128): conv 1->32 on
28x28 and 32->64 on 13x13 (3x3 kernels), and 2x2 max pooling of 128x32x26x26.

- conv: ``nn.conv.conv_as_matmul`` (im2col: one matrix product over the input's patches,
  channels last, what ``Conv2D`` runs on the CPU) against ``lax.conv_general_dilated``
  (NCHW, what it runs on accelerators and for grouped convolutions).
- pool: the reshape-and-reduce over channels-last tiles that ``MaxPool2D`` runs for
  non-overlapping windows, against ``lax.reduce_window`` and against the same reshape over
  NCHW tiles.

Each candidate is the jit-compiled gradient of ``sum(f(x, w) ** 2)`` (forward and both
backward products), timed interleaved; ratios are medians of per-round ratios.

    python -m benchmarks.conv_formulations [--rounds 15]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from jax import lax

from benchmarks.common import interleaved, machine, median, ratio_spread
from minitorch.nn.conv import conv_as_matmul

CONVS = {"conv 1->32 28x28": ((128, 1, 28, 28), (32, 1, 3, 3)),
         "conv 32->64 13x13": ((128, 32, 13, 13), (64, 32, 3, 3))}
POOL = (128, 32, 26, 26)


def im2col(x, w):
    y = conv_as_matmul(x.transpose(0, 2, 3, 1), w, (1, 1), ((0, 0), (0, 0)), (1, 1))
    return y.transpose(0, 3, 1, 2)


def xla_conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                    dimension_numbers=("NCHW", "OIHW", "NCHW"))


def pool_channels_last(x):
    n, c, h, w = x.shape
    tiles = x.transpose(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c)
    return tiles.max(axis=(2, 4)).transpose(0, 3, 1, 2)


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
        times = interleaved({"xla": gradient(xla_conv, x, w), "im2col": gradient(im2col, x, w)},
                            rounds=args.rounds)
        ratio, spread = ratio_spread(times, "im2col", "xla")
        print(f"| {name} | lax.conv_general_dilated {median(times['xla']) * 1e3:.1f} | "
              f"im2col | **{ratio:.2f}** (+-{spread:.2f}) |")
    x = jax.random.normal(keys[2], POOL)
    times = interleaved({"reduce_window": gradient(pool_reduce_window, x),
                         "nchw": gradient(pool_nchw, x),
                         "channels_last": gradient(pool_channels_last, x)}, rounds=args.rounds)
    for candidate in ("channels_last", "nchw"):
        ratio, spread = ratio_spread(times, candidate, "reduce_window")
        print(f"| maxpool 2x2 of {POOL} | reduce_window "
              f"{median(times['reduce_window']) * 1e3:.1f} | {candidate} tiles | "
              f"**{ratio:.2f}** (+-{spread:.2f}) |")


if __name__ == "__main__":
    main()
