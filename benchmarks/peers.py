"""The benchmark workloads written the idiomatic way in each peer library.

Every builder takes a :class:`benchmarks.workloads.Workload` and returns a ``make`` of no
arguments that builds the model, its optimiser and the batch and returns ``run()``: one
training step (forward, backward, SGD with momentum 0.9 and learning rate 0.01, softmax
cross-entropy on integer labels), carrying params and optimiser state from call to call
and returning something to block on. Building is separate from the first call so that
compile time can be timed alone.

Layouts are each library's own: minitorch, raw JAX, Equinox and PyTorch take NCHW images;
stax, Flax and Haiku convolve NHWC, so their batch is transposed once, outside the timing.
The JAX peers use ``optax.sgd(0.01, momentum=0.9)``; the step is jit'd as each library's
documentation shows (``jax.jit`` with donation, ``nnx.jit``, ``eqx.filter_jit``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.common import torch_device, torch_finish
from benchmarks.workloads import (
    LEARNING_RATE,
    MOMENTUM,
    Workload,
    minitorch_net,
    raw_init,
    raw_step_fn,
)

Run = Callable[[], object]


def _widths(w: Workload) -> tuple[int, ...]:
    return (w.input_shape[0], *w.hidden, w.classes)


def _nhwc(x):
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def carry_run(step, params, opt_state, x, y) -> Run:
    """A run() for a functional step ``(params, opt_state, x, y) -> (params, opt_state, loss)``."""
    carry = [params, opt_state]

    def run():
        carry[0], carry[1], loss = step(carry[0], carry[1], x, y)
        return loss

    return run


def optax_step(loss_fn, tx):
    """The usual optax step around ``loss_fn(params, x, y)``, jit'd with donation."""

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def _sgd():
    return optax.sgd(LEARNING_RATE, momentum=MOMENTUM)


def apply_step(apply, params, x, y):
    """The optax SGD step (momentum, jit'd, donating) around the cross-entropy of
    ``apply(params, x)``, and its first arguments ``(params, opt_state, x, y)``."""
    tx = _sgd()
    return optax_step(lambda p, x, y: xent(apply(p, x), y), tx), (params, tx.init(params), x, y)


def _init_apply_run(w: Workload, init, apply) -> Run:
    """A run() for a library of init/apply pairs (stax, Flax linen, Haiku): an NHWC batch,
    ``params = init(key, x)``, the optax step around ``apply(params, x)``."""
    x, y = w.data()
    x = _nhwc(x)
    step, args = apply_step(apply, init(jax.random.key(0), x), x, y)
    return carry_run(step, *args)


# ---- minitorch and raw JAX --------------------------------------------------------------

def minitorch(w: Workload) -> Callable[[], Run]:
    from minitorch import losses, optim, train

    def make():
        x, y = w.data()
        net = minitorch_net(w)
        opt = optim.sgd(LEARNING_RATE, momentum=MOMENTUM)
        step = train.make_step(net, losses.softmax_cross_entropy, opt, accuracy=False)
        params = net.init(jax.random.key(0))
        carry = [params, opt.init(params)]

        def run():
            carry[0], carry[1], metrics = step(carry[0], carry[1], (x, y), None)
            return metrics["loss"]

        return run

    return make


def raw_jax_step(w: Workload):
    """Raw JAX's jit'd step and its first arguments ``(params, velocity, x, y)``."""
    x, y = w.data()
    params = raw_init(w, jax.random.key(0))
    return raw_step_fn(w), (params, jax.tree.map(jnp.zeros_like, params), x, y)


def raw_jax(w: Workload) -> Callable[[], Run]:
    def make():
        step, args = raw_jax_step(w)
        return carry_run(step, *args)

    return make


# ---- stax ---------------------------------------------------------------------------------

def stax(w: Workload) -> Callable[[], Run]:
    from jax.example_libraries import stax as st

    def make():
        if w.name == "cnn":
            layers = [st.Conv(32, (3, 3)), st.Relu, st.MaxPool((2, 2), (2, 2)),
                      st.Conv(64, (3, 3)), st.Relu, st.MaxPool((2, 2), (2, 2)),
                      st.Flatten, st.Dense(128), st.Relu, st.Dense(w.classes)]
        else:
            layers = []
            for width in _widths(w)[1:-1]:
                layers += [st.Dense(width), st.Relu]
            layers.append(st.Dense(w.classes))
        init, apply = st.serial(*layers)
        return _init_apply_run(w, lambda key, x: init(key, x.shape)[1], apply)

    return make


# ---- Flax linen ---------------------------------------------------------------------------

def flax_linen(w: Workload) -> Callable[[], Run]:
    from flax import linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            if w.name == "cnn":
                for features in (32, 64):
                    x = nn.max_pool(nn.relu(nn.Conv(features, (3, 3), padding="VALID")(x)),
                                    (2, 2), (2, 2))
                x = nn.relu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
                return nn.Dense(w.classes)(x)
            for width in _widths(w)[1:-1]:
                x = nn.relu(nn.Dense(width)(x))
            return nn.Dense(w.classes)(x)

    def make():
        model = Net()
        return _init_apply_run(w, model.init, model.apply)

    return make


# ---- Flax NNX -----------------------------------------------------------------------------

