"""Compile time and memory at depth: the gpt workload's training step with its blocks as a
`Net` of copies (each block traced and compiled again) against `nn.Repeat` (one block
traced under a `lax.scan`), and `nn.Repeat(nn.Remat(block, "nothing"))`.

For each depth (2, 8, 24 blocks of benchmarks/sequence_peers.py's gpt: d_model 128, 4
heads, MLP 512, batch 32 x 64 tokens) and each stack, the step's first-call costs measured
separately through JAX's AOT stages (`jax.jit(step).trace(...)`, `.lower()`,
`.compile()`), the compiled step's temporaries (`memory_analysis().temp_size_in_bytes`),
and the step time (interleaved rounds, median). Each compile runs in a fresh jit, with
JAX's compilation cache off, so nothing is reused between measurements.
The model (`minitorch_model`), the Adam step (`functional_step`: params and optimiser state
donated) and the runner (`carry_run`) are the sequence and peer benchmarks' own.

Run: python benchmarks/compile_time.py [--depths 2 8 24] [--rounds 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import interleaved, machine, median, ratio_spread
from benchmarks.peers import carry_run
from benchmarks.sequence_peers import SEQUENCE_WORKLOADS, functional_step, minitorch_model
from minitorch import losses, nn

STACKS = ("unrolled", "repeat", "repeat+remat")
GPT = SEQUENCE_WORKLOADS["gpt"]


def gpt(depth: int, stack: str) -> nn.Layer:
    """benchmarks/sequence_peers.py's gpt with ``depth`` of its blocks, stacked as asked."""
    base = minitorch_model(GPT)
    block = base.blocks[0]
    blocks: nn.Layer
    if stack == "unrolled":
        blocks = nn.Net([block] * depth)
    elif stack == "repeat":
        blocks = nn.Repeat(block, depth)
    else:
        blocks = nn.Repeat(nn.Remat(block, "nothing"), depth)
    return dataclasses.replace(base, blocks=blocks)


def first_call(depth: int, stack: str) -> dict:
    """Trace, lower and compile seconds of a fresh step, its temporaries, and a runner."""
    model = gpt(depth, stack)

    def loss_fn(params, x, y):
        return losses.softmax_cross_entropy(model.apply(params, x), y)

    jitted, args = functional_step(loss_fn, model.init(jax.random.key(0)), GPT)
    start = time.perf_counter()
    traced = jitted.trace(*args)
    traced_at = time.perf_counter()
    lowered = traced.lower()
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    return {"trace": traced_at - start, "lower": lowered_at - traced_at,
            "compile": compiled_at - lowered_at, "total": compiled_at - start,
            "temp": compiled.memory_analysis().temp_size_in_bytes,
            "run": carry_run(compiled, *args)}


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
