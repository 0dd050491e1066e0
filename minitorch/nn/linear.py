"""``Linear``: an affine map over the last axis."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from minitorch.nn import init as initializers
from minitorch.nn.checks import check_float, check_key, check_params, check_shape, name_of
from minitorch.nn.core import Array, Layer, Params, PRNGKey, set_fields, split_key
from minitorch.validate import flag, float_dtype, positive_int, renamed_argument


class Linear(Layer):
    """``y = x @ W + b``.

    Args:
      in_features: size of the input's last axis.
      out_features: size of the output's last axis.
      bias: whether to add ``b``.
      init: initialiser of ``W`` by name (see :mod:`minitorch.nn.init`) or function;
        ``b`` starts at zero.
      dtype: dtype of the params (float32 by default).

    Params: ``W (in_features, out_features)``, ``b (out_features,)``.
    Shapes: ``x (..., in_features) -> y (..., out_features)``; the output dtype is the
    promotion of the input's and the params' dtypes.
    """

    in_features: int
    out_features: int
    bias: bool
    weight_init: Any
    dtype: Any

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 init: Any = "he", dtype: Any = jnp.float32, weight_init: Any = None):
        init = renamed_argument(name_of(self), "init", init, "he", "weight_init", weight_init)
        initializers.resolve(init, owner=name_of(self))  # fail early on an unknown name
        set_fields(self, in_features=positive_int(in_features, "in_features", name_of(self)),
                   out_features=positive_int(out_features, "out_features", name_of(self)),
                   bias=flag(bias, "bias", name_of(self)), weight_init=init,
                   dtype=float_dtype(dtype, name_of(self)))

    def init(self, key: PRNGKey) -> Params:
        check_key(self, key, "init")
        w_key, _ = split_key(key, 2)
        w_init = initializers.resolve(self.weight_init, in_axis=0, out_axis=1)
        params = {"W": initializers.make(w_init, w_key, (self.in_features, self.out_features),
                                         self.dtype, name_of(self))}
        if self.bias:
            params["b"] = jnp.zeros((self.out_features,), self.dtype)
        return params

    def tensor_axes(self) -> dict[str, int]:
        """Megatron's pairing without knowing the neighbours: a widening projection (an
        MLP's up-projection) splits its columns, so its outputs stay split through the
        activation; a narrowing one (the down-projection) splits its rows, consuming them
        with one all-reduce."""
        return {"W": 1, "b": 0} if self.out_features >= self.in_features else {"W": 0}

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        check_params(self, params)
        check_float(self, x)
        check_shape(self, x, (self.in_features,), leading=True)
        y = jnp.matmul(x, params["W"])
        return y + params["b"] if self.bias else y
