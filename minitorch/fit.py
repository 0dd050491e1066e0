"""``fit``: epochs of training with validation, history, progress bar and callbacks.

The training data lives on the device and every epoch is shuffled there from a key
(:class:`minitorch.epoch.EpochPlan`). An epoch is one compiled ``lax.scan`` (one dispatch
per epoch, no host work per step), or, with ``loop="steps"``, one shuffle-and-slice
dispatch and one dispatch per step; both follow the same plan. The scan is the default:
its step costs half a dispatched one on small dense nets and 0.8x on the digits CNN. Only
layers that run slower inside a loop (XLA:CPU's own grouped-convolution kernels, ~3x) make
``fit`` step instead (measured: benchmarks/RESULTS.md).

``fit`` is a few parts, each readable alone: the arguments and data (:func:`_examples`,
:func:`_check_fit_arguments`), the starting point and resuming (:func:`_start`,
:func:`_resume`), the epoch runner (:func:`_epoch_runner`), the progress bar
(:class:`Progress`), and the loop that runs epochs, validation, callbacks and checkpoints
(:func:`_train`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from minitorch import freeze, train
from minitorch import metrics as metric_fns
from minitorch.checkpoint import CheckpointError, CheckpointManager
from minitorch.data import ArrayDataset, DataLoader, num_examples
from minitorch.epoch import EpochPlan, Placement, make_epoch, make_epoch_steps, make_streamed_epoch
from minitorch.errors import ArgumentError, check_int
from minitorch.metrics import MetricLike
from minitorch.nn.core import Layer, Params, State
from minitorch.validate import check_fits_32_bits, is_int, real

History = dict[str, list[float]]


class Callback(Protocol):
    """Called after every epoch with its number, its logs (``loss``, ``val_loss``, ...,
    ``time``) and a context holding ``params``, ``state``, ``opt_state``, ``history`` and
    the ``net`` being trained. Returning True stops training; replacing ``params``,
    ``state`` or ``opt_state`` changes what trains next.
    Optionally ``state_dict()`` / ``load_state_dict(d)``, saved with ``fit``'s checkpoints."""

    def __call__(self, epoch: int, logs: dict[str, float], context: dict[str, Any], /
                 ) -> bool | None: ...
LIVE_BAR_SECONDS = 1.0  # epochs shorter than this move the progress bar once, at their end

__all__ = ["Callback", "EarlyStopping", "Fitted", "FittedWithState", "Progress", "fit"]


class Fitted(NamedTuple):
    """What ``fit`` returns for a net without state: unpacks as ``params, opt_state,
    history = fit(...)``, or read by name (``fit(...).params``)."""

    params: Params
    opt_state: Any
    history: History


class FittedWithState(NamedTuple):
    """What ``fit`` returns for a net with stateful layers (BatchNorm): unpacks as
    ``params, state, opt_state, history = fit(...)``, or read by name."""

    params: Params
    state: State
    opt_state: Any
    history: History


