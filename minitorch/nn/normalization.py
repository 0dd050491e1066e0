"""Normalisation layers: ``LayerNorm``."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from minitorch.nn.core import (
    Array,
    Layer,
    Params,
    PRNGKey,
    check_float,
    check_key,
    check_params,
    check_shape,
    positive_int,
    set_fields,
)


@dataclasses.dataclass(frozen=True, init=False)
class LayerNorm(Layer):
    """Normalise over the trailing ``normalized_shape`` axes, then scale and shift.

    ``y = (x - mean) / sqrt(var + eps) * scale + bias`` with the biased variance, as
    ``torch.nn.LayerNorm``.

    Args:
      normalized_shape: an int or tuple: the trailing axes normalised over.
      eps: added to the variance.
      elementwise_affine: whether to learn ``scale`` and ``bias``.
      dtype: dtype of the params (float32 by default).

    Params: ``scale normalized_shape`` (ones), ``bias normalized_shape`` (zeros).
    Shapes: ``x (..., *normalized_shape) -> y`` of the same shape.
    """

    normalized_shape: tuple[int, ...]
    eps: float
    elementwise_affine: bool
    dtype: Any

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5, *,
                 elementwise_affine: bool = True, dtype: Any = jnp.float32):
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        shape = tuple(positive_int(d, "normalized_shape", "LayerNorm") for d in normalized_shape)
        if not shape or eps <= 0:
            raise ValueError(f"LayerNorm: expected a non-empty normalized_shape and eps > 0, "
                             f"received {normalized_shape!r} and {eps!r}")
        set_fields(self, normalized_shape=shape, eps=float(eps),
                   elementwise_affine=bool(elementwise_affine), dtype=jnp.dtype(dtype))

    def init(self, key: PRNGKey) -> Params:
        check_key(self, key, "init")
        if not self.elementwise_affine:
            return {}
        return {"scale": jnp.ones(self.normalized_shape, self.dtype),
                "bias": jnp.zeros(self.normalized_shape, self.dtype)}

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        check_params(self, params)
        check_float(self, x)
        check_shape(self, x, self.normalized_shape, leading=True)
        axes = tuple(range(-len(self.normalized_shape), 0))
        mean = x.mean(axis=axes, keepdims=True)
        var = jnp.square(x - mean).mean(axis=axes, keepdims=True)
        y = (x - mean) * jnp.reciprocal(jnp.sqrt(var + self.eps))
        return y * params["scale"] + params["bias"] if self.elementwise_affine else y
