"""Composition beyond a chain: ``Residual``, ``Parallel`` and user-written ``Composite`` layers.

Each is a layer like any other, so they nest anywhere a layer goes (inside a ``Net``, a
``Composite``, each other). They run their sub-layers through the same
:func:`~minitorch.nn.core.run_child` as ``Net``, so errors, ``summary`` rows, telemetry keys
and checkpoints address every sub-layer by its path (``"2.attn"``, ``"3.0"``).

Example::

    class Block(nn.Composite):            # a frozen dataclass of sub-layers
        norm: nn.Layer
        attn: nn.Layer
        mlp: nn.Layer

        def forward(self, call, x):       # call(name, x, **kwargs) runs one sub-layer
            x = x + call("attn", call("norm", x))
            return x + call("mlp", x)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax.numpy as jnp

from minitorch.errors import ParamsError, ShapeError, StateError
from minitorch.nn.core import (
    Array,
    Container,
    Layer,
    Params,
    PRNGKey,
    State,
    Tap,
    name_of,
    no_keywords,
    run_child,
    set_fields,
)


@dataclasses.dataclass(frozen=True, init=False)
class Wrapper(Container):
    """Base of a layer around one other layer (``Residual``, ``MixedPrecision``): params
    and state are exactly the wrapped layer's, and its sub-layers keep their paths."""

    layer: Layer

    def __init__(self, layer: Layer):
        if not isinstance(layer, Layer):
            raise TypeError(f"{name_of(self)}: layer must be a minitorch layer, received "
                            f"{type(layer).__name__} ({layer!r})")
        set_fields(self, layer=layer)

    def children(self) -> tuple[tuple[str | None, Layer], ...]:
        return ((None, self.layer),)

    def pack(self, values: list[Any]) -> Any:
        return values[0]

    def unpack(self, tree: Any, what: str) -> list[Any]:
        return [tree]


@dataclasses.dataclass(frozen=True, init=False)
class Residual(Wrapper):
    """``y = x + layer(x)``: a skip connection around ``layer``.

    Params and state are exactly ``layer``'s (``Residual(f).init(key) == f.init(key)``), and
    its sub-layers keep their paths: a ``Residual`` at index 2 of a net around a ``Net``
    shows that net's layers as ``"2.0"``, ``"2.1"``.

    Shapes: ``x (...) -> y`` of the same shape; ``layer(x)`` must have ``x``'s shape (else a
    ``ShapeError`` naming ``Residual``).
    """

    def run(self, params: Params, state: State, x: Any, *, key: PRNGKey | None = None,
            train: bool = False, tap: Tap | None = None, **kwargs: Any) -> tuple[Any, State]:
        fx, state = self.layer.run(params, state, x, key=key, train=train, tap=tap, **kwargs)
        if jnp.shape(fx) != jnp.shape(x):
            raise ShapeError("Residual", f"expected the wrapped {name_of(self.layer)} to keep "
                             f"the input's shape {jnp.shape(x)}, received {jnp.shape(fx)}")
        return x + fx, state


@dataclasses.dataclass(frozen=True, init=False)
class Parallel(Container):
    """Branches applied to the same input, their outputs concatenated or summed.

    Args:
      layers: the branches; each gets the same input and its own subkey.
      combine: ``"concat"`` (along ``axis``) or ``"sum"``.
      axis: the concatenation axis (1: channels of NCHW / NCL, features of ``(N, F)``).

    Params and state: lists, one entry per branch, in order (paths ``"i.0"``, ``"i.1"``).
    Shapes: every branch maps ``x`` to outputs that agree on all axes but ``axis``
    (``"concat"``) or on all axes (``"sum"``).
    """

    layers: tuple[Layer, ...]
    combine: str
    axis: int

    def __init__(self, layers: Sequence[Layer], combine: Literal["concat", "sum"] = "concat",
                 axis: int = 1):
        layers = tuple(layers)
        if not layers:
            raise ValueError("Parallel: expected at least one branch, received none")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Parallel: branch {i} must be a minitorch layer, received "
                                f"{type(layer).__name__} ({layer!r})")
        if combine not in ("concat", "sum"):
            raise ValueError(f"Parallel: combine must be 'concat' or 'sum', received {combine!r}")
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"Parallel: axis must be an int, received {axis!r}")
        set_fields(self, layers=layers, combine=combine, axis=axis)

    def children(self) -> tuple[tuple[str | None, Layer], ...]:
        return tuple((str(i), layer) for i, layer in enumerate(self.layers))

    def run(self, params: Params, state: State, x: Any, *, key: PRNGKey | None = None,
            train: bool = False, tap: Tap | None = None,
            **kwargs: Any) -> tuple[Any, list[State]]:
        no_keywords(self, kwargs)
        outs, new_states = [], []
        for (name, layer), p, s, k in zip(self.children(), *self.unpack_all(params, state, key)):
            y, s = run_child(str(name), layer, p, s, x, key=k, train=train, tap=tap)
            outs.append(y)
            new_states.append(s)
        return self._combine(outs), new_states

    def _combine(self, outs: list[Array]) -> Array:
        shapes = [tuple(jnp.shape(y)) for y in outs]
        if self.combine == "sum":
            if len(set(shapes)) > 1:
                raise ShapeError("Parallel", f"combine='sum' expected every branch's output "
                                 f"of one shape, received {shapes}")
            return sum(outs[1:], outs[0])
        ndim = len(shapes[0])
        axis = self.axis % ndim if ndim and -ndim <= self.axis < ndim else None
        rest = {s[:axis] + s[axis + 1:] for s in shapes} if axis is not None else set()
        if axis is None or any(len(s) != ndim for s in shapes) or len(rest) > 1:
            raise ShapeError("Parallel", f"combine='concat' along axis {self.axis} expected "
                             f"branch outputs that agree on every other axis, received {shapes}")
        return jnp.concatenate(outs, axis=axis)