def fit(net: Layer | None, loss: Callable, optimizer: optax.GradientTransformation,
        train_data: Any, *, epochs: int, batch_size: int | None = None, val_data: Any = None,
        seed: int = 0, params: Params | None = None, state: State = None,
        opt_state: Any = None, start_epoch: int = 0, history: History | None = None,
        callbacks: Sequence[Callback] = (), progress: bool = True, shuffle: bool = True,
        drop_last: bool = False, checkpoint: CheckpointManager | None = None,
        telemetry: bool = False, telemetry_every: int | None = None,
        loop: str = "auto", strict_resume: bool = True, frozen: Sequence[str] = (),
        trainable: Sequence[str] | None = None,
        metrics: Mapping[str, MetricLike] | None = None,
        steps_per_epoch: int | None = None, mesh: Mesh | None = None
        ) -> Fitted | FittedWithState:
    """Train ``net`` on ``train_data = (x, y)`` for ``epochs`` epochs.

    Args:
      net, loss, optimizer: as :func:`minitorch.train.make_step`: a net and
        ``loss(outputs, targets)``, or ``net=None`` and a custom
        ``objective(params, batch, key) -> loss`` (or ``(loss, metrics dict)``), whose
        ``batch`` is ``(inputs, targets)`` sliced from ``train_data`` (then ``params`` is
        required: there is no net to initialise). Masked and multi-input models train
        this way: ``train_data=(ids, (targets, mask))``.
      train_data: ``(inputs, targets)``, each an array (NumPy or JAX) or a pytree of arrays
        (a tuple, a dict) whose leaves share the first axis (the examples); the net
        receives the inputs pytree as ``x`` and the loss ``(outputs, targets)``. Or an
        ``ArrayDataset`` of two arrays. Arrays live on the device, where ``fit`` shuffles
        and batches them itself. Or, for data that does not fit there, a ``DataLoader``, a
        Grain loader or any re-iterable of ``(inputs, targets)`` batches: ``fit`` streams
        them, each epoch one pass (``set_epoch(epoch)`` is called when the loader has it,
        so a resumed run sees the same order), batches stacked 8 at a time and moved to the
        device two stacks ahead in a background thread, each stack one compiled scan.
      epochs: the epoch to stop at (exclusive); with ``start_epoch`` a run resumes.
      batch_size: examples per step (arrays; a loader has its own).
      steps_per_epoch: with streamed data, the batches an epoch takes (needed for a
        single-use iterator, such as a generator, over more than one epoch).
      val_data: ``(inputs, targets)`` (or an ``ArrayDataset``) evaluated after every epoch
        (``val_`` metrics).
      seed: an int; fixes the initial params (when not given), the shuffling and dropout.
      params, state, opt_state: start from these (to resume, to fine-tune); initialised
        when None. ``fit`` trains copies of them (its compiled epochs donate their buffers),
        so the arrays passed in stay valid: compare them with the returned ones.
      start_epoch: the first epoch to run; epoch ``e`` always draws the same key from
        ``seed``, so a stop after ``k`` epochs and a resume gives the same params as no stop.
      history: a history to extend (when resuming).
      callbacks: functions ``callback(epoch, logs, context)`` called after every epoch with
        that epoch's logs (``loss``, ``accuracy``, ``val_loss``, ..., ``time``) and a context
        dict holding ``params``, ``state``, ``opt_state`` and ``history``; a callback that
        returns True stops training (see :class:`EarlyStopping`). A callback with
        ``state_dict()`` / ``load_state_dict(d)`` (JSON-able) has its state saved with each
        checkpoint and restored on resume; a run that a callback stopped stays stopped.
      progress: show a tqdm progress bar. It advances from inside the compiled epoch
        (about ten times an epoch) while epochs take at least ``LIVE_BAR_SECONDS`` (1 s),
        otherwise once per epoch: each update from inside costs ~1 ms. Without tqdm
        installed, one line per epoch is printed instead.
      shuffle, drop_last: as a ``DataLoader``'s.
      checkpoint: a :class:`~minitorch.checkpoint.CheckpointManager`. ``fit`` saves params,
        optimiser state, net state and history after every epoch, and when the manager
        already holds a checkpoint of this run, resumes from the latest complete one (the
        result equals an uninterrupted run to the bit). The checkpoint records what defines
        the run (seed, batch size, number of examples, shuffle, drop_last, the net's
        description and the frozen paths); resuming with any of them changed raises a
        CheckpointError naming it.
      strict_resume: False resumes even when the run's definition changed.
      frozen: paths of sub-layers or params that stay bit-unchanged and get no weight
        gradients, as :func:`minitorch.train.make_step`'s; ``trainable``, its inverse: only
        the params under these paths train.
      metrics: user metrics by name (:mod:`minitorch.metrics`), computed on every training
        batch inside the compiled epoch and on the validation data: functions ``(outputs,
        targets) -> scalar`` averaged weighted by examples, ``Metric`` objects (``F1``)
        finished from counts summed over the epoch. They appear in the logs, the bar and
        the history (``f1``, ``val_f1``).
      telemetry: record :mod:`minitorch.monitor`'s statistics into the history (under
        their own names, ``grad_norm/3``, ...; not in the callbacks' logs or the bar),
        computed inside the compiled epoch by a telemetry step that replaces the plain
        step every ``telemetry_every`` steps (default: once per epoch, the last full
        batch) and averaged over the steps that ran it.
      mesh: train data parallel over the mesh's first axis (``parallel.data_mesh()``):
        params, state and optimiser state are replicated, every batch is split along its
        examples over the axis inside the step, and XLA averages the gradients. Arrays are
        placed whole on every device; streamed batches are placed split
        (:func:`minitorch.parallel.shard_batch`; a last batch that does not split evenly,
        replicated). With several processes (``jax.distributed``), the mesh spans them all
        and each process's loader yields only its own share of every batch (the rows of
        its devices), assembled into the global batch with
        ``jax.make_array_from_process_local_data``; arrays must then be the same in every
        process.
      loop: ``"scan"`` (the epoch is one ``lax.scan``), ``"steps"`` (one dispatch per
        step) or ``"auto"``, which scans: measured faster for every net tried, grouped
        convolutions on the CPU included (benchmarks/RESULTS.md, "fit overhead").

    Returns:
      A :class:`Fitted` ``(params, opt_state, history)``, or for a net with stateful layers
      a :class:`FittedWithState` ``(params, state, opt_state, history)``: named tuples, so
      they unpack as plain tuples do and their parts read by name. ``history`` maps each
      metric to a list with one value per epoch run, plus ``"epoch"`` and ``"time"``
      (seconds per epoch).
    """
    user_metrics = metric_fns.check(metrics, "fit")
    selected = freeze.selection(frozen, trainable, "fit")
    val_data = None if val_data is None else _examples(val_data, "val_data")[:2]
    _check_fit_arguments(net, epochs, seed, telemetry_every, params)
    if loop not in ("auto", "scan", "steps"):
        raise ArgumentError(f"fit: loop must be 'auto', 'scan' or 'steps', received {loop!r}")
    stream = _Stream.of(train_data, steps_per_epoch, epochs - start_epoch)
    plan: EpochPlan | _Stream
    if stream is None:
        x, y, count = _examples(train_data, "train_data")
        size = _check_batch_size(batch_size, count)
        plan = EpochPlan(count, size, shuffle, drop_last, telemetry_every)
        data: Any = (jax.tree.map(jnp.asarray, (x, y)) if mesh is None
                     else _replicated(mesh, (x, y)))
        described: tuple[int | None, int | None] = (size, count)
    else:
        plan = data = dataclasses.replace(stream, probe_every=telemetry_every)
        described = (stream.batch_size, stream.num_examples)
    run = {"seed": int(seed), "batch_size": described[0], "num_examples": described[1],
           "shuffle": bool(shuffle), "drop_last": bool(drop_last),
           "net": _describe(net, loss), "frozen": freeze.describe(selected)}
    start = _start(net, optimizer, seed, (params, state, opt_state), start_epoch, history)
    if mesh is not None:
        start = dataclasses.replace(start, trees=_replicated(mesh, start.trees))
    if checkpoint is not None:
        resumed = _resume(checkpoint, start.trees, run, callbacks, strict_resume)
        start = resumed or start
    if not start.stopped:
        bar = Progress(progress, (epochs - start.epoch) * plan.steps, plan.steps)
        try:
            epoch_fn = _epoch_runner(net, loss, optimizer, plan, loop, telemetry, bar,
                                     selected, user_metrics, mesh)
            checks = _Checks(net, loss, val_data, callbacks, checkpoint, run, user_metrics)
            start = _train(epoch_fn, start, range(start.epoch, epochs), data, seed, checks,
                           bar)
        finally:
            bar.close()
    params, state, opt_state = start.trees
    return (FittedWithState(params, state, opt_state, start.history) if _stateful(net)
            else Fitted(params, opt_state, start.history))


