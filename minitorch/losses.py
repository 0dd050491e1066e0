"""Loss functions: pure functions of arrays, numerically stable, PyTorch's semantics.

Each takes ``reduction``: ``"mean"`` (default; the mean over every element of the
unreduced loss, as PyTorch), ``"sum"``, or ``"none"`` (the unreduced loss: per element
for ``mse`` and the binary losses, per example for ``softmax_cross_entropy``), and
``where=``, a boolean mask of the unreduced loss's shape: only the True entries count
(``"mean"`` averages over them), as PyTorch's ``ignore_index`` for padded sequences.

All stay finite for float32 logits of magnitude 1e4 and probabilities of exactly 0 and 1.
Inputs narrower than float32 (bfloat16, float16, as mixed precision produces) are
computed in float32, and the loss is float32; their gradients come back in the inputs'
dtype.
Shapes are checked at trace time; values (a probability outside [0, 1], a class id out of
range) cannot be checked under ``jit``: an out-of-range class id gives a NaN loss.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from minitorch.errors import DTypeError, ShapeError
from minitorch.nn.checks import check_ids
from minitorch.nn.precision import at_least_f32
from minitorch.validate import real

Array = jax.Array
Reduction = Literal["mean", "sum", "none"]


def _reduce(loss: Array, reduction: str, name: str, keep: Array | None = None) -> Array:
    """Reduce ``loss``; with ``keep`` (a boolean mask of its shape) only the kept entries
    count: the others are 0 under ``"none"`` and ``"sum"``, and ``"mean"`` divides by the
    number kept (NaN when none is, as PyTorch's ``ignore_index``)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', received "
                         f"{reduction!r}")
    if keep is not None:
        loss = jnp.where(keep, loss, jnp.zeros((), loss.dtype))
    if reduction == "mean":
        return loss.mean() if keep is None else loss.sum() / keep.sum(dtype=loss.dtype)
    return loss.sum() if reduction == "sum" else loss


def _mask(keep: Array | None, shape: tuple[int, ...], what: str, name: str) -> Array | None:
    """``keep`` checked: None, or a boolean array of ``shape``."""
    if keep is None:
        return None
    dtype = jnp.result_type(keep)
    if dtype != jnp.bool_:
        raise DTypeError(name, f"expected a boolean where= (True for the entries that count), "
                         f"received {dtype}")
    if tuple(jnp.shape(keep)) != tuple(shape):
        raise ShapeError(name, f"expected where= of shape {tuple(shape)} ({what}), received "
                         f"{tuple(jnp.shape(keep))}")
    return jnp.asarray(keep)


def _at_least_f32(*arrays: Array) -> tuple[Array, ...]:
    """The floating arrays among ``arrays`` in at least float32 (integer labels unchanged)."""
    return tuple(at_least_f32(jnp.asarray(a)) if jnp.issubdtype(jnp.result_type(a), jnp.floating)
                 else a for a in arrays)


def _same_shape(a: Array, b: Array, names: tuple[str, str], where: str) -> None:
    # No broadcasting: (N, 1) against (N,) would silently become an (N, N) loss.
    if jnp.shape(a) != jnp.shape(b):
        raise ShapeError(where, f"expected {names[1]} of the same shape as {names[0]} "
                         f"{jnp.shape(a)}, received {jnp.shape(b)}")


def _floating(x: Array, name: str, where: str) -> None:
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise DTypeError(where, f"expected floating-point {name}, received {dtype}")


def mse(pred: Array, target: Array, *, where: Array | None = None,
        reduction: Reduction = "mean") -> Array:
    """Mean squared error ``(pred - target) ** 2``.

    Args:
      pred, target: float arrays of the same shape ``(...)``.
      where: optional boolean ``(...)``: only the True elements count (``"mean"`` averages
        over them; the others are 0 under ``"none"``).
      reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per element, shape ``(...)``).
    """
    _same_shape(pred, target, ("pred", "target"), "mse")
    keep = _mask(where, jnp.shape(pred), "per element", "mse")
    pred, target = _at_least_f32(pred, target)
    return _reduce(jnp.square(pred - target), reduction, "mse", keep)