Call = Callable[..., Any]  # call(name, x, **kwargs) -> that sub-layer's output


class Composite(Container):
    """Base class of a user's own layer built from named sub-layers.

    Subclassing makes a frozen dataclass (no decorator needed). Fields holding layers are
    the sub-layers; other fields are hyperparameters. Write :meth:`forward`, which receives
    ``call(name, x, **kwargs)``: it applies that sub-layer with its params, its subkey, the
    caller's ``train`` and its state; ``kwargs`` (e.g. ``mask=``) reach the sub-layer's
    ``apply``. Calling one sub-layer twice reuses its params (weight sharing); weight tying
    passes a mode to it, e.g. ``call("embed", h, attend=True)`` projects onto an
    ``Embedding``'s table.

    Params and state: dicts keyed by field name, in field order (``{"norm": {...},
    "attn": {...}}``); ``init`` and ``apply`` split their key into one subkey per sub-layer
    in that order. A sub-layer's errors name its path: ``attn (MultiHeadAttention): ...``.

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
        dataclasses.dataclass(frozen=True)(cls)  # fields, __init__, eq and hash, immutable

    def forward(self, call: Call, x: Any) -> Any:
        """The computation: ``x`` through the sub-layers, each run by ``call(name, x)``."""
        raise NotImplementedError(f"{name_of(self)}: a Composite must define "
                                  f"forward(self, call, x)")

    def children(self) -> tuple[tuple[str | None, Layer], ...]:
        return tuple((f.name, getattr(self, f.name)) for f in dataclasses.fields(self)
                     if isinstance(getattr(self, f.name), Layer))

    def pack(self, values: list[Any]) -> Any:
        return {name: value for (name, _), value in zip(self.children(), values)}

    def unpack(self, tree: Any, what: str) -> list[Any]:
        names = [str(name) for name, _ in self.children()]
        if not isinstance(tree, dict) or sorted(tree) != sorted(names):
            got = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
            error = ParamsError if what == "params" else StateError
            raise error(name_of(self), f"expected {what} as a dict with keys {names} (one per "
                        f"sub-layer), received {got}")
        return [tree[name] for name in names]

    def run(self, params: Params, state: State, x: Any, *, key: PRNGKey | None = None,
            train: bool = False, tap: Tap | None = None, **kwargs: Any) -> tuple[Any, State]:
        no_keywords(self, kwargs)
        children = dict(self.children())
        params, states, keys = (dict(zip(children, entries))
                                for entries in self.unpack_all(params, state, key))

        def call(name: str, value: Any, **kwargs: Any) -> Any:
            if name not in children:
                raise ValueError(f"{name_of(self)}: call({name!r}, ...) names no sub-layer; "
                                 f"its sub-layers are {list(children)}")
            y, states[name] = run_child(name, children[name], params[name], states[name],
                                        value, key=keys[name], train=train, tap=tap, **kwargs)
            return y

        y = self.forward(call, x)
        return y, self.pack([states[name] for name in children])


__all__ = ["Composite", "Parallel", "Residual", "Wrapper"]
