"""Trace-time checks every layer shares: keys, params and state trees, dtypes, shapes, ids.

They look at shapes, dtypes and tree structure only (values only where they are concrete,
in an eager call), so under ``jax.jit`` they run once, at trace time, and cost nothing in
the compiled step. Each raises the :mod:`minitorch.errors` class for its kind of mistake,
naming the layer; containers prepend the sub-layer's path.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from minitorch.errors import (
    CacheError,
    DTypeError,
    IdError,
    KeyArgError,
    KeywordError,
    ParamsError,
    ShapeError,
    StateError,
)

if TYPE_CHECKING:
    from minitorch.nn.core import Layer


def name_of(layer: Any) -> str:
    """How errors name a layer: its actual class (a subclass names itself, not its parent)."""
    return type(layer).__name__


def check_key(layer: Layer, key: Any, argument: str = "key") -> None:
    """Raise KeyArgError unless ``key`` is a typed PRNG key or a raw ``uint32[2]`` key."""
    if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        if key.shape != ():
            raise KeyArgError(name_of(layer), f"{argument} expected a single PRNG key, "
                              f"received a batch of keys of shape {key.shape}")
        return
    shape, dtype = getattr(key, "shape", None), getattr(key, "dtype", None)
    if shape == (2,) and dtype == jnp.uint32:
        return
    received = f"{type(key).__name__}" if shape is None else f"{dtype}{list(shape)}"
    raise KeyArgError(name_of(layer), f"{argument} expected a PRNG key (jax.random.key(seed) "
                      f"or jax.random.PRNGKey(seed)), received {received}")


def _shapes(tree: Any) -> Any:
    return jax.tree.map(lambda leaf: tuple(jnp.shape(leaf)), tree)


def check_params(layer: Layer, params: Any) -> None:
    """Raise ParamsError unless ``params`` has the structure and shapes ``layer.init`` makes."""
    _check_tree(layer, params, layer.param_spec, "params", ParamsError)


def check_state(layer: Layer, state: Any) -> None:
    """Raise StateError unless ``state`` has the structure and shapes ``init_state`` makes."""
    if state is None:
        raise StateError(name_of(layer), "expected state=... (from init_state()), received None")
    _check_tree(layer, state, layer.state_spec, "state", StateError)


def _check_tree(layer: Layer, tree: Any, expected: Any, what: str, error: type) -> None:
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer) and \
                leaf.is_deleted():
            raise error(name_of(layer), f"{what} holds arrays that were donated to a compiled "
                        f"step or epoch (their buffers are deleted): use the {what} it "
                        f"returned, or build the step with donate=False")
    if jax.tree.structure(tree) != jax.tree.structure(expected):  # type: ignore[operator]
        raise error(name_of(layer), f"{what} structure mismatch: expected "
                    f"{_shapes(expected)}, received {_describe(tree)}")
    for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(expected),
                                 jax.tree.leaves(tree)):
        if tuple(want.shape) != tuple(jnp.shape(got)):
            raise error(name_of(layer), f"{what}{jax.tree_util.keystr(path)} expected "
                        f"shape {tuple(want.shape)}, received {tuple(jnp.shape(got))}")


def _describe(tree: Any) -> str:
    try:
        return str(_shapes(tree))
    except Exception:  # not a pytree of arrays at all
        return type(tree).__name__


def check_float(layer: Layer, x: jax.Array) -> None:
    """Raise DTypeError unless ``x`` is a floating-point array."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise DTypeError(name_of(layer), f"expected a floating-point input, received {dtype} "
                         f"(cast with x.astype(jnp.float32))")


def check_shape(layer: Layer, x: jax.Array, expected: Sequence[int | str], *,
                leading: bool = False, what: str = "input") -> None:
    """Raise ShapeError unless ``x.shape`` matches ``expected``.

    An int entry must match exactly; a str entry (a name such as ``"N"``) matches any
    size. With ``leading=True`` any number of leading axes may come first, shown as ``...``.
    """
    shape = tuple(jnp.shape(x))
    ndim = len(expected)
    tail = shape[-ndim:] if ndim else ()
    ok = (len(shape) >= ndim if leading else len(shape) == ndim) and all(
        isinstance(want, str) or want == got for want, got in zip(expected, tail))
    if not ok:
        shown = ", ".join(map(str, expected))
        shown = f"(..., {shown})" if leading else f"({shown}{',' if ndim == 1 else ''})"
        raise ShapeError(name_of(layer), f"expected {what} of shape {shown}, received {shape}")


