"""Activation layers: elementwise nonlinearities, ``PReLU``, and (log-)softmax over an axis.

Each keeps the input's shape and dtype: ``x (...) -> y (...)``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from minitorch.errors import ShapeError, check_int
from minitorch.nn.checks import check_float, check_key, check_params, name_of
from minitorch.nn.core import Array, Layer, Params, PRNGKey, set_fields
from minitorch.validate import flag, float_dtype, positive_int, real, renamed_argument


class _Activation(Layer):
    """A parameterless layer ``y = fn(x)``."""

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        check_params(self, params)
        check_float(self, x)
        return self.fn(x)

    def fn(self, x: Array) -> Array:
        raise NotImplementedError


class ReLU(_Activation):
    """``max(x, 0)``; the gradient at 0 is 0, as in PyTorch."""

    def fn(self, x: Array) -> Array:
        return jax.nn.relu(x)


class LeakyReLU(_Activation):
    """``x`` where ``x >= 0``, else ``negative_slope * x``."""

    negative_slope: float = 0.01

    def __post_init__(self):
        set_fields(self, negative_slope=real(self.negative_slope, "negative_slope", name_of(self)))

    def fn(self, x: Array) -> Array:
        return jax.nn.leaky_relu(x, self.negative_slope)


class Tanh(_Activation):
    """``tanh(x)``."""

    def fn(self, x: Array) -> Array:
        return jnp.tanh(x)


class Sigmoid(_Activation):
    """``1 / (1 + exp(-x))``."""

    def fn(self, x: Array) -> Array:
        return jax.nn.sigmoid(x)


class GELU(_Activation):
    """``x * Phi(x)``: the exact erf form, or the tanh approximation with ``approximate=True``."""

    approximate: bool = False

    def __post_init__(self):
        set_fields(self, approximate=flag(self.approximate, "approximate", name_of(self)))

    def fn(self, x: Array) -> Array:
        return jax.nn.gelu(x, approximate=self.approximate)


class _OverAxis(_Activation):
    axis: int = -1

    def __post_init__(self):
        set_fields(self, axis=check_int(type(self).__name__, "axis", self.axis))

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        ndim = jnp.ndim(x)
        if not -ndim <= self.axis < ndim:
            raise ShapeError(type(self).__name__, f"expected input with axis {self.axis}, "
                             f"received shape {jnp.shape(x)} ({ndim} axes)")
        return super().apply(params, x, key=key, train=train)


class Softmax(_OverAxis):
    """``exp(x) / sum(exp(x))`` along ``axis`` (computed stably)."""

    def fn(self, x: Array) -> Array:
        return jax.nn.softmax(x, axis=self.axis)


class LogSoftmax(_OverAxis):
    """``x - logsumexp(x)`` along ``axis``; pair with ``losses.softmax_cross_entropy``'s
    inputs only if you want log-probabilities, the loss itself takes raw logits."""

    def fn(self, x: Array) -> Array:
        return jax.nn.log_softmax(x, axis=self.axis)


class PReLU(Layer):
    """``x`` where ``x >= 0``, else ``a * x`` with a learned slope ``a``.

    Args:
      num_parameters: 1 (one slope shared by all channels) or the number of channels;
        the slopes act on axis 1, as in PyTorch.
      init: the initial slope.
      dtype: dtype of the params (float32 by default).

    Params: ``a (num_parameters,)``.
    Shapes: ``x (N, C, ...) -> y (N, C, ...)``; with ``num_parameters > 1``, ``C`` must equal it.
    """

    num_parameters: int
    slope_init: float
    dtype: Any

    def __init__(self, num_parameters: int = 1, init: float = 0.25, dtype: Any = jnp.float32,
                 *, slope_init: float | None = None):
        owner = name_of(self)
        init = renamed_argument(owner, "init", init, 0.25, "slope_init", slope_init)
        set_fields(self, num_parameters=positive_int(num_parameters, "num_parameters", owner),
                   slope_init=real(init, "init", owner), dtype=float_dtype(dtype, owner))

    def init(self, key: PRNGKey) -> Params:
        check_key(self, key, "init")
        return {"a": jnp.full((self.num_parameters,), self.slope_init, self.dtype)}

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        check_params(self, params)
        check_float(self, x)
        a = params["a"]
        if self.num_parameters > 1:
            if jnp.ndim(x) < 2 or x.shape[1] != self.num_parameters:
                raise ShapeError(name_of(self), f"expected input of shape (N, "
                                 f"{self.num_parameters}, ...) (channels on axis 1), received "
                                 f"{jnp.shape(x)}")
            a = a.reshape((-1,) + (1,) * (x.ndim - 2))
        return jnp.where(x >= 0, x, a * x)
