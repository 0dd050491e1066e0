"""Composition beyond a chain: ``Residual`` and ``Parallel`` (and, in
:mod:`minitorch.nn.composite`, the user-written ``Composite``).

Each is a layer like any other, so they nest anywhere a layer goes (inside a ``Net``, a
``Composite``, each other). They run their sub-layers through the same
:func:`~minitorch.nn.core.run_child` as ``Net``, so errors, ``summary`` rows, telemetry keys
and checkpoints address every sub-layer by its path (``"2.0"``, ``"3.1"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import jax.numpy as jnp

from minitorch.errors import ArgumentError, ShapeError, check_int
from minitorch.nn.checks import name_of
from minitorch.nn.containers import Container, no_keywords
from minitorch.nn.core import (
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
from minitorch.validate import layer_argument, layer_sequence, one_of


class Wrapper(Container):
    """Base of a layer around one other layer (``Residual``, ``MixedPrecision``): params
    and state are exactly the wrapped layer's, and its sub-layers keep their paths."""

    layer: Layer

    def __init__(self, layer: Layer):
        set_fields(self, layer=layer_argument(layer, "layer", name_of(self)))

    def children(self) -> tuple[tuple[str | None, Layer], ...]:
        return ((None, self.layer),)

    def pack(self, values: list[Any]) -> Any:
        return values[0]

    def unpack(self, tree: Any, what: str) -> list[Any]:
        return [tree]


class Residual(Wrapper):
    """``y = x + layer(x)``: a skip connection around ``layer``.

    Params and state are exactly ``layer``'s (``Residual(f).init(key) == f.init(key)``), and
    its sub-layers keep their paths: a ``Residual`` at index 2 of a net around a ``Net``
    shows that net's layers as ``"2.0"``, ``"2.1"``.

    Shapes: ``x (...) -> y`` of the same shape; ``layer(x)`` must have ``x``'s shape (else a
    ``ShapeError`` naming ``Residual``).
    """

    def run(self, params: Params, state: State, x: Any, *, key: PRNGKey | None = None,
            train: bool = False, tap: Tap | None = None, cache: Cache = None,
            offset: Any = 0, **kwargs: Any) -> tuple[Any, State, Cache]:
        fx, state, cache = self.layer.run(params, state, x, key=key, train=train, tap=tap,
                                          cache=cache, offset=offset, **kwargs)
        if jnp.shape(fx) != jnp.shape(x):
            raise ShapeError(name_of(self), f"expected the wrapped {name_of(self.layer)} to keep "
                             f"the input's shape {jnp.shape(x)}, received {jnp.shape(fx)}")
        return x + fx, state, cache


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
        owner = name_of(self)
        layers = layer_sequence(layers, "layers", owner, "branch")
        if not layers:
            raise ArgumentError(f"{owner}: expected at least one branch, received none")
        set_fields(self, layers=layers, combine=one_of(combine, ("concat", "sum"), "combine",
                                                       owner),
                   axis=check_int(owner, "axis", axis))

    def children(self) -> tuple[tuple[str | None, Layer], ...]:
        return tuple((str(i), layer) for i, layer in enumerate(self.layers))

    def run(self, params: Params, state: State, x: Any, *, key: PRNGKey | None = None,
            train: bool = False, tap: Tap | None = None, cache: Cache = None,
            offset: Any = 0, **kwargs: Any) -> tuple[Any, list[State], Cache]:
        no_keywords(self, kwargs)
        outs, new_states, new_caches = [], [], []
        for (name, layer), p, s, k, c in zip(self.children(),
                                             *self.unpack_all(params, state, key, cache)):
            y, s, c = run_child(str(name), layer, p, s, x, key=k, train=train, tap=tap,
                                cache=c, offset=offset)
            outs.append(y)
            new_states.append(s)
            new_caches.append(c)
        return self._combine(outs), new_states, self.repack(cache, new_caches)

    def _combine(self, outs: list[Array]) -> Array:
        shapes = [tuple(jnp.shape(y)) for y in outs]
        if self.combine == "sum":
            if len(set(shapes)) > 1:
                raise ShapeError(name_of(self), f"combine='sum' expected every branch's output "
                                 f"of one shape, received {shapes}")
            return sum(outs[1:], outs[0])
        ndim = len(shapes[0])
        axis = self.axis % ndim if ndim and -ndim <= self.axis < ndim else None
        rest = {s[:axis] + s[axis + 1:] for s in shapes} if axis is not None else set()
        if axis is None or any(len(s) != ndim for s in shapes) or len(rest) > 1:
            raise ShapeError(name_of(self), f"combine='concat' along axis {self.axis} expected "
                             f"branch outputs that agree on every other axis, received {shapes}")
        return jnp.concatenate(outs, axis=axis)


__all__ = ["Parallel", "Residual", "Wrapper"]
