"""The layer protocol: :class:`Layer`, and how a container runs one of its sub-layers.

A layer is an immutable object holding hyperparameters only, with two pure entry points::

    params = layer.init(key)                                  # a pytree of arrays
    y = layer.apply(params, x, *, key=None, train=False)      # same inputs, same output

Subclassing :class:`Layer` makes a frozen dataclass (no decorator needed): annotated
fields are hyperparameters. The containers built on it live in
:mod:`minitorch.nn.containers` (``Net``) and :mod:`minitorch.nn.compose`; the checks every
layer shares in :mod:`minitorch.nn.checks`; paths in :mod:`minitorch.nn.paths`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, ClassVar, overload

import jax

from minitorch.errors import LayerError, describe
from minitorch.nn.checks import check_key, check_keywords, name_of
from minitorch.nn.paths import Tap, below, label_of

Array = jax.Array
Params = Any  # a pytree of arrays: dict for a layer, list of them for a Net
State = Any  # buffers such as BatchNorm's running statistics, kept apart from params
Cache = Any  # what a decoding layer keeps between calls (attention's keys and values)
PRNGKey = jax.Array  # new-style ``jax.random.key`` or raw ``uint32[2]`` ``PRNGKey``

# Keywords every layer's public apply takes; the rest of a call's keywords are the layer's own.
RESERVED = ("key", "train", "state", "cache")


@dataclasses.dataclass(frozen=True)
class Layer:
    """Base class of every layer: a frozen dataclass of hyperparameters.

    Subclassing makes the subclass a frozen dataclass too, so a leaf layer of your own is
    written as its fields and two methods::

        class Scale(nn.Layer):
            features: int

            def init(self, key):
                return {"s": jnp.ones((self.features,))}

            def apply(self, params, x, *, key=None, train=False):
                return x * params["s"]          # x: (..., features)

    (A class that defines its own ``__init__`` keeps it; the fields are then set with
    :func:`set_fields`.) Subclasses override ``init`` (default: no params) and ``apply``.
    A layer with buffers (``BatchNorm``) sets ``stateful = True``, overrides
    ``init_state``, takes ``state=`` in ``apply`` and returns ``(y, new_state)``. Extra
    keywords that ``apply`` declares (``mask=``, ``initial=``) reach it from a
    composite's ``call(name, x, mask=m)``.

    Inside the library every layer is called one way, :meth:`run` (state in, state out), so
    nets, compositions, ``summary``, telemetry and the train steps treat all layers alike.
    """

    stateful: ClassVar[bool] = False
    _custom_init: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A class whose own __init__ (or an ancestor's below Layer) sets the fields keeps it;
        # any other gets the dataclass __init__ of its fields.
        cls._custom_init = "__init__" in cls.__dict__ or any(
            getattr(base, "_custom_init", False) for base in cls.__mro__[1:])
        dataclasses.dataclass(frozen=True, init=not cls._custom_init)(cls)  # fields, eq, hash
        # Layer's own __setattr__ freezes every subclass; without the generated pair in the
        # class, a subclass may also carry an explicit @dataclasses.dataclass(frozen=True).
        del cls.__setattr__, cls.__delattr__

    def init(self, key: PRNGKey) -> Params:
        """Create this layer's params from ``key``; a parameterless layer returns ``{}``."""
        check_key(self, key, "init")
        return {}

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Any:
        """``y``; for a stateful layer, which also takes ``state=``, ``(y, new_state)``."""
        raise NotImplementedError(f"{name_of(self)}: a layer must define "
                                  f"apply(self, params, x, *, key=None, train=False)")

    def init_state(self) -> State:
        """This layer's initial state; ``{}`` for a layer without buffers."""
        return {}

    def init_cache(self, batch_size: int, max_length: int, dtype: Any = None) -> Cache:
        """An empty decoding cache for ``batch_size`` sequences of up to ``max_length``
        positions (``dtype``: of what it stores, by default the params'); ``{}`` for a layer
        with nothing to cache. A layer that caches takes ``cache=`` in ``apply`` and returns
        ``(y, new_cache)`` (see :func:`minitorch.nn.generate`)."""
        return {}

    def run(self, params: Params, state: State, x: Any, *, key: PRNGKey | None = None,
            train: bool = False, tap: Tap | None = None, cache: Cache = None,
            offset: Any = 0, **kwargs: Any) -> tuple[Any, State, Cache]:
        """``apply`` in the library's one internal convention: ``(y, new_state, new_cache)``
        for every layer, stateful or not (a stateless layer returns ``state`` unchanged, a
        layer with nothing to cache its ``cache``: None when not decoding, else ``{}``).

        ``tap(path, output)``, when given, receives the output of every sub-layer, addressed
        by its path below this layer (``"2.attn"``); a leaf layer has none to report.
        ``cache`` is this layer's part of a decoding cache, passed to ``apply`` only when it
        holds something; ``offset``, the positions cached before this call, is what
        composites show as ``call.offset``. ``kwargs`` (e.g. ``mask=``) reach ``apply``,
        which must declare them (else a ``KeywordError`` naming the layer and what its
        ``apply`` accepts).
        """
        check_keywords(self, type(self).apply, kwargs, "apply()", RESERVED)
        apply: Any = self.apply  # a stateful leaf's apply also takes state=
        if cache:  # decoding, and this layer has something cached
            y, cache = apply(params, x, key=key, train=train, cache=cache, **kwargs)
            return y, state, cache
        if self.stateful:  # a leaf written in the public form: apply(..., state=) -> (y, state)
            y, state = apply(params, x, key=key, train=train, state=state, **kwargs)
            return y, state, cache
        return apply(params, x, key=key, train=train, **kwargs), state, cache

    def children(self) -> tuple[tuple[str | None, Layer], ...]:
        """The sub-layers, each with its path element (:mod:`minitorch.nn.paths`; None: a
        wrapper's single child, sharing the wrapper's params tree and path)."""
        return ()

    def labels(self) -> list[tuple[int | str | None, Layer]]:
        """``(label, layer)`` per sub-layer as errors name it: an index for a numbered
        sub-layer (``layer 2``), the path element for a named one (``attn``,
        ``blocks.0``), None for a wrapper's single unnamed sub-layer, whose errors need no
        extra level."""
        return [(label_of(name), layer) for name, layer in self.children()]

    def tensor_axes(self) -> Mapping[str, int]:
        """For tensor parallelism (``parallel.param_shardings(..., tensor=)``): the axis of
        each of this layer's own params that is split over the mesh's tensor axis, by the
        param's name (``{"W": 1, "b": 0}``) or its path below the layer (``{"q.W": 1}``).

        A name declares every param whose path ends with it (a stacked ``LSTM``'s
        ``"W_ih"`` is each of its layers'); a param no name declares is kept whole, and a
        name this instance does not create (``"b"`` without a bias) declares nothing. So
        nothing mirrors ``init``'s tree. Nothing is split by default; a layer with weights
        worth splitting (``Linear``, convolutions, attention, recurrent layers,
        ``Embedding``) declares its own, Megatron-style, and a container's params are
        declared by its sub-layers."""
        return {}

    @functools.cached_property
    def param_spec(self) -> Params:
        """Shapes and dtypes ``init`` creates (``jax.ShapeDtypeStruct`` leaves); no FLOPs spent."""
        return jax.eval_shape(self.init, jax.random.key(0))

    @functools.cached_property
    def state_spec(self) -> State:
        """Shapes and dtypes ``init_state`` creates."""
        return jax.eval_shape(self.init_state)


