"""``Repeat``: n copies of one layer with stacked params, run by one ``lax.scan``.

A deep stack of identical blocks traced and compiled once, not once per block::

    blocks = nn.Repeat(block(), 24)      # params: block's, each with a leading axis of 24
    y = blocks.apply(params, x)          # equal to 24 chained copies with those params

The copies are the repeat's children ``"0"`` ... ``"n-1"``, so paths address one as
anywhere else (``"blocks.3"`` in a composite, ``"2.3"`` in a net): in errors, ``summary``,
``nn.intermediates`` and telemetry (a tap runs the copies one after another so each
reports at its path). Their params, state (BatchNorm) and decoding caches are the single
layer's trees with every leaf stacked on a leading axis of ``n``; ``parallel.param_shardings``
splits the stack's arrays as the single layer declares, the stacking axis kept whole.

For the backward pass the scan keeps each copy's matrix-product outputs (JAX's
``dots_saveable`` policy) and recomputes the elementwise rest, as XLA does in an unrolled
program; a plain scan would keep every activation, stacked n deep, and take 1.12-1.23x
the unrolled stack's step time on the gpt benchmark. A repeated :class:`nn.Remat` layer
brings its own policy instead (``"everything"``: a plain scan's residuals).

Two copies (or one) are the scan unrolled (``lax.scan(..., unroll=True)``: still traced
once, compiled as straight-line code): a loop of two compiles no faster than the copies
and costs the step what every loop does, filling stacks of n for its outputs and
residuals (the gpt step: 1.14x the unrolled stack's, against 1.00x unrolled). A repeated
``Remat`` always loops, since its policy takes effect only there.

What names a param by path beyond the params tree (``interop``'s PyTorch names,
``frozen=``, checkpoints saved with the net) sees each copy's rows at the copy's path
through :func:`split_copies`:
``"blocks.attn.q.W"`` of shape (n, ...) is ``"blocks.3.attn.q.W"``, its row 3.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from minitorch.errors import ShapeError
from minitorch.nn.checks import check_key, name_of
from minitorch.nn.containers import TREE_ERRORS, TREE_MAKERS, Container
from minitorch.nn.core import Cache, Layer, Params, PRNGKey, State, run_child, set_fields
from minitorch.nn.paths import Tap, join, under
from minitorch.nn.remat import Remat
from minitorch.validate import layer_argument, positive_int

# Up to this many copies the scan is unrolled: measured on the gpt step, a loop of two
# compiles no faster and runs slower than its copies (benchmarks/compile_time.py).
UNROLLED_UP_TO = 2


class Repeat(Container):
    """``layer`` applied ``n`` times in a chain, each copy with its own params.

    Args:
      layer: the layer to repeat; it must keep its input's shape and dtype (a block of a
        transformer, a residual MLP), since each copy's output is the next one's input.
      n: how many copies.

    Params: ``layer``'s params with a leading axis of ``n`` on every array (copy ``i`` is
    ``jax.tree.map(lambda a: a[i], params)``); ``init`` gives copy ``i`` the ``i``-th of
    ``n`` subkeys, as a ``Net`` of ``n`` copies does, so values (dropout keys included)
    equal that net's with the same params. State and decoding caches stack the same way.
    Shapes: those of ``layer``.
    """

    layer: Layer
    n: int

    def __init__(self, layer: Layer, n: int):
        owner = name_of(self)
        set_fields(self, layer=layer_argument(layer, "layer", owner),
                   n=positive_int(n, "n", owner))

    def children(self) -> tuple[tuple[str | None, Layer], ...]:
        return tuple((str(i), self.layer) for i in range(self.n))

    def pack(self, values: list[Any]) -> Any:
        """The copies' trees stacked leaf by leaf on a leading axis of ``n``."""
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *values)

    def unpack(self, tree: Any, what: str) -> list[Any]:
        """Copy ``i``'s tree: every leaf's ``i``-th row (a leading axis of ``n`` checked)."""
        for leaf in jax.tree.leaves(tree):
            if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != self.n:
                raise TREE_ERRORS[what](name_of(self), f"expected {what} stacked on a leading "
                                        f"axis of {self.n} (one entry per copy), received a "
                                        f"leaf of shape {jnp.shape(leaf)}; were these {what} "
                                        f"made by this {name_of(self)}'s "
                                        f"{TREE_MAKERS[what]}?")
        return [jax.tree.map(lambda a, i=i: a[i], tree) for i in range(self.n)]

    def run(self, params: Params, state: State, x: Any, *, key: PRNGKey | None = None,
            train: bool = False, tap: Tap | None = None, cache: Cache = None,
            offset: Any = 0, **kwargs: Any) -> tuple[Any, State, Cache]:
        if tap is not None:  # every copy reports its output at its own path
            return self._unrolled(params, state, x, key=key, train=train, tap=tap,
                                  cache=cache, offset=offset, **kwargs)
        self.unpack(params, "params")  # the stacking checked, as an unrolled run checks it
        if key is not None:
            check_key(self, key)
        keys = None if key is None else jax.random.split(key, self.n)  # as a Net's split
        stacked = (params, state, keys, cache)
        if not _promotes(x, params) or self.n == 1:
            return self._scanned(x, stacked, 0, train=train, offset=offset, **kwargs)
        # A narrower input than the params (bfloat16 into float32 weights): the first copy
        # promotes it, so it runs alone and the scan carries the promoted dtype, as a chain.
        first = jax.tree.map(lambda a: a[0], stacked)
        rest = jax.tree.map(lambda a: a[1:], stacked)
        x, s, c = run_child("0", self.layer, first[0], first[1], x, key=first[2], train=train,
                            tap=None, cache=first[3], offset=offset, **kwargs)
        y, states, caches = self._scanned(x, rest, 1, train=train, offset=offset, **kwargs)
        join = lambda a, b: jnp.concatenate([a[None], b])  # noqa: E731
        return (y, jax.tree.map(join, s, states),
                None if cache is None else jax.tree.map(join, c, caches))

    def _scanned(self, x: Any, stacked: tuple[Params, State, Any, Cache], start: int, *,
                 train: bool, offset: Any, **kwargs: Any) -> tuple[Any, State, Cache]:
        """The copies from ``start`` on, as one ``lax.scan`` over their stacked trees."""

        def copy(h: Any, xs: tuple[Params, State, Any, Cache]) -> tuple[Any, tuple]:
            p, s, k, c = xs
            y, s, c = run_child(str(start), self.layer, p, s, h, key=k, train=train, tap=None,
                                cache=c, offset=offset, **kwargs)
            if jnp.shape(y) != jnp.shape(h) or jnp.result_type(y) != jnp.result_type(h):
                raise ShapeError(name_of(self), f"expected the repeated {name_of(self.layer)} "
                                 f"to keep its input's shape and dtype {jnp.shape(h)} "
                                 f"{jnp.result_type(h)}, received {jnp.shape(y)} "
                                 f"{jnp.result_type(y)}")
            return y, (s, c)

        remat = isinstance(self.layer, Remat)
        if not remat:
            # Under a scan JAX, not XLA, picks what the backward pass reads back: every
            # intermediate, each written to a stack of n. Keeping the matrix products'
            # outputs only leaves the elementwise rest to be recomputed, as XLA does in an
            # unrolled program (the gpt step: benchmarks/compile_time.py --part depth). A
            # Remat layer's policy is the user's choice and replaces this one.
            copy = jax.checkpoint(copy, policy=jax.checkpoint_policies.dots_saveable,
                                  prevent_cse=False)  # a scan body: nothing to merge
        # A few copies run unrolled; a Remat loops at any n, its policy only taking effect there.
        y, (state, cache) = jax.lax.scan(copy, x, stacked, length=self.n - start,
                                         unroll=self.n <= UNROLLED_UP_TO and not remat)
        return y, state, cache

    def _unrolled(self, params: Params, state: State, x: Any, *, key: PRNGKey | None,
                  train: bool, tap: Tap | None, cache: Cache, offset: Any,
                  **kwargs: Any) -> tuple[Any, State, Cache]:
        states, caches = [], []
        for (name, layer), p, s, k, c in zip(self.children(),
                                             *self.unpack_all(params, state, key, cache)):
            x, s, c = run_child(str(name), layer, p, s, x, key=k, train=train, tap=tap,
                                cache=c, offset=offset, **kwargs)
            states.append(s)
            caches.append(c)
        return x, self.pack(states), self.repack(cache, caches)


