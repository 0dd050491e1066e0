"""Compile time: the first step of five models, and compile time and memory at depth.

Part "first-step" (`--part first-step`): how long a new process waits for its first step.
For the digits CNN (examples/digits_cnn.py), a U-Net (`unet`, defined here: 182k params),
examples/char_transformer.py's model, and benchmarks/sequence_peers.py's gpt and lstm, each
measured in a fresh Python process (imports, model and data ready before the clock starts;
no persistent compilation cache):
  raw JAX        sequence_peers.py's raw-JAX step of the same model (gpt and lstm)
  hand-written   the usual optax step around `model.apply` (benchmarks/peers.optax_step)
  make_step      `train.make_step(model, losses.softmax_cross_entropy, adam,
                 accuracy=False)`: loss only, as the hand-written step
  hand-written epoch   its first call and 19 more steps (an epoch of 20 batches)
  fit epoch      `fit(..., epochs=1)` over the same 20 batches
  make_step, cache warm   make_step's first call in a second process that finds the first
                 one's programs in a persistent compilation cache
and `init`: the model's eager `init(key)` in a fresh process.
Each line splits the seconds into JAX's trace, lower (to StableHLO) and XLA compile, summed
over every program compiled (jax.monitoring's compile events), and counts the programs.
Rounds are interleaved; medians.

Part "depth" (`--part depth`): the gpt workload's training step with its blocks as a `Net`
of copies (each block traced and compiled again) against `nn.Repeat` (one block traced
under a `lax.scan`, keeping the matrix products' outputs for the backward pass),
`nn.Repeat(nn.Remat(block, "everything"))` (the scan keeping every activation) and
`nn.Repeat(nn.Remat(block, "nothing"))`.
For each depth (2, 8, 24 blocks of benchmarks/sequence_peers.py's gpt: d_model 128, 4
heads, MLP 512, batch 32 x 64 tokens) and each stack, the step's first-call costs measured
separately through JAX's AOT stages (`jax.jit(step).trace(...)`, `.lower()`,
`.compile()`), the compiled step's temporaries (`memory_analysis().temp_size_in_bytes`),
and the step time and the forward pass's (a jitted `apply`) time (interleaved rounds,
median). Each compile runs in a fresh jit, with
JAX's compilation cache off, so nothing is reused between measurements.
The model (`minitorch_model`), the Adam step (`functional_step`: params and optimiser state
donated) and the runner (`carry_run`) are the sequence and peer benchmarks' own.

Part "depth-profile" (`--part depth-profile`, not run by default): each stack's step at each
depth profiled as benchmarks/sequence_profile.py profiles a step (each XLA op's own time,
summed over XLA's threads, over `--step-rounds` steps), by op kind: where a loop's time
goes that the unrolled program does not spend.

Run: python benchmarks/compile_time.py [--part first-step depth depth-profile] [--rounds 3]
     [--depths 2 8 24] [--step-rounds 7] [--workloads digits unet ...]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import interleaved, machine, median, ratio_spread
from benchmarks.peers import carry_run, optax_step
from benchmarks.sequence_peers import (
    LEARNING_RATE,
    SEQUENCE_WORKLOADS,
    functional_step,
    minitorch_model,
    raw_jax_step,
)
from benchmarks.sequence_profile import op_times
from minitorch import losses, nn, train
from minitorch.fit import fit

# ---- first step: make_step and fit against hand-written steps, each in a fresh process --

FIRST_STEP_WORKLOADS = ("digits", "unet", "char_transformer", "gpt", "lstm")
MODES = ("init", "raw JAX", "hand-written", "make_step", "make_step, cache warm",
         "hand-written epoch", "fit epoch")
EPOCH_STEPS = 20  # batches in the epoch over which fit's first epoch is compared
# A program read from a persistent compilation cache counts as compiled, its read as its
# compile time (the "cache warm" mode; and any process started with a cache configured).
COMPILE_EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
                  "/jax/core/compile/backend_compile_duration": "compile",
                  "/jax/compilation_cache/cache_retrieval_time_sec": "compile"}


class UNet(nn.Composite):
    """A two-level U-Net for per-pixel classes: (N, 1, H, W) -> (N, H, W, classes)."""

    down1: nn.Layer
    down2: nn.Layer
    bottom: nn.Layer
    up2: nn.Layer
    merge2: nn.Layer
    up1: nn.Layer
    merge1: nn.Layer
    head: nn.Layer
    pool: nn.Layer

    def forward(self, call, x):
        skip1 = call("down1", x)                                       # (N, c, H, W)
        skip2 = call("down2", call("pool", skip1))                     # (N, 2c, H/2, W/2)
        h = call("bottom", call("pool", skip2))                        # (N, 4c, H/4, W/4)
        h = call("merge2", jnp.concatenate([call("up2", h), skip2], axis=1))
        h = call("merge1", jnp.concatenate([call("up1", h), skip1], axis=1))
        return call("head", h).transpose(0, 2, 3, 1)                   # (N, H, W, classes)


def unet(channels: int = 20, classes: int = 2) -> UNet:
    """Two 3x3 convolutions per level, ``channels`` doubling per level down."""
    def convs(c_in, c_out):
        return nn.Net([nn.Conv2D(c_in, c_out, 3, padding=1), nn.ReLU(),
                       nn.Conv2D(c_out, c_out, 3, padding=1), nn.ReLU()])

    c = channels
    return UNet(down1=convs(1, c), down2=convs(c, 2 * c), bottom=convs(2 * c, 4 * c),
                up2=nn.ConvTranspose2D(4 * c, 2 * c, 2, stride=2), merge2=convs(4 * c, 2 * c),
                up1=nn.ConvTranspose2D(2 * c, c, 2, stride=2), merge1=convs(2 * c, c),
                head=nn.Conv2D(c, classes, 1), pool=nn.MaxPool2D(2))


def first_step_workload(name: str) -> tuple[nn.Layer, list[tuple[jax.Array, jax.Array]]]:
    """The model and EPOCH_STEPS batches ``(x, y)`` of one workload."""
    rng = np.random.default_rng(0)
    if name == "digits":
        from digits_cnn import digits_cnn, load
        (x, y), _, _ = load()
        model, n, x, y = digits_cnn(dropout=0.0), 32, x, y.astype(np.int32)
    elif name == "unet":
        model, n = unet(), 16
        x = rng.normal(size=(EPOCH_STEPS * n, 1, 32, 32)).astype(np.float32)
        y = (x[:, 0] > 0).astype(np.int32)                             # (N, H, W) classes
    elif name == "char_transformer":
        from char_transformer import char_transformer
        model, n = char_transformer(28, 16), 32
        ids = rng.integers(0, 28, size=(EPOCH_STEPS * n, 17), dtype=np.int32)
        x, y = ids[:, :-1], ids[:, 1:]
    else:
        w = SEQUENCE_WORKLOADS[name]
        model, n = minitorch_model(w), w.batch
        pairs = [w.data(seed) for seed in range(EPOCH_STEPS)]
        x, y = (np.concatenate([np.asarray(p[i]) for p in pairs]) for i in (0, 1))
    batches = [(jnp.asarray(x[i * n:(i + 1) * n]), jnp.asarray(y[i * n:(i + 1) * n]))
               for i in range(EPOCH_STEPS)]
    return model, batches


def time_first_step(workload: str, mode: str) -> dict:
    """Seconds from a ready model and data to ``mode``'s first step (or first epoch) done,
    split by JAX's compile events; run in a fresh process by :func:`first_steps`."""
    spent: dict[str, float] = defaultdict(float)

    def listen(event: str, duration_secs: float, **kwargs: str | int) -> None:
        if event in COMPILE_EVENTS:
            spent[COMPILE_EVENTS[event]] += duration_secs
            spent["programs"] += COMPILE_EVENTS[event] == "compile"  # one per program

    model, batches = first_step_workload(workload)
    opt = optax.adam(LEARNING_RATE)
    if mode == "init":
        jax.monitoring.register_event_duration_secs_listener(listen)
        start = time.perf_counter()
        jax.block_until_ready(model.init(jax.random.key(0)))
        return {"total": time.perf_counter() - start, **spent}
    params = jax.block_until_ready(model.init(jax.random.key(0)))
    opt_state = jax.block_until_ready(opt.init(params))
    x_all, y_all = (jnp.concatenate([b[i] for b in batches]) for i in (0, 1))
    if mode == "raw JAX":
        raw_step, (params, opt_state, *_) = raw_jax_step(SEQUENCE_WORKLOADS[workload])

    def loss_fn(p, x, y):
        return losses.softmax_cross_entropy(model.apply(p, x), y)

    jax.monitoring.register_event_duration_secs_listener(listen)
    start = time.perf_counter()
    if mode in ("raw JAX", "hand-written", "hand-written epoch"):
        step = raw_step if mode == "raw JAX" else optax_step(loss_fn, opt)
        for x, y in batches[:EPOCH_STEPS if mode.endswith("epoch") else 1]:
            params, opt_state, loss = step(params, opt_state, x, y)
        jax.block_until_ready(loss)
    elif mode == "fit epoch":
        fitted = fit(model, losses.softmax_cross_entropy, opt, (x_all, y_all), epochs=1,
                     batch_size=len(batches[0][0]), params=params, progress=False,
                     shuffle=False)
        jax.block_until_ready(fitted.params)
    else:
        made = train.make_step(model, losses.softmax_cross_entropy, opt, accuracy=False)
        jax.block_until_ready(made(params, opt_state, batches[0], None))
    return {"total": time.perf_counter() - start, **spent}


