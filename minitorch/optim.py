"""Optimisers as optax transforms: ``sgd`` with momentum, Nesterov and weight decay.

``optim.sgd`` is one optax transform whose arithmetic is, step for step, that of the chain
``optax.add_decayed_weights(wd)``, ``optax.sgd(lr, momentum, nesterov)`` (equal to the bit,
tested), and so exactly the update of ``torch.optim.SGD`` (dampening 0)::

    g  <- g + weight_decay * params              (optax.add_decayed_weights)
    v  <- momentum * v + g                        (optax.trace; v starts at 0, so v_1 = g_1)
    d  <- g + momentum * v if nesterov else v
    u  <- -learning_rate(count) * d               (optax.scale_by_learning_rate)

It is written as one transform with a dict state rather than that chain because the
state is rebuilt at every ``jit`` dispatch and a flat dict is the cheapest to rebuild: on a
4-16-3 MLP the chain's NamedTuple states cost 3-9% of a step (benchmarks/RESULTS.md).

Where it differs from PyTorch: ``learning_rate`` may be an optax schedule, read at the
number of updates already done (0 for the first); PyTorch schedulers instead mutate the
optimiser between steps. PyTorch's ``dampening`` and ``maximize`` are not offered: use
``optax.scale`` in a chain for either.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import optax


def sgd(learning_rate: float | optax.Schedule, momentum: float = 0.0, nesterov: bool = False,
        weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay.

    Args:
      learning_rate: a positive float or an optax schedule ``count -> rate``.
      momentum: the momentum factor in [0, 1); 0 means plain SGD (no momentum state).
      nesterov: use Nesterov momentum (needs ``momentum > 0``, as in PyTorch).
      weight_decay: L2 penalty added to the gradient before momentum, as in PyTorch's SGD.

    Returns:
      An ``optax.GradientTransformation``: ``state = opt.init(params)`` (a dict holding
      ``"trace"``, the momentum buffer, when ``momentum > 0`` and ``"count"``, the updates
      done, when the learning rate is a schedule), then
      ``updates, state = opt.update(grads, state, params)`` and
      ``params = optax.apply_updates(params, updates)``. ``params`` may be omitted from
      ``update`` only when ``weight_decay == 0``.
    """
    if isinstance(learning_rate, numbers.Real) and not float(learning_rate) > 0:
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
        # A plain dict, not a NamedTuple: jit rebuilds the state every step, and a dict is
        # the cheapest container to rebuild (it shows on dispatch-bound nets).
        state = {}
        if momentum:
            state["trace"] = jax.tree.map(jnp.zeros_like, params)
        if scheduled:
            state["count"] = jnp.zeros([], jnp.int32)
        return state

    def update(grads, state, params=None):
        # Each line is the arithmetic of the optax transform named beside it, in its order,
        # so that the result equals the optax chain to the bit.
        if weight_decay:
            if params is None:
                raise ValueError("sgd: update needs params when weight_decay > 0")
            # add_decayed_weights
            grads = jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)
        new_state = {}
        if momentum:  # trace
            trace = jax.tree.map(lambda g, t: g + momentum * t, grads, state["trace"])
            grads = jax.tree.map(lambda g, t: g + momentum * t, grads, trace) if nesterov else trace
            new_state["trace"] = trace
        if scheduled:  # scale_by_schedule
            rate = -learning_rate(state["count"])
            updates = jax.tree.map(lambda g: jnp.array(rate, dtype=g.dtype) * g, grads)
            new_state["count"] = optax.safe_increment(state["count"])
        else:  # scale
            updates = jax.tree.map(lambda g: -learning_rate * g, grads)
        return updates, new_state

    return optax.GradientTransformation(init, update)
