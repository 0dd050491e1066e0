"""How to write the sequence layers' hot loops on XLA:CPU: measured, not guessed.

Times the gradient of ``sum(sin(layer(x)))`` (forward and backward) on the shapes of the
``lstm`` and ``convseq`` workloads of benchmarks/sequence_peers.py, interleaved round by
round:

lstm     (N, T, in, H) = (32, 64, 64, 256): the input projection of every step hoisted out
         of the scan into one product; per step ``x_t W_ih + h W_hh`` (two products);
         per step ``[x_t, h] @ [W_ih; W_hh]`` (one product, what ``nn.LSTM`` does); one
         example's scan vmapped over the batch (Equinox's way); each also unrolled 4x.
conv1d   (N, C, L) = (32, 64, 64), two layers k5 to 128 channels: XLA's 1-D convolution
         (what ``nn.Conv1D`` does) against im2col through a height-1 2-D convolution.

Run: python benchmarks/sequence_formulations.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import lax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import interleaved, machine, median
from minitorch.nn.conv import conv_as_matmul

N, T, IN, H = 32, 64, 64, 256


def _lstm_cell(z, c):
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def _scan(cell, xs, unroll, batch=(N,)):
    zeros = jnp.zeros((*batch, H))
    return lax.scan(cell, (zeros, zeros), xs, unroll=unroll)[1]


def hoisted(p, x, unroll=1):
    inputs = (x @ p["w_ih"] + p["b"]).swapaxes(0, 1)

    def cell(carry, z):
        h, c = _lstm_cell(z + carry[0] @ p["w_hh"], carry[1])
        return (h, c), h

    return _scan(cell, inputs, unroll).swapaxes(0, 1)


def two_products(p, x, unroll=1):
    def cell(carry, x_t):
        h, c = _lstm_cell(x_t @ p["w_ih"] + carry[0] @ p["w_hh"] + p["b"], carry[1])
        return (h, c), h

    return _scan(cell, x.swapaxes(0, 1), unroll).swapaxes(0, 1)


def one_product(p, x, unroll=1):
    w = jnp.concatenate([p["w_ih"], p["w_hh"]])

    def cell(carry, x_t):
        h, c = _lstm_cell(jnp.concatenate([x_t, carry[0]], -1) @ w + p["b"], carry[1])
        return (h, c), h

    return _scan(cell, x.swapaxes(0, 1), unroll).swapaxes(0, 1)


def vmapped(p, x, unroll=1):
    def one(xs):
        def cell(carry, x_t):
            h, c = _lstm_cell(x_t @ p["w_ih"] + carry[0] @ p["w_hh"] + p["b"], carry[1])
            return (h, c), h

        return _scan(cell, xs, unroll, batch=())

    return jax.vmap(one)(x)


def conv_xla(x, w):
    return lax.conv_general_dilated(x, w, (1,), ((2, 2),))


def conv_im2col(x, w):
    y = conv_as_matmul(x[:, :, None].transpose(0, 2, 3, 1), w[:, :, None], (1, 1),
                       ((0, 0), (2, 2)), (1, 1))
    return y.transpose(0, 3, 1, 2)[:, :, 0]


def _grad_runner(fn, *args):
    grad = jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(fn(*a))), argnums=tuple(range(len(args)))))
    return lambda: grad(*args)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    keys = jax.random.split(jax.random.key(0), 6)
    x = jax.random.normal(keys[0], (N, T, IN))
    p = {"w_ih": 0.05 * jax.random.normal(keys[1], (IN, 4 * H)),
         "w_hh": 0.05 * jax.random.normal(keys[2], (H, 4 * H)), "b": jnp.zeros(4 * H)}
    lstm = {f"{fn.__name__}{' unroll 4' if u > 1 else ''}":
            _grad_runner(lambda p, x, fn=fn, u=u: fn(p, x, u), p, x)
            for fn in (hoisted, two_products, one_product, vmapped) for u in (1, 4)}
    xc = jax.random.normal(keys[3], (N, 64, 64))
    w1, w2 = (0.1 * jax.random.normal(k, s) for k, s in ((keys[4], (128, 64, 5)),
                                                          (keys[5], (128, 128, 5))))
    conv = {name: _grad_runner(lambda x, a, b, f=f: f(jax.nn.relu(f(x, a)), b), xc, w1, w2)
            for name, f in (("xla conv1d", conv_xla), ("im2col via 2-D", conv_im2col))}
    print(f"machine: {machine()}")
    for title, runs in (("lstm", lstm), ("conv1d", conv)):
        times = interleaved(runs, rounds=args.rounds, repeats=5)
        base = median(next(iter(times.values())))
        print(f"{title} (forward + backward, median of {args.rounds} rounds):")
        for name, t in times.items():
            print(f"  {name:22s} {1e3 * median(t):7.1f} ms  {median(t) / base:5.2f}x")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
