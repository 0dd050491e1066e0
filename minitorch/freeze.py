"""Freezing sub-layers by path: their params stay bit-unchanged and cost no weight gradients.

A path names a sub-layer (or one param) the way errors, summaries and telemetry do
(:mod:`minitorch.nn.paths`): ``"0"`` is a net's first layer, ``"2.attn"`` the ``attn`` of
its third, ``"2.blocks.0"`` the first element of its sequence field ``blocks``, ``"0.W"``
one array, ``"blocks.3"`` the fourth copy of an ``nn.Repeat`` (its rows of the stacked
arrays; :func:`mask`). Freezing has two halves, both needed:

- :func:`optimizer` wraps an optax optimiser so that frozen params get exactly zero updates
  (after weight decay, momentum, anything the optimiser adds). Its state is the inner
  optimiser's, so ``opt.init(params)`` of either fits. ``optax.masked`` is not this: it
  passes the masked gradients through *unchanged*, so "frozen" params move.
- :func:`stop_gradients` marks frozen params with ``lax.stop_gradient`` before the forward
  pass, so XLA drops their weight-gradient products (the backward through a frozen layer
  still runs where a trainable layer sits before it: its input gradient is needed).

``train.make_step(..., frozen=paths)`` and ``fit(..., frozen=paths)`` apply both;
``trainable=paths`` is the inverse (every param not under those paths is frozen: fine-tune
a head with ``trainable=["head"]``). In a step of your own::

    frozen = ["0", "1"]
    opt = freeze.optimizer(optim.sgd(0.1, momentum=0.9), frozen)

    def loss_fn(params, x, y):
        logits = net.apply(freeze.stop_gradients(params, frozen), x)
        return losses.softmax_cross_entropy(logits, y)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from minitorch.errors import ArgumentError
from minitorch.nn.core import Layer
from minitorch.nn.paths import leaf_paths, under
from minitorch.nn.repeat import repeats_below, split_copies, stack_copies


@dataclasses.dataclass(frozen=True)
class AllBut:
    """Every param except those under ``paths`` (what ``trainable=paths`` freezes)."""

    paths: tuple[str, ...]


Paths = Sequence[str] | AllBut


def selection(frozen: Sequence[str], trainable: Sequence[str] | None, owner: str) -> Paths:
    """What ``frozen=`` and ``trainable=`` (its inverse) freeze: ``frozen`` as a tuple, or
    :class:`AllBut` ``trainable``; an ArgumentError when both are given."""
    for name, value in (("frozen", frozen), ("trainable", trainable)):
        if isinstance(value, str):
            raise ArgumentError(f"{owner}: {name} must be a list of paths, received the "
                                f"string {value!r} (write [{value!r}])")
    if trainable is None:
        return tuple(frozen)
    if frozen:
        raise ArgumentError(f"{owner}: give frozen= or trainable= (its inverse), not both")
    return AllBut(tuple(trainable))


def describe(paths: Paths) -> Any:
    """``paths`` as JSON (a run's description in its checkpoints)."""
    return {"trainable": list(paths.paths)} if isinstance(paths, AllBut) else list(paths)


def mask(params: Any, paths: Paths, model: Layer | None = None) -> Any:
    """A pytree shaped like ``params``: True for every leaf under a frozen path (with
    :class:`AllBut`, for every leaf under none of its paths), else False.

    With ``model`` (the layer ``params`` belong to), paths are layer paths, where an
    ``nn.Repeat``'s copies are its children: ``"blocks.3"`` (or a part of it,
    ``"blocks.3.attn"``) freezes that copy's rows of the stacked arrays, and such a leaf's
    entry is a NumPy bool array over the stacking axes (``(n,)``; ``(n, m)`` for a repeat
    inside a repeat) instead of one bool. Without it, paths are the params tree's own,
    where a repeat's stacked arrays sit at the repeat's path (``"blocks.attn.q.W"``, every
    copy at once); ``make_step`` and ``fit`` pass their net.

    Raises ArgumentError for a path that names no params (listing the top-level ones).
    """
    if isinstance(paths, str):
        raise ArgumentError(f"freeze: paths must be a list of paths, received the string "
                            f"{paths!r} (write [{paths!r}])")
    named = paths.paths if isinstance(paths, AllBut) else paths
    leaves, treedef = jax.tree_util.tree_flatten(params)
    names = leaf_paths(params)
    repeats = [] if model is None else repeats_below(model)
    # Each leaf's copies at their own paths (zero-size views: only the indexing is used).
    copies = split_copies({n: np.broadcast_to(np.False_, np.shape(a))
                           for n, a in zip(names, leaves)}, repeats)
    for path in named:
        if not any(under(name, [path]) for name in copies):
            tops = sorted({name.split(".")[0] for name in names}, key=lambda n: (len(n), n))
            hint = ("" if model is not None else " (a copy of an nn.Repeat is found only "
                    "with the model: make_step(net, ...), fit, or the model argument here)")
            raise ArgumentError(f"freeze: no params under path {path!r}; the params' paths "
                                f"start with {tops}{hint}")
    inverted = isinstance(paths, AllBut)
    by_copy = stack_copies({c: under(c, named) != inverted for c in copies}, repeats,
                           stack=np.stack)
    return jax.tree_util.tree_unflatten(treedef, [_collapsed(np.asarray(by_copy[name]))
                                                  for name in names])


def _collapsed(frozen: np.ndarray) -> bool | np.ndarray:
    """One bool where every copy agrees (the whole array frozen or not), else the array."""
    return bool(frozen.all()) if frozen.all() or not frozen.any() else frozen


def _over(frozen: np.ndarray, leaf: Any) -> np.ndarray:
    """A mask over the stacking axes, broadcastable against the leaf."""
    return frozen.reshape(frozen.shape + (1,) * (jnp.ndim(leaf) - frozen.ndim))


def optimizer(inner: optax.GradientTransformation, paths: Paths,
              model: Layer | None = None) -> optax.GradientTransformation:
    """``inner``, with its updates of frozen params replaced by zeros; same state as
    ``inner`` (``update`` needs ``params``, to find the frozen ones). ``model``: see
    :func:`mask` (needed for paths that name copies of an ``nn.Repeat``)."""
    if not paths:
        return inner

    def update(grads: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        if params is None:
            raise ArgumentError("freeze.optimizer: update needs params (opt.update(grads, "
                                "state, params)) to know which are frozen")
        updates, state = inner.update(grads, state, params)
        return jax.tree.map(lambda f, u: _where_frozen(f, u, jnp.zeros_like),
                            mask(params, paths, model), updates), state

    return optax.GradientTransformation(inner.init, update)


def _where_frozen(frozen: bool | np.ndarray, leaf: Any, replace: Any) -> Any:
    """``replace(leaf)`` where ``frozen``, ``leaf`` elsewhere: the whole leaf for a bool,
    the frozen copies' rows for a mask over a repeat's stacking axes."""
    if isinstance(frozen, np.ndarray):
        return jnp.where(_over(frozen, leaf), replace(leaf), leaf)
    return replace(leaf) if frozen else leaf


def stop_gradients(params: Any, paths: Paths, model: Layer | None = None) -> Any:
    """``params`` with ``lax.stop_gradient`` on every frozen leaf (values unchanged); on a
    repeat's stacked leaf of which some copies are frozen, on those copies' rows (their
    gradients are zero, but XLA still computes the products of the whole stack)."""
    if not paths:
        return params
    return jax.tree.map(lambda f, p: _where_frozen(f, p, jax.lax.stop_gradient),
                        mask(params, paths, model), params)