def _stateful(net: Layer | None) -> bool:
    return net is not None and net.stateful


@dataclasses.dataclass
class _Run:
    """Where training stands: the trees, the next epoch, the history, whether it stopped."""

    trees: tuple[Any, Any, Any]  # (params, state, opt_state)
    epoch: int
    history: History
    stopped: bool = False


@dataclasses.dataclass(frozen=True)
class _Checks:
    """What runs after each epoch: validation, callbacks, the checkpoint."""

    net: Layer | None
    loss: Callable
    val_data: tuple | None
    callbacks: Sequence[Callback]
    checkpoint: CheckpointManager | None
    run: dict
    metrics: dict


def _start(net: Any, optimizer: optax.GradientTransformation, seed: int, given: tuple,
           start_epoch: int, history: History | None) -> _Run:
    """The starting point: copies of the given trees (the caller keeps its arrays: a copy
    costs one pass over them, ~1 ms for a million float32 params, against a fit that
    would otherwise delete them), or fresh ones from ``seed``. Copied by the runtime
    (``device_put``, each array keeping its sharding), not by ``jnp.copy``, which compiles
    a program for every new leaf shape before the first step."""
    names = ("params", "state", "opt_state")
    given = train.donatable(given, names, "fit")  # arrays an earlier call deleted: say so
    params, state, opt_state = (None if tree is None else jax.device_put(tree, may_alias=False)
                                for tree in given)
    if params is None:
        params = net.init(jax.random.split(jax.random.key(seed))[0])
    if state is None and _stateful(net):
        state = net.init_state()
    if opt_state is None:
        opt_state = optimizer.init(params)
    trees = train.donatable((params, state, opt_state), names, "fit")
    return _Run(trees, start_epoch, {k: list(v) for k, v in (history or {}).items()})