def first_steps(workloads: list[str], rounds: int) -> dict[tuple[str, str], list[dict]]:
    """Every workload and mode in a fresh process, round after round."""
    results: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for _ in range(rounds):
        for workload in workloads:
            with tempfile.TemporaryDirectory() as cache:
                for mode in MODES:
                    if mode == "raw JAX" and workload not in SEQUENCE_WORKLOADS:
                        continue
                    results[workload, mode].append(_in_a_fresh_process(workload, mode, cache))
    return results


def _in_a_fresh_process(workload: str, mode: str, cache: str) -> dict:
    env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}
    if "cache" in mode:  # a first process fills the cache; the measured second one reads it
        env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache,
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
               "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
        mode = "make_step"
        _run_child(workload, mode, env)
    return _run_child(workload, mode, env)


def _run_child(workload: str, mode: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", workload, mode], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def report_first_steps(results: dict[tuple[str, str], list[dict]]) -> None:
    def cell(workload: str, mode: str, key: str = "total") -> float:
        return median([r.get(key, 0.0) for r in results[workload, mode]])

    print("\nfirst step in a fresh process, seconds (median): total = trace + lower + compile "
          "+ the rest; programs compiled")
    print("| workload | mode | total | trace | lower | compile | programs |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (workload, mode) in results:
        print(f"| {workload} | {mode} | {cell(workload, mode):.2f} | "
              + " | ".join(f"{cell(workload, mode, k):.2f}" for k in ("trace", "lower",
                                                                       "compile"))
              + f" | {cell(workload, mode, 'programs'):.0f} |")
    print("\n| workload | make_step / hand-written | make_step / raw JAX | "
          "fit epoch / hand-written epoch | cache warm / cold |")
    print("| --- | --- | --- | --- | --- |")
    for workload in dict.fromkeys(w for w, _ in results):
        raw = (f"{cell(workload, 'make_step') / cell(workload, 'raw JAX'):.2f}x"
               if (workload, "raw JAX") in results else "-")
        print(f"| {workload} | {cell(workload, 'make_step') / cell(workload, 'hand-written'):.2f}x "
              f"| {raw} | {cell(workload, 'fit epoch') / cell(workload, 'hand-written epoch'):.2f}x"
              f" | {cell(workload, 'make_step, cache warm') / cell(workload, 'make_step'):.2f}x |")


# ---- depth: unrolled blocks against nn.Repeat and nn.Remat ------------------------------

STACKS = ("unrolled", "repeat", "repeat+everything", "repeat+remat")
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
    elif stack == "repeat+everything":  # every activation kept: a scan's own residuals
        blocks = nn.Repeat(nn.Remat(block, "everything"), depth)
    else:
        blocks = nn.Repeat(nn.Remat(block, "nothing"), depth)
    return dataclasses.replace(base, blocks=blocks)


def gpt_step(model: nn.Layer) -> tuple[Any, tuple]:
    """The Adam training step of ``model`` on the gpt workload's batch (jit'd, donating
    params and optimiser state) and its first arguments."""

    def loss_fn(params, x, y):
        return losses.softmax_cross_entropy(model.apply(params, x), y)

    return functional_step(loss_fn, model.init(jax.random.key(0)), GPT)


def first_call(depth: int, stack: str) -> dict:
    """Trace, lower and compile seconds of a fresh step, its temporaries, and a runner."""
    model = gpt(depth, stack)
    jitted, args = gpt_step(model)
    start = time.perf_counter()
    traced = jitted.trace(*args)
    traced_at = time.perf_counter()
    lowered = traced.lower()
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    forward, x = jax.jit(model.apply), GPT.data()[0]
    params = model.init(jax.random.key(0))  # its own: the step donates the first ones
    return {"trace": traced_at - start, "lower": lowered_at - traced_at,
            "compile": compiled_at - lowered_at, "total": compiled_at - start,
            "temp": compiled.memory_analysis().temp_size_in_bytes,
            "run": carry_run(compiled, *args),
            "forward": lambda: forward(params, x).block_until_ready()}


def report_depth(depths: list[int], rounds: int) -> None:
    jax.config.update("jax_enable_compilation_cache", False)
    results = {(d, s): first_call(d, s) for d in depths for s in STACKS}
    print("\nfirst call of the step (seconds) and the compiled step's temporaries:")
    print(f"  {'depth':>5} {'stack':>17} {'trace':>7} {'lower':>7} {'compile':>8} "
          f"{'total':>7} {'temp MB':>8}")
    for (depth, stack), r in results.items():
        print(f"  {depth:5d} {stack:>17} {r['trace']:7.2f} {r['lower']:7.2f} "
              f"{r['compile']:8.2f} {r['total']:7.2f} {r['temp'] / 1e6:8.2f}")
    for stack in STACKS:
        low, high = results[(min(depths), stack)], results[(max(depths), stack)]
        print(f"  {stack}: total at {max(depths)} blocks / at {min(depths)}: "
              f"{high['total'] / low['total']:.2f}x")
    for part, what in (("run", "step"), ("forward", "forward pass (jitted apply)")):
        print(f"\n{what} time, {rounds} interleaved rounds, median ms "
              f"(ratio to the unrolled stack of the same depth):")
        for depth in depths:
            times = interleaved({s: results[(depth, s)][part] for s in STACKS},
                                rounds=rounds, repeats=3)
            line = ", ".join(
                f"{s} {1e3 * median(times[s]):.1f}"
                + ("" if s == "unrolled" else " ({:.2f}x +-{:.2f})".format(
                    *ratio_spread(times, s, "unrolled")))
                for s in STACKS)
            print(f"  {depth:2d} blocks: {line}")


def op_kind(name: str) -> str:
    """An XLA op's kind: its name less the numbering (``copy.113`` -> ``copy``)."""
    return re.sub(r"[.\d]+$", "", name)


def report_depth_profile(depths: list[int], steps: int,
                         stacks: tuple[str, ...] = STACKS) -> None:
    """Each stack's step profiled (benchmarks/sequence_profile.op_times): op time per step
    by op kind, the kinds taking the most time in any stack."""
    for depth in depths:
        kinds = {}
        for stack in stacks:
            step, args = gpt_step(gpt(depth, stack))
            kinds[stack] = collections.Counter()
            for name, seconds in op_times(step, args, steps).items():
                kinds[stack][op_kind(name)] += seconds
        top = sorted({k for c in kinds.values() for k, _ in c.most_common(8)},
                     key=lambda k: -max(c[k] for c in kinds.values()))
        print(f"\n{depth} blocks, op time per step in ms ({steps} steps profiled):")
        print(f"  {'op kind':>36} " + " ".join(f"{s:>17}" for s in stacks))
        for kind in ["(all ops)", *top]:
            cells = [sum(c.values()) if kind == "(all ops)" else c[kind]
                     for c in kinds.values()]
            print(f"  {kind[:36]:>36} " + " ".join(f"{1e3 * v:17.2f}" for v in cells))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(time_first_step(*sys.argv[2:4])))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", nargs="+", default=["first-step", "depth"],
                        choices=["first-step", "depth", "depth-profile"])
    parser.add_argument("--workloads", nargs="+", default=list(FIRST_STEP_WORKLOADS),
                        choices=FIRST_STEP_WORKLOADS)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per mode")
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 8, 24])
    parser.add_argument("--step-rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if "first-step" in args.part:
        report_first_steps(first_steps(args.workloads, args.rounds))
    if "depth" in args.part:
        report_depth(args.depths, args.step_rounds)
    if "depth-profile" in args.part:
        report_depth_profile(args.depths, args.step_rounds)
    print(f"\nmachine after: {machine()}")


if __name__ == "__main__":
    main()
