"""Telemetry: pure, jit-able statistics of params, gradients, updates and activations.

Every function takes pytrees and returns a flat dict keyed by where the numbers come from:
``"3"`` is the net's layer 3 (``"5.0"`` layer 0 of the nested net at index 5, ``"2.attn"``
a composite's sub-layer) and ``"3.W"`` its parameter ``W``. Layers without parameters are
left out of the parameter statistics. All are reductions meant to run inside a compiled
step: on the digits CNN the full set costs ~2% of training when recorded every 10th step or
once per epoch (``make_step(..., telemetry=True)``'s ``telemetry=`` per call,
``fit(telemetry=True)``), ~23% when recorded at every step (benchmarks/RESULTS.md).

Example::

    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    norms = monitor.grad_norms(grads)                     # {"0": ..., "4": ...}
    outputs = monitor.capture(net, params, x)             # {path: output} of every layer
    acts = monitor.activation_stats(net, outputs)         # mean, var, dead fraction
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from minitorch.nn.activations import ReLU
from minitorch.nn.containers import intermediates
from minitorch.nn.core import Array, Layer, Params, PRNGKey, State
from minitorch.nn.paths import named_layers, param_groups


def grad_norms(grads: Params) -> dict[str, Array]:
    """The global L2 norm of each layer's gradient: ``{"0": ||g_0||, "2.attn.q": ...}``.

    A "layer" here is each dict of arrays in the tree (see
    :func:`~minitorch.nn.core.param_groups`), keyed by its path.
    """
    return {path: jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in group.values()))
            for path, group in param_groups(grads) if group}


def param_stats(params: Params) -> dict[str, dict[str, Array]]:
    """Mean and variance of every parameter array: ``{"0.W": {"mean": .., "var": ..}, ...}``."""
    return {f"{path}.{name}": {"mean": jnp.mean(value), "var": jnp.var(value)}
            for path, group in param_groups(params) for name, value in group.items()}


def update_ratios(updates: Params, params: Params) -> dict[str, Array]:
    """``||update|| / ||param||`` per parameter array (about 1e-3 is healthy for SGD).

    ``updates`` are what the optimiser returns (``params + updates`` is the next params).
    """
    tiny = 1e-12  # a zero-initialised bias has no scale yet; keep the ratio finite
    return {f"{path}.{name}": jnp.linalg.norm(jnp.ravel(u)) /
            (jnp.linalg.norm(jnp.ravel(p_group[name])) + tiny)
            for (path, u_group), (_, p_group) in zip(param_groups(updates), param_groups(params))
            for name, u in u_group.items()}


def capture(net: Layer, params: Params, x: Array, *, key: PRNGKey | None = None,
            train: bool = False, state: State = None) -> dict[str, Any]:
    """Every sub-layer's output for input ``x``, keyed by path (``"3"``, ``"5.0"``,
    ``"2.attn"``); for a ``Net`` the entry of its last layer is ``net.apply``'s output.
    See :func:`minitorch.nn.intermediates`."""
    return intermediates(net, params, x, key=key, train=train, state=state)[1]


def activation_stats(net: Layer, outputs: dict[str, Any]) -> dict[str, dict[str, Array]]:
    """Mean, variance and, after a ReLU, the fraction of dead units of every layer's output.

    A unit (a position of the output after the batch axis) is dead when it is zero for every
    example of the batch. ``outputs`` is what :func:`capture` returns; entries that are not
    arrays (a recurrent layer's tuple carry, say) are left out.
    """
    layers = named_layers(net)
    stats = {}
    for path, out in outputs.items():
        if not isinstance(out, jax.Array):
            continue
        entry = {"mean": jnp.mean(out), "var": jnp.var(out)}
        if isinstance(layers.get(path), ReLU):
            entry["dead"] = jnp.mean(jnp.all(out == 0, axis=0))
        stats[path] = entry
    return stats
