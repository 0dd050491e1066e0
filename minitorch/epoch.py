"""One epoch of training over in-memory data: its plan, and two ways to run it.

An :class:`EpochPlan` fixes everything an epoch is: the example order and step keys drawn
from ``fold_in(key, epoch)``, the batches (full ones, then the partial last one unless
dropped), which steps probe (run the telemetry step instead of the plain one), and how the
steps' metrics become the epoch's: means weighted by each batch's examples, and telemetry
averaged over the probing steps. Both runners follow the plan, so they give the same
order, keys and metrics:

- :func:`make_epoch`: the whole epoch as one compiled ``lax.scan`` (one dispatch);
- :func:`make_epoch_steps`: one dispatch that shuffles and slices every batch on the
  device, then one dispatch per step (``fit(loop="steps")``), for a step that runs slower
  inside a compiled loop than alone.

Metrics are structured, not named: a step reports a
:class:`~minitorch.metrics.StepMetrics` (loss, means, counts, and the telemetry a probing
step records), see :func:`minitorch.train.make_update`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from minitorch.data import num_examples, prefetched
from minitorch.errors import ArgumentError
from minitorch.metrics import StepMetrics
from minitorch.nn.core import Array
from minitorch.train import Update


class Epoch(Protocol):
    """One epoch (:func:`make_epoch`, :func:`make_epoch_steps`): ``epoch(params, state,
    opt_state, data, key, index) -> (params, state, opt_state, metrics)``; a scanned epoch
    also takes ``report=``."""

    def __call__(self, params: Any, state: Any, opt_state: Any, data: Any, key: Any,
                 index: Any, /) -> tuple[Any, Any, Any, dict[str, Any]]: ...


class ScannedEpoch(Protocol):
    """:func:`make_epoch`'s epoch: an :class:`Epoch` that also takes ``report`` (whether
    ``on_step`` is called this time; a runtime switch, no recompile)."""

    def __call__(self, params: Any, state: Any, opt_state: Any, data: Any, key: Any,
                 index: Any, /, report: bool = True) -> tuple[Any, Any, Any, dict[str, Any]]:
        ...


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """What an epoch over ``num_examples`` rows in batches of ``batch_size`` is.

    Args:
      num_examples, batch_size: the data's size and the batch size (1 <= batch_size <=
        num_examples).
      shuffle: draw a new order from the epoch's key (otherwise rows in order).
      drop_last: skip the last, smaller batch (otherwise it is one more step).
      probe_every: probe every this many steps (default: once, at the last full batch);
        only full batches inside whole intervals probe.
    """

    num_examples: int
    batch_size: int
    shuffle: bool = True
    drop_last: bool = False
    probe_every: int | None = None

    def __post_init__(self):
        if not 1 <= self.batch_size <= self.num_examples:
            raise ArgumentError(f"make_epoch: batch_size must be in [1, {self.num_examples}] "
                                f"(the number of examples), received {self.batch_size}")

    @property
    def full(self) -> int:
        """The number of full batches."""
        return self.num_examples // self.batch_size

    @property
    def rest(self) -> int:
        """The size of the last, partial batch: 0 if there is none or it is dropped."""
        return 0 if self.drop_last else self.num_examples % self.batch_size

    @property
    def steps(self) -> int:
        return self.full + (1 if self.rest else 0)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Examples per step, in step order."""
        return (self.batch_size,) * self.full + ((self.rest,) if self.rest else ())

    @property
    def interval(self) -> int:
        """Steps per probe interval (the last step of each interval probes)."""
        every = self.full if self.probe_every is None else self.probe_every
        return max(1, min(every, self.full))

    def probes(self, step: int) -> bool:
        """Whether step ``step`` (0-based) probes."""
        return step < self.full // self.interval * self.interval and \
            (step + 1) % self.interval == 0

    def draw(self, key: Any, index: Any) -> tuple[Array, Array]:
        """Epoch ``index``'s example order and step keys (``full + 1`` of them; the last is
        the partial batch's), from the run's ``key``."""
        order_key, step_key = jax.random.split(jax.random.fold_in(key, index))
        order = (jax.random.permutation(order_key, self.num_examples) if self.shuffle
                 else jnp.arange(self.num_examples))
        return order, jax.random.split(step_key, self.full + 1)

    def means(self, metrics: StepMetrics, telemetry: dict[str, Array]) -> StepMetrics:
        """The epoch's metrics from every step's (:func:`weighted_means` with this plan's
        batch sizes)."""
        return weighted_means(jnp.asarray(self.sizes, jnp.float32), metrics, telemetry)


