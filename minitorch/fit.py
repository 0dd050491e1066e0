"""``fit``: epochs of training with validation, history, progress bar and callbacks.

The training data lives on the device and every epoch is shuffled there from a key. An
epoch is one compiled ``lax.scan`` (one dispatch per epoch, no host work per step), or,
with ``loop="steps"``, one shuffle-and-slice dispatch and one dispatch per step; both give
the same order, keys and metrics. The scan is the default: its step costs half a
dispatched one on small dense nets and 0.8x on the digits CNN. Only XLA:CPU's own
convolution kernels (grouped ``Conv2D`` on the CPU) run ~3x slower inside a loop, so
nets with those step instead (measured: benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from minitorch import train
from minitorch.checkpoint import CheckpointError, CheckpointManager
from minitorch.data import ArrayDataset, DataLoader
from minitorch.errors import ArgumentError, check_int
from minitorch.nn.conv import Conv2D
from minitorch.nn.core import (
    Array,
    Layer,
    Params,
    State,
    check_fits_32_bits,
    is_int,
    named_layers,
)

History = dict[str, list[float]]
Callback = Callable[[int, dict[str, float], dict[str, Any]], Any]


def make_epoch(update: Callable, num_examples: int, batch_size: int, *, shuffle: bool = True,
               drop_last: bool = False, on_step: Callable[[Any], None] | None = None,
               step_every: int = 1, probe: Callable | None = None,
               probe_every: int | None = None, jit: bool = True) -> Callable:
    """Compile one epoch of ``update`` over in-memory data.

    Args:
      update: ``update(params, state, opt_state, batch, key) -> (params, state, opt_state,
        metrics)``, as :func:`minitorch.train.make_update` builds.
      num_examples, batch_size: the data's size and the batch size.
      shuffle: draw a new order on the device from the epoch's key.
      drop_last: skip the last, smaller batch (otherwise it is one more step).
      on_step: a host function called with the number of steps done, every ``step_every``
        steps, from inside the compiled loop (through ``jax.debug.callback``). Each call
        costs about a millisecond of a CNN's epoch (the loop waits for the host), so the
        epoch takes ``report=False`` to skip them, without a recompile.
      probe: an update like ``update`` that also returns extra metrics (e.g. a telemetry
        step), run instead of ``update`` every ``probe_every`` steps (default: once, at the
        last full batch); its extra metrics are averaged over the steps it ran, so their
        cost is paid once per interval, not every step.
      jit: compile the epoch (params, state and optimiser state donated).

    Returns:
      ``epoch(params, state, opt_state, data, key, index, report=True) ->
      (params, state, opt_state, metrics)`` where ``data`` is a pytree of arrays with
      ``num_examples`` rows, ``key`` the run's key and ``index`` the epoch number (the
      epoch's key is ``fold_in(key, index)``, so any epoch can be rerun alone), and
      ``metrics`` the example-weighted epoch means.
    """
    full, rest, probe_every = _epoch_sizes(num_examples, batch_size, drop_last, probe_every)
    probes = full // probe_every
    if step_every < 1:
        raise ValueError(f"make_epoch: step_every must be >= 1, received {step_every}")

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

    def chunked(carry, xs, data, report):
        """``update`` over ``xs`` in chunks of ``step_every`` steps, ``on_step`` after each
        chunk when ``report``: no condition inside the steps' loop (one cost 3-5% of the
        digits CNN's epoch even when it never fired; this costs ~2%)."""
        def chunk(carry, xs):
            carry, metrics = steps(update, carry, xs, data)
            jax.lax.cond(report, lambda: jax.debug.callback(on_step, xs[0][-1] + 1),
                         lambda: None)
            return carry, metrics

        intervals, rest_xs = _in_intervals(xs, step_every)
        carry, head = jax.lax.scan(chunk, carry, intervals)
        carry, tail = steps(update, carry, rest_xs, data)
        return carry, jax.tree.map(lambda h, t: jnp.concatenate([h.ravel(), t]), head, tail)

    def epoch(params, state, opt_state, data, key, index, report=True):
        order, keys = _epoch_plan(key, index, num_examples, full, shuffle)
        rows = order[:full * batch_size].reshape(full, batch_size)
        xs = (jnp.arange(full), rows, keys[:-1])
        carry = (params, state, opt_state)
        if probe is None:
            if on_step is None:
                carry, metrics = steps(update, carry, xs, data)
            else:
                carry, metrics = chunked(carry, xs, data, jnp.asarray(report))
            extra = {}
        else:
            # Intervals of probe_every - 1 plain steps and one probe step, then the steps
            # after the last interval: the probe's cost is paid only where it runs (a
            # lax.cond choosing between the two at every step cost 12% of a CNN's epoch).
            report = None if on_step is None else jnp.asarray(report)
            intervals, rest_xs = _in_intervals(xs, probe_every)

            def interval(carry, xs):
                carry, plain = steps(update, carry, [a[:-1] for a in xs], data, report)
                carry, probed = steps(probe, carry, [a[-1:] for a in xs], data, report)
                return carry, (plain, probed)

            carry, (plain, probed) = jax.lax.scan(interval, carry, intervals)
            carry, tail = steps(update, carry, rest_xs, data, report)
            extra = {k: probed.pop(k).sum() / probes for k in list(probed) if "/" in k}
            metrics = {k: jnp.concatenate([plain[k].ravel(), probed[k].ravel(), tail[k]])
                       for k in tail}
        totals = jax.tree.map(lambda m: m.sum() * batch_size, metrics)
        if rest:
            batch = jax.tree.map(lambda a: a[order[full * batch_size:]], data)
            *carry, last = update(*carry, batch, keys[-1])
            totals = jax.tree.map(lambda t, m: t + m * rest, totals, last)
        seen = full * batch_size + rest
        return (*carry, {**jax.tree.map(lambda t: t / seen, totals), **extra})

    return jax.jit(epoch, donate_argnums=(0, 1, 2)) if jit else epoch