@jax.custom_jvp
def _bce(probs: Array, targets: Array) -> Array:
    # PyTorch clamps each log at -100 so that probabilities of exactly 0 and 1 stay finite.
    log_p = jnp.maximum(jnp.log(probs), -100.0)
    log_not_p = jnp.maximum(jnp.log1p(-probs), -100.0)
    return -(targets * log_p + (1 - targets) * log_not_p)


@_bce.defjvp
def _bce_jvp(primals, tangents):
    probs, targets = primals
    d_probs, d_targets = tangents
    loss = _bce(probs, targets)
    # d/dp = (p - t) / (p (1 - p)), its denominator clamped as in PyTorch's backward.
    eps = jnp.asarray(1e-12, loss.dtype)
    grad_p = (probs - targets) / jnp.maximum(probs * (1 - probs), eps)
    grad_t = jnp.maximum(jnp.log1p(-probs), -100.0) - jnp.maximum(jnp.log(probs), -100.0)
    return loss, grad_p * d_probs + grad_t * d_targets


def binary_cross_entropy(probs: Array, targets: Array, *, where: Array | None = None,
                         reduction: Reduction = "mean") -> Array:
    """``-(t log p + (1 - t) log(1 - p))``, each log clamped at -100 as in PyTorch.

    Args:
      probs: probabilities in [0, 1], shape ``(...)``.
      targets: float targets in [0, 1], same shape.
      where: optional boolean of the same shape: only the True elements count.
      reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per element).

    The gradient with respect to ``probs`` is ``(p - t) / max(p (1 - p), 1e-12)``, finite at
    exactly 0 and 1. Prefer :func:`binary_cross_entropy_with_logits` on raw scores.
    """
    name = "binary_cross_entropy"
    _floating(probs, "probs", name)
    _floating(targets, "targets", name)
    _same_shape(probs, targets, ("probs", "targets"), name)
    keep = _mask(where, jnp.shape(probs), "per element", name)
    probs, targets = _at_least_f32(probs, targets)
    dtype = jnp.result_type(probs, targets)
    return _reduce(_bce(probs.astype(dtype), targets.astype(dtype)), reduction, name, keep)


def binary_cross_entropy_with_logits(logits: Array, targets: Array, *,
                                     where: Array | None = None,
                                     reduction: Reduction = "mean") -> Array:
    """Binary cross-entropy of ``sigmoid(logits)``, computed stably on the logits.

    ``max(x, 0) - x t + log(1 + exp(-|x|))``; the gradient is ``sigmoid(x) - t``.

    Args:
      logits: raw scores, shape ``(...)``.
      targets: float targets in [0, 1], same shape.
      where: optional boolean of the same shape: only the True elements count.
      reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per element).
    """
    name = "binary_cross_entropy_with_logits"
    _floating(logits, "logits", name)
    _floating(targets, "targets", name)
    _same_shape(logits, targets, ("logits", "targets"), name)
    # softplus is logaddexp(x, 0), whose JVP is sigmoid(x) everywhere; the equal form
    # max(x, 0) + log1p(exp(-|x|)) lets autodiff take one-sided derivatives at x = 0.
    keep = _mask(where, jnp.shape(logits), "per element", name)
    logits, targets = _at_least_f32(logits, targets)
    loss = jax.nn.softplus(logits) - logits * targets
    return _reduce(loss, reduction, name, keep)


def _log_softmax(logits: Array) -> tuple[Array, Array]:
    """``(log_softmax, softmax)`` over the last axis from one shifted-exp pass."""
    shifted = logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True))
    exp = jnp.exp(shifted)
    total = exp.sum(axis=-1, keepdims=True)
    return shifted - jnp.log(total), exp / total


@jax.custom_jvp
def _softmax_xent(logits: Array, targets: Array) -> Array:
    return -_xlogy_sum(targets, _log_softmax(logits)[0])


def _xlogy_sum(targets: Array, log_probs: Array) -> Array:
    # 0 * log(0) counts as 0, so masked (-inf) logits with zero target stay finite.
    return jnp.where(targets == 0, 0, targets * log_probs).sum(axis=-1)