def weighted_means(sizes: Array, metrics: StepMetrics, telemetry: dict[str, Array]
                   ) -> StepMetrics:
    """An epoch's metrics from every step's: ``metrics`` holds ``(steps,)`` arrays in step
    order, whose loss and means are averaged weighted by each step's examples
    ``sizes (steps,)`` and whose counts (``(steps, ...)``) are summed; ``telemetry`` maps
    names to ``(probes,)`` arrays, averaged over the probing steps."""
    sizes = sizes.astype(jnp.float32)

    def weighted(v: Array) -> Array:  # along the steps axis; a metric may be an array
        return jnp.tensordot(sizes, v, axes=1) / sizes.sum()

    return StepMetrics(weighted(metrics.loss), jax.tree.map(weighted, metrics.means),
                       jax.tree.map(lambda c: jnp.sum(c, axis=0), metrics.counts),
                       {k: jnp.mean(v) for k, v in telemetry.items()})


def _split_telemetry(metrics: StepMetrics) -> tuple[StepMetrics, dict[str, Any]]:
    return metrics.replace(telemetry={}), metrics.telemetry


def make_epoch(update: Update, num_examples: int, batch_size: int, *, shuffle: bool = True,
               drop_last: bool = False, on_step: Callable[[Any], None] | None = None,
               step_every: int = 1, probe: Update | None = None,
               probe_every: int | None = None, jit: bool = True) -> ScannedEpoch:
    """Compile one epoch of ``update`` over in-memory data as one ``lax.scan``.

    Args:
      update: ``update(params, state, opt_state, batch, key) -> (params, state, opt_state,
        metrics)``, as :func:`minitorch.train.make_update` builds.
      num_examples, batch_size, shuffle, drop_last, probe_every: the :class:`EpochPlan`.
      on_step: a host function called with the number of steps done, every ``step_every``
        steps, from inside the compiled loop (through ``jax.debug.callback``). Each call
        costs about a millisecond of a CNN's epoch (the loop waits for the host), so the
        epoch takes ``report=False`` to skip them, without a recompile.
      probe: an update like ``update`` whose metrics also hold telemetry, run instead
        of ``update`` on the plan's probing steps.
      jit: compile the epoch (params, state and optimiser state donated).

    Returns:
      ``epoch(params, state, opt_state, data, key, index, report=True) ->
      (params, state, opt_state, metrics)``: ``data`` a pytree of arrays with
      ``num_examples`` rows, ``key`` the run's key, ``index`` the epoch number, and
      ``metrics`` the plan's means (telemetry averaged over the probes).
    """
    plan = EpochPlan(num_examples, batch_size, shuffle, drop_last, probe_every)
    if step_every < 1:
        raise ArgumentError(f"make_epoch: step_every must be >= 1, received {step_every}")

    def steps(fn, carry, xs, data, report=None):
        """Scan ``fn`` over the steps ``xs`` = (steps done before each, its rows of
        ``data``, its key); with ``report`` (a traced bool), ``on_step`` every
        ``step_every`` steps, checked at each step."""
        def body(carry, xs):
            done, rows, step_key = xs
            *carry, metrics = fn(*carry, jax.tree.map(lambda a: a[rows], data), step_key)
            if report is not None:
                jax.lax.cond(report & ((done + 1) % step_every == 0),
                             lambda: jax.debug.callback(on_step, done + 1), lambda: None)
            return tuple(carry), metrics

        return jax.lax.scan(body, carry, xs)

    def plain(carry, xs, data, report):
        """``update`` over ``xs``; with ``on_step``, in chunks of ``step_every`` steps and
        ``on_step`` after each chunk when ``report``: no condition inside the steps' loop
        (one cost 3-5% of the digits CNN's epoch even when it never fired; this ~2%)."""
        if on_step is None:
            return steps(update, carry, xs, data)

        def chunk(carry, xs):
            carry, metrics = steps(update, carry, xs, data)
            jax.lax.cond(report, lambda: jax.debug.callback(on_step, xs[0][-1] + 1),
                         lambda: None)
            return carry, metrics

        intervals, rest_xs = _in_intervals(xs, step_every)
        carry, head = jax.lax.scan(chunk, carry, intervals)
        carry, tail = steps(update, carry, rest_xs, data)
        return carry, jax.tree.map(lambda h, t: jnp.concatenate([_steps_first(h), t]),
                                   head, tail)

    def probed(carry, xs, data, report):
        """Intervals of ``interval - 1`` plain steps and one probe step, then the steps
        after the last interval: the probe's cost is paid only where it runs (a lax.cond
        choosing between the two at every step cost 12% of a CNN's epoch)."""
        report = None if on_step is None else report
        intervals, rest_xs = _in_intervals(xs, plan.interval)

        def interval(carry, xs):
            carry, before = steps(update, carry, [a[:-1] for a in xs], data, report)
            carry, last = steps(probe, carry, [a[-1:] for a in xs], data, report)
            return carry, (before, last)

        carry, (before, last) = jax.lax.scan(interval, carry, intervals)
        last, telemetry = _split_telemetry(last)
        carry, tail = steps(update, carry, rest_xs, data, report)
        in_order = jax.tree.map(
            lambda b, p, t: jnp.concatenate([_steps_first(jnp.concatenate([b, p], axis=1)), t]),
            before, last, tail)
        return carry, in_order, jax.tree.map(_steps_first, telemetry)

    def epoch(params, state, opt_state, data, key, index, report=True):
        order, keys = plan.draw(key, index)
        rows = order[:plan.full * batch_size].reshape(plan.full, batch_size)
        xs = (jnp.arange(plan.full), rows, keys[:-1])
        carry = (params, state, opt_state)
        if probe is None:
            carry, metrics = plain(carry, xs, data, jnp.asarray(report))
            telemetry = {}
        else:
            carry, metrics, telemetry = probed(carry, xs, data, jnp.asarray(report))
        if plan.rest:
            batch = jax.tree.map(lambda a: a[order[plan.full * batch_size:]], data)
            *carry, last = update(*carry, batch, keys[-1])
            metrics = jax.tree.map(lambda v, m: jnp.concatenate([v, m[None]]), metrics, last)
        return (*carry, plan.means(metrics, telemetry))

    return jax.jit(epoch, donate_argnums=(0, 1, 2)) if jit else epoch


