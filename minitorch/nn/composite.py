"""``Composite``: a user's own layer, written as a dataclass of parts and a ``forward``.

The parts are its fields: sub-layers, sequences (tuples or lists) of sub-layers, arrays it
owns itself (:class:`Param`), and hyperparameters (anything else). ``forward`` receives a
:class:`Call`, which runs a sub-layer with its own params, key, ``train`` and state::

    class ViT(nn.Composite):
        patch: nn.Layer
        cls: nn.Param                           # an array the composite owns
        blocks: tuple[nn.Layer, ...]            # elements addressed as "blocks.0", ...
        head: nn.Layer

        def forward(self, call, x, *, mask=None):          # apply's keywords reach forward
            h = call("patch", x)                                          # (N, L, E)
            cls = jnp.broadcast_to(call.param("cls"), (h.shape[0], 1, h.shape[2]))
            h = jnp.concatenate([cls, h], axis=1)
            for i in range(len(self.blocks)):
                h = call(f"blocks.{i}", h, mask=mask)      # keywords go on to a sub-layer
            if call.train:
                h = h + 0.1 * jax.random.normal(call.key(), h.shape)
            return call("head", h[:, 0])

Params (and state) are a dict keyed by field name: a sub-layer's params, a list for a
sequence, the array itself for a ``Param``. ``init`` and ``apply`` split their key into one
subkey per sub-layer (sequence elements and ``Param`` fields each count) in field order.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from typing import Any

import jax

from minitorch.errors import (
    ArgumentError,
    KeyArgError,
    LayerError,
    PathError,
    forward_error,
)
from minitorch.nn import init as initializers
from minitorch.nn.checks import check_key, check_keywords, name_of
from minitorch.nn.containers import TREE_ERRORS, Container
from minitorch.nn.core import (
    RESERVED,
    Array,
    Cache,
    Layer,
    Params,
    PRNGKey,
    State,
    run_child,
    set_fields,
)
from minitorch.nn.paths import Tap
from minitorch.validate import float_dtype, int_tuple, is_int, renamed_argument

# call.key() and the second and later calls of one sub-layer derive their keys by folding
# these offsets plus a counter into a key: far above any index that split() gives a subkey,
# so the derived keys never coincide with a sub-layer's own subkey.
_RECALL_OFFSET = 1 << 30
_DRAW_OFFSET = 1 << 31


class Param(Layer):
    """An array a composite owns itself (a class token, a positional table, a scale).

    Args:
      shape: the array's shape.
      init: initialiser by name (``"zeros"``, ``"normal"``, ``"he"``, ...; see
        :mod:`minitorch.nn.init`) or function ``(key, shape, dtype) -> array``.
      dtype: its dtype (float32 by default).

    Params: the array itself, ``shape``. In a composite, ``params[name]`` is the array and
    ``call.param(name)`` reads it; it counts in ``count_params``, ``summary``, freezing
    (``frozen=["cls"]``) and ``param_shardings`` like any param. ``apply`` returns it.
    """

    shape: tuple[int, ...]
    weight_init: Any
    dtype: str

    def __init__(self, shape: Any, init: Any = "zeros", dtype: Any = "float32", *,
                 weight_init: Any = None):
        owner = name_of(self)
        dims = (int_tuple(shape, 1, 0) if is_int(shape) else int_tuple(shape, len(shape), 0)
                if isinstance(shape, (tuple, list)) else None)
        if dims is None:
            raise ArgumentError(f"{owner}: shape must be a tuple of non-negative ints, "
                                f"received {shape!r}")
        init = renamed_argument(owner, "init", init, "zeros", "weight_init", weight_init)
        initializers.resolve(init, owner=owner)  # fail early on an unknown name
        set_fields(self, shape=dims, weight_init=init, dtype=float_dtype(dtype, owner))

    def init(self, key: PRNGKey) -> Array:
        check_key(self, key, "init")
        return initializers.make(initializers.resolve(self.weight_init, owner=name_of(self)),
                                 key, self.shape, self.dtype, name_of(self))

    def apply(self, params: Params, x: Any = None, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        return params


def _layer_sequence(value: Any) -> bool:
    """Whether a field's value is a sequence of sub-layers (a non-empty tuple or list of
    layers); a sequence mixing layers with other values is refused at construction."""
    return isinstance(value, (tuple, list)) and bool(value) and all(
        isinstance(v, Layer) for v in value)


def _check_fields(composite: Composite) -> None:
    """Lists of layers become tuples (a layer is hashable, so ``jax.jit`` can key on it); a
    sequence that mixes layers with other values is an error."""
    for field in dataclasses.fields(composite):
        value = getattr(composite, field.name)
        if not isinstance(value, (tuple, list)):
            continue
        layers = [isinstance(v, Layer) for v in value]
        if any(layers) and not all(layers):
            odd = layers.index(False)
            raise ArgumentError(f"{name_of(composite)}: field {field.name!r} mixes layers and "
                                f"other values (element {odd} is {type(value[odd]).__name__}); "
                                f"a sequence of sub-layers holds layers only")
        if all(layers) and isinstance(value, list):
            set_fields(composite, **{field.name: tuple(value)})


class Call:
    """What :meth:`Composite.forward` receives: runs sub-layers and hands out what
    ``forward`` may need of the composite's call.

    - ``call(name, x, **kwargs)``: that sub-layer's output for ``x`` (``name`` a field, or
      an element of a sequence field: ``"blocks.0"``), with its params, its subkey, the
      caller's ``train`` and its state; ``kwargs`` (``mask=``) reach its ``apply`` (or, for
      a composite, its ``forward``). Called k times, it reuses its params and gets k
      different subkeys, the first being the one a single call gets.
    - ``call.param(name)``: the array of a :class:`Param` field.
    - ``call.train``: the caller's ``train``.
    - ``call.key()``: a new key at each call, derived from the composite's key (a
      ``KeyArgError`` when ``apply`` was given none).
    - ``call.offset``: how many positions the decoding cache held when this ``apply``
      began (0 without a cache; an int32 scalar, traced under ``jit``), the same in nested
      composites: learned positions read ``call("pos", call.offset + jnp.arange(L))``.
    """

    def __init__(self, owner: Composite, params: dict[str, Any], states: dict[str, Any],
                 keys: dict[str, Any], caches: dict[str, Any], *, key: PRNGKey | None,
                 train: bool, tap: Tap | None, offset: Any):
        self.owner, self.train, self.offset = owner, train, offset
        self.layers = dict(owner.children())
        self.params, self.states, self.keys, self.caches = params, states, keys, caches
        self._key, self._tap = key, tap
        self._calls: Counter[str] = Counter()
        self._draws = 0

    def _sub_layer(self, name: str, want_param: bool) -> Layer:
        layer = self.layers.get(name)
        if layer is None:
            raise PathError(name_of(self.owner), f"call({name!r}, ...) names no sub-layer; "
                            f"its sub-layers are {list(self.layers)}")
        if isinstance(layer, Param) != want_param:
            fix = (f"read it with call.param({name!r})" if isinstance(layer, Param)
                   else f"run it with call({name!r}, x)")
            raise PathError(name_of(self.owner), f"{name!r} is a {name_of(layer)}: {fix}")
        return layer

    def __call__(self, name: str, x: Any, **kwargs: Any) -> Any:
        layer = self._sub_layer(name, want_param=False)
        key, count = self.keys[name], self._calls[name]
        self._calls[name] += 1
        if key is not None and count:  # a repeated call: another, independent subkey
            key = jax.random.fold_in(key, _RECALL_OFFSET + count)
        y, self.states[name], self.caches[name] = run_child(
            name, layer, self.params[name], self.states[name], x, key=key, train=self.train,
            tap=self._tap, cache=self.caches[name], offset=self.offset, **kwargs)
        return y

    def param(self, name: str) -> Array:
        """The array of the :class:`Param` field ``name``."""
        self._sub_layer(name, want_param=True)
        return self.params[name]

    def key(self) -> PRNGKey:
        """A new key, different at every call, derived from the composite's key."""
        if self._key is None:
            raise KeyArgError(name_of(self.owner), "call.key() needs a key: pass key=... to "
                              "apply (train=True with a key, as for Dropout)")
        self._draws += 1
        return jax.random.fold_in(self._key, _DRAW_OFFSET + self._draws)


