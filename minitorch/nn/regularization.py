"""``Dropout``."""

from __future__ import annotations

import jax.numpy as jnp

from minitorch.errors import KeyArgError
from minitorch.nn.bernoulli import bernoulli
from minitorch.nn.checks import check_float, check_key, check_params, name_of
from minitorch.nn.core import Array, Layer, Params, PRNGKey, set_fields
from minitorch.validate import real


class Dropout(Layer):
    """Zero each element with probability ``rate`` and scale the rest by ``1 / (1 - rate)``.

    Active only with ``train=True``, which needs a ``key``; with ``train=False`` it is
    the identity, so evaluation needs no key.

    Shapes: ``x (...) -> y (...)``, same dtype.
    """

    rate: float = 0.5

    def __post_init__(self):
        set_fields(self, rate=real(self.rate, "rate", name_of(self), minimum=0, below=1))

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        check_params(self, params)
        check_float(self, x)
        if not train or self.rate == 0.0:
            return x
        if key is None:
            raise KeyArgError(name_of(self), "expected a PRNG key with train=True (pass key=...), "
                              "received key=None; use train=False for evaluation")
        check_key(self, key)
        return dropout(key, self.rate, x)


def dropout(key: PRNGKey, rate: float, x: Array) -> Array:
    """``x`` with each element zeroed with probability ``rate``, the rest scaled by
    ``1 / (1 - rate)``; the mask is ``jax.random.bernoulli``'s, fused on the CPU (see
    ``nn/bernoulli.py``). Shapes: ``x (...) -> (...)``, same dtype."""
    keep = bernoulli(key, 1.0 - rate, jnp.shape(x))
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype)).astype(x.dtype)