def _immutable(self: Layer, name: str, *value: Any) -> None:
    raise dataclasses.FrozenInstanceError(
        f"cannot assign to field {name!r}: a {name_of(self)} is immutable (its params live "
        f"outside it); make a changed copy with dataclasses.replace(layer, {name}=...)")


Layer.__setattr__ = _immutable  # type: ignore[assignment,method-assign]
Layer.__delattr__ = _immutable  # type: ignore[assignment,method-assign]


@overload
def split_key(key: PRNGKey, num: int) -> list[PRNGKey]: ...
@overload
def split_key(key: None, num: int) -> list[None]: ...
@overload
def split_key(key: PRNGKey | None, num: int) -> list[PRNGKey] | list[None]: ...


def split_key(key: PRNGKey | None, num: int) -> list[PRNGKey] | list[None]:
    """``num`` independent subkeys of ``key`` (or ``num`` Nones when ``key`` is None)."""
    if key is None:
        return [None] * num
    return list(jax.random.split(key, num))


def run_child(name: str, layer: Layer, params: Params, state: State, x: Any, *,
              key: PRNGKey | None, train: bool, tap: Tap | None, cache: Cache = None,
              offset: Any = 0, **kwargs: Any) -> tuple[Any, State, Cache]:
    """Run a sub-layer the one way every container does.

    Args:
      name: its path element (``"2"``, ``"attn"``, ``"blocks.0"``); errors and profiles
        name it by it (``layer 2 (Conv2D)``, ``attn (MultiHeadAttention)``).
      layer, params, state, x, key, train, cache, offset, kwargs: as for :meth:`Layer.run`.
      tap: the parent's tap; it receives the sub-layer's output at ``name`` and, through the
        sub-layer's own run, every output below it at ``name.<path>``.
    """
    label = label_of(name)
    try:
        with jax.named_scope(describe(label, layer)):  # profiles read like errors
            y, state, cache = layer.run(params, state, x, key=key, train=train,
                                        tap=below(tap, name), cache=cache, offset=offset,
                                        **kwargs)
    except LayerError as err:
        raise err.at(label, layer).with_traceback(err.__traceback__) from err.__cause__
    if tap is not None:
        tap(name, y)
    return y, state, cache


def set_fields(obj: Layer, /, **fields: Any) -> None:
    """Set fields of a frozen layer from its own ``__init__``."""
    for name, value in fields.items():
        object.__setattr__(obj, name, value)