@_softmax_xent.defjvp
def _softmax_xent_jvp(primals, tangents):
    logits, targets = primals
    d_logits, d_targets = tangents
    # One log-sum-exp pass gives the loss and the softmax that its gradient needs.
    log_probs, probs = _log_softmax(logits)
    loss = -_xlogy_sum(targets, log_probs)
    grad_logits = probs * targets.sum(axis=-1, keepdims=True) - targets
    # Linear in the tangents (reverse mode transposes it); a masked class adds nothing.
    finite_log_probs = jnp.where(jnp.isfinite(log_probs), log_probs, 0)
    d_loss = ((grad_logits * d_logits) - finite_log_probs * d_targets).sum(axis=-1)
    return loss, d_loss


def softmax_cross_entropy(logits: Array, labels: Array, *, where: Array | None = None,
                          label_smoothing: float = 0.0,
                          reduction: Reduction = "mean") -> Array:
    """Fused softmax + cross-entropy on raw logits (``torch.nn.CrossEntropyLoss``).

    ``loss = logsumexp(logits) - sum(target * logits)``, from one log-sum-exp pass; its
    gradient with respect to the logits is ``softmax(logits) - target``.

    Args:
      logits: raw scores, shape ``(..., C)``, float.
      labels: integer class ids of shape ``(...)``, or per-class probabilities of shape
        ``(..., C)`` (float; each row summing to 1).
      where: optional boolean ``(...)`` (the labels' batch shape): only the True entries
        count. ``"mean"`` averages over them (PyTorch's ``ignore_index``; NaN when none is
        kept, as PyTorch); the others are 0 under ``"none"`` and may hold any label, even
        an invalid class id.
      label_smoothing: ``eps`` in [0, 1): the target becomes ``(1 - eps) * target + eps / C``,
        as PyTorch's ``label_smoothing``.
      reduction: ``"mean"`` (over examples) | ``"sum"`` | ``"none"`` (per example, shape ``(...)``).

    A kept class id outside ``[0, C)`` cannot be caught under ``jit``: its loss is NaN.
    """
    name = "softmax_cross_entropy"
    _floating(logits, "logits", name)
    shape, label_shape = jnp.shape(logits), jnp.shape(labels)
    if len(shape) < 1:
        raise ShapeError(name, f"expected logits of shape (..., C), received {shape}")
    label_smoothing = real(label_smoothing, "label_smoothing", name, minimum=0, below=1)
    keep = _mask(where, shape[:-1], "the labels' batch shape", name)
    logits, labels = _at_least_f32(logits, labels)
    label_dtype = jnp.result_type(labels)
    if jnp.issubdtype(label_dtype, jnp.integer):
        if label_shape != shape[:-1]:
            raise ShapeError(name, f"expected integer labels of shape {shape[:-1]} "
                             f"(logits {shape} without the class axis), received {label_shape}")
        check_ids(name, labels, shape[-1], "class ids", keep)
        if keep is not None:  # a left-out entry may hold any id: it must not become NaN
            labels = jnp.where(keep, labels, 0)
        classes = jnp.arange(shape[-1], dtype=label_dtype)
        targets = (labels[..., None] == classes).astype(logits.dtype)
        in_range = (labels >= 0) & (labels < shape[-1])
        loss = jnp.where(in_range, _softmax_xent(logits, _smooth(targets, label_smoothing)),
                         jnp.nan)
    elif jnp.issubdtype(label_dtype, jnp.floating):
        if label_shape != shape:
            hint = (" (integer class ids need an integer dtype: labels.astype(jnp.int32))"
                    if label_shape == shape[:-1] else "")
            raise ShapeError(name, f"expected probability labels of shape {shape} (same as "
                             f"logits), received {label_shape}{hint}")
        dtype = jnp.result_type(logits, labels)
        loss = _softmax_xent(logits.astype(dtype),
                             _smooth(labels.astype(dtype), label_smoothing))
    else:
        raise DTypeError(name, f"expected integer class ids or float probabilities as labels, "
                         f"received {label_dtype}")
    return _reduce(loss, reduction, name, keep)


def _smooth(targets: Array, eps: float) -> Array:
    """``(1 - eps) * targets + eps / C`` over the last axis (nothing when ``eps`` is 0)."""
    return targets if eps == 0.0 else (1.0 - eps) * targets + eps / targets.shape[-1]
