"""User metrics for ``fit``, ``evaluate`` and the steps, aggregated correctly over batches.

A metric is either

- a function ``metric(outputs, targets) -> scalar``, the mean over the batch's examples:
  epochs and evaluations average it weighted by each batch's examples (exact for any
  per-example mean: accuracy, a loss, a top-k rate); or
- a :class:`Metric`: ``counts(outputs, targets)`` returns arrays summed over a batch
  (true positives, support, ...), which are summed over batches, and ``value(counts)``
  finishes them. Metrics that are not means, such as F1, need this: the mean of per-batch
  F1 scores is not the F1 score of the epoch.

Pass them by name: ``fit(..., metrics={"f1": metrics.F1(10), "top3": top3})``. A step
reports a :class:`StepMetrics`: read as a dict of its means (``metrics["loss"]``,
``metrics["top3"]``), with counted metrics' per-batch counts in ``metrics.counts`` and a
telemetry step's statistics in ``metrics.telemetry``, apart by structure; the epoch reports
a counted metric's finished value under its name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from minitorch.errors import ArgumentError, DTypeError, ShapeError, check_int
from minitorch.nn.core import Array


@jax.tree_util.register_pytree_node_class
class StepMetrics(Mapping[str, Any]):
    """What a training or evaluation step reports, as a pytree of four fields.

    - ``loss``: the batch's loss, a scalar;
    - ``means``: other batch means by name (``"accuracy"``, user metric functions, a custom
      objective's metrics), scalars;
    - ``counts``: counted metrics' (:class:`Metric`) per-batch counts by metric name;
    - ``telemetry``: a telemetry step's statistics by name (``"grad_norm/3"``, ...;
      :mod:`minitorch.monitor`), empty in a plain step.

    It reads as a dict of the means, the loss first: ``metrics["loss"]``,
    ``metrics["accuracy"]``, ``dict(metrics)``, ``metrics.items()``; counts and telemetry
    are kept apart by structure, so any metric name is free. ``jit``, ``scan``, ``pmean`` and
    ``device_get`` see its leaves (a scanned epoch stacks them, ``(steps,)`` each).

    Example::

        params, opt_state, metrics = step(params, opt_state, (x, y), key)
        print(float(metrics["loss"]), {k: float(v) for k, v in metrics.items()})
    """

    __slots__ = ("counts", "loss", "means", "telemetry")
    FIELDS = ("loss", "means", "counts", "telemetry")  # the order of the pytree's children

    def __init__(self, loss: Any, means: Mapping[str, Any] | None = None,
                 counts: Mapping[str, Any] | None = None,
                 telemetry: Mapping[str, Any] | None = None):
        self.loss = loss
        self.means = dict(means or {})
        self.counts = dict(counts or {})
        self.telemetry = dict(telemetry or {})

    def __getitem__(self, name: str) -> Any:
        return self.loss if name == "loss" else self.means[name]

    def __iter__(self) -> Iterator[str]:
        yield "loss"
        yield from self.means

    def __len__(self) -> int:
        return 1 + len(self.means)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"StepMetrics({fields})"

    def replace(self, **fields: Any) -> StepMetrics:
        """A copy with the given fields replaced (``metrics.replace(telemetry={})``)."""
        given = {name: getattr(self, name) for name in self.FIELDS}
        return StepMetrics(**{**given, **fields})

    def tree_flatten(self) -> tuple[tuple[Any, ...], None]:
        return (self.loss, self.means, self.counts, self.telemetry), None

    @classmethod
    def tree_unflatten(cls, _: None, children: Any) -> StepMetrics:
        # Built without __init__: JAX may unflatten with placeholder leaves.
        metrics = object.__new__(cls)
        for name, value in zip(cls.FIELDS, children):
            object.__setattr__(metrics, name, value)
        return metrics


@runtime_checkable
class Metric(Protocol):
    """A metric finished from counts summed over batches."""

    def counts(self, outputs: Array, targets: Array) -> dict[str, Array]:
        """Arrays summed over the batch's examples."""
        ...

    def value(self, counts: dict[str, Array]) -> Array:
        """The metric from counts summed over every batch."""
        ...


MetricLike = Callable[[Array, Array], Array] | Metric


