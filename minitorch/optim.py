"""Optimisers as optax transforms: ``sgd`` with momentum, Nesterov and weight decay, and
``dynamic_loss_scale`` for float16 mixed precision.

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

import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from minitorch.nn.precision import at_least_f32


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


class LossScaleState(NamedTuple):
    """The state of :func:`dynamic_loss_scale`: the current scale (float32), the finite
    steps since it last changed (int32), and the wrapped optimiser's state."""

    scale: jax.Array
    good_steps: jax.Array
    inner: Any


def dynamic_loss_scale(optimizer: optax.GradientTransformation, *,
                       initial_scale: float = 2.0 ** 15, growth_interval: int = 2000,
                       factor: float = 2.0, min_scale: float = 1.0
                       ) -> optax.GradientTransformation:
    """Dynamic loss scaling for float16 compute (Micikevicius et al. 2018), as an optax
    wrapper around ``optimizer``.

    The step multiplies the loss by :func:`loss_scale` of the optimiser state before taking
    gradients (``train.make_step`` does; a hand-written step does it itself), so that small
    float16 gradients do not flush to zero. ``update`` divides the gradients by the scale;
    when any is inf or NaN the step is skipped (zero updates, the wrapped state unchanged)
    and the scale divided by ``factor`` (not below ``min_scale``); after
    ``growth_interval`` finite steps in a row it is multiplied by ``factor``.

    Example::

        opt = optim.dynamic_loss_scale(optax.adam(1e-3))
        def step(params, opt_state, x, y):
            scale = optim.loss_scale(opt_state)
            grads = jax.grad(lambda p: loss(p, x, y) * scale)(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state
    """
    if not (isinstance(initial_scale, numbers.Real) and initial_scale >= min_scale > 0):
        raise ValueError(f"dynamic_loss_scale: need initial_scale >= min_scale > 0, received "
                         f"{initial_scale!r} and {min_scale!r}")
    if not (isinstance(factor, numbers.Real) and factor > 1):
        raise ValueError(f"dynamic_loss_scale: factor must be > 1, received {factor!r}")
    if not (isinstance(growth_interval, int) and growth_interval >= 1):
        raise ValueError(f"dynamic_loss_scale: growth_interval must be a positive int, "
                         f"received {growth_interval!r}")

    def init(params):
        return LossScaleState(jnp.asarray(initial_scale, jnp.float32),
                              jnp.zeros([], jnp.int32), optimizer.init(params))

    def update(grads, state, params=None):
        # Unscaled in at least float32: the scale itself may exceed float16's range, where
        # g / inf = 0 would pass for a finite step; the scaled gradients must be finite.
        leaves = jax.tree.leaves(grads)
        finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in leaves]))
        grads = jax.tree.map(lambda g: (at_least_f32(g) / state.scale).astype(g.dtype), grads)
        updates, inner = optimizer.update(grads, state.inner, params)
        updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
        inner = jax.tree.map(lambda new, old: jnp.where(finite, new, old), inner, state.inner)
        grow = finite & (state.good_steps + 1 >= growth_interval)
        scale = jnp.where(grow, jnp.minimum(state.scale * factor, _largest_scale(leaves)),
                          state.scale)
        scale = jnp.where(finite, scale, jnp.maximum(state.scale / factor, min_scale))
        good_steps = jnp.where(finite & ~grow, state.good_steps + 1, 0)
        return updates, LossScaleState(scale, good_steps.astype(jnp.int32), inner)

    return optax.GradientTransformation(init, update)


def _largest_scale(grads: list[Any]) -> float:
    """The largest power of two finite in every floating gradient's dtype (2^15 with float16
    gradients): beyond it the scale is already inf as a float16 cotangent, so growing
    further could only ever produce skipped steps."""
    dtypes = [jnp.result_type(g) for g in grads if jnp.issubdtype(jnp.result_type(g),
                                                                    jnp.floating)]
    largest = min((float(jnp.finfo(d).max) for d in dtypes), default=float(
        jnp.finfo(jnp.float32).max))
    return 2.0 ** math.floor(math.log2(largest))


def loss_scale(opt_state: Any) -> Any:
    """The factor to multiply the loss by before taking gradients: the current scale of the
    :func:`dynamic_loss_scale` in ``opt_state`` (found anywhere in it), else 1.0."""
    for part in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, LossScaleState)):
        if isinstance(part, LossScaleState):
            return part.scale
    return 1.0
