"""Paths: the one way every part of minitorch names a sub-layer or a param.

A path is the dotted chain of the names containers give their sub-layers
(:meth:`~minitorch.nn.Layer.children`): a ``Net``'s layer 3 is ``"3"``, a composite's field
``attn`` is ``"attn"``, the second element of a composite's sequence field ``blocks`` is
``"blocks.1"``, and a wrapper (``Residual``, ``MixedPrecision``) adds nothing. Nested, they
join with dots: ``"2.blocks.1.attn"``.

Containers lay out their params (and state, and caches) to mirror their children, so the
dotted path of a leaf in a params tree is the path of the layer that owns it followed by the
param's own name (``"2.blocks.1.attn.q.W"``). Errors, ``summary``, ``nn.intermediates``,
telemetry keys, ``frozen=``, ``param_shardings`` and checkpoints all use these paths; this
module is where they are made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

import jax

if TYPE_CHECKING:
    from minitorch.nn.core import Layer

Tap = Callable[[str, Any], None]  # receives (sub-layer path, its output) at trace time


def join(prefix: str, name: str | None) -> str:
    """``prefix`` and a child's ``name`` as one path; a None name (a wrapper's single
    child) or an empty one (the path of a tree that is one array) adds nothing:
    ``join("2", "attn") == "2.attn"``, ``join("", "0") == "0"``."""
    if not name:
        return prefix
    return f"{prefix}.{name}" if prefix else name


@overload
def label_of(name: str) -> int | str: ...
@overload
def label_of(name: None) -> None: ...


def label_of(name: str | None) -> int | str | None:
    """How errors name a sub-layer from its path element: ``"2"`` -> 2 (shown ``layer 2``),
    ``"attn"`` -> ``"attn"``; None (a wrapper's unnamed sub-layer) stays None."""
    return None if name is None else int(name) if name.isdigit() else name


def named_layers(layer: Layer, prefix: str = "") -> dict[str, Layer]:
    """Every sub-layer below ``layer`` by path (``{"0": Linear, "2": Block, "2.attn": ...,
    "2.blocks.0": ...}``), a container before what is inside it; a wrapper's wrapped layer
    shares the wrapper's path (the wrapper is listed)."""
    found: dict[str, Layer] = {}
    for name, child in layer.children():
        path = join(prefix, name)
        if name is not None:
            found[path] = child
        found.update(named_layers(child, path))
    return found


def below(tap: Tap | None, name: str) -> Tap | None:
    """The tap a sub-layer named ``name`` reports to: its paths are prefixed by ``name``."""
    if tap is None:
        return tap
    return lambda path, y: tap(join(name, path), y)


def dotted(key_path: tuple[Any, ...]) -> str:
    """A JAX tree key path as a dotted path: ``[2]['attn']['q']['W']`` -> ``"2.attn.q.W"``."""
    parts = []
    for key in key_path:
        for attr in ("idx", "key", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return ".".join(parts)


def leaf_paths(tree: Any) -> list[str]:
    """The dotted path of every leaf of a params-like tree, in the tree's leaf order."""
    return [dotted(key_path) for key_path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def param_groups(tree: Any, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every dict of arrays in a params-like tree (a layer's params, its grads, its updates)
    with its path: ``[("0", {"W": .., "b": ..}), ("2.attn.q", {...}), ...]``.

    A group is the arrays one layer owns: a leaf's params, or a composite's own
    ``nn.Param`` arrays (grouped at the composite's path). A parameterless layer's ``{}`` is
    a group with no arrays. A bare layer's params (no container) have path ``"0"``.
    """
    if isinstance(tree, (list, tuple)):
        return [g for i, sub in enumerate(tree) for g in param_groups(sub, join(prefix, str(i)))]
    if not isinstance(tree, dict):
        return []
    arrays = {k: v for k, v in tree.items() if not isinstance(v, (dict, list, tuple))}
    here = [(prefix or "0", arrays)] if arrays or not tree else []
    return here + [g for k, sub in tree.items() if isinstance(sub, (dict, list, tuple))
                   for g in param_groups(sub, join(prefix, k))]


def under(path: str, prefixes: Any) -> bool:
    """Whether ``path`` is one of ``prefixes`` or lies below one (``"2.attn.q.W"`` is under
    ``"2.attn"``, not under ``"2.at"``)."""
    return any(path == p or path.startswith(f"{p}.") for p in prefixes)