def _promotes(x: Any, params: Params) -> bool:
    """Whether floating ``x`` is narrower than the floating params it meets (so a copy's
    output has another dtype than its input)."""
    floats = [a for a in jax.tree.leaves(params) if jnp.issubdtype(a.dtype, jnp.floating)]
    leaves = [a for a in jax.tree.leaves(x) if jnp.issubdtype(jnp.result_type(a), jnp.floating)]
    return any(jnp.result_type(a, *floats) != jnp.result_type(a) for a in leaves)


def repeats_below(layer: Layer, prefix: str = "") -> list[tuple[str, int]]:
    """Every :class:`Repeat` in ``layer`` (itself included): its path and its ``n``, an
    outer one before those inside its copies (listed once per copy: ``"blocks.0.inner"``,
    ``"blocks.1.inner"``, ...)."""
    found = [(prefix, layer.n)] if isinstance(layer, Repeat) else []
    for name, child in layer.children():
        found += repeats_below(child, join(prefix, name))
    return found


def split_copies(flat: dict[str, Any], repeats: list[tuple[str, int]]) -> dict[str, Any]:
    """``flat`` (leaves by dotted path) with each repeat's stacked leaves split into its
    copies' rows at the copies' paths: ``"blocks.W"`` (n, ...) -> ``"blocks.0.W"`` ...
    ``"blocks.{n-1}.W"``. ``repeats``: :func:`repeats_below` of the layer."""
    flat = dict(flat)
    for path, n in repeats:
        for key in [k for k in flat if not path or under(k, [path])]:
            stacked, rest = flat.pop(key), key[len(path):].lstrip(".")
            flat.update({join(join(path, str(i)), rest): stacked[i] for i in range(n)})
    return flat


def stack_copies(flat: dict[str, Any], repeats: list[tuple[str, int]],
                 stack: Any = jnp.stack) -> dict[str, Any]:
    """:func:`split_copies` undone: each repeat's copies' rows stacked back with ``stack``
    at the repeat's path, the innermost repeats first."""
    flat = dict(flat)
    for path, n in reversed(repeats):
        first = join(path, "0")
        for key in [k for k in flat if under(k, [first])]:
            rest = key[len(first):].lstrip(".")
            flat[join(path, rest)] = stack([flat.pop(join(join(path, str(i)), rest))
                                            for i in range(n)])
    return flat
