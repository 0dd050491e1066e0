"""Mixed precision (``nn.MixedPrecision``, bfloat16 compute, float32 params) against float32.

For the digits CNN of examples/digits_cnn.py (batch 32) and the gpt workload of
benchmarks/compare.py (batch 32 x 64 tokens), one training step (``train.make_step``,
SGD with momentum / Adam): the time per step, interleaved rounds, as a ratio to float32's;
and what XLA's compiled step reserves (``memory_analysis``: temporaries, i.e. the
activations kept for the backward pass, and arguments + outputs). On a CPU bfloat16 has no
fast matmul units, so it may well be slower; the figure is reported, not hidden.

Run: python -m benchmarks.mixed_precision [--rounds 15]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from digits_cnn import digits_cnn

from benchmarks.common import interleaved, machine, median, ratio_spread, repeated_steps
from benchmarks.sequence_peers import SEQUENCE_WORKLOADS, minitorch_model
from minitorch import losses, nn, optim, train


def workloads():
    rng = np.random.default_rng(0)
    images = rng.random((32, 1, 8, 8), np.float32)
    gpt = SEQUENCE_WORKLOADS["gpt"]
    ids = rng.integers(0, gpt.vocab, size=(32, gpt.length + 1))
    return {
        "digits CNN": (digits_cnn(0.0), optim.sgd(0.05, momentum=0.9),
                       (jnp.asarray(images), jnp.asarray(rng.integers(0, 10, 32)))),
        "gpt": (minitorch_model(gpt), optax.adam(1e-3),
                (jnp.asarray(ids[:, :-1]), jnp.asarray(ids[:, 1:]))),
    }


def candidate(net, opt, batch, calls):
    params = net.init(jax.random.key(0))
    step = train.make_step(net, losses.softmax_cross_entropy, opt)
    return repeated_steps(calls, params, opt.init(params),
                          lambda p, o, i: step(p, o, batch, None))


def memory(net, opt, batch):
    params = net.init(jax.random.key(0))
    update = train.make_update(net, losses.softmax_cross_entropy, opt)
    stats = jax.jit(update, donate_argnums=(0, 2)).lower(
        params, None, opt.init(params), batch, None).compile().memory_analysis()
    return stats.temp_size_in_bytes, stats.argument_size_in_bytes + stats.output_size_in_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"# {machine()}, {args.rounds} rounds")
    print("| workload | float32 (ms/step) | bfloat16 compute (ms/step) | bfloat16 / float32 "
          "| temporaries float32 -> bfloat16 (MB) | arguments + outputs (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, (net, opt, batch) in workloads().items():
        mixed = nn.MixedPrecision(net)
        calls = 20 if name == "gpt" else 100
        times = interleaved({"float32": candidate(net, opt, batch, calls),
                             "bfloat16": candidate(mixed, opt, batch, calls)},
                            rounds=args.rounds)
        ratio, spread = ratio_spread(times, "bfloat16", "float32")
        (temp32, io32), (temp16, io16) = memory(net, opt, batch), memory(mixed, opt, batch)
        ms = {kind: 1e3 * median(times[kind]) / calls for kind in times}
        print(f"| {name} | {ms['float32']:.2f} | {ms['bfloat16']:.2f} "
              f"| **{ratio:.2f}** (+-{spread:.2f}) | {temp32 / 1e6:.2f} -> {temp16 / 1e6:.2f} "
              f"| {io32 / 1e6:.2f} -> {io16 / 1e6:.2f} |")


if __name__ == "__main__":
    main()
