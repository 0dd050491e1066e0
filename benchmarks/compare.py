"""minitorch against raw JAX, stax, Flax (linen and NNX), Haiku, Equinox and PyTorch eager.

One training step of each workload of benchmarks/workloads.py in every implementation of
benchmarks/peers.py, interleaved round by round (each timing is the mean of the
workload's ``calls`` consecutive steps), reported as medians and as the median of the
per-round ratios to raw JAX. Also measured: the jit'd 2048x2048 float32 matmul rate in
the same rounds as the *large* MLP, the first step's time (tracing and compilation; the
median over ``--compile-repeats`` fresh builds after ``jax.clear_caches()``), and the time
to ``import`` each library in a fresh interpreter.

Writes the tables between the ``compare`` markers of benchmarks/RESULTS.md and a bar
chart (benchmarks/compare.png); ``--no-write`` only prints.

Install the peers with ``pip install -e ".[bench]"``.

Run: python benchmarks/compare.py [--rounds 15] [--workloads tiny small large cnn]
                                  [--impls minitorch "raw JAX" ...]
     python benchmarks/compare.py --workloads gpt lstm convseq --section sequences
     (the sequence models of benchmarks/sequence_peers.py, Adam, batch 32, length 64)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from benchmarks.common import interleaved, machine, median, ratio_spread  # noqa: E402
from benchmarks.peers import JAX_PEERS, PEERS  # noqa: E402
from benchmarks.sequence_peers import SEQUENCE_PEERS, SEQUENCE_WORKLOADS  # noqa: E402
from benchmarks.workloads import WORKLOADS  # noqa: E402

ALL_WORKLOADS = {**WORKLOADS, **SEQUENCE_WORKLOADS}

MATMUL = "matmul 2048"
MATMUL_FLOPS = 2 * 2048 ** 3
# What each implementation imports (raw JAX and stax: jax), plus optax, the yardstick.
IMPORTS = {"minitorch": "minitorch", "optax": "optax", "jax": "jax",
           "Flax linen": "flax.linen", "Flax NNX": "flax.nnx", "Haiku": "haiku",
           "Equinox": "equinox", "PyTorch eager": "torch"}
PACKAGES = ("jax", "jaxlib", "optax", "flax", "dm-haiku", "equinox", "torch", "numpy")


def builders(workload):
    """The implementations of ``workload``: benchmarks/sequence_peers.py for the sequence
    models, benchmarks/peers.py for the others."""
    return SEQUENCE_PEERS if workload.name in SEQUENCE_WORKLOADS else PEERS


def step_times(workload, impls, rounds):
    """Seconds per step of every implementation (and the matmul on *large*), per round."""
    runs = {name: builders(workload)[name](workload)() for name in impls
            if name in builders(workload)}
    if workload.name == "large":
        a = jax.random.normal(jax.random.key(0), (2048, 2048), jnp.float32)
        b = jax.random.normal(jax.random.key(1), (2048, 2048), jnp.float32)
        matmul = jax.jit(jnp.matmul)
        runs[MATMUL] = lambda: matmul(a, b)  # 17.2 GFLOP, about one large step's 17.9
    return interleaved(runs, rounds=rounds, repeats=workload.calls)


def first_step_times(workload, impls, repeats):
    """Seconds of the first step (trace, compile, run) from a fresh build, per implementation."""
    out = {name: [] for name in impls if name in builders(workload)}
    for _ in range(repeats):
        for name in out:
            jax.clear_caches()
            run = builders(workload)[name](workload)()
            start = time.perf_counter()
            jax.block_until_ready(run())
            out[name].append(time.perf_counter() - start)
    return {name: median(v) for name, v in out.items()}


def import_times(rounds, impls=tuple(IMPORTS)):
    """Seconds to import minitorch, optax, jax and the modules of ``impls`` that are
    installed, each in a fresh interpreter, less the bare interpreter's start."""
    wanted = {name: module for name, module in IMPORTS.items()
              if (name in ("minitorch", "optax", "jax") or name in impls)
              and importlib.util.find_spec(module.split(".")[0]) is not None}
    def once(module):
        code = f"import {module}" if module else "pass"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
        return time.perf_counter() - start

    # Bytecode first, as an installed package has it (pip compiles the peers' at install;
    # an editable install and PYTHONDONTWRITEBYTECODE leave minitorch's to every import).
    subprocess.run([sys.executable, "-m", "compileall", "-q", "minitorch"], check=True,
                   cwd=ROOT)
    samples = {name: [] for name in [None, *wanted]}
    for _ in range(rounds):
        for name in samples:
            samples[name].append(once(wanted.get(name)))
    bare = median(samples.pop(None))
    return {name: median(v) - bare for name, v in samples.items()}, samples


def versions() -> str:
    found = []
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{package} {importlib.metadata.version(package)}")
    return ", ".join(found)


