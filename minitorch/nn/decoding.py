"""Generating from a sequence model: :func:`generate`, one compiled loop over a KV cache.

A model decodes when its layers cache what later positions need: causal
``MultiHeadAttention`` its keys and values, ``RNN``/``LSTM``/``GRU`` their carry. Containers
gather their sub-layers' caches, so any model built from them decodes::

    cache = model.init_cache(batch_size=2, max_length=64)
    logits, cache = model.apply(params, prompt, cache=cache)          # prefill (N, P)
    logits, cache = model.apply(params, ids[:, None], cache=cache)    # one more position
    ids = nn.generate(model, params, prompt, max_new_tokens=20)       # all of it, compiled

The model maps token ids ``(N, L)`` to logits ``(N, L, V)``; inside a composite,
``call.offset`` (the positions already cached) places learned positions.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from minitorch.errors import ArgumentError, DTypeError, KeyArgError, ShapeError
from minitorch.nn.checks import check_key, name_of
from minitorch.nn.containers import cache_offset
from minitorch.nn.core import Array, Layer, Params, PRNGKey
from minitorch.validate import positive_int, real


def generate(model: Layer, params: Params, prompt: Array, max_new_tokens: int, *,
             key: PRNGKey | None = None, temperature: float = 0.0,
             top_k: int | None = None, **inputs: Any) -> Array:
    """Continue ``prompt`` by ``max_new_tokens`` ids, each from the model's logits for the
    last position, reusing the cache (one compiled loop, not retraced for a second call of
    the same shapes, model and ``top_k``).

    Args:
      model: a layer mapping ids ``(N, L)`` to logits ``(N, L, V)`` that decodes with a
        cache (see the module docstring).
      params: its params.
      prompt: ``(N, P)`` integer ids, ``P >= 1``.
      max_new_tokens: how many ids to add.
      key: the PRNG key sampling draws from (a fresh subkey per step); needed when
        ``temperature > 0``.
      temperature: 0 (default) picks the most likely id (greedy: the same ids as taking
        the argmax after recomputing the whole sequence at every step); above 0, ids are
        drawn from ``softmax(logits / temperature)``.
      top_k: when given, sampling is restricted to the ``top_k`` most likely ids.
      **inputs: keywords the model takes besides the ids, the same at every step: an
        encoder-decoder's decoder gets its encoded source and the source's padding mask
        (``memory=(N, S, E)``, ``memory_mask=(N, S)``; see examples/seq2seq_dates.py).

    Returns:
      ``(N, P + max_new_tokens)`` ids, the prompt first.
    """
    owner = "generate"
    steps = positive_int(max_new_tokens, "max_new_tokens", owner)
    temperature = real(temperature, "temperature", owner, minimum=0)
    if top_k is not None:
        top_k = positive_int(top_k, "top_k", owner)
    if model.stateful:
        raise ArgumentError(f"{owner}: {name_of(model)} keeps state (BatchNorm); generate "
                            f"decodes stateless models: call model.apply(params, ids, "
                            f"state=..., cache=...) in a loop of your own")
    shape, dtype = tuple(jnp.shape(prompt)), jnp.result_type(prompt)
    if len(shape) != 2 or shape[1] < 1:
        raise ShapeError(owner, f"expected prompt ids of shape (N, P) with P >= 1, received "
                         f"{shape}")
    if not jnp.issubdtype(dtype, jnp.integer):
        raise DTypeError(owner, f"expected integer prompt ids, received {dtype}")
    if temperature == 0.0:  # greedy: draws nothing
        return _generate(model, params, prompt, None, None, inputs, steps=steps, top_k=None)
    if key is None:
        raise KeyArgError(owner, f"temperature={temperature} samples: pass key=...")
    check_key(model, key)
    return _generate(model, params, prompt, key, temperature, inputs, steps=steps, top_k=top_k)


@functools.partial(jax.jit, static_argnames=("model", "steps", "top_k"))
def _generate(model: Layer, params: Params, prompt: Array, key: PRNGKey | None,
              temperature: Any, inputs: dict[str, Any], *, steps: int, top_k: int | None
              ) -> Array:
    n, length = prompt.shape
    keys = None if key is None else jax.random.split(key, steps)

    def pick(logits: Array, key: PRNGKey | None) -> Array:  # (N, V) -> (N,)
        if key is None:  # greedy
            return jnp.argmax(logits, axis=-1).astype(prompt.dtype)
        scaled = logits.astype(jnp.float32) / temperature
        if top_k is not None and top_k < scaled.shape[-1]:
            kth = jax.lax.top_k(scaled, top_k)[0][:, -1:]
            scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
        return jax.random.categorical(key, scaled, axis=-1).astype(prompt.dtype)

    def forward(ids: Array, cache: Any) -> tuple[Array, Any]:
        # run, the one internal convention: any layer, even a leaf without a cache argument
        logits, _, cache = model.run(params, model.init_state(), ids, cache=cache,
                                     offset=cache_offset(cache), **inputs)
        return logits, cache

    logits, cache = forward(prompt, model.init_cache(n, length + steps))
    first = pick(logits[:, -1], None if keys is None else keys[0])

    def step(carry: tuple[Array, Any], key: PRNGKey | None
             ) -> tuple[tuple[Array, Any], Array]:
        token, cache = carry
        logits, cache = forward(token[:, None], cache)
        return (pick(logits[:, -1], key), cache), token

    (last, _), tokens = jax.lax.scan(step, (first, cache), None if keys is None else keys[1:],
                                     length=steps - 1)
    return jnp.concatenate([prompt, tokens.T, last[:, None]], axis=1)


__all__ = ["generate"]
