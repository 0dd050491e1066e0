"""Normalisation layers: ``LayerNorm``, ``RMSNorm``, ``GroupNorm`` and ``BatchNorm`` (the one
layer with state)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax import lax

from minitorch.errors import ArgumentError, ShapeError
from minitorch.nn.checks import (
    check_float,
    check_key,
    check_params,
    check_shape,
    check_state,
    name_of,
)
from minitorch.nn.core import Array, Layer, Params, PRNGKey, State, set_fields
from minitorch.nn.precision import at_least_f32
from minitorch.validate import flag, float_dtype, is_int, positive_int, real


class LayerNorm(Layer):
    """Normalise over the trailing ``normalized_shape`` axes, then scale and shift.

    ``y = (x - mean) / sqrt(var + eps) * scale + bias`` with the biased variance, as
    ``torch.nn.LayerNorm``.

    Args:
      normalized_shape: an int or tuple: the trailing axes normalised over.
      eps: added to the variance.
      elementwise_affine: whether to learn ``scale`` and ``bias``.
      dtype: dtype of the params (float32 by default).

    Params: ``scale normalized_shape`` (ones), ``bias normalized_shape`` (zeros).
    Shapes: ``x (..., *normalized_shape) -> y`` of the same shape.
    """

    normalized_shape: tuple[int, ...]
    eps: float
    elementwise_affine: bool
    dtype: Any

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5, *,
                 elementwise_affine: bool = True, dtype: Any = jnp.float32):
        set_fields(self, normalized_shape=_normalized_shape(normalized_shape, name_of(self)),
                   eps=real(eps, "eps", name_of(self), above=0),
                   elementwise_affine=flag(elementwise_affine, "elementwise_affine", name_of(self)),
                   dtype=float_dtype(dtype, name_of(self)))

    def init(self, key: PRNGKey) -> Params:
        check_key(self, key, "init")
        if not self.elementwise_affine:
            return {}
        return {"scale": jnp.ones(self.normalized_shape, self.dtype),
                "bias": jnp.zeros(self.normalized_shape, self.dtype)}

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        check_params(self, params)
        check_float(self, x)
        check_shape(self, x, self.normalized_shape, leading=True)
        axes = tuple(range(-len(self.normalized_shape), 0))
        dtype = jnp.result_type(x, *jax.tree.leaves(params))
        x = at_least_f32(x)
        # jnp.var (two passes, as exact) rather than the mean of (x - mean)**2: the same
        # numbers, but the backward's terms then sum in an order that XLA:CPU fuses without
        # recomputing the residual stream's gradient chain inside every weight gradient's
        # transpose (with attention's projections into heads, the gpt step 0.88x;
        # benchmarks/sequence_formulations.py)
        inverse = lax.rsqrt(jnp.var(x, axis=axes, keepdims=True) + self.eps)
        if self.elementwise_affine:
            inverse = inverse * params["scale"]
        y = (x - x.mean(axis=axes, keepdims=True)) * inverse
        y = y + params["bias"] if self.elementwise_affine else y
        return y.astype(dtype)


class RMSNorm(Layer):
    """Divide by the root mean square over the trailing ``normalized_shape`` axes, then scale:
    ``y = x / sqrt(mean(x ** 2) + eps) * scale``, as ``torch.nn.RMSNorm``.

    Args:
      normalized_shape: an int or tuple: the trailing axes normalised over.
      eps: added to the mean square; None (default) takes the machine epsilon of the dtype
        it normalises in, as PyTorch: float32's for float32, bfloat16 and float16 inputs
        (which are normalised in float32), float64's for float64.
      dtype: dtype of the params (float32 by default).

    Params: ``scale normalized_shape`` (ones).
    Shapes: ``x (..., *normalized_shape) -> y`` of the same shape.
    """

    normalized_shape: tuple[int, ...]
    eps: float | None
    dtype: Any

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float | None = None, *,
                 dtype: Any = jnp.float32):
        shape = _normalized_shape(normalized_shape, name_of(self))
        if eps is not None:
            eps = real(eps, "eps", name_of(self), above=0)
        set_fields(self, normalized_shape=shape, eps=eps, dtype=float_dtype(dtype, name_of(self)))

    def init(self, key: PRNGKey) -> Params:
        check_key(self, key, "init")
        return {"scale": jnp.ones(self.normalized_shape, self.dtype)}

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        check_params(self, params)
        check_float(self, x)
        check_shape(self, x, self.normalized_shape, leading=True)
        axes = tuple(range(-len(self.normalized_shape), 0))
        dtype = jnp.result_type(x, params["scale"])
        x = at_least_f32(x)
        # None: the machine epsilon of the dtype it normalises in (float32 for bfloat16 and
        # float16 inputs), as torch.nn.functional.rms_norm; bfloat16's would be 2^-7.
        eps = jnp.finfo(x.dtype).eps if self.eps is None else self.eps
        inv = jax.lax.rsqrt(jnp.square(x).mean(axis=axes, keepdims=True) + eps)
        return (x * inv * params["scale"]).astype(dtype)


class GroupNorm(Layer):
    """Normalise each group of ``num_channels // num_groups`` channels over those channels
    and every axis after them, then scale and shift per channel, as ``torch.nn.GroupNorm``.

    Args:
      num_groups: the number of groups; must divide ``num_channels``.
      num_channels: the channel count C (axis 1).
      eps: added to the (biased) variance.
      dtype: dtype of the params (float32 by default).

    Params: ``scale (C,)`` (ones), ``bias (C,)`` (zeros).
    Shapes: ``x (N, C, ...) -> y`` of the same shape. No batch statistics: it behaves the
    same in training and evaluation and for any batch size.
    """

    num_groups: int
    num_channels: int
    eps: float
    dtype: Any

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, *,
                 dtype: Any = jnp.float32):
        groups = positive_int(num_groups, "num_groups", name_of(self))
        channels = positive_int(num_channels, "num_channels", name_of(self))
        if channels % groups:
            raise ArgumentError(f"GroupNorm: num_groups={groups} must divide "
                             f"num_channels={channels}")
        set_fields(self, num_groups=groups, num_channels=channels,
                   eps=real(eps, "eps", name_of(self), above=0),
                   dtype=float_dtype(dtype, name_of(self)))

    def init(self, key: PRNGKey) -> Params:
        check_key(self, key, "init")
        return {"scale": jnp.ones((self.num_channels,), self.dtype),
                "bias": jnp.zeros((self.num_channels,), self.dtype)}

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        check_params(self, params)
        check_float(self, x)
        if jnp.ndim(x) < 2 or x.shape[1] != self.num_channels:
            raise ShapeError(name_of(self), f"expected input of shape (N, {self.num_channels}, "
                             f"...), received {jnp.shape(x)}")
        dtype = jnp.result_type(x, params["scale"], params["bias"])
        per_group = math.prod(x.shape[1:]) // self.num_groups  # explicit: N may be 0
        groups = at_least_f32(x).reshape(x.shape[0], self.num_groups, per_group)
        mean = groups.mean(axis=-1, keepdims=True)
        var = jnp.square(groups - mean).mean(axis=-1, keepdims=True)
        y = ((groups - mean) * jax.lax.rsqrt(var + self.eps)).reshape(x.shape)
        channel = (1, -1) + (1,) * (x.ndim - 2)
        return (y * params["scale"].reshape(channel) + params["bias"].reshape(channel)
                ).astype(dtype)


def _normalized_shape(value: Any, owner: str) -> tuple[int, ...]:
    values = (value,) if is_int(value) else tuple(value) if isinstance(
        value, (tuple, list)) else None
    if not values:
        raise ArgumentError(f"{owner}: normalized_shape must be a positive int or a non-empty "
                         f"tuple of them, received {value!r}")
    return tuple(positive_int(d, "normalized_shape", owner) for d in values)


class BatchNorm(Layer):
    """Batch normalisation over the channel axis 1, as ``torch.nn.BatchNorm1d`` / ``2d``.

    In training (``train=True``) each channel is normalised with the mean and biased variance
    of the batch (over every axis but 1), and the running statistics are updated as PyTorch
    does: ``running = (1 - momentum) * running + momentum * batch_stat``, with the unbiased
    variance. In evaluation the running statistics are used and the state is returned as is.

    Args:
      num_features: the number of channels C.
      eps: added to the variance.
      momentum: weight of the new batch statistic in the running average.
      axis_name: a ``pmap``/``vmap`` axis to average the batch statistics over, so that every
        device normalises with the statistics of the global batch. Under ``jax.jit`` with a
        sharded batch no name is needed: the mean is already global.
      dtype: dtype of the params and state (float32 by default).

    Params: ``scale (C,)`` (ones), ``bias (C,)`` (zeros).
    State: ``mean (C,)`` (zeros), ``var (C,)`` (ones) and ``num_batches_tracked ()`` (int32
    zero, one more per training call, as PyTorch counts); kept apart from params, so
    gradients and optimisers never touch it.
    Shapes: ``x (N, C)``, ``(N, C, L)``, ``(N, C, H, W)`` or ``(N, C, D, H, W)`` -> ``y`` of
    the same shape;
    ``apply`` returns ``(y, new_state)``.
    """

    num_features: int
    eps: float
    momentum: float
    axis_name: Any
    dtype: Any
    stateful: ClassVar[bool] = True

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, *,
                 axis_name: Any = None, dtype: Any = jnp.float32):
        set_fields(self, num_features=positive_int(num_features, "num_features", name_of(self)),
                   eps=real(eps, "eps", name_of(self), above=0),
                   momentum=real(momentum, "momentum", name_of(self), minimum=0, maximum=1),
                   axis_name=axis_name, dtype=float_dtype(dtype, name_of(self)))

    def init(self, key: PRNGKey) -> Params:
        check_key(self, key, "init")
        return {"scale": jnp.ones((self.num_features,), self.dtype),
                "bias": jnp.zeros((self.num_features,), self.dtype)}

    def init_state(self) -> State:
        return {"mean": jnp.zeros((self.num_features,), self.dtype),
                "var": jnp.ones((self.num_features,), self.dtype),
                "num_batches_tracked": jnp.zeros((), jnp.int32)}

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False, state: State = None) -> tuple[Array, State]:
        check_params(self, params)
        check_state(self, state)
        check_float(self, x)
        if not 2 <= jnp.ndim(x) <= 5 or x.shape[1] != self.num_features:
            c = self.num_features
            raise ShapeError(name_of(self), f"expected input of shape (N, {c}), (N, {c}, L), "
                             f"(N, {c}, H, W) or (N, {c}, D, H, W), received {jnp.shape(x)}")
        axes = (0, *range(2, x.ndim))
        channel = (1, -1) + (1,) * (x.ndim - 2)  # broadcasts a (C,) vector against x
        dtype = jnp.result_type(x, params["scale"])
        x = at_least_f32(x)
        if train:
            mean, var, count = self._batch_stats(x, axes)
            unbiased = var * count / max(count - 1, 1)
            new_state = {
                "mean": (1 - self.momentum) * state["mean"] + self.momentum * mean,
                "var": (1 - self.momentum) * state["var"] + self.momentum * unbiased,
                "num_batches_tracked": state["num_batches_tracked"] + 1,
            }
            new_state = jax.tree.map(lambda new, old: new.astype(old.dtype), new_state, state)
        else:
            mean, var, new_state = state["mean"], state["var"], state
        inv = jax.lax.rsqrt(var + self.eps) * params["scale"]
        y = (x - mean.reshape(channel)) * inv.reshape(channel) + params["bias"].reshape(channel)
        return y.astype(dtype), new_state

    def _batch_stats(self, x: Array, axes: tuple[int, ...]) -> tuple[Array, Array, int]:
        """Per-channel mean and biased variance over ``axes`` (and ``axis_name``), and the count."""
        count = math.prod(x.shape[a] for a in axes)
        if count == 0:  # the mean of nothing is NaN, which would poison the running stats
            raise ShapeError(name_of(self), f"training needs at least one value per channel for "
                                          f"the batch statistics, received shape {x.shape}")
        mean = x.mean(axis=axes)
        if self.axis_name is not None:
            mean = jax.lax.pmean(mean, self.axis_name)
            count = count * jax.lax.axis_size(self.axis_name)
        centred = x - mean.reshape((1, -1) + (1,) * (x.ndim - 2))
        var = jnp.square(centred).mean(axis=axes)  # two passes: no E[x^2] - E[x]^2 cancellation
        if self.axis_name is not None:
            var = jax.lax.pmean(var, self.axis_name)
        return mean, var, count
