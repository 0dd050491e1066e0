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

from benchmarks.common import interleaved, machine, median, ratio_spread
from benchmarks.workloads import WORKLOADS, minitorch_net, raw_init, raw_step_fn
from minitorch import losses, optim, train


def candidates(w):
    x, y = w.data()
    net = minitorch_net(w)
    opt = optim.sgd(0.01, momentum=0.9)
    runs = {}
    for accuracy in (False, True):
        suffix = " +acc" if accuracy else ""
        step = train.make_step(net, losses.softmax_cross_entropy, opt, accuracy=accuracy)
        params = net.init(jax.random.key(0))
        runs["minitorch" + suffix] = looped(w, step, params, opt.init(params), lambda s, p, o:
                                            s(p, o, (x, y), None))
        params = raw_init(w, jax.random.key(0))
        runs["raw JAX" + suffix] = looped(w, raw_step_fn(w, accuracy), params,
                                          jax.tree.map(jax.numpy.zeros_like, params),
                                          lambda s, p, v: s(p, v, x, y))
    return runs


def looped(w, step, params, opt_state, call):
    """A candidate: ``w.calls`` steps, carrying params and optimiser state across calls."""
    carry = {"params": params, "opt": opt_state}

    def run():
        p, o = carry["params"], carry["opt"]
        for _ in range(w.calls):
            p, o, _ = call(step, p, o)
        carry["params"], carry["opt"] = p, o
        return p

    return run


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
