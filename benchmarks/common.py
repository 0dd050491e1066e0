"""Shared timing helpers: interleaved rounds, medians, and the machine's load."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


def interleaved(candidates: dict[str, Callable[[], object]], *, rounds: int = 15,
                repeats: int = 1) -> dict[str, list[float]]:
    """Time each candidate once per round, round after round, so that a change in the
    machine's load hits all of them alike. Each timing is seconds per call (the mean over
    ``repeats`` calls, blocked until the results are ready). Every candidate runs once
    untimed first, so that no round pays for compilation. Each round starts one candidate
    further along, so that none always runs right after the same neighbour (PyTorch's
    worker threads keep spinning for a while after a step, slowing whatever runs next)."""
    for run in candidates.values():
        jax.block_until_ready(run())
    times: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            run = candidates[name]
            start = time.perf_counter()
            for _ in range(repeats):
                out = run()
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / repeats)
    return times


def repeated_steps(calls: int, params: Any, opt_state: Any,
                   call: Callable[[Any, Any, int], tuple[Any, Any, Any]]) -> Callable[[], object]:
    """A candidate for :func:`interleaved`: ``calls`` training steps
    ``call(params, opt_state, i) -> (params, opt_state, metrics)``, carrying the params and
    optimiser state from one run to the next; returns the last params and metrics."""
    carry = {"params": params, "opt": opt_state}

    def run():
        p, o = carry["params"], carry["opt"]
        for i in range(calls):
            p, o, metrics = call(p, o, i)
        carry["params"], carry["opt"] = p, o
        return p, metrics

    return run


def torch_device(torch: Any) -> str:
    """Where PyTorch runs: on CUDA when JAX runs on a GPU too (an accelerator run, so that
    both libraries use the same chip), else on the CPU."""
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_finish(torch: Any, device: str) -> None:
    """Wait for PyTorch's queued kernels (CUDA runs them asynchronously), so that a timed
    eager step has finished when it returns."""
    if device == "cuda":
        torch.cuda.synchronize()


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio_spread(times: dict[str, list[float]], name: str, reference: str) -> tuple[float, float]:
    """Median of the per-round ratios ``name / reference`` and their interquartile half-range."""
    ratios = sorted(a / b for a, b in zip(times[name], times[reference]))
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [ratios[0], 0, ratios[-1]]
    return statistics.median(ratios), (q[2] - q[0]) / 2


def machine() -> str:
    load = os.getloadavg()
    device = f"{jax.default_backend()} ({jax.devices()[0].device_kind})"
    return (f"{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} on "
            f"{device}, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
            f"(1/5/15 min)")