def _epoch_runner(net: Layer | None, loss: Callable, optimizer: optax.GradientTransformation,
                  plan: EpochPlan | _Stream, loop: str, telemetry: bool, bar: Progress,
                  frozen: freeze.Paths, metrics: dict, mesh: Mesh | None) -> Callable:
    """``run(params, state, opt_state, data, key, index) -> (..., metrics)`` for one epoch,
    as a scan or as steps over arrays, or streamed, reporting to ``bar``; data parallel
    over ``mesh`` when given."""
    update = _split_batches(train.make_update(net, loss, optimizer, frozen=frozen,
                                              metrics=metrics), mesh)
    probe = (_split_batches(train.make_update(net, loss, optimizer, telemetry=True,
                                              frozen=frozen, metrics=metrics), mesh)
             if telemetry else None)
    if isinstance(plan, _Stream):
        streamed = make_streamed_epoch(update, probe=probe, probe_every=plan.probe_every,
                                       on_step=bar.on_step, place=_placement(mesh))
        return lambda params, state, opt_state, stream, key, index: streamed(
            params, state, opt_state, stream.batches(index), key, index)
    if loop == "steps":
        return make_epoch_steps(update, plan.num_examples, plan.batch_size,
                                shuffle=plan.shuffle, drop_last=plan.drop_last, probe=probe,
                                probe_every=plan.probe_every, on_step=bar.on_step)
    # A host callback from inside the scan costs more than a short epoch's steps: under
    # 20 steps the bar moves once per epoch, otherwise about 10 times.
    inside = bar.on_step if bar.enabled and plan.steps >= 20 else None
    epoch = make_epoch(update, plan.num_examples, plan.batch_size, shuffle=plan.shuffle,
                       drop_last=plan.drop_last, on_step=inside,
                       step_every=max(plan.steps // 10, 1), probe=probe,
                       probe_every=plan.probe_every)
    # Updates from inside cost ~1 ms each (the loop waits for the host): only epochs long
    # enough to watch get them; a runtime switch, no recompile.
    def run(params: Any, state: Any, opt_state: Any, data: Any, key: Any, index: Any) -> Any:
        return epoch(params, state, opt_state, data, key, index, report=bar.live)

    return run


def _split_batches(update: train.Update, mesh: Mesh | None) -> train.Update:
    """``update`` with its batch split along the examples over ``mesh``'s first axis (a
    sharding constraint: XLA partitions the step and all-reduces the gradients)."""
    if mesh is None:
        return update
    split = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))

    def data_parallel(params: Any, state: Any, opt_state: Any, batch: Any, key: Any) -> Any:
        batch = jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, split), batch)
        return update(params, state, opt_state, batch, key)

    return data_parallel


