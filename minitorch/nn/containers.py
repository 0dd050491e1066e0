"""Containers: layers made of sub-layers, and ``Net``, the chain.

:class:`Container` gives every container (``Net``, ``Residual``, ``Parallel``,
``Composite``, ``Repeat``) its ``init``, ``init_state``, ``apply`` and the checks of its
params and state trees, from three things each container says: its :meth:`children`,
how it lays out its params (:meth:`Container.pack`) and how it runs them (``run``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from minitorch.errors import CacheError, KeywordError, LayerError, ParamsError, StateError
from minitorch.nn.checks import check_key, name_of
from minitorch.nn.core import (
    Cache,
    Layer,
    Params,
    PRNGKey,
    State,
    run_child,
    set_fields,
    split_key,
)
from minitorch.nn.paths import Tap
from minitorch.validate import layer_sequence

# The trees laid out like a container's children, the error each mismatch raises, and the
# method that makes each.
TREE_ERRORS = {"params": ParamsError, "state": StateError, "cache": CacheError}
TREE_MAKERS = {"params": "init", "state": "init_state", "cache": "init_cache"}


def no_keywords(layer: Layer, kwargs: dict[str, Any]) -> None:
    """A container that gives its input to several sub-layers in turn (``Net``,
    ``Parallel``) has no single recipient for an extra keyword: the error says how to
    route one."""
    if kwargs:
        shown = ", ".join(f"{k}=" for k in sorted(kwargs))
        raise KeywordError(name_of(layer), f"apply() got {shown}, but a {name_of(layer)} "
                           f"passes only key, train and state to its layers; to give {shown} "
                           f"to one of them, write a Composite whose forward(self, call, x, "
                           f"*, {sorted(kwargs)[0]}=None) passes it on with call(name, x, "
                           f"{sorted(kwargs)[0]}=...)")


class Container(Layer):
    """Base of the layers made of sub-layers (``Net``, ``Residual``, ``Parallel``,
    ``Composite``): they give :meth:`children`, :meth:`run` and how their params are laid
    out (:meth:`pack`); ``init``, ``init_state``, ``apply`` and the checks follow here.

    ``init`` splits its key into one subkey per sub-layer, in order (a single unnamed
    sub-layer gets the key itself). A container is stateful when a sub-layer is; then
    ``apply`` takes ``state=`` and returns ``(y, new_state)``, else it returns ``y``.
    """

    @property
    def stateful(self) -> bool:  # type: ignore[override]
        """Whether any sub-layer keeps state (then ``apply`` takes ``state=`` and returns it)."""
        return any(layer.stateful for _, layer in self.children())

    def pack(self, values: list[Any]) -> Any:
        """The params (or state) tree from one entry per sub-layer; a list by default."""
        return list(values)

    def unpack(self, tree: Any, what: str) -> list[Any]:
        """One entry per sub-layer of a params (``what="params"``) or state tree."""
        count = len(self.children())
        if not isinstance(tree, (list, tuple)) or len(tree) != count:
            got = (f"{len(tree)} entries" if isinstance(tree, (list, tuple))
                   else type(tree).__name__)
            raise TREE_ERRORS[what](name_of(self), f"expected {what} as a list of {count} "
                                    f"entries (one per layer), received {got}; were these "
                                    f"{what} made by this {name_of(self)}'s "
                                    f"{TREE_MAKERS[what]}?")
        return list(tree)

    def unpack_all(self, params: Params, state: State, key: PRNGKey | None,
                   cache: Cache = None) -> tuple[list[Any], ...]:
        """What ``run`` starts from: one params entry, one state entry, one subkey (None
        without a key) and one cache entry (None when not decoding) per sub-layer, the
        trees' structure and the key checked."""
        if key is not None:
            check_key(self, key)
        count = len(self.children())
        return (self.unpack(params, "params"), self.unpack(state, "state"),
                split_key(key, count),
                [None] * count if cache is None else self.unpack(cache, "cache"))

    def repack(self, cache: Cache, entries: list[Any]) -> Cache:
        """The new cache from one entry per sub-layer (None when not decoding)."""
        return None if cache is None else self.pack(entries)

    def init(self, key: PRNGKey) -> Params:
        check_key(self, key, "init")
        children = self.children()
        keys = [key] if _single_unnamed(children) else split_key(key, len(children))
        return self.pack([_named(label, layer, layer.init, k) for (label, layer), k
                          in zip(self.labels(), keys)])

    def init_state(self) -> State:
        return self.pack([layer.init_state() for _, layer in self.children()])

    def init_cache(self, batch_size: int, max_length: int, dtype: Any = None) -> Cache:
        """Every sub-layer's cache, laid out like the params (``{}`` where a sub-layer has
        nothing to cache)."""
        return self.pack([_named(label, layer, layer.init_cache, batch_size, max_length, dtype)
                          for label, layer in self.labels()])

    def apply(self, params: Params, x: Any, *, key: PRNGKey | None = None,
              train: bool = False, state: State = None, cache: Cache = None,
              **kwargs: Any) -> Any:
        """Returns ``y``; for a container with stateful sub-layers, which needs ``state=``,
        ``(y, new_state)``. With ``cache=`` (from :meth:`init_cache`), ``x`` holds the next
        positions of the sequences cached so far, and the result is ``(that, new_cache)``."""
        y, new_state, new_cache = self.run(params, resolve_state(self, state), x, key=key,
                                           train=train, cache=cache,
                                           offset=cache_offset(cache), **kwargs)
        result = public_result(self, y, new_state)
        return result if cache is None else (result, new_cache)