def _in_intervals(xs: list[Array] | tuple[Array, ...], size: int
                  ) -> tuple[list[Array], list[Array]]:
    """Split per-step arrays ``(steps, ...)`` into whole intervals ``(steps // size, size,
    ...)`` and the steps after the last interval."""
    head = len(xs[0]) // size * size
    return ([a[:head].reshape(head // size, size, *a.shape[1:]) for a in xs],
            [a[head:] for a in xs])


def _epoch_sizes(num_examples: int, batch_size: int, drop_last: bool,
                 probe_every: int | None) -> tuple[int, int, int]:
    """Full batches, the size of the last partial batch (0 if none or dropped), and the
    probe interval in steps (default: once per epoch)."""
    if not 1 <= batch_size <= num_examples:
        raise ValueError(f"make_epoch: batch_size must be in [1, {num_examples}] (the number "
                         f"of examples), received {batch_size}")
    full, rest = divmod(num_examples, batch_size)
    probe_every = full if probe_every is None else max(1, min(probe_every, full))
    return full, 0 if drop_last else rest, probe_every


def _epoch_plan(key: Any, index: Any, num_examples: int, full: int,
                shuffle: bool) -> tuple[Array, Array]:
    """Epoch ``index``'s example order and step keys (``full + 1`` of them), from ``key``."""
    order_key, step_key = jax.random.split(jax.random.fold_in(key, index))
    order = (jax.random.permutation(order_key, num_examples) if shuffle
             else jnp.arange(num_examples))
    return order, jax.random.split(step_key, full + 1)


def make_epoch_steps(update: Callable, num_examples: int, batch_size: int, *,
                     shuffle: bool = True, drop_last: bool = False,
                     on_step: Callable[[Any], None] | None = None, probe: Callable | None = None,
                     probe_every: int | None = None) -> Callable:
    """The same epoch as :func:`make_epoch` (same order, keys and metrics), run as one
    dispatch that shuffles and slices every batch on the device, then one dispatch of the
    jit'd ``update`` per batch. Faster than the scan where XLA runs the step's kernels
    slower inside a loop (its own convolutions on the CPU); ``on_step`` is called after
    every step.
    """
    full, rest, probe_every = _epoch_sizes(num_examples, batch_size, drop_last, probe_every)
    step = jax.jit(update, donate_argnums=(0, 1, 2))
    probe_step = None if probe is None else jax.jit(probe, donate_argnums=(0, 1, 2))

    @jax.jit
    def plan(data, key, index):
        order, keys = _epoch_plan(key, index, num_examples, full, shuffle)
        cuts = [(i * batch_size, batch_size) for i in range(full)]
        cuts += [(full * batch_size, rest)] if rest else []
        batches = [jax.tree.map(lambda a, s=start, n=size: a[order[s:s + n]], data)
                   for start, size in cuts]
        return batches, [keys[i] for i in range(full)] + ([keys[-1]] if rest else [])

    @jax.jit
    def average(metrics):
        sizes = [batch_size] * full + ([rest] if rest else [])
        names = [k for k in metrics[0] if "/" not in k]
        out = {k: sum(m[k] * n for m, n in zip(metrics, sizes)) / sum(sizes) for k in names}
        probed = [m for m in metrics if any("/" in k for k in m)]
        for k in (probed[0] if probed else {}):
            if "/" in k:
                out[k] = sum(m[k] for m in probed) / len(probed)
        return out

    def epoch(params, state, opt_state, data, key, index):
        batches, keys = plan(data, key, index)
        metrics = []
        for i, (batch, step_key) in enumerate(zip(batches, keys)):
            use_probe = probe_step is not None and i < full and (i + 1) % probe_every == 0
            params, state, opt_state, m = (probe_step if use_probe else step)(
                params, state, opt_state, batch, step_key)
            metrics.append(m)
            if on_step is not None:
                on_step(i + 1)
        return params, state, opt_state, average(metrics)

    return epoch


def fit(net: Layer, loss: Callable, optimizer: optax.GradientTransformation,
        train_data: tuple, *, epochs: int, batch_size: int, val_data: tuple | None = None,
        seed: int = 0, params: Params | None = None, state: State = None,
        opt_state: Any = None, start_epoch: int = 0, history: History | None = None,
        callbacks: Sequence[Callback] = (), progress: bool = True, shuffle: bool = True,
        drop_last: bool = False, checkpoint: CheckpointManager | None = None,
        telemetry: bool = False, telemetry_every: int | None = None,
        loop: str = "auto", strict_resume: bool = True) -> tuple:
    """Train ``net`` on ``train_data = (x, y)`` for ``epochs`` epochs.

    Args:
      net, loss, optimizer: as :func:`minitorch.train.make_step`.
      train_data: ``(inputs, targets)`` arrays (NumPy or JAX) with examples on axis 0, or
        an ``ArrayDataset`` of those two arrays. (Not a ``DataLoader``: ``fit`` shuffles
        and batches on the device itself; pass the loader's dataset and ``batch_size``.)
      epochs: the epoch to stop at (exclusive); with ``start_epoch`` a run resumes.
      batch_size: examples per step.
      val_data: ``(inputs, targets)`` (or an ``ArrayDataset``) evaluated after every epoch
        (``val_`` metrics).
      seed: an int; fixes the initial params (when not given), the shuffling and dropout.
      params, state, opt_state: start from these (to resume); initialised when None. They
        are donated to the compiled epochs: use the returned ones, not these, afterwards.
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
        otherwise once per epoch: each update from inside costs ~1 ms.
      shuffle, drop_last: as a ``DataLoader``'s.
      checkpoint: a :class:`~minitorch.checkpoint.CheckpointManager`. ``fit`` saves params,
        optimiser state, net state and history after every epoch, and when the manager
        already holds a checkpoint of this run, resumes from the latest complete one (the
        result equals an uninterrupted run to the bit). The checkpoint records what defines
        the run (seed, batch size, number of examples, shuffle, drop_last and the net's
        description); resuming with any of them changed raises a CheckpointError naming it.
      strict_resume: False resumes even when the run's definition changed.
      telemetry: record :mod:`minitorch.monitor`'s statistics (names with a ``/``) into the
        history, computed inside the compiled epoch by a telemetry step that replaces the
        plain step every ``telemetry_every`` steps (default: once per epoch, the last full
        batch) and averaged over the steps that ran it.
      loop: ``"scan"`` (the epoch is one ``lax.scan``), ``"steps"`` (one dispatch per
        step) or ``"auto"``: scan, unless the net has a grouped ``Conv2D`` on the CPU.

    Returns:
      ``(params, opt_state, history)``, or for a net with stateful layers
      ``(params, state, opt_state, history)``. ``history`` maps each metric to a list with
      one value per epoch run, plus ``"epoch"`` and ``"time"`` (seconds per epoch).
    """
    x, y = _examples(train_data, "train_data")
    val_data = None if val_data is None else _examples(val_data, "val_data")
    num_examples = len(x)
    _check_fit_arguments(net, epochs, batch_size, seed, num_examples, telemetry_every)
    init_key, epoch_root = jax.random.split(jax.random.key(seed))
    if params is None:
        params = net.init(init_key)
    if state is None and net.stateful:
        state = net.init_state()
    if opt_state is None:
        opt_state = optimizer.init(params)
    params, state, opt_state = train.donatable((params, state, opt_state),
                                               ("params", "state", "opt_state"), "fit")
    history = {k: list(v) for k, v in (history or {}).items()}
    run = {"seed": int(seed), "batch_size": int(batch_size), "num_examples": num_examples,
           "shuffle": bool(shuffle), "drop_last": bool(drop_last), "net": _describe(net)}
    if checkpoint is not None and (found := _resume(
            checkpoint, {"params": params, "state": state, "opt_state": opt_state}, run,
            callbacks, strict_resume)) is not None:
        tree, history, start_epoch, stopped = found
        params, state, opt_state = tree["params"], tree["state"], tree["opt_state"]
        if stopped:
            return ((params, state, opt_state, history) if net.stateful
                    else (params, opt_state, history))

    full, rest, _ = _epoch_sizes(num_examples, batch_size, drop_last, None)
    steps = full + (1 if rest else 0)
    bar = _progress_bar(progress, total=(epochs - start_epoch) * steps)
    bar_start = {"n": 0}  # the bar's count when the current epoch began
    ticks: list[tuple[float, int]] = []  # (time, steps done) of this epoch's bar updates
    advance = None if bar is None else _bar_advance(bar, bar_start, ticks)
    update = train.make_update(net, loss, optimizer)
    probe = train.make_update(net, loss, optimizer, telemetry=True) if telemetry else None
    if loop not in ("auto", "scan", "steps"):
        raise ValueError(f"fit: loop must be 'auto', 'scan' or 'steps', received {loop!r}")
    if loop == "auto":
        loop = "steps" if _has_slow_conv(net) else "scan"
    if loop == "scan":
        # A host callback from inside the scan costs more than a short epoch's steps:
        # under 20 steps the bar moves once per epoch, otherwise about 10 times.
        inside = advance if steps >= 20 else None
        epoch_fn = make_epoch(update, num_examples, batch_size, shuffle=shuffle,
                              drop_last=drop_last, on_step=inside,
                              step_every=max(steps // 10, 1), probe=probe,
                              probe_every=telemetry_every)
    else:
        epoch_fn = make_epoch_steps(update, num_examples, batch_size, shuffle=shuffle,
                                    drop_last=drop_last, probe=probe,
                                    probe_every=telemetry_every, on_step=advance)
    data = (jnp.asarray(x), jnp.asarray(y))
    scan_options = {"report": True} if loop == "scan" else {}
    try:
        for epoch in range(start_epoch, epochs):
            start = time.perf_counter()
            bar_start["n"] = bar.n if bar is not None else 0
            ticks.clear()
            params, state, opt_state, metrics = epoch_fn(params, state, opt_state, data,
                                                         epoch_root, epoch, **scan_options)
            logs = {name: float(value) for name, value in jax.device_get(metrics).items()}
            if val_data is not None:
                val = train.evaluate(net, loss, params, val_data, state=state)
                logs.update({f"val_{name}": value for name, value in val.items()})
            logs["time"] = time.perf_counter() - start
            if scan_options:
                # Each update from inside the compiled epoch costs ~1 ms (the loop waits for
                # the host), so only epochs long enough to watch get them; a runtime switch,
                # no recompile.
                scan_options["report"] = (_epoch_seconds(ticks, steps, logs["time"])
                                          >= LIVE_BAR_SECONDS)
            _record(history, epoch, logs)
            if bar is not None:
                bar.update(bar_start["n"] + steps - bar.n)  # callbacks are coarser
                bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()
                                 if k != "time" and "/" not in k}, refresh=False)
            context = {"params": params, "state": state, "opt_state": opt_state,
                       "history": history}
            stop = any([bool(callback(epoch, logs, context)) for callback in callbacks])
            params, state, opt_state = context["params"], context["state"], context["opt_state"]
            if checkpoint is not None:
                checkpoint.save(epoch, {"params": params, "state": state,
                                        "opt_state": opt_state},
                                {"epoch": epoch, "history": history, "run": run,
                                 "stopped": stop, "callbacks": [
                                     cb.state_dict() if hasattr(cb, "state_dict") else None
                                     for cb in callbacks]})
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
    return (params, state, opt_state, history) if net.stateful else (params, opt_state, history)


LIVE_BAR_SECONDS = 1.0  # epochs shorter than this move the progress bar once, at their end


def _examples(data: Any, name: str) -> tuple[Any, Any]:
    """``(inputs, targets)`` from a pair of arrays or an ``ArrayDataset`` of two."""
    if isinstance(data, DataLoader):
        raise ArgumentError(f"fit: {name} must be (inputs, targets) arrays or an "
                            f"ArrayDataset, received a DataLoader; fit shuffles and batches "
                            f"on the device itself: pass loader.dataset and "
                            f"batch_size=loader.batch_size")
    if isinstance(data, ArrayDataset):
        data = data.arrays
    if not (isinstance(data, (tuple, list)) and len(data) == 2
            and all(hasattr(a, "shape") and hasattr(a, "__len__") for a in data)):
        received = (f"a {type(data).__name__} of {len(data)} items"
                    if isinstance(data, (tuple, list, ArrayDataset)) else type(data).__name__)
        raise ArgumentError(f"fit: {name} must be (inputs, targets) arrays or an "
                            f"ArrayDataset of two arrays, received {received}")
    x, y = data
    if jnp.ndim(x) == 0 or jnp.ndim(y) == 0:
        raise ArgumentError(f"fit: {name} inputs and targets need a first axis of examples, "
                            f"received shapes {jnp.shape(x)} and {jnp.shape(y)}")
    if len(x) != len(y):
        raise ArgumentError(f"fit: {name} inputs and targets must have the same length, "
                            f"received {len(x)} and {len(y)}")
    if len(x) == 0:
        raise ArgumentError(f"fit: {name} is empty (0 examples)")
    for part, array in (("inputs", x), ("targets", y)):
        if isinstance(array, np.ndarray):
            check_fits_32_bits(array, f"fit: {name} {part}")
    return x, y


def _check_fit_arguments(net: Any, epochs: Any, batch_size: Any, seed: Any,
                         num_examples: int, telemetry_every: Any) -> None:
    if not isinstance(net, Layer):
        raise ArgumentError(f"fit: net must be a minitorch layer, received "
                            f"{type(net).__name__}")
    check_int("fit", "epochs", epochs, 1)
    check_int("fit", "seed", seed)
    if not is_int(batch_size) or not 1 <= batch_size <= num_examples:
        raise ArgumentError(f"fit: batch_size must be an int in [1, {num_examples}] (the "
                            f"number of training examples), received {batch_size!r}")
    if telemetry_every is not None:
        check_int("fit", "telemetry_every", telemetry_every, 1)


def _describe(net: Layer) -> str:
    """The net's hyperparameters as text, the same in every process (no addresses)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(net))


def _resume(checkpoint: CheckpointManager, template: dict, run: dict,
            callbacks: Sequence[Callback], strict: bool) -> tuple | None:
    """``(tree, history, start_epoch, stopped)`` from the manager's latest checkpoint of
    this run, or None when it holds none."""
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
    return tree, meta["history"], meta["epoch"] + 1, bool(meta.get("stopped"))


def _epoch_seconds(ticks: list[tuple[float, int]], steps: int, measured: float) -> float:
    """How long an epoch of ``steps`` runs: timed between its first and last progress
    updates when it had two (the first epoch's ``measured`` time includes the compile)."""
    if len(ticks) >= 2 and ticks[-1][1] > ticks[0][1]:
        (start, first), (end, last) = ticks[0], ticks[-1]
        return (end - start) / (last - first) * steps
    return measured


def _has_slow_conv(layer: Layer) -> bool:
    """Whether ``layer`` holds a Conv2D that runs as XLA's convolution on the CPU (a grouped
    one), which XLA:CPU runs ~3x slower inside a ``lax.scan`` than as top-level kernels."""
    return any(isinstance(sub, Conv2D) and sub.groups > 1
               for sub in (layer, *named_layers(layer).values())) and \
        jax.default_backend() == "cpu"


def _record(history: History, epoch: int, logs: dict[str, float]) -> None:
    history.setdefault("epoch", []).append(epoch)
    for name, value in logs.items():
        history.setdefault(name, []).append(value)


def _progress_bar(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional extra: no bar rather than no training
        return None
    return tqdm(total=total, unit="step", leave=True)


def _bar_advance(bar: Any, start: dict, ticks: list[tuple[float, int]]
                 ) -> Callable[[Any], None]:
    """``advance(done)`` moves ``bar`` to ``start["n"] + done`` steps (never backwards),
    and notes when it was called in ``ticks``."""

    def advance(done: Any) -> None:
        ticks.append((time.perf_counter(), int(done)))
        bar.update(max(start["n"] + int(done) - bar.n, 0))

    return advance


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
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or \
                not math.isfinite(min_delta) or min_delta < 0:
            raise ArgumentError(f"EarlyStopping: min_delta must be a finite number >= 0, "
                                f"received {min_delta!r}")
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
                self._best_context = jax.tree.map(jnp.copy, best)
            if self.checkpoint is not None:
                self.checkpoint.save_best(best, {"epoch": epoch, self.monitor: value})
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