def _replicated(mesh: Mesh, tree: Any) -> Any:
    from minitorch import parallel  # imported on first use, as ``minitorch.parallel`` is

    return parallel.replicate_on(mesh, tree)


def _placement(mesh: Mesh | None) -> Placement | None:
    """How streamed batches reach a mesh: split over its first axis, or, for a batch
    that does not split evenly in one process (a last, smaller one), whole on every device
    (the step's constraint splits it)."""
    if mesh is None:
        return None
    from minitorch import parallel

    devices = mesh.shape[mesh.axis_names[0]]

    def place(tree: Any, batch_axis: int) -> Any:
        rows = jax.tree.leaves(tree)[0].shape[batch_axis]
        if rows % devices and jax.process_count() == 1:
            return _replicated(mesh, tree)
        return parallel.shard_batch(mesh, tree, batch_axis=batch_axis)

    return place


def _train(epoch_fn: Callable, run: _Run, epochs: range, data: tuple, seed: int,
           checks: _Checks, bar: Progress) -> _Run:
    """Run ``epochs``; after each: validation, history, callbacks, then the checkpoint."""
    epoch_root = jax.random.split(jax.random.key(seed))[1]
    for epoch in epochs:
        started = time.perf_counter()
        bar.start_epoch()
        *trees, metrics = epoch_fn(*run.trees, data, epoch_root, epoch)
        metrics = jax.device_get(metrics)
        telemetry = metrics.telemetry
        logs = {name: float(value) for name, value in metrics.items()}
        logs.update(metric_fns.finish(checks.metrics, metrics.counts))
        if checks.val_data is not None:
            val = train.evaluate(checks.net, checks.loss, trees[0], checks.val_data,
                                 state=trees[1], metrics=checks.metrics)
            logs.update({f"val_{name}": value for name, value in val.items()})
        logs["time"] = time.perf_counter() - started
        _record(run.history, epoch, {**logs, **{k: float(v) for k, v in telemetry.items()}})
        bar.end_epoch(epoch, logs)
        context = {"params": trees[0], "state": trees[1], "opt_state": trees[2],
                   "history": run.history, "net": checks.net}
        stop = any([bool(callback(epoch, logs, context)) for callback in checks.callbacks])
        run = _Run((context["params"], context["state"], context["opt_state"]), epoch + 1,
                   run.history, stop)
        _save(checks, run, epoch)
        if stop:
            break
    return run


def _save(checks: _Checks, run: _Run, epoch: int) -> None:
    if checks.checkpoint is None:
        return
    params, state, opt_state = run.trees
    callbacks = [cb.state_dict() if hasattr(cb, "state_dict") else None
                 for cb in checks.callbacks]
    checks.checkpoint.save(epoch, {"params": params, "state": state, "opt_state": opt_state},
                           {"epoch": epoch, "history": run.history, "run": checks.run,
                            "stopped": run.stopped, "callbacks": callbacks}, net=checks.net)


