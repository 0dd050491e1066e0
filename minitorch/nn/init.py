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

The draws (:func:`normal`, :func:`uniform`) are ``jax.random``'s, the same values bit for
bit, but run eagerly they cost no compile per shape. ``jax.random.normal(key, shape)`` run
eagerly compiles a program for each new shape, and its hash takes XLA:CPU about 0.3-0.8 s
to compile: a 182k-param U-Net with 13 weight shapes spent ~10 s in ``init`` before its
first step (``benchmarks/compile_time.py``). JAX's hash gives element ``i`` of any shape
the bits of its flat index ``i`` (the partitionable Threefry layout, JAX's default), so the
first ``n`` values of a longer flat draw are the draw of any shape of ``n`` elements: an
eager draw is cut from a flat one of the next power-of-two size, compiled once per size.
Under ``jit`` (a tracer key), with another key implementation or the non-partitionable
layout, the draws are ``jax.random``'s own calls.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

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
        return functools.partial(_scaled_normal, scale=scale, mode=mode, in_axis=in_axis,
                                 out_axis=out_axis)
    if init == "normal":
        return _standard_normal
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


def _standard_normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Any:
    """``jax.nn.initializers.normal(1.0)``: N(0, 1). (That initialiser multiplies by its
    stddev; times 1.0 is exact, so the draw alone is the same bits, without an eager
    multiply compiled per shape.)"""
    return normal(key, shape, dtype)


def _scaled_normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32, *,
                   scale: float, mode: str, in_axis: int, out_axis: int) -> Any:
    """``jax.nn.initializers.variance_scaling(scale, mode, "normal", in_axis, out_axis)``,
    the same values: N(0, scale / fan), fan the fan-in or the mean of fan-in and fan-out."""
    receptive = math.prod(d for i, d in enumerate(shape)
                          if i not in (in_axis % len(shape), out_axis % len(shape)))
    fan_in, fan_out = shape[in_axis] * receptive, shape[out_axis] * receptive
    fan = fan_in if mode == "fan_in" else (fan_in + fan_out) / 2
    return normal(key, shape, dtype) * jnp.sqrt(jnp.array(scale / fan, dtype=dtype))


def normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """``jax.random.normal(key, shape, dtype)``, bit for bit, with no compile per shape
    when run eagerly (see the module's docstring)."""
    return _draw(jax.random.normal, key, tuple(shape), dtype)


def uniform(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32,
            minval: Any = 0.0, maxval: Any = 1.0) -> jax.Array:
    """``jax.random.uniform(key, shape, dtype, minval, maxval)``, bit for bit, with no
    compile per shape when run eagerly (see the module's docstring)."""
    return _draw(jax.random.uniform, key, tuple(shape), dtype, minval, maxval)


# Above this many elements a draw's own cost outweighs a compile, and a flat draw up to
# twice as long would waste it: such draws are jax.random's own.
_LARGEST_CUT = 2 ** 22


def _draw(sample: Any, key: jax.Array, shape: tuple[int, ...], dtype: Any,
          *bounds: Any) -> jax.Array:
    size = math.prod(shape)
    if not _cuttable(key) or size > _LARGEST_CUT:
        return sample(key, shape, dtype, *bounds)
    length = 1 << max(size - 1, 0).bit_length()  # the next power of two
    return _cut(_flat_draw(sample, length, jnp.dtype(dtype))(key, *bounds), shape)


def _cuttable(key: jax.Array) -> bool:
    """Whether a flat draw's prefix is this key's draw of any shape (module docstring)."""
    if isinstance(key, jax.core.Tracer) or not jax.config.jax_threefry_partitionable:  # type: ignore[attr-defined]
        return False
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if not typed:  # a raw uint32[2] key is a Threefry key
        return key.shape == (2,) and key.dtype == np.uint32
    return key.shape == () and str(jax.random.key_impl(key)) == "threefry2x32"


@functools.cache
def _flat_draw(sample: Any, length: int, dtype: Any) -> Any:
    """``sample``'s flat draw of ``length`` values, compiled once per length and dtype."""
    return jax.jit(lambda key, *bounds: sample(key, (length,), dtype, *bounds))


@functools.partial(jax.jit, static_argnums=1)
def _cut(flat: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return flat[:math.prod(shape)].reshape(shape)
