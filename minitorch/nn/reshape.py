"""``Flatten`` and ``Reshape``: change the shape of each example, keep the batch axis."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from minitorch.errors import ArgumentError, ShapeError
from minitorch.nn.checks import check_params, name_of
from minitorch.nn.core import Array, Layer, Params, PRNGKey, set_fields
from minitorch.validate import is_int


def reshape_examples(x: Array, shape: Sequence[int]) -> Array:
    """``jnp.reshape(x, shape)`` for a ``shape`` that keeps axis 0 (the batch) whole.

    Under a ``Mesh`` with explicit axes JAX cannot infer how a reshape that splits axes is
    sharded, so the batch axis keeps its sharding and the other axes are replicated.
    """
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if sharding is None or not spec or sharding.mesh.empty:
        return jnp.reshape(x, shape)
    out = sharding.update(spec=PartitionSpec(spec[0], *[None] * (len(shape) - 1)))
    return jnp.reshape(x, shape, out_sharding=out)


class Flatten(Layer):
    """Flatten every axis after the first: ``x (N, d1, d2, ...) -> y (N, d1 * d2 * ...)``."""

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        check_params(self, params)
        shape = jnp.shape(x)
        if len(shape) < 2:
            raise ShapeError(name_of(self), f"expected input of shape (N, ...) with at least 2 "
                             f"axes, received {shape}")
        return reshape_examples(x, (shape[0], math.prod(shape[1:])))


class Reshape(Layer):
    """Reshape each example: ``x (N, ...) -> y (N, *shape)``; one entry of ``shape`` may be -1."""

    shape: tuple[int, ...]

    def __init__(self, shape: tuple[int, ...] | int, *more: int):
        given = (shape, *more) if not isinstance(shape, (tuple, list)) else (*shape, *more)
        if (sum(d == -1 for d in given) > 1
                or not all(is_int(d) and (d >= 1 or d == -1) for d in given)):
            raise ArgumentError(f"{name_of(self)}: shape must be positive ints with at most "
                                f"one -1, received {given!r}")
        shape = tuple(int(d) for d in given)
        set_fields(self, shape=shape)

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        check_params(self, params)
        shape = jnp.shape(x)
        size = math.prod(shape[1:]) if len(shape) >= 1 else 0
        known = math.prod(d for d in self.shape if d != -1)
        fits = size == known if -1 not in self.shape else size % known == 0 and size > 0
        if len(shape) < 1 or not fits:
            raise ShapeError(name_of(self), f"expected input of shape (N, ...) with "
                             f"{'a multiple of ' if -1 in self.shape else ''}{known} elements "
                             f"per example to reshape to (N, {', '.join(map(str, self.shape))}), "
                             f"received {shape}")
        return reshape_examples(x, (shape[0], *self.shape))
