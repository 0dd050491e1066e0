"""Telemetry: pure, jit-able statistics of params, gradients, updates and activations.

Every function takes pytrees and returns a flat dict keyed by where the numbers come from:
``"3"`` is the net's layer 3 (``"5.0"`` layer 0 of the nested net at index 5) and
``"3.W"`` its parameter ``W``. Layers without parameters are left out of the parameter
statistics. All are reductions meant to run inside a compiled step: on the digits CNN
the full set costs ~2% of training when recorded every 10th step or once per epoch
(``make_step(..., telemetry=True)``'s ``telemetry=`` per call, ``fit(telemetry=True)``),
~23% when recorded at every step (benchmarks/RESULTS.md).

Example::

    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    norms = monitor.grad_norms(grads)                     # {"0": ..., "4": ...}
    outputs = monitor.capture(net, params, x)             # every layer's output
    acts = monitor.activation_stats(net, outputs)         # mean, var, dead fraction
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from minitorch.nn.activations import ReLU
from minitorch.nn.core import Array, Net, Params, PRNGKey, State, index_paths, layer_tree


def grad_norms(grads: Params) -> dict[str, Array]:
    """The global L2 norm of each layer's gradient: ``{"0": ||g_0||, ...}``."""
    return {path: jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(tree)))
            for path, tree in index_paths(grads) if jax.tree.leaves(tree)}


def param_stats(params: Params) -> dict[str, dict[str, Array]]:
    """Mean and variance of every parameter array: ``{"0.W": {"mean": .., "var": ..}, ...}``."""
    return {f"{path}.{name}": {"mean": jnp.mean(value), "var": jnp.var(value)}
            for path, tree in index_paths(params) if isinstance(tree, dict)
            for name, value in tree.items()}


def update_ratios(updates: Params, params: Params) -> dict[str, Array]:
    """``||update|| / ||param||`` per parameter array (about 1e-3 is healthy for SGD).

    ``updates`` are what the optimiser returns (``params + updates`` is the next params).
    """
    tiny = 1e-12  # a zero-initialised bias has no scale yet; keep the ratio finite
    return {f"{path}.{name}": jnp.linalg.norm(jnp.ravel(u)) /
            (jnp.linalg.norm(jnp.ravel(p)) + tiny)
            for (path, u_tree), (_, p_tree) in zip(index_paths(updates), index_paths(params))
            if isinstance(u_tree, dict)
            for (name, u), p in zip(u_tree.items(), p_tree.values())}


def capture(net: Net, params: Params, x: Array, *, key: PRNGKey | None = None,
            train: bool = False, state: State = None) -> list[Any]:
    """Every layer's output for input ``x``: a list with one entry per layer (a nested net's
    entry is the list of its layers' outputs). The last entry is ``net.apply``'s output."""
    return net._run(params, x, key=key, train=train, state=state, capture=True)[2]


def activation_stats(net: Net, outputs: list[Any]) -> dict[str, dict[str, Array]]:
    """Mean, variance and, after a ReLU, the fraction of dead units of every layer's output.

    A unit (a position of the output after the batch axis) is dead when it is zero for every
    example of the batch. ``outputs`` is what :func:`capture` returns.
    """
    stats = {}
    for (path, layer), (_, out) in zip(index_paths(layer_tree(net)), index_paths(outputs)):
        entry = {"mean": jnp.mean(out), "var": jnp.var(out)}
        if isinstance(layer, ReLU):
            entry["dead"] = jnp.mean(jnp.all(out == 0, axis=0))
        stats[path] = entry
    return stats