def step_table(results, impls):
    lines = ["| implementation | " + " | ".join(results) + " |",
             "| --- |" + " --- |" * len(results)]
    for name in impls:
        if not all(name in times for times in results.values()):
            continue
        cells = []
        for times in results.values():
            r, spread = ratio_spread(times, name, "raw JAX")
            cells.append(f"{r:.2f} (+-{spread:.2f}) · {1e6 * median(times[name]):,.0f} us")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def findings(results, first, imports):
    """The speed targets, each with the measured figure."""
    lines = []

    for workload, times in results.items():
        if "minitorch" not in times:
            continue
        r, s = ratio_spread(times, "minitorch", "raw JAX")
        peers = [p for p in JAX_PEERS if p in times]
        fastest = min(peers, key=lambda p: median(times[p])) if peers else None
        line = f"- **{workload}**: minitorch / raw JAX {r:.3f} (+-{s:.3f})"
        if fastest:
            fr, fs = ratio_spread(times, "minitorch", fastest)
            line += f"; / fastest JAX peer ({fastest}) {fr:.3f} (+-{fs:.3f})"
        if "PyTorch eager" in times:
            tr, ts = ratio_spread(times, "PyTorch eager", "minitorch")
            line += f"; PyTorch eager / minitorch {tr:.2f} (+-{ts:.2f})"
        if MATMUL in times:
            rates = {name: [flops / t for t in times[name]]
                     for name, flops in (("minitorch", WORKLOADS[workload].flops()),
                                         (MATMUL, MATMUL_FLOPS))}
            fraction = median([a / b for a, b in zip(rates["minitorch"], rates[MATMUL])])
            line += (f"; {median(rates['minitorch']) / 1e9:.1f} GFLOP/s = {fraction:.3f} of "
                     f"the matmul's {median(rates[MATMUL]) / 1e9:.1f} GFLOP/s (same rounds)")
        lines.append(line)
    for workload, t in first.items():
        if "minitorch" in t and "raw JAX" in t:
            lines.append(f"- first step (compile) on **{workload}**: minitorch "
                         f"{t['minitorch']:.2f} s, raw JAX {t['raw JAX']:.2f} s, ratio "
                         f"{t['minitorch'] / t['raw JAX']:.3f}")
    if imports:
        ratio = imports["minitorch"] / imports["optax"]
        lines.append(f"- import: minitorch {imports['minitorch']:.2f} s, optax "
                     f"{imports['optax']:.2f} s, ratio {ratio:.3f}")
    return lines


def first_table(first, impls):
    lines = ["| implementation | " + " | ".join(first) + " |", "| --- |" + " --- |" * len(first)]
    for name in impls:
        if all(name in t for t in first.values()):
            lines.append(f"| {name} | " + " | ".join(f"{t[name]:.2f} s" for t in first.values())
                         + " |")
    return lines


def plot(results, impls, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    impls = [name for name in impls if all(name in times for times in results.values())]
    width = 0.8 / len(impls)
    for i, name in enumerate(impls):
        ratios = [ratio_spread(times, name, "raw JAX")[0] for times in results.values()]
        ax.bar([k + i * width for k in range(len(results))], ratios, width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(results))], list(results))
    ax.set_ylabel("step time / raw JAX (log; lower is faster)")
    ax.set_title("One training step on a 2-core CPU, median of per-round ratios")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig


def write_section(lines, path, section="compare"):
    text = path.read_text()
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    block = begin + "\n" + "\n".join(lines) + "\n" + end
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text += "\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS),
                        choices=list(ALL_WORKLOADS))
    parser.add_argument("--section", default="compare",
                        help="the RESULTS.md markers and the chart's name to write "
                             "(e.g. sequences for --workloads gpt lstm convseq)")
    parser.add_argument("--impls", nargs="+", default=list(PEERS))
    parser.add_argument("--compile-repeats", type=int, default=3)
    parser.add_argument("--import-rounds", type=int, default=7)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md",
                        help="the file whose section is written (the chart goes beside it)")
    args = parser.parse_args()
    impls = [name for name in PEERS if name in args.impls]
    command = "python benchmarks/compare.py " + " ".join(sys.argv[1:])
    before = machine()
    print(f"machine: {before}", flush=True)

    results = {}
    for name in args.workloads:
        results[name] = step_times(ALL_WORKLOADS[name], impls, args.rounds)
        print(f"{name}: " + ", ".join(f"{k} {1e6 * median(v):,.0f} us"
                                      for k, v in results[name].items()), flush=True)
    first = {name: first_step_times(ALL_WORKLOADS[name], impls, args.compile_repeats)
             for name in args.workloads} if args.compile_repeats else {}
    imports = import_times(args.import_rounds, impls)[0] if args.import_rounds else {}
    after = machine()

    lines = [f"Command: `{command}` ({datetime.date.today()}, {args.rounds} rounds).",
             f"Machine before: {before}.", f"Machine after: {after}.",
             f"Versions: {versions()}.", "",
             "Step time, median of the per-round ratios to raw JAX (+- half the interquartile "
             "range) · median time per step:", "", *step_table(results, impls)]
    if any(MATMUL in t for t in results.values()):
        large = next(t for t in results.values() if MATMUL in t)
        lines += ["", f"jit'd 2048x2048 float32 matmul in the same rounds: "
                  f"{1e6 * median(large[MATMUL]):,.0f} us, "
                  f"{MATMUL_FLOPS / median(large[MATMUL]) / 1e9:.1f} GFLOP/s."]
    if first:
        lines += ["", "First step from a fresh build (trace + compile + one step; PyTorch: "
                  "its first eager step), median of "
                  f"{args.compile_repeats}:", "", *first_table(first, impls)]
    if imports:
        lines += ["", f"`import` in a fresh interpreter, less the bare interpreter's start "
                  f"(median of {args.import_rounds}): " + ", ".join(
                      f"{k} {v:.2f} s" for k, v in imports.items())]
    lines += ["", "Targets:", "", *findings(results, first, imports)]
    print("\n".join(lines))
    if not args.no_write:
        write_section(lines, args.results, args.section)
        plot(results, impls, args.results.parent / f"{args.section}.png")


if __name__ == "__main__":
    main()
