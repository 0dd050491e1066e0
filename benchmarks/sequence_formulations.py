"""How to write the sequence layers' hot loops on XLA:CPU: measured, not guessed.

Times the gradient of ``sum(sin(layer(x)))`` (forward and backward) on the shapes of the
``lstm`` and ``convseq`` workloads of benchmarks/sequence_peers.py, interleaved round by
round:

lstm     (N, T, in, H) = (32, 64, 64, 256): the input projection of every step hoisted out
         of the scan into one product (and the same with its backward pass computing the
         weight gradients after the reverse scan, one product over all steps); per step
         ``x_t W_ih + h W_hh`` (two products); per step ``[x_t, h] @ [W_ih; W_hh]`` (one
         product); the same product computed gate-major, ``(W^T @ [x_t, h]^T)^T`` (what
         ``nn.LSTM`` does); one example's scan vmapped over the batch (Equinox's way); each
         also unrolled 4x.
gru      the same shapes, ``nn.GRU``'s two products per step, plain and gate-major.
conv1d   (N, C, L) = (32, 64, 64), two layers k5 to 128 channels: XLA's 1-D convolution
         (what ``nn.Conv1D`` does) against im2col through a height-1 2-D convolution.

and, where an effect shows only in a whole program, raw JAX's training step (Adam) of the
``gpt`` workload and the first compile of the ``convseq`` step:

gpt      LayerNorm's variance as the mean of ``(x - mean)**2`` or by ``jnp.var`` (what
         ``nn.LayerNorm`` does); attention from one fused QKV product split afterwards or
         with each projection straight into heads (what ``nn.MultiHeadAttention`` does).
embed    compile time of the convseq step (median of 5 fresh compiles) for three ways of
         giving out-of-range ids NaN rows: the gather's NaN fill, a select after a
         clamped gather, a NaN added to a clamped gather (what ``nn.Embedding`` does).

Run: python benchmarks/sequence_formulations.py [--rounds 9] [--sections lstm gru ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import sequence_peers as sp
from benchmarks.common import interleaved, machine, median
from benchmarks.peers import xent
from minitorch.nn.conv import conv_as_matmul
from minitorch.nn.recurrent import gate_product

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


def gate_major(p, x, unroll=1):
    w_t = jnp.concatenate([p["w_ih"], p["w_hh"]]).T

    def cell(carry, x_t):
        z = gate_product(w_t, jnp.concatenate([x_t, carry[0]], -1)) + p["b"]
        h, c = _lstm_cell(z, carry[1])
        return (h, c), h

    return _scan(cell, x.swapaxes(0, 1), unroll).swapaxes(0, 1)


def vmapped(p, x, unroll=1):
    def one(xs):
        def cell(carry, x_t):
            h, c = _lstm_cell(x_t @ p["w_ih"] + carry[0] @ p["w_hh"] + p["b"], carry[1])
            return (h, c), h

        return _scan(cell, xs, unroll, batch=())

    return jax.vmap(one)(x)


@jax.custom_vjp
def batched_weight_grads(p, x):
    """``hoisted``'s values, with a backward pass that leaves the weight gradients out of
    the reverse scan: it returns every step's gate cotangents, and the weight gradients
    are then one product each over all T x N rows (``sum_t h_{t-1}^T dz_t`` as
    ``H_prev^T @ dZ``), instead of a small product accumulated in every iteration."""
    return hoisted(p, x)


def _batched_forward(p, x):
    inputs = (x @ p["w_ih"] + p["b"]).swapaxes(0, 1)               # (T, N, 4H)

    def cell(carry, z_in):
        h, c = carry
        z = z_in + h @ p["w_hh"]
        return _lstm_cell(z, c), (h, c, z)

    zeros = jnp.zeros((x.shape[0], H))
    (_, _), (h_prev, c_prev, zs) = lax.scan(cell, (zeros, zeros), inputs)
    hs = jnp.concatenate([h_prev[1:], _lstm_cell(zs[-1], c_prev[-1])[0][None]])
    return hs.swapaxes(0, 1), (p, x, h_prev, c_prev, zs)


def _gate_cotangents(g, c_prev, zs, through_w_hh):
    """The reverse scan of both batched backward passes: every step's gate cotangents
    ``dz`` (T, N, 4H), carrying only ``dh`` (``through_w_hh(dz)``, the one product per
    step) and ``dc``; the weight gradients are left to the caller."""
    zeros = jnp.zeros(c_prev.shape[1:], c_prev.dtype)

    def back(carry, step):
        dh_next, dc_next = carry
        g_t, c, z = step
        dz, dc = jax.vjp(_lstm_cell, z, c)[1]((g_t + dh_next, dc_next))
        return (through_w_hh(dz), dc), dz

    return lax.scan(back, (zeros, zeros), (g.swapaxes(0, 1), c_prev, zs), reverse=True)[1]


def _batched_backward(residuals, g):
    p, x, h_prev, c_prev, zs = residuals
    dzs = _gate_cotangents(g, c_prev, zs, lambda dz: dz @ p["w_hh"].T)
    rows = dzs.reshape(-1, 4 * H)                                    # (T * N, 4H)
    xs = x.swapaxes(0, 1).reshape(-1, x.shape[-1])
    grads = {"w_ih": xs.T @ rows, "w_hh": h_prev.reshape(-1, H).T @ rows, "b": rows.sum(0)}
    return grads, (dzs @ p["w_ih"].T).swapaxes(0, 1)


batched_weight_grads.defvjp(_batched_forward, _batched_backward)


@jax.custom_vjp
def gate_major_batched(p, x):
    """``gate_major``'s values and products, with ``batched_weight_grads``' backward pass:
    the reverse scan carries only ``dh`` and ``dc`` (its one product per step,
    ``dz @ W_hh^T``, gate-major), and the weight gradient is one product over all T x N
    rows of ``[x_t, h_{t-1}]``."""
    return gate_major(p, x)


def _gate_major_forward(p, x):
    w_t = jnp.concatenate([p["w_ih"], p["w_hh"]]).T                   # (4H, IN + H)

    def cell(carry, x_t):
        h, c = carry
        v = jnp.concatenate([x_t, h], -1)
        z = gate_product(w_t, v) + p["b"]
        return _lstm_cell(z, c), (v, c, z)

    zeros = jnp.zeros((x.shape[0], H))
    (h_last, _), (vs, c_prev, zs) = lax.scan(cell, (zeros, zeros), x.swapaxes(0, 1))
    hs = jnp.concatenate([vs[1:, :, -H:], h_last[None]])
    return hs.swapaxes(0, 1), (w_t, vs, c_prev, zs)


def _gate_major_backward(residuals, g):
    w_t, vs, c_prev, zs = residuals
    w_hh = w_t[:, -H:]                                                 # (4H, H)
    dzs = _gate_cotangents(g, c_prev, zs, lambda dz: (w_hh.T @ dz.T).T)
    rows = dzs.reshape(-1, 4 * H)                                      # (T * N, 4H)
    dw = vs.reshape(-1, vs.shape[-1]).T @ rows                         # (IN + H, 4H)
    grads = {"w_ih": dw[:-H], "w_hh": dw[-H:], "b": rows.sum(0)}
    return grads, (dzs @ w_t[:, :-H]).swapaxes(0, 1)


gate_major_batched.defvjp(_gate_major_forward, _gate_major_backward)


def gru(layer_gates):
    def run(p, x):
        def cell(h, x_t):
            (x_r, x_z, x_n), (h_r, h_z, h_n) = (jnp.split(g, 3, axis=-1)
                                                for g in layer_gates(p, x_t, h))
            r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
            h = (1 - z) * jnp.tanh(x_n + r * h_n) + z * h
            return h, h

        return lax.scan(cell, jnp.zeros((N, H)), x.swapaxes(0, 1))[1].swapaxes(0, 1)

    return run


def gru_plain(p, x_t, h):
    return x_t @ p["w_ih"], h @ p["w_hh"]


def gru_gate_major(p, x_t, h):
    return gate_product(p["w_ih"].T, x_t), gate_product(p["w_hh"].T, h)


def conv_xla(x, w):
    return lax.conv_general_dilated(x, w, (1,), ((2, 2),))


def conv_im2col(x, w):
    y = conv_as_matmul(x[:, :, None].transpose(0, 2, 3, 1), w[:, :, None], (1, 1),
                       ((0, 0), (2, 2)), (1, 1))
    return y.transpose(0, 3, 1, 2)[:, :, 0]


def layer_norm_centered(x, p, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def attend_fused(x, b, causal):
    n, length, width = x.shape
    d = width // sp.HEADS
    qkv = (x @ b["qkv"] + b["qkv_b"]).reshape(n, length, 3, sp.HEADS, d)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    s = jnp.einsum("nlhd,nshd->nhls", q / np.sqrt(d), k)
    p = jax.nn.softmax(jnp.where(causal, s, -1e30), axis=-1)
    return jnp.einsum("nhls,nshd->nlhd", p, v).reshape(n, length, width) @ b["o"] + b["o_b"]


def gpt_steps() -> dict[str, Callable[[], object]]:
    w = sp.SEQUENCE_WORKLOADS["gpt"]
    runs = {}
    for ln_name, ln in (("mean((x - mean)**2)", layer_norm_centered),
                        ("jnp.var", sp._layer_norm)):
        for att_name, att in (("fused QKV", attend_fused), ("into heads", sp.attend_by_heads)):
            forward = sp.gpt_forward(w, ln, att)
            runs[f"{ln_name}, {att_name}"] = sp._functional_run(
                lambda p, x, y, f=forward: xent(f(p, x), y), sp.raw_params(w, jax.random.key(0)), w)
    return runs


def _clamped(table, ids):
    """``table[ids]`` with ids clamped into range, and where they were in range."""
    last = table.shape[0] - 1
    valid = ((ids >= 0) & (ids <= last))[..., None]
    return table.at[jnp.clip(ids, 0, last)].get(mode="promise_in_bounds"), valid


def _fill(table, ids):
    ids = jnp.where(ids < 0, table.shape[0], ids)
    return jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)


def _select(table, ids):
    rows, valid = _clamped(table, ids)
    return jnp.where(valid, rows, jnp.nan)


def _add(table, ids):
    rows, valid = _clamped(table, ids)
    return rows + jnp.where(valid, 0.0, jnp.nan)


# ``table[ids]`` with NaN rows for ids out of range, three ways
EMBEDDING_LOOKUPS = {"NaN fill in the gather": _fill, "select after the gather": _select,
                     "NaN added": _add}


def embedding_compiles(repeats: int) -> dict[str, float]:
    """Seconds to compile the convseq step (Adam) with each out-of-range id formulation."""
    w = sp.SEQUENCE_WORKLOADS["convseq"]

    def loss(name):
        return lambda p, ids, y: xent(
            sp.convseq_from_rows(p, EMBEDDING_LOOKUPS[name](p["embed"], ids)), y)

    params = sp.raw_params(w, jax.random.key(0))
    times: dict[str, list[float]] = {name: [] for name in EMBEDDING_LOOKUPS}
    for _ in range(repeats):
        for name in times:
            jax.clear_caches()
            step, args = sp.functional_step(loss(name), params, w)
            lowered = step.lower(*args)
            start = time.perf_counter()
            lowered.compile()
            times[name].append(time.perf_counter() - start)
    return {name: median(t) for name, t in times.items()}


def _grad_runner(fn, *args):
    grad = jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(fn(*a))), argnums=tuple(range(len(args)))))
    return lambda: grad(*args)


SECTIONS = ("lstm", "gru", "conv1d", "gpt", "embed")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    args = parser.parse_args()
    keys = jax.random.split(jax.random.key(0), 6)
    x = jax.random.normal(keys[0], (N, T, IN))
    p = {"w_ih": 0.05 * jax.random.normal(keys[1], (IN, 4 * H)),
         "w_hh": 0.05 * jax.random.normal(keys[2], (H, 4 * H)), "b": jnp.zeros(4 * H)}
    lstm = {f"{fn.__name__}{' unroll 4' if u > 1 else ''}":
            _grad_runner(lambda p, x, fn=fn, u=u: fn(p, x, u), p, x)
            for fn in (hoisted, two_products, one_product, gate_major, vmapped) for u in (1, 4)}
    lstm["hoisted, weight grads batched"] = _grad_runner(batched_weight_grads, p, x)
    lstm["gate_major, weight grads batched"] = _grad_runner(gate_major_batched, p, x)
    p_gru = {"w_ih": p["w_ih"][:, :3 * H], "w_hh": p["w_hh"][:, :3 * H]}
    grus = {name: _grad_runner(gru(gates), p_gru, x)
            for name, gates in (("two products", gru_plain), ("gate-major", gru_gate_major))}
    xc = jax.random.normal(keys[3], (N, 64, 64))
    w1, w2 = (0.1 * jax.random.normal(k, s) for k, s in ((keys[4], (128, 64, 5)),
                                                          (keys[5], (128, 128, 5))))
    conv = {name: _grad_runner(lambda x, a, b, f=f: f(jax.nn.relu(f(x, a)), b), xc, w1, w2)
            for name, f in (("xla conv1d", conv_xla), ("im2col via 2-D", conv_im2col))}
    print(f"machine: {machine()}")
    sections = (("lstm", "lstm", lambda: lstm, 5), ("gru", "gru", lambda: grus, 5),
                ("conv1d", "conv1d", lambda: conv, 5),
                ("gpt", "gpt training step (Adam)", gpt_steps, 2))
    for name, title, make_runs, repeats in sections:
        if name not in args.sections:
            continue
        runs = make_runs()
        times = interleaved(runs, rounds=args.rounds, repeats=repeats)
        base = median(next(iter(times.values())))
        print(f"{title}, median of {args.rounds} rounds:")
        for candidate, t in times.items():
            print(f"  {candidate:32s} {1e3 * median(t):7.1f} ms  {median(t) / base:5.2f}x")
    if "embed" not in args.sections:
        print(f"machine: {machine()}")
        return
    compiles = embedding_compiles(repeats=5)
    base = next(iter(compiles.values()))
    print("embedding lookup: first compile of the convseq step, median of 5:")
    for name, t in compiles.items():
        print(f"  {name:32s} {t:7.2f} s   {t / base:5.2f}x")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
