"""Training and evaluation steps built from a net, a loss and an optax optimiser.

A step is a pure function, ``jax.jit``-compiled as a whole (params and optimiser state
donated)::

    step = train.make_step(net, losses.softmax_cross_entropy, optim.sgd(0.1, momentum=0.9))
    params, opt_state, metrics = step(params, opt_state, (x, y), key)

For a net with stateful layers (``BatchNorm``) the state is one extra argument and one
extra return, right after the params::

    params, state, opt_state, metrics = step(params, state, opt_state, (x, y), key)

``metrics`` is a :class:`~minitorch.metrics.StepMetrics`, read as a dict: ``"loss"`` and,
when the targets are integer class ids of the outputs, ``"accuracy"``. With ``axis_name``
the gradients, metrics (and, through ``BatchNorm(axis_name=)``, batch statistics) are
averaged with ``lax.pmean``, so the step runs under ``jax.pmap``; the same step runs
unchanged under ``jax.jit`` with a sharded batch (see :mod:`minitorch.parallel`).

Nothing here is required: a step is ``net.apply``, a loss, ``jax.value_and_grad`` and an
optax update, and the README shows how to write one by hand.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, cast

import jax
import jax.numpy as jnp
import optax
from jax.experimental import checkify

from minitorch import freeze, monitor, optim
from minitorch import metrics as metric_fns
from minitorch.data import num_examples
from minitorch.errors import ArgumentError, check_int
from minitorch.metrics import MetricLike, StepMetrics
from minitorch.nn.containers import resolve_state
from minitorch.nn.core import Array, Layer, Params, PRNGKey, State

Batch = Any  # a pytree of arrays with a leading batch axis, typically (inputs, targets)
Metrics = StepMetrics
Loss = Callable[[Array, Array], Array]
# A custom objective: (params, batch, key) -> loss, or (loss, metrics dict).
Objective = Callable[[Params, Batch, PRNGKey], Any]


class Update(Protocol):
    """The uncompiled step every loop builds on (:func:`make_update`); ``state`` is None
    for a net without stateful layers."""

    def __call__(self, params: Params, state: State, opt_state: Any, batch: Batch,
                 key: PRNGKey | None, /) -> tuple[Params, State, Any, Metrics]: ...


class Step(Protocol):
    """A training step (:func:`make_step`): ``step(params, opt_state, batch, key) ->
    (params, opt_state, metrics)``, or with the net's state after the params
    ``step(params, state, opt_state, batch, key) -> (params, state, opt_state, metrics)``;
    a telemetry step also takes ``telemetry=``."""

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]: ...


def _class_ids(outputs: Any, targets: Any) -> bool:
    """Whether ``targets (...)`` are integer class ids of ``outputs (..., C)`` (both arrays,
    not pytrees)."""
    return (hasattr(outputs, "dtype") and hasattr(targets, "dtype")
            and jnp.issubdtype(jnp.result_type(targets), jnp.integer)
            and jnp.ndim(outputs) == jnp.ndim(targets) + 1)


def classification_metrics(outputs: Array, targets: Array) -> dict[str, Array]:
    """``{"accuracy": ...}`` when ``targets`` are integer class ids of ``outputs (..., C)``."""
    if _class_ids(outputs, targets):
        return {"accuracy": (outputs.argmax(axis=-1) == targets).mean(dtype=jnp.float32)}
    return {}


def _forward(net: Layer, params: Params, state: State, x: Array, key: PRNGKey | None,
             train: bool, tap: Any = None) -> tuple[Array, State]:
    # None stands for "no state" in the steps' uniform signature, as in a public call.
    y, new_state, _ = net.run(params, resolve_state(net, state), x, key=key, train=train,
                              tap=tap)
    return y, new_state


def _unpack(batch: Batch) -> tuple[Array, Array]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        received = (f"a {type(batch).__name__} of {len(batch)} items"
                    if isinstance(batch, (tuple, list)) else
                    f"an array of shape {jnp.shape(batch)}" if hasattr(batch, "shape")
                    else type(batch).__name__)
        raise TypeError(f"make_step: expected batch as a pair (inputs, targets), received "
                        f"{received}")
    return batch[0], batch[1]


def value_checks(x: Array, y: Array, outputs: Array, value: Array) -> None:
    """The checks of a checked step: values, which ``jit`` cannot inspect at trace time."""
    for leaf in jax.tree.leaves(x):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            bad = jnp.sum(~jnp.isfinite(leaf))
            checkify.check(bad == 0, "checked step: the inputs hold {bad} NaN or inf values",
                           bad=bad)
    if _class_ids(outputs, y):
        classes = outputs.shape[-1]
        bad = jnp.sum((y < 0) | (y >= classes))
        checkify.check(bad == 0, f"checked step: {{bad}} labels are class ids outside "
                       f"[0, {classes}) (the net has {classes} outputs)", bad=bad)
    checkify.check(jnp.isfinite(value), "checked step: the loss is {value}", value=value)


def supervised_objective(net: Layer, loss: Loss, *, accuracy: bool = True,
                         checked: bool = False, telemetry: bool = False,
                         metrics: Mapping[str, MetricLike] | None = None) -> Callable:
    """``(params, state, (x, y), key) -> (loss, (metrics, state))`` for ``loss(net(x), y)``;
    ``metrics`` are user metrics of the outputs and targets (:mod:`minitorch.metrics`)."""
    user_metrics = metric_fns.check(metrics, "make_step")

    def objective(params, state, batch, key):
        x, y = _unpack(batch)
        captured: dict[str, Any] = {}  # with telemetry, every sub-layer's output, by path
        tap = captured.__setitem__ if telemetry else None
        outputs, new_state = _forward(net, params, state, x, key, train=True, tap=tap)
        state = new_state if state is not None else None
        value = loss(outputs, y)
        if checked:
            value_checks(x, y, outputs, value)
        means = classification_metrics(outputs, y) if accuracy else {}
        user_means, counts = metric_fns.compute(user_metrics, outputs, y)
        stats = _flat("act", monitor.activation_stats(net, captured)) if telemetry else {}
        return value, (StepMetrics(value, {**means, **user_means}, counts, stats), state)

    return objective


def _flat(prefix: str, stats: dict[str, Any]) -> dict[str, Array]:
    """``{"1": {"mean": m}}`` -> ``{"act_mean/1": m}``: flat scalar metrics for the history."""
    flat = {}
    for where, entry in stats.items():
        if isinstance(entry, dict):
            for name, value in entry.items():
                flat[f"{prefix}_{name}/{where}"] = value
        else:
            flat[f"{prefix}/{where}"] = entry
    return flat


def telemetry_metrics(grads: Params, updates: Params, params: Params) -> dict[str, Array]:
    """Gradient norms per layer, mean and variance per parameter array, and update-to-weight
    ratios, as flat metrics (``grad_norm/3``, ``param_mean/3.W``, ``update_ratio/3.W``, ...)."""
    return {**_flat("grad_norm", monitor.grad_norms(grads)),
            **_flat("param", monitor.param_stats(params)),
            **_flat("update_ratio", monitor.update_ratios(updates, params))}


def _custom_objective(objective: Objective) -> Callable:
    def wrapped(params, state, batch, key):
        value, metrics = objective_metrics(objective(params, batch, key))
        return value, (metrics, state)

    return wrapped


def objective_metrics(out: Any) -> tuple[Array, StepMetrics]:
    """A custom objective's ``loss`` or ``(loss, {name: value})`` as the loss and its
    :class:`StepMetrics`."""
    value, means = out if isinstance(out, tuple) else (out, {})
    if "loss" in means:
        raise ArgumentError("custom objective: its metrics dict must not hold 'loss' (the "
                            "loss it returns is reported as 'loss'); name it otherwise")
    return value, StepMetrics(value, means)


def make_step(net: Layer | None, loss: Loss | Objective,
              optimizer: optax.GradientTransformation, *, axis_name: Any = None,
              jit: bool = True, donate: bool = True, accuracy: bool = True,
              checked: bool = False, telemetry: bool = False,
              frozen: Sequence[str] = (), trainable: Sequence[str] | None = None,
              metrics: Mapping[str, MetricLike] | None = None) -> Step:
    """Build a training step.

    Args:
      net: the model; or None, when ``loss`` is a custom objective.
      loss: ``loss(outputs, targets) -> scalar`` applied to ``net.apply(params, x)`` and ``y``
        of a batch ``(x, y)``; with ``net=None``, any pure
        ``objective(params, batch, key) -> loss`` or ``-> (loss, metrics dict)``.
      optimizer: an optax transform, e.g. ``optim.sgd(0.1, momentum=0.9)``.
      axis_name: average gradients and metrics over this pmap axis (then pass ``jit=False``
        and wrap the step in ``jax.pmap(..., axis_name=axis_name)``).
      jit: return the step ``jax.jit``-compiled.
      donate: with ``jit``, donate the params, state and optimiser state buffers to the
        update (the arrays passed in must not be used afterwards).
      accuracy: add ``"accuracy"`` to the metrics when the targets are class ids. It costs
        an argmax per step: about a fifth of a 4-16-3 MLP's step, nothing on larger nets.
      checked: also check what ``jit`` cannot check at trace time, the values: NaN or inf
        in the inputs, class ids outside ``[0, C)``, a non-finite loss (``jax.experimental.
        checkify``); a failed check raises ValueError after the step. For debugging: it
        costs a few reductions per step, and donates nothing, so the arrays passed in stay
        valid when a check fails.
      telemetry: fill ``metrics.telemetry``, a dict computed inside the step: every
        layer's gradient norm
        (``grad_norm/i``), every parameter's mean and variance (``param_mean/i.W``,
        ``param_var/i.W``) and update-to-weight ratio (``update_ratio/i.W``), and every
        layer's activation mean, variance and, after a ReLU, dead fraction
        (``act_mean/i``, ``act_var/i``, ``act_dead/i``). See :mod:`minitorch.monitor`.
        The step then takes a keyword ``telemetry`` (default True) that chooses the
        recording interval per call: ``step(..., telemetry=i % 10 == 0)`` records every
        10th step, and the calls with ``telemetry=False`` run the plain step's own compiled
        program, so they cost nothing extra. (On the digits CNN, the statistics cost about
        20% of a step: reading every activation once is already ~7%; every 10th step they
        cost ~2%. benchmarks/RESULTS.md has the figures.)
      frozen: paths of sub-layers or params to freeze (``["0", "2.attn"]``): they stay
        bit-unchanged (zero updates, whatever the optimiser adds) and XLA computes no
        weight gradients for them. The optimiser state is ``optimizer.init(params)`` as
        usual. See :mod:`minitorch.freeze`.
      trainable: the inverse of ``frozen``: only the params under these paths train
        (``["head"]``, ``["4"]``), every other stays bit-unchanged.
      metrics: user metrics by name (:mod:`minitorch.metrics`): functions ``(outputs,
        targets) -> scalar`` (batch means) or ``Metric`` objects, whose per-batch counts
        go in ``metrics.counts``.

    Returns:
      ``step(params, opt_state, batch, key) -> (params, opt_state, metrics)``, or for a net
      with stateful layers ``step(params, state, opt_state, batch, key) ->
      (params, state, opt_state, metrics)``. ``key`` feeds dropout; it may be None for nets
      without stochastic layers. With ``telemetry=True`` the step also takes the keyword
      ``telemetry: bool = True`` described above.
    """
    if checked and (axis_name is not None or not jit):
        raise ValueError("make_step: checked=True works with jit=True and no axis_name")
    build = functools.partial(_build_step, net, loss, optimizer, axis_name=axis_name,
                              jit=jit, donate=donate, accuracy=accuracy, checked=checked,
                              frozen=freeze.selection(frozen, trainable, "make_step"),
                              metrics=metrics)
    if not telemetry:
        return build(telemetry=False)
    steps = {False: build(telemetry=False), True: build(telemetry=True)}

    def step(*args: Any, telemetry: bool = True) -> Any:
        # Two compiled programs, chosen in Python: a plain call pays nothing for telemetry.
        return steps[bool(telemetry)](*args)

    return step


def _build_step(net: Layer | None, loss: Loss | Objective,
                optimizer: optax.GradientTransformation, *, axis_name: Any, jit: bool,
                donate: bool, accuracy: bool, checked: bool, telemetry: bool,
                frozen: freeze.Paths, metrics: Mapping[str, MetricLike] | None) -> Callable:
    """One compiled step of :func:`make_step` (its arguments, already checked)."""
    update = make_update(net, loss, optimizer, axis_name=axis_name, accuracy=accuracy,
                         checked=checked, telemetry=telemetry, frozen=frozen, metrics=metrics)
    stateful = net is not None and net.stateful

    def stateless(params, opt_state, batch, key=None):
        params, _, opt_state, metrics = update(params, None, opt_state, batch, key)
        return params, opt_state, metrics

    step: Callable = update if stateful else stateless

    if not jit:
        return step
    if not checked:
        if not donate:
            return jax.jit(step)
        names = ("params", "state", "opt_state") if stateful else ("params", "opt_state")
        return _guard_donation(jax.jit(step, donate_argnums=tuple(range(len(names)))), names)
    # No donation: after a failed check the caller still holds valid params to inspect.
    compiled = jax.jit(checkify.checkify(step))

    def checked_step(*args):
        error, out = compiled(*args)
        if (message := error.get()) is not None:
            raise ValueError(message.split(" (`check` failed)")[0])
        return out

    return checked_step


def _guard_donation(compiled: Callable, names: tuple[str, ...]) -> Callable:
    """``compiled`` (which donates its first ``len(names)`` arguments), with the mistakes
    around donation made clear: passing arrays that an earlier call donated raises a
    ValueError saying so, and an optimiser state holding the params themselves is copied.

    Checking every leaf before every call costs 10-20 us, as much as a whole step of a tiny
    MLP (benchmarks/step_vs_raw.py), so the full check runs on the first call, when the
    params container is the one the previous call donated (the usual mistake: not
    reassigning the returned params), and after a call fails over a donated buffer.
    """
    n = len(names)
    donated = [-1]  # id() of the params container the previous call donated; -1 before any

    def step(*args: Any) -> Any:
        trees = args[:n]
        if donated[0] in (-1, id(trees[0])):
            trees = donatable(trees, names, "step")
        donated[0] = id(args[0])
        try:
            return compiled(*trees, *args[n:])
        except Exception:
            # Told by the arrays' state, not the message: a deleted or twice-held buffer.
            if not _unsafe_to_donate(trees):
                raise
            return compiled(*donatable(trees, names, "step"), *args[n:])

    return step


def _unsafe_to_donate(trees: Any) -> bool:
    """Whether ``trees`` hold a deleted (donated) array or one array twice."""
    leaves = jax.tree.leaves(trees)
    return (len(set(map(id, leaves))) < len(leaves)
            or any(getattr(leaf, "is_deleted", bool)() for leaf in leaves))


def donatable(trees: Any, names: tuple[str, ...], where: str) -> tuple:
    """``trees`` (one per name) made safe to donate together, or a clear error.

    An array donated to an earlier call is deleted: passing it again raises a ValueError
    that says so. An array held twice (an optimiser state holding the params themselves,
    as ``optax.contrib.prodigy``'s does) is copied, since one buffer cannot be donated twice.
    """
    leaves = jax.tree.leaves(trees)
    # The fast path runs before every step (~3 us for a small MLP): no isinstance checks
    # (jax.Array is an ABC: ~0.3 us a leaf), no rebuilt trees.
    for leaf in leaves:
        try:
            if leaf.is_deleted():
                raise ValueError(_donated_message(names, trees, where))
        except AttributeError:  # not a jax.Array: never donated
            pass
    if len(set(map(id, leaves))) == len(leaves):
        return tuple(trees)
    held: set[int] = set()

    def unshare(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and id(leaf) in held:
            return jax.device_put(leaf, may_alias=False)  # a copy, no program compiled
        held.add(id(leaf))
        return leaf

    return tuple(jax.tree.map(unshare, tree) for tree in trees)


def _donated_message(names: tuple[str, ...], trees: Any, where: str) -> str:
    name = next(n for n, tree in zip(names, trees)
                if any(getattr(leaf, "is_deleted", bool)() for leaf in jax.tree.leaves(tree)))
    return (f"{where}: {name} holds arrays that were donated to an earlier call (their "
            f"buffers are deleted). Pass the {name} that call returned, which replace the "
            f"ones passed in; or build the step with donate=False to keep them")


def make_update(net: Layer | None, loss: Loss | Objective,
                optimizer: optax.GradientTransformation, *, axis_name: Any = None,
                accuracy: bool = True, checked: bool = False,
                telemetry: bool = False, frozen: freeze.Paths = (),
                metrics: Mapping[str, MetricLike] | None = None) -> Update:
    """The uncompiled step with the uniform signature every loop here builds on:
    ``update(params, state, opt_state, batch, key) -> (params, state, opt_state, metrics)``
    (``state`` is None for a net without stateful layers). ``frozen``: paths of sub-layers
    (or params) that stay unchanged and get no weight gradients, or ``freeze.AllBut(paths)``
    (:mod:`minitorch.freeze`)."""
    if net is None:
        if metrics:
            raise ArgumentError("make_step: metrics= needs a net; a custom objective returns "
                                "its own metrics, as (loss, {name: value})")
        objective = _custom_objective(cast(Objective, loss))
    else:
        if not isinstance(net, Layer):
            raise ArgumentError(f"make_step: net must be a minitorch layer or None, received "
                                f"{type(net).__name__}")
        objective = supervised_objective(net, cast(Loss, loss), accuracy=accuracy,
                                         checked=checked,
                                         telemetry=telemetry, metrics=metrics)
    if frozen:
        optimizer = freeze.optimizer(optimizer, frozen, net)
        trainable = objective

        def objective(params, state, batch, key):
            return trainable(freeze.stop_gradients(params, frozen, net), state, batch, key)
    def scaled(params, state, batch, key, scale):
        value, aux = objective(params, state, batch, key)
        # Without a loss scale (the Python float 1.0) the program is the plain one.
        return (value if isinstance(scale, float) else value * scale), aux

    grad_fn = jax.value_and_grad(scaled, has_aux=True)

    def update(params, state, opt_state, batch, key):
        # The loss scale of float16 mixed precision (optim.dynamic_loss_scale), else 1.0.
        scale = optim.loss_scale(opt_state)
        (_, (metrics, state)), grads = grad_fn(params, state, batch, key, scale)
        if axis_name is not None:
            grads, metrics = jax.lax.pmean((grads, metrics), axis_name)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        if telemetry:
            metrics = metrics.replace(telemetry={**metrics.telemetry, **telemetry_metrics(
                grads, updates, params)})
        return optax.apply_updates(params, updates), state, opt_state, metrics

    return update


def make_eval_step(net: Layer | None, loss: Loss | Objective, *, axis_name: Any = None,
                   jit: bool = True, metrics: Mapping[str, MetricLike] | None = None
                   ) -> Callable:
    """``eval_step(params, batch, state=None) -> metrics`` in evaluation mode (no dropout,
    BatchNorm's running statistics), with the same metrics as the training step; with
    ``net=None``, ``loss`` is a custom objective ``(params, batch, key) -> loss`` or
    ``(loss, metrics)``, called with ``key=None``."""
    user_metrics = metric_fns.check(metrics, "make_eval_step")

    def eval_step(params, batch, state=None):
        if net is None:
            _, metrics = objective_metrics(cast(Objective, loss)(params, batch, None))
        else:
            x, y = _unpack(batch)
            outputs, _ = _forward(net, params, state, x, None, train=False)
            user_means, counts = metric_fns.compute(user_metrics, outputs, y)
            metrics = StepMetrics(cast(Loss, loss)(outputs, y),
                                  {**classification_metrics(outputs, y), **user_means}, counts)
        return jax.lax.pmean(metrics, axis_name) if axis_name is not None else metrics

    return jax.jit(eval_step) if jit else eval_step


def predict(net: Layer, params: Params, x: Any, *, state: State = None,
            batch_size: int | None = None) -> Any:
    """``net``'s outputs on ``x`` (an array or a pytree of arrays sharing the first axis)
    in evaluation mode, in batches of ``batch_size`` if given; compiled once per shape."""
    check_net("predict", net)
    count = num_examples(x, "predict: x")
    if count == 0:
        shapes = [tuple(jnp.shape(leaf)) for leaf in jax.tree.leaves(x)]
        raise ArgumentError(f"predict: x must hold at least one example (axis 0), received "
                            f"shape {', '.join(map(str, shapes))}")
    if batch_size is not None:
        check_int("predict", "batch_size", batch_size, 1)
    params, state = donatable((params, state), ("params", "state"), "predict")
    forward = _compiled_forward(net)
    if batch_size is None:
        return forward(params, state, x)
    parts = [forward(params, state, jax.tree.map(lambda a, i=i: a[i:i + batch_size], x))
             for i in range(0, count, batch_size)]
    return jax.tree.map(lambda *p: jnp.concatenate(p), *parts)


def evaluate(net: Layer | None, loss: Loss | Objective, params: Params, data: Any, *,
             state: State = None, batch_size: int = 1024,
             metrics: Mapping[str, MetricLike] | None = None) -> dict[str, float]:
    """Metrics of ``net`` on all of ``data = (inputs, targets)`` (each an array or a pytree
    of arrays sharing the first axis): example-weighted means over batches, and counted
    metrics (:mod:`minitorch.metrics`) from counts summed over batches. With ``net=None``,
    ``loss`` is a custom objective (as :func:`make_step`'s) and ``data`` its batches'
    source. Compiled once per net, loss, metrics and batch shape: repeated calls (``fit``'s
    validation every epoch) reuse the program."""
    user_metrics = metric_fns.check(metrics, "evaluate")
    if net is not None:
        check_net("evaluate", net)
    check_int("evaluate", "batch_size", batch_size, 1)
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ArgumentError(f"evaluate: data must be a pair (inputs, targets), received "
                            f"{type(data).__name__}")
    count = num_examples(tuple(data), "evaluate: data")
    if count == 0:
        raise ArgumentError("evaluate: data must hold at least one example, received 0")
    params, state = donatable((params, state), ("params", "state"), "evaluate")
    eval_step = _compiled_eval(net, loss, user_metrics)
    totals: dict[str, float] = {}
    counts: Any = None
    for i in range(0, count, batch_size):
        batch = jax.tree.map(lambda a, i=i: a[i:i + batch_size], tuple(data))
        found = eval_step(params, batch, state)
        if found.counts:
            counts = found.counts if counts is None else jax.tree.map(jnp.add, counts,
                                                                       found.counts)
        size = min(batch_size, count - i)
        for name, value in found.items():
            totals[name] = totals.get(name, 0.0) + float(value) * size
    means = {name: total / count for name, total in totals.items()}
    return {**means, **metric_fns.finish(user_metrics, counts or {})}


def check_net(where: str, net: Any) -> None:
    """An ArgumentError naming ``where`` unless ``net`` is a minitorch layer."""
    if not isinstance(net, Layer):
        raise ArgumentError(f"{where}: net must be a minitorch layer, received "
                            f"{type(net).__name__}")


@functools.lru_cache(maxsize=64)
def _compiled_forward(net: Layer) -> Callable:
    # Layers are frozen and hashable: one compiled function serves every call with a net.
    return jax.jit(lambda params, state, x: _forward(net, params, state, x, None, False)[0])


def _compiled_eval(net: Layer | None, loss: Any, metrics: dict[str, MetricLike]) -> Callable:
    """One compiled evaluation per net, loss and metrics (a fresh one when a metric is not
    hashable)."""
    try:
        return _cached_eval(net, loss, tuple(metrics.items()))
    except TypeError:  # an unhashable metric object
        return make_eval_step(net, loss, metrics=metrics)


@functools.lru_cache(maxsize=64)
def _cached_eval(net: Layer | None, loss: Any, metrics: tuple) -> Callable:
    return make_eval_step(net, loss, metrics=dict(metrics))
