"""Optimisers as optax transforms: ``sgd`` with momentum, Nesterov and weight decay.

``optim.sgd`` is one optax transform whose arithmetic is, step for step, that of the chain
``optax.add_decayed_weights(wd)``, ``optax.sgd(lr, momentum, nesterov)`` (equal to the bit,
tested), and so exactly the update of ``torch.optim.SGD`` (dampening 0)::

    g  <- g + weight_decay * params              (optax.add_decayed_weights)
    v  <- momentum * v + g                        (optax.trace; v starts at 0, so v_1 = g_1)
    d  <- g + momentum * v if nesterov else v
    u  <- -learning_rate(count) * d               (optax.scale_by_learning_rate)

It is written as one transform rather than that chain because a flat state pytree is
cheaper to pass through every ``jit`` dispatch: on a 4-16-3 MLP the chain cost 3-9% of a
step (benchmarks/RESULTS.md).

Where it differs from PyTorch: ``learning_rate`` may be an optax schedule, read at the
number of updates already done (0 for the first); PyTorch schedulers instead mutate the
optimiser between steps. PyTorch's ``dampening`` and ``maximize`` are not offered: use
``optax.scale`` in a chain for either.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class SGDState(NamedTuple):
    """``trace``: the momentum buffer (None without momentum); ``count``: updates done (None
    with a constant learning rate)."""

    trace: Any
    count: Any


def sgd(learning_rate: float | optax.Schedule, momentum: float = 0.0, nesterov: bool = False,
        weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay.

    Args:
      learning_rate: a positive float or an optax schedule ``count -> rate``.
      momentum: the momentum factor in [0, 1); 0 means plain SGD (no momentum state).
      nesterov: use Nesterov momentum (needs ``momentum > 0``, as in PyTorch).
      weight_decay: L2 penalty added to the gradient before momentum, as in PyTorch's SGD.

    Returns:
      An ``optax.GradientTransformation``: ``state = opt.init(params)``, then
      ``updates, state = opt.update(grads, state, params)`` and
      ``params = optax.apply_updates(params, updates)``. ``params`` may be omitted from
      ``update`` only when ``weight_decay == 0``.
    """
    if isinstance(learning_rate, numbers.Real) and not learning_rate > 0:
        raise ValueError(f"sgd: learning_rate must be > 0, received {learning_rate!r}")
    if not callable(learning_rate) and not isinstance(learning_rate, numbers.Real):
        raise TypeError(f"sgd: learning_rate must be a number or an optax schedule, "
                        f"received {type(learning_rate).__name__}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"sgd: momentum must be in [0, 1), received {momentum!r}")
    if nesterov and momentum == 0.0:
        raise ValueError("sgd: nesterov=True needs momentum > 0")
    if weight_decay < 0.0:
        raise ValueError(f"sgd: weight_decay must be >= 0, received {weight_decay!r}")
    scheduled = callable(learning_rate)

    def init(params):
        return SGDState(trace=jax.tree.map(jnp.zeros_like, params) if momentum else None,
                        count=jnp.zeros([], jnp.int32) if scheduled else None)

    def update(grads, state, params=None):
        # Each line is the arithmetic of the optax transform named beside it, in its order,
        # so that the result equals the optax chain to the bit.
        if weight_decay:
            if params is None:
                raise ValueError("sgd: update needs params when weight_decay > 0")
            # add_decayed_weights
            grads = jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)
        trace = state.trace
        if momentum:
            trace = jax.tree.map(lambda g, t: g + momentum * t, grads, trace)  # trace
            grads = jax.tree.map(lambda g, t: g + momentum * t, grads, trace) if nesterov else trace
        if scheduled:  # scale_by_schedule
            rate = -learning_rate(state.count)
            updates = jax.tree.map(lambda g: jnp.array(rate, dtype=g.dtype) * g, grads)
            count = optax.safe_increment(state.count)
        else:  # scale
            updates = jax.tree.map(lambda g: -learning_rate * g, grads)
            count = None
        return updates, SGDState(trace=trace, count=count)

    return optax.GradientTransformation(init, update)
