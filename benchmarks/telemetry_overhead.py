"""What full telemetry costs inside the compiled step of the digits CNN.

1. Every step: `train.make_step(net, loss, opt)` against the same with `telemetry=True`
   (per-layer gradient norms, parameter mean/variance, update ratios, activation
   mean/variance/dead fraction, all computed inside the jit'd step); the same telemetry
   step called with `telemetry=i % 10 == 0` (recorded every 10th call); and, as the
   floor of any exact activation statistic, a step that only sums every layer's output
   once (its mean), nothing else.
2. At fit's intervals: the compiled epoch of `fit` (40 full steps of 32 images and a last
   partial one) without telemetry, against the same epoch with the telemetry step run once
   per epoch (what `fit(..., telemetry=True)` compiles) and every 10 steps
   (`telemetry_every=10`).
Interleaved rounds, medians.

Run: python benchmarks/telemetry_overhead.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from digits_cnn import digits_cnn, load

from benchmarks.common import interleaved, machine, median, ratio_spread, repeated_steps
from minitorch import losses, nn, optim, train

CALLS = 20


def runner(telemetry: bool, every: int = 1, floor: bool = False):
    """``CALLS`` steps of the digits CNN; with ``telemetry`` recorded every ``every``-th
    call. ``floor``: instead of telemetry, only the mean of every layer's output."""
    (x, y), _, _ = load()
    batch = (jnp.asarray(x[:32]), jnp.asarray(y[:32]))
    net, opt = digits_cnn(), optim.sgd(0.05, momentum=0.9, nesterov=True)
    if floor:
        step = train.make_step(None, activation_means_objective(net), opt)
    else:
        step = train.make_step(net, losses.softmax_cross_entropy, opt, telemetry=telemetry)
    params, key = net.init(jax.random.key(0)), jax.random.key(1)
    record = (lambda i: {"telemetry": i % every == 0}) if telemetry else (lambda i: {})
    return repeated_steps(CALLS, params, opt.init(params),
                          lambda p, o, i: step(p, o, batch, key, **record(i)))


def activation_means_objective(net):
    """The plain step's loss and accuracy, plus one sum over every layer's output."""

    def objective(params, batch, key):
        x, y = batch
        last, outputs = nn.intermediates(net, params, x, key=key, train=True)
        means = jnp.stack([jnp.mean(jax.lax.stop_gradient(out)) for out in outputs.values()])
        value = losses.softmax_cross_entropy(last, y)
        return value, {**train.classification_metrics(last, y), "act_means": means}

    return objective


def epoch_runner(telemetry: bool, every: int | None = None):
    from minitorch.epoch import make_epoch

    (x, y), _, _ = load()
    net, opt = digits_cnn(), optim.sgd(0.05, momentum=0.9, nesterov=True)
    update = train.make_update(net, losses.softmax_cross_entropy, opt)
    probe = (train.make_update(net, losses.softmax_cross_entropy, opt, telemetry=True)
             if telemetry else None)
    epoch = make_epoch(update, len(x), 32, probe=probe, probe_every=every)
    data = (jnp.asarray(x), jnp.asarray(y))
    carry = {"params": net.init(jax.random.key(0))}
    carry["opt"] = opt.init(carry["params"])
    key = jax.random.key(1)

    def run():
        p, _, o, metrics = epoch(carry["params"], None, carry["opt"], data, key, 0)
        carry["params"], carry["opt"] = p, o
        return p, metrics

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    times = interleaved({"plain": runner(False), "telemetry": runner(True),
                         "every 10th call": runner(True, every=10),
                         "activation means only": runner(False, floor=True)},
                        rounds=args.rounds)
    for name in times:
        r, spread = ratio_spread(times, name, "plain")
        print(f"  {name:22s} {1e3 * median(times[name]) / CALLS:7.3f} ms/step  "
              f"/ plain: {r:.3f} (+-{spread:.3f})")
    print(f"({args.rounds} rounds of {CALLS} steps)")
    times = interleaved({"plain epoch": epoch_runner(False),
                         "telemetry epoch": epoch_runner(True),
                         "telemetry every 10": epoch_runner(True, 10)}, rounds=args.rounds)
    for name in times:
        print(f"  {name:18s} {1e3 * median(times[name]):7.1f} ms/epoch")
    for name, label in (("telemetry epoch", "once per epoch"),
                        ("telemetry every 10", "every 10 steps")):
        r, spread = ratio_spread(times, name, "plain epoch")
        print(f"{label}: telemetry / plain: {r:.3f} (+-{spread:.3f}), {args.rounds} rounds")
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
