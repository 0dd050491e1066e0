"""``MultiHeadAttention``, batch first, as ``torch.nn.MultiheadAttention(batch_first=True)``."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from minitorch.errors import ArgumentError, CacheError, DTypeError, KeyArgError, ShapeError
from minitorch.nn import init as initializers
from minitorch.nn.checks import (
    check_cache,
    check_float,
    check_key,
    check_params,
    check_room,
    name_of,
)
from minitorch.nn.core import Array, Cache, Layer, Params, PRNGKey, set_fields, split_key
from minitorch.nn.regularization import dropout as drop
from minitorch.validate import flag, float_dtype, positive_int, real

PROJECTIONS = ("q", "k", "v", "o")


class MultiHeadAttention(Layer):
    """Scaled dot-product attention over ``num_heads`` heads of ``embed_dim // num_heads``.

    ``softmax(q k^T / sqrt(head_dim) + mask) v`` per head, with ``q = x W_q + b_q`` and so
    on, heads concatenated and projected by ``W_o``. Numerics equal PyTorch's with
    ``in_proj_weight = concat(q.W.T, k.W.T, v.W.T)`` and ``out_proj.weight = o.W.T``.

    Args:
      embed_dim: the model width E; ``num_heads`` must divide it.
      num_heads: the number of heads.
      bias: whether the four projections add a bias.
      dropout: the probability of dropping an attention weight in training (needs a key).
      causal: mask the future: query ``i`` attends to keys ``j <= i``.
      dtype: dtype of the params (float32 by default).

    Params: ``{"q", "k", "v", "o"}``, each ``{"W": (E, E), "b": (E,)}``; ``q``, ``k``, ``v``
    start as PyTorch's ``in_proj_weight`` (Xavier-uniform over the stacked ``(3E, E)``),
    ``o`` as its ``out_proj`` (uniform(+-1/sqrt(E))), biases at zero.

    Shapes: self-attention ``x (N, L, E) -> (N, L, E)``; cross-attention takes a pair
    ``(query (N, L, E), context (N, S, E)) -> (N, L, E)``.
    ``apply(..., mask=m)``: a boolean mask, True where attention is allowed, ``(N, S)``
    (padding) or broadcastable to ``(N, num_heads, L, S)``. A query row with every key
    masked attends uniformly (not NaN, unlike a plain ``-inf`` mask): to every key, or with
    ``causal=True`` to the keys up to its own position, never to future ones.
    """

    embed_dim: int
    num_heads: int
    bias: bool
    dropout: float
    causal: bool
    dtype: Any

    def __init__(self, embed_dim: int, num_heads: int, *, bias: bool = True,
                 dropout: float = 0.0, causal: bool = False, dtype: Any = jnp.float32):
        owner = name_of(self)
        embed_dim = positive_int(embed_dim, "embed_dim", owner)
        num_heads = positive_int(num_heads, "num_heads", owner)
        if embed_dim % num_heads:
            raise ArgumentError(f"{owner}: embed_dim={embed_dim} must be divisible by "
                             f"num_heads={num_heads}")
        set_fields(self, embed_dim=embed_dim, num_heads=num_heads,
                   bias=flag(bias, "bias", owner),
                   dropout=real(dropout, "dropout", owner, minimum=0, below=1),
                   causal=flag(causal, "causal", owner), dtype=float_dtype(dtype, owner))

    def init(self, key: PRNGKey) -> Params:
        check_key(self, key, "init")
        e = self.embed_dim
        in_bound, out_bound = math.sqrt(6.0 / (e + 3 * e)), 1.0 / math.sqrt(e)
        params = {}
        for name, k in zip(PROJECTIONS, split_key(key, len(PROJECTIONS))):
            bound = out_bound if name == "o" else in_bound
            params[name] = {"W": initializers.uniform(k, (e, e), self.dtype, -bound, bound)}
            if self.bias:
                params[name]["b"] = jnp.zeros((e,), self.dtype)
        return params

    def tensor_axes(self) -> dict[str, int]:
        """Split by heads: ``q``, ``k``, ``v`` by columns (their outputs are the heads, head
        after head), ``o`` by rows, so each device attends with its own heads and one
        all-reduce sums the output projection (its bias stays whole)."""
        return {"q.W": 1, "q.b": 0, "k.W": 1, "k.b": 0, "v.W": 1, "v.b": 0, "o.W": 0}

    def init_cache(self, batch_size: int, max_length: int, dtype: Any = None) -> Cache:
        """For causal self-attention, the keys and values of up to ``max_length`` positions,
        ``k``/``v (N, max_length, heads, head_dim)``, and ``index``, how many are filled;
        ``{}`` otherwise (non-causal attention sees its whole input at every call)."""
        if not self.causal:
            return {}
        owner = name_of(self)
        n = positive_int(batch_size, "batch_size", owner)
        length = positive_int(max_length, "max_length", owner)
        shape = (n, length, self.num_heads, self.embed_dim // self.num_heads)
        dtype = jnp.dtype(self.dtype if dtype is None else float_dtype(dtype, owner))
        return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
                "index": jnp.zeros((), jnp.int32)}

    def apply(self, params: Params, x: Array | tuple[Array, Array], *,
              key: PRNGKey | None = None, train: bool = False,
              mask: Array | None = None, cache: Cache | None = None) -> Any:
        """``y``; with ``cache=`` (causal self-attention, from :meth:`init_cache`),
        ``(y, new_cache)``: ``x (N, L, E)`` are the next ``L`` positions, attending to every
        cached position and causally to each other."""
        check_params(self, params)
        query, context = self._inputs(x)
        n, length, _ = query.shape
        heads, width = self.num_heads, self.embed_dim // self.num_heads

        def project(name: str, v: Array) -> Array:  # (N, L, E) -> (N, L, heads, width)
            # straight into heads, not (N, L, E) reshaped: with LayerNorm's jnp.var, the gpt
            # step 0.88x on XLA:CPU (benchmarks/sequence_formulations.py)
            y = jnp.einsum("nle,ehd->nlhd", v, params[name]["W"].reshape(-1, heads, width))
            return y + params[name]["b"].reshape(heads, width) if self.bias else y

        q, k, v = project("q", query), project("k", context), project("v", context)
        start: Any = 0  # the absolute position of the first query
        if cache is not None:
            start, k, v = self._write(cache, k, v, pair=isinstance(x, (tuple, list)))
        allowed = self._mask(mask, n, length, k.shape[1])
        scores = jnp.einsum("nlhd,nshd->nhls", q / jnp.sqrt(width).astype(q.dtype), k)
        if allowed is not None:  # the lowest finite score: a row masked whole stays finite
            scores = jnp.where(allowed, scores, jnp.finfo(scores.dtype).min)
        if self.causal:  # -inf: even a row whose every key is masked never sees the future
            future = jnp.arange(k.shape[1]) > (start + jnp.arange(length))[:, None]
            scores = jnp.where(future, -jnp.inf, scores)
        weights = jax.nn.softmax(scores, axis=-1)
        if train and self.dropout > 0.0:
            if key is None:
                raise KeyArgError(name_of(self), f"expected a PRNG key with train=True "
                                  f"and dropout={self.dropout} (pass key=...), received None")
            check_key(self, key)
            weights = drop(key, self.dropout, weights)
        out = jnp.einsum("nhls,nshd->nlhd", weights, v)
        y = jnp.einsum("nlhd,hde->nle", out, params["o"]["W"].reshape(heads, width, -1))
        y = y + params["o"]["b"] if self.bias else y
        if cache is None:
            return y
        end = start + length
        # Under jit the index is not known when tracing: outputs past max_length are NaN.
        y = jnp.where(end <= k.shape[1], y, jnp.nan)
        return y, {"k": k, "v": v, "index": jnp.asarray(end, jnp.int32)}

    def _write(self, cache: Cache, k: Array, v: Array, pair: bool) -> tuple[Any, Array, Array]:
        """``(start, keys, values)``: the new positions' keys and values written into the
        cache after the ``start`` positions it holds."""
        owner = name_of(self)
        if pair or not self.causal:
            raise CacheError(owner, "only causal self-attention decodes with a cache "
                             "(cross-attention and non-causal attention see their whole "
                             "context at every call: give them no cache)")
        entry = (k.shape[0], None, *k.shape[2:])
        check_cache(self, cache, {"k": entry, "v": entry, "index": ()})
        start, size, length = cache["index"], cache["k"].shape[1], k.shape[1]
        check_room(self, start, length, size)
        at = (0, start, 0, 0)
        return (start, jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), at),
                jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), at))

    def _inputs(self, x: Any) -> tuple[Array, Array]:
        pair = isinstance(x, (tuple, list))
        if pair and len(x) != 2:
            raise ShapeError(name_of(self), f"expected x (N, L, E) or a pair (query, "
                             f"context), received a sequence of {len(x)}")
        query, context = (x[0], x[1]) if pair else (x, x)
        e = self.embed_dim
        for name, value, axis in (("input", query, "L"), ("context", context, "S")):
            check_float(self, value)
            if jnp.ndim(value) != 3 or jnp.shape(value)[-1] != e:
                raise ShapeError(name_of(self), f"expected {name} of shape "
                                 f"(N, {axis}, {e}), received {jnp.shape(value)}")
        if pair and query.shape[0] != context.shape[0]:
            raise ShapeError(name_of(self), f"expected query and context with the same "
                             f"batch size, received {query.shape} and {context.shape}")
        return query, context

    def _mask(self, mask: Array | None, n: int, length: int, source: int) -> Array | None:
        """The given mask of allowed positions, broadcastable to ``(N, heads, L, S)``, or
        None (the causal mask is applied apart)."""
        full = (n, self.num_heads, length, source)
        allowed = None
        if mask is not None:
            dtype = jnp.result_type(mask)
            if dtype != jnp.bool_:
                raise DTypeError(name_of(self), f"expected a boolean mask (True where "
                                 f"attention is allowed), received {dtype}")
            shape = tuple(jnp.shape(mask))
            if shape == (n, source):
                allowed = mask[:, None, None, :]
            elif len(shape) == 4 and all(m in (1, f) for m, f in zip(shape, full)):
                allowed = mask
            else:
                raise ShapeError(name_of(self), f"expected a mask of shape (N, S) = "
                                 f"{(n, source)} or broadcastable to (N, num_heads, L, S) = "
                                 f"{full}, received {shape}")
        return allowed
