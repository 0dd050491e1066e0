"""Errors raised by minitorch layers and nets.

Every error a layer raises is a :class:`LayerError`; it names *where* it happened
(the layer type, and inside a :class:`~minitorch.nn.Net` the layer's index) and
*what* was expected and received. A ``Net`` re-raises an error of its i-th layer
with ``layer i (Type)`` prepended, so a mistake deep inside nested nets reads as a
path: ``layer 3 (Net) > layer 1 (Linear): expected input of shape (..., 64), received (8, 32)``.

The concrete classes also derive from the builtin a user would catch
(``ValueError`` for shapes and values, ``TypeError`` for dtypes and key types).
"""

from __future__ import annotations


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

    def at(self, index: int, layer: object) -> LayerError:
        """The same error seen from a Net, where ``layer`` is its ``index``-th layer."""
        name = type(layer).__name__
        inner = self.where[1:] if self.where and self.where[0] == name else self.where
        # A leaf layer's own "Linear" becomes "layer 2 (Linear)"; the path a nested
        # Net reported stays below the nested Net's own index.
        where = (f"layer {index} ({name})", *inner)
        return type(self)(where, self.detail)


class ShapeError(LayerError, ValueError):
    """An input (or parameter) has the wrong shape or rank."""


class ParamsError(LayerError, ValueError):
    """The params pytree does not have the structure or shapes the layer creates."""


class DTypeError(LayerError, TypeError):
    """An input has a dtype the layer cannot use (e.g. integers into ``Linear``)."""


class KeyArgError(LayerError, TypeError):
    """A PRNG key is missing where one is required, or is not a key."""


class StateError(LayerError, ValueError):
    """A stateful layer (``BatchNorm``) got no state, or a state of the wrong structure."""
