"""Optimisers as optax transforms: ``sgd`` with momentum, Nesterov and weight decay.

``optim.sgd`` is a chain of optax's own building blocks, so it is exactly the update of
``torch.optim.SGD`` (dampening 0) and of ``optax.sgd`` + ``optax.add_decayed_weights``::

    g  <- g + weight_decay * params              (optax.add_decayed_weights)
    v  <- momentum * v + g                        (optax.trace; v starts at 0, so v_1 = g_1)
    d  <- g + momentum * v if nesterov else v
    u  <- -learning_rate(count) * d               (optax.scale_by_learning_rate)

Where it differs from PyTorch: ``learning_rate`` may be an optax schedule, read at the
number of updates already done (0 for the first); PyTorch schedulers instead mutate the
optimiser between steps. PyTorch's ``dampening`` and ``maximize`` are not offered: use
``optax.scale`` in a chain for either.
"""

from __future__ import annotations

import numbers

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
    return optax.chain(
        optax.add_decayed_weights(weight_decay) if weight_decay else optax.identity(),
        optax.trace(decay=momentum, nesterov=nesterov) if momentum else optax.identity(),
        optax.scale_by_learning_rate(learning_rate),
    )