def resolve_state(layer: Layer, state: State) -> State:
    """The state ``layer.run`` takes for the ``state=`` of a public call: the given one for
    a stateful layer (StateError naming the stateful sub-layers when missing), an empty
    ``init_state()`` for one without state (StateError when given one with arrays)."""
    if not layer.stateful:
        if state is not None and jax.tree.leaves(state):
            raise StateError(name_of(layer), f"this {name_of(layer)} has no stateful layers; "
                             f"call it without state=")
        return layer.init_state()
    if state is None:
        which = [f"{label} ({name_of(sub)})" for label, sub in layer.labels()
                 if sub.stateful and label is not None]
        kept = f"layers {', '.join(which)} keep state: " if which else ""
        raise StateError(name_of(layer), f"{kept}expected state={name_of(layer).lower()}"
                         f".init_state(), received None")
    return state


def public_result(layer: Layer, y: Any, state: State) -> Any:
    """What a public call returns from ``run``'s ``(y, state)``: ``(y, state)`` for a
    stateful layer, ``y`` alone for one without state."""
    return (y, state) if layer.stateful else y


def _single_unnamed(children: tuple[tuple[str | None, Layer], ...]) -> bool:
    return len(children) == 1 and children[0][0] is None


def _named(label: int | str | None, layer: Layer, fn: Any, *args: Any) -> Any:
    if label is None:
        return fn(*args)
    try:
        return fn(*args)
    except LayerError as err:
        raise err.at(label, layer).with_traceback(err.__traceback__) from err.__cause__


class Net(Container):
    """A sequence of layers applied one after another; itself a layer, so nets nest.

    ``init`` splits its key into one subkey per layer and returns a list whose i-th
    entry is the i-th layer's params. ``apply`` splits its ``key`` (when given) the
    same way, so one seed fixes every layer. A layer's error is re-raised naming the
    layer's index and type.

    Example::

        net = Net([Linear(4, 16), ReLU(), Linear(16, 3)])
        params = net.init(jax.random.key(0))   # [{"W": (4, 16), "b": (16,)}, {}, {...}]
        logits = net.apply(params, x)           # x: (N, 4) -> (N, 3)
    """

    layers: tuple[Layer, ...]

    def __init__(self, layers: Sequence[Layer]):
        set_fields(self, layers=layer_sequence(layers, "layers", name_of(self), "layer"))

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        """One layer per line, nested nets indented: ``Net([\n    Linear(...),\n])``."""
        inner = "".join(f"    {repr(layer).replace(chr(10), chr(10) + '    ')},\n"
                        for layer in self.layers)
        return f"{type(self).__name__}([\n{inner}])"

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def children(self) -> tuple[tuple[str | None, Layer], ...]:
        return tuple((str(i), layer) for i, layer in enumerate(self.layers))

    def run(self, params: Params, state: State, x: Any, *, key: PRNGKey | None = None,
            train: bool = False, tap: Tap | None = None, cache: Cache = None,
            offset: Any = 0, **kwargs: Any) -> tuple[Any, list[State], Cache]:
        """Apply the layers in order; ``(y, one new state per layer, new cache)``."""
        no_keywords(self, kwargs)
        new_states, new_caches = [], []
        for (name, layer), layer_params, layer_state, layer_key, layer_cache in zip(
                self.children(), *self.unpack_all(params, state, key, cache)):
            x, layer_state, layer_cache = run_child(
                str(name), layer, layer_params, layer_state, x, key=layer_key, train=train,
                tap=tap, cache=layer_cache, offset=offset)
            new_states.append(layer_state)
            new_caches.append(layer_cache)
        return x, new_states, self.repack(cache, new_caches)


def intermediates(layer: Layer, params: Params, x: Any, *, key: PRNGKey | None = None,
                  train: bool = False, state: State = None,
                  **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """``layer.apply``'s result and the output of every sub-layer, keyed by path.

    Paths are ``"3"`` for a net's layer 3, ``"5.0"`` for layer 0 of the net at index 5,
    ``"2.attn"`` for a composite's field ``attn``; a ``Residual`` adds no element of its
    own. A sub-layer called twice reports its last call. Pure and jit-able: the outputs
    are those of the same forward pass that computes ``y``.

    Returns:
      ``(y, outputs)``, or for a stateful layer ``((y, new_state), outputs)``, mirroring
      ``apply``.
    """
    outputs: dict[str, Any] = {}

    def tap(path: str, y: Any) -> None:
        outputs[path] = y

    y, new_state, _ = layer.run(params, resolve_state(layer, state), x, key=key,
                                train=train, tap=tap, **kwargs)
    return public_result(layer, y, new_state), outputs


def cache_offset(cache: Cache) -> Any:
    """How many positions a decoding cache holds: the ``"index"`` its caching layers keep
    (all equal; stacked by a ``Repeat``, its first), or 0 without a cache or with nothing
    cached."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(cache)[0]:
        if getattr(path[-1], "key", None) == "index":
            return jnp.ravel(leaf)[0] if jnp.ndim(leaf) else leaf
    return 0


def count_params(params: Params) -> int:
    """Total number of scalars in a params pytree."""
    return sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(params))
