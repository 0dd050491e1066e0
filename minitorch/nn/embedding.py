"""``Embedding``: a lookup table of vectors indexed by integer ids."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from minitorch.errors import DTypeError
from minitorch.nn import init as initializers
from minitorch.nn.checks import (
    check_float,
    check_ids,
    check_key,
    check_params,
    check_shape,
    name_of,
)
from minitorch.nn.core import Array, Layer, Params, PRNGKey, set_fields
from minitorch.validate import float_dtype, positive_int, renamed_argument


class Embedding(Layer):
    """``y = W[ids]``.

    Args:
      num_embeddings: size of the table (ids are in ``[0, num_embeddings)``).
      embedding_dim: size of each vector.
      init: initialiser of ``W``; N(0, 1) by default, as PyTorch.
      dtype: dtype of the params (float32 by default).

    Params: ``W (num_embeddings, embedding_dim)``.
    Shapes: ``ids (...) int -> y (..., embedding_dim)``. Ids are values, which ``jit`` cannot
    check: an id out of range gives a row of NaN (never a silently wrong row).

    ``apply(params, h, attend=True)`` is the transposed use, for weight tying: the scores
    ``h @ W.T`` of vectors ``h (..., embedding_dim)`` against every row,
    ``-> (..., num_embeddings)`` (a language model's output projection sharing the input
    table; in a ``Composite``, ``call("embed", h, attend=True)``).
    """

    num_embeddings: int
    embedding_dim: int
    weight_init: Any
    dtype: Any

    def __init__(self, num_embeddings: int, embedding_dim: int, *, init: Any = "normal",
                 dtype: Any = jnp.float32, weight_init: Any = None):
        init = renamed_argument(name_of(self), "init", init, "normal", "weight_init", weight_init)
        initializers.resolve(init, owner=name_of(self))
        owner = name_of(self)
        set_fields(self, num_embeddings=positive_int(num_embeddings, "num_embeddings", owner),
                   embedding_dim=positive_int(embedding_dim, "embedding_dim", owner),
                   weight_init=init, dtype=float_dtype(dtype, name_of(self)))

    def init(self, key: PRNGKey) -> Params:
        check_key(self, key, "init")
        w_init = initializers.resolve(self.weight_init, in_axis=0, out_axis=1)
        shape = (self.num_embeddings, self.embedding_dim)
        return {"W": initializers.make(w_init, key, shape, self.dtype, name_of(self))}

    def tensor_axes(self) -> dict[str, int]:
        """The table is split by rows (vocabulary-parallel, as Megatron's embedding)."""
        return {"W": 0}

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False, attend: bool = False) -> Array:
        check_params(self, params)
        if attend:
            check_float(self, x)
            check_shape(self, x, (self.embedding_dim,), leading=True, what="vectors to attend")
            return x @ params["W"].T.astype(jnp.result_type(x, params["W"]))
        dtype = jnp.result_type(x)
        if not jnp.issubdtype(dtype, jnp.integer):
            raise DTypeError(name_of(self), f"expected integer ids, received {dtype}")
        check_ids(name_of(self), x, self.num_embeddings, "ids")
        # An id out of range (negative ones included) gives a row of NaN, never a clamped
        # row. The NaN is added to a clamped lookup rather than filled in by the gather or
        # selected after it: the same values, and XLA:CPU compiles the convseq step in
        # 0.92x the time of the fill, 0.81x of the select (benchmarks/sequence_formulations.py).
        last = self.num_embeddings - 1
        rows = jnp.asarray(params["W"]).at[jnp.clip(x, 0, last)].get(mode="promise_in_bounds")
        invalid = jnp.where((x >= 0) & (x <= last), 0.0, jnp.nan).astype(rows.dtype)
        return rows + invalid[..., None]
