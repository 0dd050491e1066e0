"""Errors raised by minitorch layers and nets.

Every error a layer raises is a :class:`LayerError`; it names *where* it happened
(the layer type, and inside a container the sub-layer's index or name) and *what* was
expected and received. A container re-raises an error of a sub-layer with its label
prepended (``layer i (Type)`` in a ``Net``, ``name (Type)`` in a ``Composite``), so a
mistake deep inside compositions reads as a path::

    layer 2 (Block) > attn (MultiHeadAttention): expected input of shape (N, L, 64),
    received (4, 10, 32)

The concrete classes also derive from the builtin a user would catch
(``ValueError`` for shapes and values, ``TypeError`` for dtypes and key types).
"""

from __future__ import annotations

import functools

import numpy as np


class LayerError(Exception):
    """Base class: a layer was called with something it cannot use.

    Attributes:
      where: the path to the layer, outermost first, e.g. ``("layer 3 (Net)", "layer 1 (Linear)")``.
      detail: what was expected and what was received.
    """

    def __init__(self, where: str | tuple[str, ...], detail: str):
        self.where = (where,) if isinstance(where, str) else tuple(where)
        self.detail = detail
        super().__init__(f"{' > '.join(self.where)}: {detail}")

    def at(self, label: int | str, layer: object) -> LayerError:
        """The same error seen from the container whose sub-layer ``layer`` raised it.

        ``label`` is how the container names that sub-layer: an index (a net's layer 2,
        shown ``layer 2 (Linear)``) or a name (a composite's field, ``attn (MultiHeadAttention)``).
        """
        # A leaf names itself by its class, or by the class that defines the check (a
        # subclass of Flatten raising Flatten's error): either way the label below says it.
        names = {cls.__name__ for cls in type(layer).__mro__}
        inner = self.where[1:] if self.where and self.where[0] in names else self.where
        # A leaf layer's own "Linear" becomes "layer 2 (Linear)"; the path a nested
        # container reported stays below the container's own label.
        return type(self)((describe(label, layer), *inner), self.detail)


def describe(label: int | str, layer: object) -> str:
    """How errors and profiles name a sub-layer in its container: ``layer 2 (Conv2D)`` for
    an index, ``attn (MultiHeadAttention)`` for a name."""
    shown = f"layer {label}" if isinstance(label, int) else label
    return f"{shown} ({type(layer).__name__})"


class ShapeError(LayerError, ValueError):
    """An input (or parameter) has the wrong shape or rank."""


class ParamsError(LayerError, ValueError):
    """The params pytree does not have the structure or shapes the layer creates."""


class DTypeError(LayerError, TypeError):
    """An input has a dtype the layer cannot use (e.g. integers into ``Linear``)."""


class KeyArgError(LayerError, TypeError):
    """A PRNG key is missing where one is required, or is not a key."""


class IdError(LayerError, ValueError):
    """Integer ids (``Embedding``) or class labels (a loss) outside their range."""


class StateError(LayerError, ValueError):
    """A stateful layer (``BatchNorm``) got no state, or a state of the wrong structure."""


class CacheError(LayerError, ValueError):
    """A decoding cache does not fit: another structure, another batch size, or more
    positions than its ``max_length``."""


class KeywordError(LayerError, TypeError):
    """A keyword reached a layer (``apply``) or a composite (``forward``) that does not
    declare it, or a chain (``Net``) that has no single layer to give it to."""


class PathError(LayerError, ValueError):
    """A path names no sub-layer (``call("atn", x)`` in a composite with ``attn``)."""


class ForwardError(LayerError):
    """An error raised in a composite's own ``forward`` code (its arithmetic, a user's
    check), re-raised with the composite's path. :func:`forward_error` makes it also an
    instance of the original's builtin class, so ``except TypeError`` still catches a
    ``TypeError`` from ``forward``; the original is chained as ``__cause__``."""


@functools.cache
def _forward_error_class(base: type[BaseException]) -> type[ForwardError]:
    if base is Exception:
        return ForwardError
    return type("ForwardError", (ForwardError, base), {"__module__": __name__})


def forward_error(where: str, err: Exception) -> ForwardError:
    """``err`` (not a LayerError) as a ForwardError at ``where``, keeping its builtin class
    (``TypeError``, ``ValueError``, ...) and its message."""
    base = next(c for c in type(err).__mro__ if c.__module__ == "builtins")
    return _forward_error_class(base)(where, f"{type(err).__name__}: {err}")


class ArgumentError(TypeError, ValueError):
    """A function or constructor argument has the wrong type or an out-of-range value.

    Both a ``TypeError`` and a ``ValueError`` (as NumPy's ``AxisError`` is both a
    ``ValueError`` and an ``IndexError``), so either ``except`` clause catches it; the
    message names the function and the argument, and shows the value received.
    """


def check_int(where: str, name: str, value: object, minimum: int | None = None) -> int:
    """``value`` as an int (a NumPy integer too; not a bool, float or string), at least
    ``minimum`` when given; otherwise an ``ArgumentError`` naming ``where`` and ``name``."""
    kind = {None: "an int", 0: "a non-negative int", 1: "a positive int"}.get(
        minimum, f"an int >= {minimum}")
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer) or (
            minimum is not None and int(value) < minimum):
        raise ArgumentError(f"{where}: {name} must be {kind}, received {value!r}")
    return int(value)