class Composite(Container):
    """Base class of a user's own layer built from named parts.

    Subclassing makes a frozen dataclass (no decorator needed). Fields holding layers are
    sub-layers; fields holding a tuple or list of layers are sequences of sub-layers (their
    elements have paths ``"blocks.0"``, ``"blocks.1"``, ...); :class:`Param` fields are
    arrays the composite owns; other fields are hyperparameters. Write :meth:`forward`,
    which receives a :class:`Call` (``call(name, x, **kwargs)``, ``call.param(name)``,
    ``call.train``, ``call.key()``) and the keywords given to ``apply`` beyond ``key``,
    ``train`` and ``state``, which it must declare. Calling one sub-layer twice reuses its
    params (weight sharing) with a new subkey; weight tying passes a mode to it, e.g.
    ``call("embed", h, attend=True)`` projects onto an ``Embedding``'s table.

    Params and state: dicts keyed by field name, in field order (``{"norm": {...},
    "blocks": [{...}, {...}], "cls": array}``); ``init`` and ``apply`` split their key into
    one subkey per sub-layer in that order. Any error raised inside ``forward`` names the
    composite's path; a sub-layer's names the sub-layer's: ``attn (MultiHeadAttention): ...``.

    Example::

        class Block(nn.Composite):
            norm: nn.Layer
            mlp: nn.Layer

            def forward(self, call, x):
                return x + call("mlp", call("norm", x))

        block = Block(norm=nn.LayerNorm(64), mlp=nn.Linear(64, 64))
        params = block.init(key)           # {"norm": {...}, "mlp": {...}}
        y = block.apply(params, x)         # x: (N, 64) -> (N, 64)
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        made = cls.__init__

        @functools.wraps(made)
        def init_and_check(self: Composite, *args: Any, **fields: Any) -> None:
            made(self, *args, **fields)
            _check_fields(self)

        cls.__init__ = init_and_check  # type: ignore[method-assign,assignment]

    def forward(self, call: Call, x: Any) -> Any:
        """The computation: ``x`` through the sub-layers, each run by ``call(name, x)``."""
        raise NotImplementedError(f"{name_of(self)}: a Composite must define "
                                  f"forward(self, call, x)")

    def _parts(self) -> list[tuple[str, Any]]:
        """``(field name, value)`` of every field holding a sub-layer or a sequence of them."""
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), Layer)
                or _layer_sequence(getattr(self, f.name))]

    def children(self) -> tuple[tuple[str | None, Layer], ...]:
        return tuple(child for name, value in self._parts() for child in (
            [(name, value)] if isinstance(value, Layer)
            else [(f"{name}.{i}", layer) for i, layer in enumerate(value)]))

    def pack(self, values: list[Any]) -> Any:
        entries, tree = iter(values), {}
        for name, value in self._parts():
            tree[name] = next(entries) if isinstance(value, Layer) else [
                next(entries) for _ in value]
        return tree

    def unpack(self, tree: Any, what: str) -> list[Any]:
        error = TREE_ERRORS[what]
        names = [name for name, _ in self._parts()]
        if not isinstance(tree, dict) or sorted(tree) != sorted(names):
            got = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
            raise error(name_of(self), f"expected {what} as a dict with keys {names} (one per "
                        f"part), received {got}")
        flat = []
        for name, value in self._parts():
            if isinstance(value, Layer):
                flat.append(tree[name])
                continue
            entry = tree[name]
            if not isinstance(entry, (list, tuple)) or len(entry) != len(value):
                got = (f"{len(entry)} entries" if isinstance(entry, (list, tuple))
                       else type(entry).__name__)
                raise error(name_of(self), f"expected {what}[{name!r}] as a list of "
                            f"{len(value)} entries (one per element), received {got}")
            flat.extend(entry)
        return flat

    def run(self, params: Params, state: State, x: Any, *, key: PRNGKey | None = None,
            train: bool = False, tap: Tap | None = None, cache: Cache = None,
            offset: Any = 0, **kwargs: Any) -> tuple[Any, State, Cache]:
        check_keywords(self, type(self).forward, kwargs, "forward()", RESERVED)
        names = [str(name) for name, _ in self.children()]
        own_params, states, keys, caches = (dict(zip(names, entry)) for entry
                                            in self.unpack_all(params, state, key, cache))
        call = Call(self, own_params, states, keys, caches, key=key, train=train, tap=tap,
                    offset=offset)
        try:
            y = self.forward(call, x, **kwargs)
        except LayerError:
            raise  # a sub-layer's, already naming its path below this composite
        except Exception as err:  # the composite's own code: name it
            raise forward_error(name_of(self), err) from err
        return (y, self.pack([call.states[name] for name in names]),
                self.repack(cache, [call.caches[name] for name in names]))


__all__ = ["Call", "Composite", "Param"]