def _record(history: History, epoch: int, logs: dict[str, float]) -> None:
    history.setdefault("epoch", []).append(epoch)
    for name, value in logs.items():
        history.setdefault(name, []).append(value)


class Progress:
    """``fit``'s tqdm bar (``enabled=False``: nothing; without tqdm installed: a line per
    epoch).

    The epoch calls :meth:`on_step` with the steps done so far, from inside the compiled
    epoch; each call costs ~1 ms, so after each epoch :attr:`live` says whether the next
    one runs long enough (>= ``LIVE_BAR_SECONDS``) to be worth watching.
    """

    def __init__(self, enabled: bool, total: int, steps_per_epoch: int):
        self.bar = _tqdm(total) if enabled else None
        self.lines = enabled and self.bar is None  # no tqdm: a line per epoch
        self.steps = steps_per_epoch
        self.live = True
        self._epoch_start = 0  # the bar's count when the current epoch began
        self._ticks: list[tuple[float, int]] = []  # (time, steps done) of this epoch's calls
        self._started = 0.0

    @property
    def enabled(self) -> bool:
        return self.bar is not None

    def start_epoch(self) -> None:
        self._epoch_start = self.bar.n if self.bar is not None else 0
        self._ticks.clear()
        self._started = time.perf_counter()

    def on_step(self, done: Any) -> None:
        """Move the bar to ``done`` steps into the epoch (never backwards)."""
        self._ticks.append((time.perf_counter(), int(done)))
        if self.bar is not None:
            self.bar.update(max(self._epoch_start + int(done) - self.bar.n, 0))

    def end_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        self.live = self._epoch_seconds(time.perf_counter() - self._started) >= LIVE_BAR_SECONDS
        if self.lines:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in logs.items() if k != "time")
            print(f"epoch {epoch}: {shown} ({logs.get('time', 0.0):.2f} s)", flush=True)
        if self.bar is not None and self.steps:  # a stream may not say how many steps
            self.bar.update(self._epoch_start + self.steps - self.bar.n)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k != "time"},
                                 refresh=False)

    def _epoch_seconds(self, measured: float) -> float:
        """How long an epoch runs: timed between its first and last progress calls when it
        had two (the first epoch's ``measured`` time includes the compile)."""
        ticks = self._ticks
        if len(ticks) >= 2 and ticks[-1][1] > ticks[0][1]:
            (start, first), (end, last) = ticks[0], ticks[-1]
            return (end - start) / (last - first) * self.steps
        return measured

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _tqdm(total: int) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional extra: no bar rather than no training
        return None
    return tqdm(total=total or None, unit="step", leave=True)


@dataclasses.dataclass(frozen=True)
class _Stream:
    """Streamed training data: a loader or re-iterable of batches, one pass an epoch."""

    source: Any
    steps_per_epoch: int | None
    probe_every: int | None = None

    @staticmethod
    def of(data: Any, steps_per_epoch: Any, epochs: int) -> _Stream | None:
        """The stream ``data`` is, or None for in-memory data: a tuple ``(inputs, targets)``,
        an ``ArrayDataset`` (or a list of two arrays, ``[x, y]``). Any other iterable (a
        list of batches, a loader, a generator) is a stream of batches."""
        pair = isinstance(data, list) and len(data) == 2 and all(
            hasattr(part, "shape") for part in data)
        if isinstance(data, (tuple, ArrayDataset, dict)) or pair or hasattr(data, "shape") \
                or not hasattr(data, "__iter__"):
            if steps_per_epoch is not None:
                raise ArgumentError("fit: steps_per_epoch is for streamed data (a loader or "
                                    "an iterable of batches); with arrays, batch_size "
                                    "decides the steps")
            return None
        if steps_per_epoch is not None:
            check_int("fit", "steps_per_epoch", steps_per_epoch, 1)
        elif iter(data) is data and epochs > 1:
            raise ArgumentError(f"fit: train_data is a single-use iterator "
                                f"({type(data).__name__}), which cannot give {epochs} "
                                f"epochs: pass a re-iterable (a DataLoader, a Grain loader, "
                                f"a list of batches) or steps_per_epoch=")
        return _Stream(data, steps_per_epoch)

    @property
    def batch_size(self) -> int | None:
        size: Any = getattr(self.source, "batch_size", None)
        return int(size) if is_int(size) else None

    @property
    def num_examples(self) -> int | None:
        dataset: Any = getattr(self.source, "dataset", None)
        return len(dataset) if hasattr(dataset, "__len__") else None

    @property
    def steps(self) -> int:
        """Steps per epoch, or 0 when the source does not say."""
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        try:
            return len(self.source)
        except TypeError:  # no length (Epochs over a generator)
            return 0

    def batches(self, epoch: int) -> Any:
        """Epoch ``epoch``'s batches (the loader told which epoch, when it can be)."""
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)
        batches = iter(self.source)
        if self.steps_per_epoch is not None:
            return itertools.islice(batches, self.steps_per_epoch)
        return batches


