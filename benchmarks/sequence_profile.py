"""Where one training step's time goes: the JAX steps against PyTorch eager's.

The gpt and lstm workloads of benchmarks/sequence_peers.py (Adam, float32, batch 32,
length 64) and the digits-sized CNN of benchmarks/workloads.py (SGD with momentum, batch
128 x 1 x 28 x 28), each profiled over ``--steps`` steps after a warm-up:

- raw JAX's step (and, for the CNN, minitorch's: the optax step around the ``nn.Net``'s
  ``apply``, the program ``train.make_step`` compiles, whose convolutions are not raw
  JAX's ``lax.conv_general_dilated``) under ``jax.profiler.trace``: each XLA op's own time
  (its duration less that of the ops nested in it, such as a loop's body), summed over
  XLA's threads. An op is a *product* when the compiled HLO makes it a dot or a
  convolution or a fusion containing one; *executor* is the runtime's own bookkeeping
  (running thunks, loop control); time a thread spends waiting for another is not counted.
- PyTorch eager under ``torch.profiler``: each aten op's self CPU time (its intra-op
  threads work inside it). *Products* are ``mm``, ``addmm``, ``bmm`` and ``baddbmm``;
  *fused attention* is the scaled-dot-product attention kernel (its products and softmax
  in one); *fused LSTM* is the oneDNN LSTM kernel (forward and backward); *convolutions*
  are oneDNN's forward and backward convolution kernels; *pooling* max pooling forward
  and backward.

XLA runs independent ops side by side on its threads while PyTorch runs one op at a time,
so each group is reported as its share of that library's op time and, scaled by the
share, as milliseconds of the step (median wall time per step, timed outside the profiler
in interleaved rounds).

Run: python benchmarks/sequence_profile.py [--workloads gpt lstm cnn] [--steps 10]
     [--top 12]
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import jax

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import peers, sequence_peers  # noqa: E402
from benchmarks.common import interleaved, machine, median  # noqa: E402
from benchmarks.peers import carry_run  # noqa: E402
from benchmarks.workloads import WORKLOADS, minitorch_net  # noqa: E402

WORKLOAD_NAMES = (*sequence_peers.SEQUENCE_WORKLOADS, "cnn")

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


def jax_steps(name: str) -> dict[str, tuple[Any, tuple]]:
    """The JAX steps profiled for workload ``name``: each a jitted ``(params, opt_state, x,
    y) -> (params, opt_state, loss)`` and its first arguments."""
    if name in sequence_peers.SEQUENCE_WORKLOADS:
        return {"raw JAX": sequence_peers.raw_jax_step(sequence_peers.SEQUENCE_WORKLOADS[name])}
    workload = WORKLOADS[name]
    net = minitorch_net(workload)
    return {"minitorch": peers.apply_step(net.apply, net.init(jax.random.key(0)),
                                          *workload.data()),
            "raw JAX": peers.raw_jax_step(workload)}


def op_times(step, args: tuple, steps: int) -> dict[str, float]:
    """Seconds per step of each XLA op's own time (summed over XLA's threads; time spent
    waiting left out) in a jitted ``(params, opt_state, x, y)`` step profiled over
    ``steps`` steps after a warm-up. ``args`` are donated."""
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
    return {name: ns / 1e9 / steps for name, ns in own.items() if "wait" not in name.lower()}


def jax_groups(step, args: tuple, steps: int, top: int = 0) -> dict[str, float]:
    """A jitted step's op time per step (seconds) by group; with ``top``, also prints the
    ``top`` ops with the most time, each with what its HLO computes (the jax op name)."""
    hlo = step.lower(*args).compile().as_text()
    products = product_ops(hlo)
    groups: collections.Counter = collections.Counter()
    times = op_times(step, args, steps)
    for name, seconds in times.items():
        group = ("products" if name in products else
                 "executor" if name.startswith(("ThunkExecutor", "while")) else "other ops")
        groups[group] += seconds
    for name, seconds in sorted(times.items(), key=lambda item: -item[1])[:top]:
        print(f"  {1e3 * seconds:7.2f} ms  {name}: {_source_of(hlo, name)}")
    return dict(groups)


def _source_of(hlo: str, name: str) -> str:
    """The ``op_name`` metadata of instruction ``name`` in compiled HLO text, shortened."""
    found = re.search(rf"%{re.escape(name)} = [^\n]*?op_name=\"([^\"]*)\"", hlo)
    return found.group(1).removeprefix("jit(step)/")[-90:] if found else "(no op name)"


def torch_group(name: str) -> str:
    if name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"):
        return "products"
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "fused attention"
    if "rnn" in name or "lstm" in name:
        return "fused LSTM"
    if "convolution" in name:
        return "convolutions"
    if "pool" in name:
        return "pooling"
    return "other ops"


def torch_run(name: str):
    """PyTorch eager's step for workload ``name``, made."""
    if name in sequence_peers.SEQUENCE_WORKLOADS:
        return sequence_peers.pytorch(sequence_peers.SEQUENCE_WORKLOADS[name])()
    return peers.pytorch(WORKLOADS[name])()


def torch_groups(name: str, steps: int) -> dict[str, float]:
    """PyTorch eager's self CPU time per step (seconds) by group."""
    import torch

    run = torch_run(name)
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
                        choices=WORKLOAD_NAMES)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=0,
                        help="also list each JAX step's N ops with the most time")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for name in args.workloads:
        jax_programs = jax_steps(name)
        runs = {impl: carry_run(step, *jax.tree.map(jax.numpy.copy, step_args))
                for impl, (step, step_args) in jax_programs.items()}
        times = interleaved({**runs, "PyTorch eager": torch_run(name)}, rounds=args.steps)
        wall = {impl: median(t) for impl, t in times.items()}
        groups = {}
        for impl, (step, step_args) in jax_programs.items():
            if args.top:
                print(f"\n{name}, {impl}: the {args.top} ops with the most time per step")
            groups[impl] = jax_groups(step, step_args, args.steps, top=args.top)
        groups["PyTorch eager"] = torch_groups(name, args.steps)
        print(f"\n{name}: share of op time · ms of the step\n")
        print("\n".join(table(wall, groups)))
    print(f"\nmachine after: {machine()}")


if __name__ == "__main__":
    main()
