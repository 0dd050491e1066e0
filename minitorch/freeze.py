"""Freezing sub-layers by path: their params stay bit-unchanged and cost no weight gradients.

A path names a sub-layer (or one param) the way errors, summaries and telemetry do
(:mod:`minitorch.nn.paths`): ``"0"`` is a net's first layer, ``"2.attn"`` the ``attn`` of
its third, ``"2.blocks.0"`` the first element of its sequence field ``blocks``, ``"0.W"``
one array. Freezing has two halves, both needed:

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
import optax

from minitorch.errors import ArgumentError
from minitorch.nn.paths import leaf_paths, under


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


def mask(params: Any, paths: Paths) -> Any:
    """A pytree of bools shaped like ``params``: True for every leaf under a frozen path
    (with :class:`AllBut`, for every leaf under none of its paths).

    Raises ArgumentError for a path that names no params (listing the top-level ones).
    """
    if isinstance(paths, str):
        raise ArgumentError(f"freeze: paths must be a list of paths, received the string "
                            f"{paths!r} (write [{paths!r}])")
    named = paths.paths if isinstance(paths, AllBut) else paths
    names = leaf_paths(params)
    for path in named:
        if not any(under(name, [path]) for name in names):
            tops = sorted({name.split(".")[0] for name in names}, key=lambda n: (len(n), n))
            raise ArgumentError(f"freeze: no params under path {path!r}; the params' paths "
                                f"start with {tops}")
    inverted = isinstance(paths, AllBut)
    frozen = [under(name, named) != inverted for name in names]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), frozen)


def optimizer(inner: optax.GradientTransformation, paths: Paths
              ) -> optax.GradientTransformation:
    """``inner``, with its updates of frozen params replaced by zeros; same state as
    ``inner`` (``update`` needs ``params``, to find the frozen ones)."""
    if not paths:
        return inner

    def update(grads: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        if params is None:
            raise ArgumentError("freeze.optimizer: update needs params (opt.update(grads, "
                                "state, params)) to know which are frozen")
        updates, state = inner.update(grads, state, params)
        zeroed = jax.tree.map(lambda f, u: jnp.zeros_like(u) if f else u,
                              mask(params, paths), updates)
        return zeroed, state

    return optax.GradientTransformation(inner.init, update)


def stop_gradients(params: Any, paths: Paths) -> Any:
    """``params`` with ``lax.stop_gradient`` on every frozen leaf (values unchanged)."""
    if not paths:
        return params
    return jax.tree.map(lambda f, p: jax.lax.stop_gradient(p) if f else p,
                        mask(params, paths), params)
