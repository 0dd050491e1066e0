"""Where one sequence training step's time goes: raw JAX's step against PyTorch eager's.

The gpt and lstm workloads of benchmarks/sequence_peers.py (Adam, float32, batch 32,
length 64), each profiled over ``--steps`` steps after a warm-up:

- raw JAX under ``jax.profiler.trace``: each XLA op's own time (its duration less that of
  the ops nested in it, such as a loop's body), summed over XLA's threads. An op is a
  *product* when the compiled HLO makes it a dot or a convolution or a fusion containing
  one; *executor* is the runtime's own bookkeeping (running thunks, loop control); time
  a thread spends waiting for another is not counted.
- PyTorch eager under ``torch.profiler``: each aten op's self CPU time (its intra-op
  threads work inside it). *Products* are ``mm``, ``addmm``, ``bmm`` and ``baddbmm``;
  *fused attention* is the scaled-dot-product attention kernel (its products and softmax
  in one); *fused LSTM* is the oneDNN LSTM kernel (forward and backward).

XLA runs independent ops side by side on its threads while PyTorch runs one op at a time,
so each group is reported as its share of that library's op time and, scaled by the
share, as milliseconds of the step (median wall time per step, timed outside the profiler
in interleaved rounds).

Run: python benchmarks/sequence_profile.py [--workloads gpt lstm] [--steps 10]
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import interleaved, machine, median  # noqa: E402
from benchmarks.peers import carry_run  # noqa: E402
from benchmarks.sequence_peers import (  # noqa: E402
    SEQUENCE_WORKLOADS,
    pytorch,
    raw_jax,
    raw_jax_step,
)

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")  # unindented, opens a body
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_PRODUCT = re.compile(r"(?<![\w.%-])(?:dot|convolution)\(")


def product_ops(hlo: str) -> set[str]:
    """The names of the instructions of compiled HLO text that compute a product: a dot,
    a convolution, or a fusion whose computation (or one it calls) contains one."""
    body: dict[str, list[str]] = {}
    current = None
    for line in hlo.splitlines():
        if start := _COMPUTATION.match(line):
            current = start.group(1)
            body[current] = []
        elif current is not None and _INSTRUCTION.match(line):
            body[current].append(line.split(", metadata=")[0])  # op names say "dot(" too

    def has_product(computation: str, seen: frozenset = frozenset()) -> bool:
        return any(_PRODUCT.search(line) or any(
            callee not in seen and has_product(callee, seen | {computation})
            for callee in _CALLS.findall(line) if callee in body)
            for line in body.get(computation, ()))

    products = set()
    for lines in body.values():
        for line in lines:
            name = _INSTRUCTION.match(line).group(1)  # type: ignore[union-attr]
            if _PRODUCT.search(line) or any(has_product(c) for c in _CALLS.findall(line)):
                products.add(name)
    return products


def own_times(events) -> collections.Counter:
    """Nanoseconds of each event name's own time on one thread: its duration less the
    durations of the events nested directly inside it."""
    own: collections.Counter = collections.Counter()
    stack: list[list] = []  # [end, name, own time so far]
    for event in sorted(events, key=lambda e: (e.start_ns, -e.duration_ns)):
        while stack and stack[-1][0] <= event.start_ns:
            _, name, t = stack.pop()
            own[name] += t
        if stack:
            stack[-1][2] -= event.duration_ns
        stack.append([event.start_ns + event.duration_ns, event.name, event.duration_ns])
    for _, name, t in stack:
        own[name] += t
    return own


def jax_groups(workload, steps: int) -> dict[str, float]:
    """Raw JAX's op time per step (seconds) by group."""
    step, args = raw_jax_step(workload)
    products = product_ops(step.lower(*args).compile().as_text())
    run = carry_run(step, *args)
    for _ in range(3):
        jax.block_until_ready(run())
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(steps):
                jax.block_until_ready(run())
        (path,) = Path(trace_dir).rglob("*.xplane.pb")
        profile = jax.profiler.ProfileData.from_file(str(path))
    own: collections.Counter = collections.Counter()
    for plane in profile.planes:
        for line in plane.lines:
            if line.name.startswith("tf_XLA"):  # XLA's threads, not Python's
                own.update(own_times(line.events))
    groups: collections.Counter = collections.Counter()
    for name, ns in own.items():
        if "wait" in name.lower():
            continue
        group = ("products" if name in products else
                 "executor" if name.startswith(("ThunkExecutor", "while")) else "other ops")
        groups[group] += ns / 1e9 / steps
    return dict(groups)


def torch_group(name: str) -> str:
    if name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"):
        return "products"
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "fused attention"
    if "rnn" in name or "lstm" in name:
        return "fused LSTM"
    return "other ops"


def torch_groups(workload, steps: int) -> dict[str, float]:
    """PyTorch eager's self CPU time per step (seconds) by group."""
    import torch

    run = pytorch(workload)()
    for _ in range(3):
        run()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    groups: collections.Counter = collections.Counter()
    for op in prof.key_averages():
        groups[torch_group(op.key)] += op.self_cpu_time_total / 1e6 / steps
    return dict(groups)


def table(wall: dict[str, float], groups: dict[str, dict[str, float]]) -> list[str]:
    """Markdown rows: each group's share of op time and its part of the step in ms."""
    names = sorted({g for gs in groups.values() for g in gs},
                   key=lambda g: (g == "other ops", g == "executor", g))
    lines = ["| group | " + " | ".join(groups) + " |", "| --- |" + " --- |" * len(groups)]
    for g in names:
        cells = []
        for impl, gs in groups.items():
            share = gs.get(g, 0.0) / sum(gs.values())
            cells.append(f"{100 * share:.0f}% · {1e3 * share * wall[impl]:.1f} ms")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    lines.append("| step (wall) | " + " | ".join(f"{1e3 * wall[i]:.1f} ms" for i in groups)
                 + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", nargs="+", default=["gpt", "lstm"],
                        choices=list(SEQUENCE_WORKLOADS))
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for name in args.workloads:
        workload = SEQUENCE_WORKLOADS[name]
        times = interleaved({"raw JAX": raw_jax(workload)(),
                             "PyTorch eager": pytorch(workload)()}, rounds=args.steps)
        wall = {impl: median(t) for impl, t in times.items()}
        groups = {"raw JAX": jax_groups(workload, args.steps),
                  "PyTorch eager": torch_groups(workload, args.steps)}
        print(f"\n{name}: share of op time · ms of the step\n")
        print("\n".join(table(wall, groups)))
    print(f"\nmachine after: {machine()}")


if __name__ == "__main__":
    main()