def _examples(data: Any, name: str) -> tuple[Any, Any, int]:
    """``(inputs, targets, number of examples)`` from a pair of pytrees of arrays sharing
    their first axis (an array, a tuple, a dict each) or an ``ArrayDataset`` of two arrays."""
    if isinstance(data, DataLoader):
        raise ArgumentError(f"fit: {name} must be (inputs, targets) arrays or an "
                            f"ArrayDataset, received a DataLoader: pass loader.dataset "
                            f"(streamed validation is not supported yet)")
    if isinstance(data, ArrayDataset):
        data = data.arrays
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        received = (f"a {type(data).__name__} of {len(data)} items"
                    if isinstance(data, (tuple, list, ArrayDataset)) else type(data).__name__)
        raise ArgumentError(f"fit: {name} must be (inputs, targets), each an array or a "
                            f"pytree of arrays (a tuple, a dict) sharing the first axis, or "
                            f"an ArrayDataset of two arrays; received {received}")
    inputs, targets = data
    num_examples(inputs, f"fit: {name} inputs")  # not empty, and arrays
    count = num_examples({"inputs": inputs, "targets": targets}, f"fit: {name}")
    if count == 0:
        raise ArgumentError(f"fit: {name} is empty (0 examples)")
    for part, tree in (("inputs", inputs), ("targets", targets)):
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            if isinstance(leaf, np.ndarray):
                check_fits_32_bits(leaf, f"fit: {name} {part}{jax.tree_util.keystr(path)}")
    return inputs, targets, count


def _check_batch_size(batch_size: Any, num_examples: int) -> int:
    if not is_int(batch_size) or not 1 <= batch_size <= num_examples:
        raise ArgumentError(f"fit: batch_size must be an int in [1, {num_examples}] (the "
                            f"number of training examples), received {batch_size!r}")
    return int(batch_size)


def _check_fit_arguments(net: Any, epochs: Any, seed: Any, telemetry_every: Any,
                         params: Any) -> None:
    if net is None:
        if params is None:
            raise ArgumentError("fit: with a custom objective (net=None) there is no net to "
                                "initialise: pass params=...")
    else:
        train.check_net("fit", net)
    check_int("fit", "epochs", epochs, 1)
    check_int("fit", "seed", seed)
    if telemetry_every is not None:
        check_int("fit", "telemetry_every", telemetry_every, 1)


def _describe(net: Layer | None, loss: Callable) -> str:
    """The net's hyperparameters as text (a custom objective: its name), the same in every
    process (no addresses)."""
    what = repr(net) if net is not None else (
        f"objective {getattr(loss, '__qualname__', type(loss).__name__)}")
    return re.sub(r" at 0x[0-9a-fA-F]+", "", what)


