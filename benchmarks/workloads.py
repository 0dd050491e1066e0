"""The benchmark workloads: the same model and batch for every implementation.

tiny  MLP 4-16-3, batch 16          small MLP 64-256-256-10, batch 128
large MLP 784-2048-2048-10, batch 512
cnn   1x28x28: conv3x3x32-relu-pool2-conv3x3x64-relu-pool2-dense128-relu-dense10, batch 128

One training step = forward, backward, SGD with momentum 0.9 (learning rate 0.01),
softmax cross-entropy on integer labels.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from minitorch import nn

LEARNING_RATE, MOMENTUM = 0.01, 0.9


@dataclass(frozen=True)
class Workload:
    name: str
    batch: int
    input_shape: tuple[int, ...]
    classes: int
    hidden: tuple[int, ...] = ()  # MLP widths
    calls: int = 100  # step calls per timed round

    def data(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(self.batch, *self.input_shape)).astype(np.float32)
        y = rng.integers(0, self.classes, size=self.batch).astype(np.int32)
        return jnp.asarray(x), jnp.asarray(y)

    def flops(self) -> float:
        """Matmul FLOPs of one step of an MLP: 6 x batch x sum(in x out)."""
        widths = (self.input_shape[0], *self.hidden, self.classes)
        return 6.0 * self.batch * sum(a * b for a, b in itertools.pairwise(widths))


WORKLOADS = {
    "tiny": Workload("tiny", 16, (4,), 3, (16,), calls=2000),
    "small": Workload("small", 128, (64,), 10, (256, 256), calls=300),
    "large": Workload("large", 512, (784,), 10, (2048, 2048), calls=4),
    "cnn": Workload("cnn", 128, (1, 28, 28), 10, calls=3),
}


def minitorch_net(w: Workload) -> nn.Net:
    if w.name == "cnn":
        return nn.Net([nn.Conv2D(1, 32, 3), nn.ReLU(), nn.MaxPool2D(2),
                       nn.Conv2D(32, 64, 3), nn.ReLU(), nn.MaxPool2D(2),
                       nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(),
                       nn.Linear(128, 10)])
    widths = (w.input_shape[0], *w.hidden, w.classes)
    layers = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Net(layers[:-1])


# ---- raw JAX: a list of dict params, value_and_grad, manual momentum ---------------------

def raw_init(w: Workload, key):
    """The same params as minitorch_net(w).init(key), as raw JAX code would hold them."""
    return [p for p in minitorch_net(w).init(key) if p]


def raw_forward(w: Workload, params, x):
    if w.name == "cnn":
        def conv(p, x):
            y = lax.conv_general_dilated(x, p["W"], (1, 1), "VALID",
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
            return y + p["b"][:, None, None]

        def pool(x):
            return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

        x = pool(jax.nn.relu(conv(params[0], x)))
        x = pool(jax.nn.relu(conv(params[1], x)))
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(x @ params[2]["W"] + params[2]["b"])
        return x @ params[3]["W"] + params[3]["b"]
    for p in params[:-1]:
        x = jax.nn.relu(x @ p["W"] + p["b"])
    return x @ params[-1]["W"] + params[-1]["b"]


def raw_step_fn(w: Workload, accuracy: bool = False):
    """The raw step; with ``accuracy`` it also returns the batch accuracy (an argmax), the
    metrics minitorch's step returns by default."""

    def loss_fn(params, x, y):
        logits = raw_forward(w, params, x)
        logp = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(logp, y[:, None], axis=1).mean(), logits

    def step(params, velocity, x, y):
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        velocity = jax.tree.map(lambda v, g: MOMENTUM * v + g, velocity, grads)
        params = jax.tree.map(lambda p, v: p - LEARNING_RATE * v, params, velocity)
        if accuracy:
            return params, velocity, (loss, (logits.argmax(axis=1) == y).mean())
        return params, velocity, loss

    return jax.jit(step, donate_argnums=(0, 1))