def check_ids(owner: str, ids: Any, upper: int, what: str, keep: Any = None) -> None:
    """Concrete integer ``ids`` (an eager call) must lie in ``[0, upper)`` where ``keep``
    (a boolean mask) is True; raises IdError naming ``owner``. Under ``jit`` the values
    are unknown and nothing is checked (the layer's documented NaN marks them instead)."""
    if isinstance(ids, jax.core.Tracer) or isinstance(keep, jax.core.Tracer):
        return
    values = np.asarray(ids)
    if not np.issubdtype(values.dtype, np.integer):
        return
    if keep is not None:
        values = values[np.broadcast_to(np.asarray(keep), values.shape)]
    outside = (values < 0) | (values >= upper)
    if outside.any():
        raise IdError(owner, f"expected {what} in [0, {upper}), received {int(outside.sum())} "
                             f"outside it (min {values.min()}, max {values.max()})")


@functools.cache
def _keywords(fn: Callable[..., Any]) -> tuple[frozenset[str], bool]:
    """The keyword-only and keyword-able parameters of ``fn`` and whether it takes ``**kw``."""
    parameters = inspect.signature(fn).parameters.values()
    names = frozenset(p.name for p in parameters
                      if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
    return names, any(p.kind is p.VAR_KEYWORD for p in parameters)


def check_keywords(layer: Layer, fn: Callable[..., Any], kwargs: dict[str, Any],
                   what: str, reserved: Sequence[str] = ()) -> None:
    """Raise KeywordError unless ``fn`` (a layer's ``apply`` or a composite's ``forward``,
    unbound) declares every keyword in ``kwargs``; the message names ``layer`` and lists the
    keywords ``fn`` accepts (``reserved`` ones, such as ``key`` and ``train``, left out)."""
    if not kwargs:
        return
    names, takes_any = _keywords(fn)
    unknown = sorted(k for k in kwargs if k not in names)
    if unknown and not takes_any:
        accepted = sorted(names - {"self", "params", "call", "x", *reserved})
        shown = ", ".join(f"{k}=" for k in unknown)
        raise KeywordError(name_of(layer), f"{what} got {shown}, which it does not declare; "
                           f"it accepts {accepted or 'no extra keywords'}")


def check_cache(layer: Layer, cache: Any, shapes: Mapping[str, tuple[int | None, ...]]) -> None:
    """Raise CacheError unless ``cache`` has exactly the entries of ``shapes``, each of its
    shape (None: any size); a different axis 0 of a non-scalar entry is reported as a cache
    built for another batch size."""
    if not isinstance(cache, dict) or sorted(cache) != sorted(shapes):
        got = sorted(cache) if isinstance(cache, dict) else type(cache).__name__
        raise CacheError(name_of(layer), f"expected a cache with entries {sorted(shapes)} "
                         f"(from init_cache), received {got}")
    for name, want in shapes.items():
        have = tuple(jnp.shape(cache[name]))
        if want and have[:1] != want[:1]:
            raise CacheError(name_of(layer), f"the cache was built for batch size "
                             f"{have[0] if have else None}, received a batch of {want[0]}; "
                             f"build it with init_cache({want[0]}, max_length)")
        if len(have) != len(want) or any(w is not None and w != h for w, h in zip(want, have)):
            shown = tuple("?" if w is None else w for w in want)
            raise CacheError(name_of(layer), f"cache[{name!r}] expected shape {shown}, "
                             f"received {have}")


def check_room(layer: Layer, start: Any, length: int, size: Any) -> None:
    """Raise CacheError when ``length`` more positions after ``start`` exceed the cache's
    ``size`` (``max_length``) and ``start`` is known (an eager call); under ``jit`` the
    layer marks such outputs NaN instead."""
    if isinstance(start, jax.core.Tracer) or isinstance(size, jax.core.Tracer):
        return
    if int(start) + length > int(size):
        raise CacheError(name_of(layer), f"the cache holds {int(start)} of "
                         f"max_length={int(size)} "
                         f"positions, received {length} more; build it with a larger "
                         f"init_cache(..., max_length)")
