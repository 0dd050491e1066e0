"""minitorch's jit'd training step against a hand-written raw-JAX step, same model and batch.

The library step is `train.make_step(net, losses.softmax_cross_entropy, optim.sgd(0.01,
momentum=0.9))` (params and optimiser state donated); the raw step is
benchmarks/workloads.py's `raw_step_fn` (list of dict params, value_and_grad, manual
momentum, same layout, same donation). Two like-for-like pairs: both returning the loss
only (`make_step(..., accuracy=False)`), and both returning loss and accuracy (the
library's default). Interleaved rounds, medians of the per-round ratios.

Run: python benchmarks/step_vs_raw.py [--rounds 15] [--workloads tiny small large cnn]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import interleaved, machine, median, ratio_spread, repeated_steps
from benchmarks.workloads import WORKLOADS, minitorch_net, raw_init, raw_step_fn
from minitorch import losses, optim, train


def candidates(w):
    x, y = w.data()
    net = minitorch_net(w)
    opt = optim.sgd(0.01, momentum=0.9)

    def pair(accuracy):
        suffix = " +acc" if accuracy else ""
        step = train.make_step(net, losses.softmax_cross_entropy, opt, accuracy=accuracy)
        raw_step = raw_step_fn(w, accuracy)
        params, raw_params = net.init(jax.random.key(0)), raw_init(w, jax.random.key(0))
        return {
            "minitorch" + suffix: repeated_steps(w.calls, params, opt.init(params),
                                                 lambda p, o, _: step(p, o, (x, y), None)),
            "raw JAX" + suffix: repeated_steps(w.calls, raw_params,
                                               jax.tree.map(jax.numpy.zeros_like, raw_params),
                                               lambda p, v, _: raw_step(p, v, x, y))}

    return {**pair(False), **pair(True)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print("| workload | raw JAX (us/step) | minitorch (us/step) | minitorch / raw, loss only "
          "| raw +acc (us/step) | minitorch +acc (us/step) | minitorch / raw, loss and accuracy |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.workloads:
        w = WORKLOADS[name]
        times = interleaved(candidates(w), rounds=args.rounds)
        per_step = {k: [t / w.calls for t in v] for k, v in times.items()}
        cells = []
        for suffix in ("", " +acc"):
            r, spread = ratio_spread(per_step, "minitorch" + suffix, "raw JAX" + suffix)
            cells += [f"{1e6 * median(per_step['raw JAX' + suffix]):.1f}",
                      f"{1e6 * median(per_step['minitorch' + suffix]):.1f}",
                      f"**{r:.3f}** (+-{spread:.3f})"]
        print(f"| {name} | {' | '.join(cells)} |", flush=True)
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
