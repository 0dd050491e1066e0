"""Parameter initialisers, chosen by name or given as a function ``(key, shape, dtype) -> array``.

| name         | distribution                 | PyTorch equivalent                         |
| ------------ | ---------------------------- | ------------------------------------------ |
| ``"he"``     | N(0, 2 / fan_in)             | ``kaiming_normal_(nonlinearity="relu")``   |
| ``"xavier"`` | N(0, 2 / (fan_in + fan_out)) | ``xavier_normal_``                         |
| ``"lecun"``  | N(0, 1 / fan_in)             | ``kaiming_normal_(nonlinearity="linear")`` |
| ``"normal"`` | N(0, 1)                      | ``normal_`` (``Embedding``'s default)      |
| ``"zeros"``  | 0                            | ``zeros_``                                 |

Fans count the receptive field: for a ``Conv2D`` weight ``(out, in/groups, kh, kw)``,
``fan_in = in/groups * kh * kw`` and ``fan_out = out * kh * kw``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax.nn import initializers

from minitorch.errors import ArgumentError

Initializer = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]

NAMES = ("he", "xavier", "lecun", "normal", "zeros")


def resolve(init: str | Initializer, *, in_axis: int = -2, out_axis: int = -1,
            owner: str = "layer") -> Initializer:
    """The initialiser ``init`` names, for weights whose fan-in/out axes are given.

    A callable is returned unchanged: it receives ``(key, shape, dtype)`` and must return
    an array of that shape.
    """
    if callable(init):
        return init
    scaled: dict[str, tuple[float, Literal["fan_in", "fan_avg"]]] = {
        "he": (2.0, "fan_in"), "xavier": (1.0, "fan_avg"), "lecun": (1.0, "fan_in")}
    if init in scaled:
        scale, mode = scaled[init]
        return initializers.variance_scaling(scale, mode, "normal", in_axis=in_axis,
                                             out_axis=out_axis)
    if init == "normal":
        return initializers.normal(stddev=1.0)
    if init == "zeros":
        return _zeros
    raise ArgumentError(f"{owner}: unknown initialiser {init!r}; use one of {NAMES} "
                     f"or a function (key, shape, dtype) -> array")


def make(init: Initializer, key: jax.Array, shape: tuple[int, ...], dtype: Any,
         owner: str) -> jax.Array:
    """Call ``init`` with ``(key, shape, jnp.dtype)`` and check that it returned what was
    asked for."""
    dtype = jnp.dtype(dtype)  # layers keep the dtype's name; initialisers get the dtype
    value = jnp.asarray(init(key, shape, dtype), dtype)
    if value.shape != tuple(shape):
        raise ArgumentError(f"{owner}: initialiser {init!r} returned shape {value.shape}, "
                         f"expected {tuple(shape)}")
    return value


def _zeros(key: Any, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Any:
    return jnp.zeros(shape, dtype)