@dataclasses.dataclass(frozen=True)
class F1:
    """Macro-averaged F1 of class ids ``targets (N, ...)`` against the argmax of
    ``outputs (N, ..., C)``, as ``sklearn.metrics.f1_score(average="macro")`` on the
    flattened labels (a class with no true or predicted example scores 0): token-level
    targets ``(N, L)`` with outputs ``(N, L, C)`` count every token.

    Shapes are checked: ``targets.shape`` must be ``outputs.shape[:-1]`` (``(N, 1)`` labels
    against ``(N, C)`` outputs are refused, never broadcast to ``N x N`` pairs), integer
    class ids (not one-hot rows), and ``C == num_classes``."""

    num_classes: int

    def __post_init__(self):
        check_int("F1", "num_classes", self.num_classes, 2)

    def counts(self, outputs: Array, targets: Array) -> dict[str, Array]:
        check_class_ids(type(self).__name__, outputs, targets, self.num_classes)
        predicted = jnp.argmax(outputs, axis=-1).reshape(-1)
        targets = jnp.reshape(targets, -1)
        classes = jnp.arange(self.num_classes)
        hit = (predicted == targets)[..., None]
        is_pred = predicted[..., None] == classes
        is_true = targets[..., None] == classes
        return {"tp": jnp.sum(hit & is_true, axis=0), "pred": jnp.sum(is_pred, axis=0),
                "true": jnp.sum(is_true, axis=0)}

    def value(self, counts: dict[str, Array]) -> Array:
        tp, pred, true = (jnp.asarray(counts[k], jnp.float32) for k in ("tp", "pred", "true"))
        denominator = pred + true
        f1 = jnp.where(denominator > 0, 2 * tp / jnp.maximum(denominator, 1), 0.0)
        return jnp.mean(f1)


def check_class_ids(where: str, outputs: Array, targets: Array, num_classes: int) -> None:
    """Raise ShapeError (or DTypeError) unless ``targets`` are integer class ids shaped
    ``outputs.shape[:-1]`` and ``outputs`` has ``num_classes`` scores on its last axis."""
    out_shape, shape = tuple(jnp.shape(outputs)), tuple(jnp.shape(targets))
    if not out_shape or out_shape[-1] != num_classes:
        raise ShapeError(where, f"expected outputs of shape (..., num_classes={num_classes}), "
                         f"received {out_shape}")
    if shape == out_shape:
        raise ShapeError(where, f"expected class ids of shape {out_shape[:-1]}, received "
                         f"targets shaped like the outputs {shape} (one-hot or probability "
                         f"rows?): pass targets.argmax(-1)")
    if shape != out_shape[:-1]:
        raise ShapeError(where, f"expected targets of shape {out_shape[:-1]} (the outputs' "
                         f"{out_shape} without the class axis), received {shape}")
    if not jnp.issubdtype(jnp.result_type(targets), jnp.integer):
        raise DTypeError(where, f"expected integer class ids, received "
                         f"{jnp.result_type(targets)}")


def check(metrics: Mapping[str, MetricLike] | None, where: str) -> dict[str, MetricLike]:
    """``metrics`` as a dict of name -> metric, or an ArgumentError naming ``where``."""
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise ArgumentError(f"{where}: metrics must be a dict of name -> metric function or "
                            f"Metric, received {type(metrics).__name__}")
    for name, metric in metrics.items():
        if not isinstance(name, str) or name == "loss":
            raise ArgumentError(f"{where}: metric names must be strings other than 'loss', "
                                f"received {name!r}")
        if not (isinstance(metric, Metric) or callable(metric)):
            raise ArgumentError(f"{where}: metric {name!r} must be a function (outputs, "
                                f"targets) -> scalar or a Metric, received "
                                f"{type(metric).__name__}")
    return dict(metrics)


def compute(metrics: Mapping[str, MetricLike], outputs: Array, targets: Array
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """One batch's metrics: ``(means by name, counted metrics' counts by name)``."""
    means: dict[str, Any] = {}
    counted = {}
    for name, metric in metrics.items():
        if isinstance(metric, Metric):
            counted[name] = metric.counts(outputs, targets)
        else:
            means[name] = jnp.asarray(metric(outputs, targets), jnp.float32)
    return means, counted


def finish(metrics: Mapping[str, MetricLike], counts: Mapping[str, Any]) -> dict[str, float]:
    """Counted metrics' values from their summed counts."""
    finished = {}
    for name, c in counts.items():
        metric = metrics[name]
        assert isinstance(metric, Metric)  # only counted metrics have counts
        finished[name] = float(metric.value(c))
    return finished
