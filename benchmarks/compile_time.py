"""Compile time and memory at depth: the gpt workload's training step with its blocks as a
`Net` of copies (each block traced and compiled again) against `nn.Repeat` (one block
traced under a `lax.scan`), and `nn.Repeat(nn.Remat(block, "nothing"))`.

For each depth (2, 8, 24 blocks of benchmarks/sequence_peers.py's gpt: d_model 128, 4
heads, MLP 512, batch 32 x 64 tokens) and each stack, the step's first-call costs measured
separately through JAX's AOT stages (`jax.jit(step).trace(...)`, `.lower()`,
`.compile()`), the compiled step's temporaries (`memory_analysis().temp_size_in_bytes`),
and the step time (interleaved rounds, median). Each compile runs in a fresh jit, with
JAX's compilation cache off, so nothing is reused between measurements.

Run: python benchmarks/compile_time.py [--depths 2 8 24] [--rounds 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import interleaved, machine, median, ratio_spread
from minitorch import losses, nn

WIDTH, HEADS, MLP, VOCAB, BATCH, LENGTH = 128, 4, 512, 96, 32, 64
STACKS = ("unrolled", "repeat", "repeat+remat")


class Block(nn.Composite):
    norm1: nn.Layer
    attn: nn.Layer
    norm2: nn.Layer
    mlp: nn.Layer

    def forward(self, call, x):
        x = x + call("attn", call("norm1", x))
        return x + call("mlp", call("norm2", x))


class GPT(nn.Composite):
    tokens: nn.Layer
    positions: nn.Layer
    blocks: nn.Layer
    norm: nn.Layer
    head: nn.Layer

    def forward(self, call, ids):
        x = call("tokens", ids) + call("positions", jnp.arange(ids.shape[1]))
        return call("head", call("norm", call("blocks", x)))


def block() -> Block:
    return Block(nn.LayerNorm(WIDTH), nn.MultiHeadAttention(WIDTH, HEADS, causal=True),
                 nn.LayerNorm(WIDTH),
                 nn.Net([nn.Linear(WIDTH, MLP), nn.GELU(), nn.Linear(MLP, WIDTH)]))


def gpt(depth: int, stack: str) -> GPT:
    blocks: nn.Layer
    if stack == "unrolled":
        blocks = nn.Net([block() for _ in range(depth)])
    elif stack == "repeat":
        blocks = nn.Repeat(block(), depth)
    else:
        blocks = nn.Repeat(nn.Remat(block(), "nothing"), depth)
    return GPT(nn.Embedding(VOCAB, WIDTH), nn.Embedding(LENGTH, WIDTH), blocks,
               nn.LayerNorm(WIDTH), nn.Linear(WIDTH, VOCAB))


def step_of(model: GPT, opt: optax.GradientTransformation):
    def loss_fn(params, x, y):
        return losses.softmax_cross_entropy(model.apply(params, x), y)

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def first_call(depth: int, stack: str) -> dict:
    """Trace, lower and compile seconds of a fresh step, its temporaries, and a runner."""
    model, opt = gpt(depth, stack), optax.adam(1e-3)
    params = model.init(jax.random.key(0))
    opt_state = opt.init(params)
    ids = jax.random.randint(jax.random.key(1), (BATCH, LENGTH + 1), 0, VOCAB)
    x, y = ids[:, :-1], ids[:, 1:]
    jitted = jax.jit(step_of(model, opt))
    start = time.perf_counter()
    traced = jitted.trace(params, opt_state, x, y)
    traced_at = time.perf_counter()
    lowered = traced.lower()
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    state = {"params": params, "opt": opt_state}

    def run():
        state["params"], state["opt"], loss = compiled(state["params"], state["opt"], x, y)
        return loss

    return {"trace": traced_at - start, "lower": lowered_at - traced_at,
            "compile": compiled_at - lowered_at, "total": compiled_at - start,
            "temp": compiled.memory_analysis().temp_size_in_bytes, "run": run}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 8, 24])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    jax.config.update("jax_enable_compilation_cache", False)
    print(f"machine: {machine()}")
    results = {(d, s): first_call(d, s) for d in args.depths for s in STACKS}
    print("\nfirst call of the step (seconds) and the compiled step's temporaries:")
    print(f"  {'depth':>5} {'stack':>13} {'trace':>7} {'lower':>7} {'compile':>8} "
          f"{'total':>7} {'temp MB':>8}")
    for (depth, stack), r in results.items():
        print(f"  {depth:5d} {stack:>13} {r['trace']:7.2f} {r['lower']:7.2f} "
              f"{r['compile']:8.2f} {r['total']:7.2f} {r['temp'] / 1e6:8.2f}")
    for stack in STACKS:
        low, high = results[(min(args.depths), stack)], results[(max(args.depths), stack)]
        print(f"  {stack}: total at {max(args.depths)} blocks / at {min(args.depths)}: "
              f"{high['total'] / low['total']:.2f}x")
    print(f"\nstep time, {args.rounds} interleaved rounds, median ms "
          f"(ratio to the unrolled stack of the same depth):")
    for depth in args.depths:
        times = interleaved({s: results[(depth, s)]["run"] for s in STACKS},
                            rounds=args.rounds, repeats=3)
        line = ", ".join(
            f"{s} {1e3 * median(times[s]):.1f}"
            + ("" if s == "unrolled" else " ({:.2f}x +-{:.2f})".format(
                *ratio_spread(times, s, "unrolled")))
            for s in STACKS)
        print(f"  {depth:2d} blocks: {line}")
    print(f"\nmachine after: {machine()}")


if __name__ == "__main__":
    main()
