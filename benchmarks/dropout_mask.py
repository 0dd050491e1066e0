"""What Dropout's mask costs: `jax.random.bernoulli` (JAX's Threefry, lowered on the CPU
as a five-iteration while loop) against `minitorch.nn.bernoulli` (the same bits from an
unrolled hash that XLA fuses into one kernel), alone and inside the digits CNN's step.

Interleaved rounds, medians of per-round ratios.

Run: python benchmarks/dropout_mask.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from digits_cnn import digits_cnn, load

from benchmarks.common import interleaved, machine, median, ratio_spread, repeated_steps
from minitorch import losses, nn, optim, train
from minitorch.nn.bernoulli import bernoulli

CALLS = 20


@dataclasses.dataclass(frozen=True)
class JaxDropout(nn.Dropout):
    """nn.Dropout with its mask from jax.random.bernoulli (what it did before)."""

    def apply(self, params, x, *, key=None, train=False):
        if not train:
            return x
        keep = jax.random.bernoulli(key, 1.0 - self.rate, jnp.shape(x))
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros((), x.dtype))


def mask_runner(sample, shape):
    fn = jax.jit(lambda k: sample(k, 0.75, shape))
    key = jax.random.key(0)

    def run():
        for _ in range(CALLS):
            out = fn(key)
        return out

    return run


def step_runner(dropout_layer):
    (x, y), _, _ = load()
    batch = (jnp.asarray(x[:32]), jnp.asarray(y[:32]))
    layers = list(digits_cnn().layers)
    layers = [dropout_layer(layer.rate) if isinstance(layer, nn.Dropout) else layer
              for layer in layers]
    net, opt = nn.Net(layers), optim.sgd(0.05, momentum=0.9, nesterov=True)
    step = train.make_step(net, losses.softmax_cross_entropy, opt)
    params, key = net.init(jax.random.key(0)), jax.random.key(1)
    return repeated_steps(CALLS, params, opt.init(params),
                          lambda p, o, _: step(p, o, batch, key))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for shape in ((32, 512), (256, 1024)):
        times = interleaved({"jax.random.bernoulli": mask_runner(jax.random.bernoulli, shape),
                             "nn.bernoulli": mask_runner(bernoulli, shape)},
                            rounds=args.rounds)
        r, spread = ratio_spread(times, "nn.bernoulli", "jax.random.bernoulli")
        print(f"mask {shape}: " + ", ".join(f"{name} {1e6 * median(t) / CALLS:.1f} us"
                                            for name, t in times.items())
              + f"; ratio {r:.3f} (+-{spread:.3f})")
    times = interleaved({"jax.random.bernoulli": step_runner(JaxDropout),
                         "nn.bernoulli": step_runner(nn.Dropout)}, rounds=args.rounds)
    r, spread = ratio_spread(times, "nn.bernoulli", "jax.random.bernoulli")
    print("digits CNN step (batch 32): " + ", ".join(
        f"{name} {1e3 * median(t) / CALLS:.3f} ms" for name, t in times.items())
        + f"; ratio {r:.3f} (+-{spread:.3f})")
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