def _resume(checkpoint: CheckpointManager, trees: tuple, run: dict,
            callbacks: Sequence[Callback], strict: bool) -> _Run | None:
    """Where the manager's latest checkpoint of this run stands, or None when it holds
    none; refuses a checkpoint of another run unless not ``strict``."""
    template = dict(zip(("params", "state", "opt_state"), trees))
    found = checkpoint.restore_latest(template)
    if found is None:
        return None
    step, (tree, meta) = found
    where = checkpoint.path(step)
    if not {"history", "epoch", "run"} <= set(meta):
        raise CheckpointError(f"{where}: not written by fit (its metadata has no "
                              f"{sorted({'history', 'epoch', 'run'} - set(meta))}); give fit "
                              f"an empty directory or one an earlier fit of this run wrote")
    changed = [f"{name}: {meta['run'].get(name)!r} in the checkpoint, {value!r} now"
               for name, value in run.items() if meta["run"].get(name) != value]
    if changed and strict:
        raise CheckpointError(f"{where}: this run differs from the one that wrote the "
                              f"checkpoint ({'; '.join(changed)}); use a new directory, or "
                              f"pass strict_resume=False to resume anyway")
    for callback, saved in zip(callbacks, meta.get("callbacks") or []):
        if saved is not None and hasattr(callback, "load_state_dict"):
            callback.load_state_dict(saved)
    return _Run((tree["params"], tree["state"], tree["opt_state"]), meta["epoch"] + 1,
                meta["history"], bool(meta.get("stopped")))


class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    A NaN or infinite value never counts as an improvement. With ``restore_best``, the
    params, state and optimiser state of the best epoch are put back into the context, so
    ``fit`` returns them. With ``checkpoint`` (a :class:`CheckpointManager`), each new best
    is also written to ``checkpoint.best_path``, so the best epoch stays on disk after
    the manager deletes old epochs, and a resumed run can restore it.

    Its progress (``state_dict``) is saved with ``fit``'s checkpoints, so a retried job
    neither forgets the best value nor trains past the stop.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, *, mode: str = "min",
                 min_delta: float = 0.0, restore_best: bool = True,
                 checkpoint: CheckpointManager | None = None):
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'min' or 'max', received {mode!r}")
        check_int("EarlyStopping", "patience", patience, 1)
        min_delta = real(min_delta, "min_delta", "EarlyStopping", minimum=0)
        self.monitor, self.patience, self.mode = monitor, patience, mode
        self.min_delta, self.restore_best, self.checkpoint = min_delta, restore_best, checkpoint
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0  # epochs since the best (or since the start, before any)
        self._best_context: dict | None = None

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, saved: dict) -> None:
        self.best, self.best_epoch, self.wait = saved["best"], saved["best_epoch"], saved["wait"]

    def _improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        sign = 1.0 if self.mode == "min" else -1.0
        return self.best is None or sign * (self.best - value) > self.min_delta

    def __call__(self, epoch: int, logs: dict[str, float], context: dict[str, Any]) -> bool:
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping: monitored metric {self.monitor!r} is not in the "
                           f"logs {sorted(logs)}")
        value = float(logs[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            best = {k: context[k] for k in ("params", "state", "opt_state")}
            if self.restore_best:  # copies: the next epoch donates the live buffers
                self._best_context = jax.device_put(best, may_alias=False)
            if self.checkpoint is not None:
                self.checkpoint.save_best(best, {"epoch": epoch, self.monitor: value},
                                          net=context.get("net"))
            return False
        self.wait += 1
        if self.wait < self.patience:
            return False
        if self.restore_best:
            context.update(self._best_or_saved(context))
        return True

    def _best_or_saved(self, context: dict[str, Any]) -> dict:
        """The best epoch's trees: kept in memory, or (after a resume) read back from disk."""
        if self._best_context is not None:
            return self._best_context
        if self.checkpoint is not None and self.checkpoint.best_path.exists():
            template = {k: context[k] for k in ("params", "state", "opt_state")}
            return self.checkpoint.restore_best(template)[0]
        return {}