def flax_nnx(w: Workload) -> Callable[[], Run]:
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            if w.name == "cnn":
                self.convs = nnx.List([nnx.Conv(1, 32, (3, 3), padding="VALID", rngs=rngs),
                                       nnx.Conv(32, 64, (3, 3), padding="VALID", rngs=rngs)])
                widths = (64 * 5 * 5, 128, w.classes)
            else:
                self.convs = nnx.List([])
                widths = _widths(w)
            self.dense = nnx.List([nnx.Linear(a, b, rngs=rngs)
                                   for a, b in itertools.pairwise(widths)])

        def __call__(self, x):
            for conv in self.convs:
                x = nnx.max_pool(nnx.relu(conv(x)), (2, 2), (2, 2))
            x = x.reshape(x.shape[0], -1)
            for layer in self.dense[:-1]:
                x = nnx.relu(layer(x))
            return self.dense[-1](x)

    def make():
        x, y = w.data()
        x = _nhwc(x)
        return nnx_run(Net(nnx.Rngs(0)), _sgd(), x, y)

    return make


def nnx_run(model, tx, x, y) -> Run:
    """run() for a Flax NNX ``model``: ``nnx.Optimizer`` and ``nnx.jit``, as NNX's
    documentation writes the step."""
    from flax import nnx

    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: xent(m(x), y))(model)
        optimizer.update(model, grads)
        return loss

    return lambda: step(model, optimizer, x, y)


# ---- Haiku --------------------------------------------------------------------------------

def haiku(w: Workload) -> Callable[[], Run]:
    import haiku as hk

    def forward(x):
        if w.name == "cnn":
            for features in (32, 64):
                x = hk.Conv2D(features, 3, padding="VALID")(x)
                x = hk.max_pool(jax.nn.relu(x), 2, 2, "VALID")
            x = jax.nn.relu(hk.Linear(128)(hk.Flatten()(x)))
            return hk.Linear(w.classes)(x)
        return hk.nets.MLP([*_widths(w)[1:]])(x)

    def make():
        model = hk.without_apply_rng(hk.transform(forward))
        return _init_apply_run(w, model.init, model.apply)

    return make


# ---- Equinox ------------------------------------------------------------------------------

def equinox(w: Workload) -> Callable[[], Run]:
    import equinox as eqx

    def build(key):
        keys = jax.random.split(key, 4)
        if w.name == "cnn":
            return eqx.nn.Sequential([
                eqx.nn.Conv2d(1, 32, 3, key=keys[0]), eqx.nn.Lambda(jax.nn.relu),
                eqx.nn.MaxPool2d(2, 2),
                eqx.nn.Conv2d(32, 64, 3, key=keys[1]), eqx.nn.Lambda(jax.nn.relu),
                eqx.nn.MaxPool2d(2, 2), eqx.nn.Lambda(jnp.ravel),
                eqx.nn.Linear(64 * 5 * 5, 128, key=keys[2]), eqx.nn.Lambda(jax.nn.relu),
                eqx.nn.Linear(128, w.classes, key=keys[3])])
        widths = _widths(w)
        return eqx.nn.MLP(widths[0], widths[-1], widths[1], len(widths) - 2,
                          activation=jax.nn.relu, key=key)

    def make():
        x, y = w.data()
        return equinox_run(build(jax.random.key(0)), _sgd(), x, y)

    return make


def equinox_run(model, tx, x, y) -> Run:
    """run() for an Equinox ``model`` of one example, vmapped over the batch: the step as
    Equinox's documentation writes it (``filter_jit`` with donation)."""
    import equinox as eqx

    @eqx.filter_value_and_grad
    def loss_fn(model, x, y):
        return xent(jax.vmap(model)(x), y)

    @eqx.filter_jit(donate="all")
    def step(model, opt_state, x, y):
        loss, grads = loss_fn(model, x, y)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    return carry_run(step, model, tx.init(eqx.filter(model, eqx.is_array)), x, y)


# ---- PyTorch eager ------------------------------------------------------------------------

def pytorch(w: Workload) -> Callable[[], Run]:
    import torch

    def make():
        torch.manual_seed(0)
        if w.name == "cnn":
            model = torch.nn.Sequential(
                torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                torch.nn.Flatten(), torch.nn.Linear(64 * 5 * 5, 128), torch.nn.ReLU(),
                torch.nn.Linear(128, w.classes))
        else:
            layers = []
            for a, b in itertools.pairwise(_widths(w)):
                layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
            model = torch.nn.Sequential(*layers[:-1])
        device = torch_device(torch)
        model = model.to(device)
        opt = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
        x, y = w.data()
        x = torch.tensor(np.asarray(x), device=device)
        y = torch.tensor(np.asarray(y), dtype=torch.long, device=device)

        def run():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            torch_finish(torch, device)
            return None  # eager: the step has finished when it returns

        return run

    return make


PEERS: dict[str, Callable[[Workload], Callable[[], Run]]] = {
    "minitorch": minitorch, "raw JAX": raw_jax, "stax": stax, "Flax linen": flax_linen,
    "Flax NNX": flax_nnx, "Haiku": haiku, "Equinox": equinox, "PyTorch eager": pytorch,
}
JAX_PEERS = ("stax", "Flax linen", "Flax NNX", "Haiku", "Equinox")