def _steps_first(a: Array) -> Array:
    """``(intervals, per_interval, ...)`` per-step values as ``(steps, ...)``."""
    return a.reshape(-1, *a.shape[2:])


def _in_intervals(xs: list[Array] | tuple[Array, ...], size: int
                  ) -> tuple[list[Array], list[Array]]:
    """Split per-step arrays ``(steps, ...)`` into whole intervals ``(steps // size, size,
    ...)`` and the steps after the last interval."""
    head = len(xs[0]) // size * size
    return ([a[:head].reshape(head // size, size, *a.shape[1:]) for a in xs],
            [a[head:] for a in xs])


def _stacked(rows: list[Any]) -> Any:
    """Per-step metrics (pytrees alike) as one pytree of ``(steps, ...)`` arrays."""
    return jax.tree.map(lambda *values: jnp.stack(values), *rows) if rows else {}


def make_epoch_steps(update: Update, num_examples: int, batch_size: int, *,
                     shuffle: bool = True, drop_last: bool = False,
                     on_step: Callable[[Any], None] | None = None, probe: Update | None = None,
                     probe_every: int | None = None) -> Epoch:
    """The same epoch as :func:`make_epoch` (same plan: order, keys, probes and metrics),
    run as one dispatch that shuffles and slices every batch on the device, then one
    dispatch of the jit'd ``update`` per batch; ``on_step`` is called after every step.
    """
    plan = EpochPlan(num_examples, batch_size, shuffle, drop_last, probe_every)
    step = jax.jit(update, donate_argnums=(0, 1, 2))
    probe_step = None if probe is None else jax.jit(probe, donate_argnums=(0, 1, 2))

    @jax.jit
    def batches(data, key, index):
        order, keys = plan.draw(key, index)
        starts = [i * batch_size for i in range(plan.steps)]
        cut = [jax.tree.map(lambda a, s=s, n=n: a[order[s:s + n]], data)
               for s, n in zip(starts, plan.sizes)]
        return cut, [keys[i] for i in range(plan.full)] + ([keys[-1]] if plan.rest else [])

    @jax.jit
    def means(metrics, telemetry):
        return plan.means(_stacked(metrics), _stacked(telemetry))

    def epoch(params, state, opt_state, data, key, index):
        metrics, telemetry = [], []
        for i, (batch, step_key) in enumerate(zip(*batches(data, key, index))):
            fn = probe_step if probe_step is not None and plan.probes(i) else step
            params, state, opt_state, m = fn(params, state, opt_state, batch, step_key)
            m, t = _split_telemetry(m)
            metrics.append(m)
            if t:
                telemetry.append(t)
            if on_step is not None:
                on_step(i + 1)
        return params, state, opt_state, means(metrics, telemetry)

    return epoch


def make_streamed_epoch(update: Update, *, probe: Update | None = None,
                        probe_every: int | None = None,
                        on_step: Callable[[Any], None] | None = None,
                        prefetch: int = 2, chunk: int = 8,
                        place: Placement | None = None) -> Epoch:
    """An epoch over batches streamed from the host (a ``DataLoader``, a Grain loader, any
    iterable of ``(inputs, targets)`` pytrees). Consecutive batches of one shape are stacked
    ``chunk`` at a time and run as one compiled ``lax.scan`` (one dispatch per chunk, as an
    in-memory epoch is one dispatch per epoch); a batch of another shape (the last, smaller
    one) runs alone. Chunks are stacked and moved to the device ``prefetch`` ahead in a
    background thread, so loading and transfer overlap the compute. ``place(tree,
    batch_axis)`` puts them on the device (default: ``jax.device_put``; data parallel:
    split over a mesh, :func:`minitorch.parallel.shard_batch`).

    Step ``i`` of epoch ``index`` draws its key as ``fold_in(fold_in(key, index), i)``
    inside the compiled program (the loader fixes the order, from its seed and epoch), so a
    resumed run equals an uninterrupted one. With ``probe``, every step runs alone, the
    probe every ``probe_every`` steps (default: the epoch's first step). The metrics are the
    steps' means weighted by each batch's examples (:func:`weighted_means`).

    Returns:
      ``epoch(params, state, opt_state, batches, key, index) -> (params, state, opt_state,
      metrics)``, ``batches`` an iterable of the epoch's batches.
    """
    def step_key(key, index, i):
        return jax.random.fold_in(jax.random.fold_in(key, index), i)

    def keyed(fn: Update) -> Callable:
        def step(params, state, opt_state, batch, key, index, i):
            return fn(params, state, opt_state, batch, step_key(key, index, i))

        return jax.jit(step, donate_argnums=(0, 1, 2))

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def scanned(params, state, opt_state, stacked, key, index, first):
        def body(carry, xs):
            batch, i = xs
            *carry, metrics = update(*carry, batch, step_key(key, index, i))
            return tuple(carry), metrics

        count = jax.tree.leaves(stacked)[0].shape[0]
        carry, metrics = jax.lax.scan(body, (params, state, opt_state),
                                      (stacked, first + jnp.arange(count)))
        return (*carry, metrics)

    step = keyed(update)
    probe_step = None if probe is None else keyed(probe)
    every = probe_every or 0

    @jax.jit
    def means(sizes, blocks, telemetry):
        metrics = jax.tree.map(lambda *b: jnp.concatenate(b), *blocks)
        return weighted_means(sizes, metrics, _stacked(telemetry))

    def epoch(params, state, opt_state, batches, key, index):
        blocks, telemetry, sizes, done = [], [], [], 0
        staged = _staged(batches, 1 if probe is not None else chunk, place or _device_put)
        for count, size, tree in prefetched(staged, prefetch):
            if count:  # a stack of `count` batches: one scan
                params, state, opt_state, m = scanned(params, state, opt_state, tree, key,
                                                      index, done)
            else:
                probing = (done + 1) % every == 0 if every else done == 0
                fn = probe_step if probing and probe_step is not None else step
                params, state, opt_state, m = fn(params, state, opt_state, tree, key, index,
                                                 done)
                m, t = _split_telemetry(m)
                if t:
                    telemetry.append(t)
                m = jax.tree.map(lambda v: v[None], m)
            steps = count or 1
            blocks.append(m)
            sizes += [size] * steps
            done += steps
            if on_step is not None:
                on_step(done)
        if not blocks:
            raise ArgumentError("fit: train_data yielded no batch this epoch (an exhausted "
                                "iterator? pass a re-iterable such as a DataLoader)")
        return params, state, opt_state, means(jnp.asarray(sizes), blocks, telemetry)

    return epoch


class Placement(Protocol):
    """``place(tree, batch_axis) -> tree`` on the device(s): a streamed batch
    (``batch_axis=0``) or a stack of them (``batch_axis=1``)."""

    def __call__(self, tree: Any, batch_axis: int, /) -> Any: ...


def _device_put(tree: Any, batch_axis: int) -> Any:
    return jax.device_put(tree)


def _staged(batches: Any, chunk: int, place: Placement) -> Any:
    """``(count, batch size, tree)`` on the device: ``count`` consecutive batches of one
    shape stacked leafwise, or ``count == 0`` for one batch alone; the first batch is
    checked leaf by leaf. The batch size is the placed (global) one."""
    pending: list[Any] = []

    def shapes(batch: Any) -> Any:
        return jax.tree.structure(batch), [tuple(jnp.shape(a)) for a in jax.tree.leaves(batch)]

    def stack(group: list[Any]) -> Any:
        return jax.tree.map(lambda *a: (jnp.stack(a) if isinstance(a[0], jax.Array)
                                        else np.stack(a)), *group)

    def staged(count: int, tree: Any) -> tuple[int, int, Any]:
        placed = place(tree, 1 if count else 0)
        return count, jax.tree.leaves(placed)[0].shape[1 if count else 0], placed

    for i, batch in enumerate(batches):
        if i == 0:
            num_examples(batch, "fit: a streamed batch")
        if pending and shapes(batch) != shapes(pending[0]):
            for alone in pending:  # a run shorter than a chunk: each batch alone
                yield staged(0, alone)
            pending = []
        pending.append(batch)
        if chunk > 1 and len(pending) == chunk:
            yield staged(chunk, stack(pending))
            pending = []
        elif chunk == 1:
            yield staged(0, pending.pop())
    for alone in pending:
        yield staged(0, alone)
