"""Which inputs drive a prediction: layer-wise relevance propagation and gradient methods.

All functions are pure and jit-able, take a batch ``x (N, ...)`` and the explained class of
each example ``target (N,)`` (default: the predicted class), and return relevance of the
shape of ``x``. The net runs in evaluation mode.

* :func:`lrp`: layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019)
  for nets of Linear, Conv2D, ReLU, LeakyReLU, MaxPool2D, AvgPool2D, Flatten, Reshape
  (and Dropout, the identity in evaluation). Rules per layer: ``"epsilon"`` (LRP-eps),
  ``"zplus"`` (LRP-z+, positive weights only) and ``"alphabeta"`` (LRP-alpha-beta, alpha
  - beta = 1). Each rule is the "gradient trick": ``R_in = x * vjp(layer)(R_out / z)``.
* :func:`saliency` (the gradient), :func:`gradient_x_input`, and
  :func:`integrated_gradients` (Sundararajan et al. 2017), whose attributions sum to
  ``f(x) - f(baseline)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from minitorch.errors import LayerError
from minitorch.nn.activations import LeakyReLU, ReLU
from minitorch.nn.containers import Net
from minitorch.nn.conv import Conv2D
from minitorch.nn.core import Array, Layer, Params
from minitorch.nn.linear import Linear
from minitorch.nn.pooling import AvgPool2D, MaxPool2D
from minitorch.nn.regularization import Dropout
from minitorch.nn.reshape import Flatten, Reshape

RULES = ("epsilon", "zplus", "alphabeta")
_PASS = (ReLU, LeakyReLU, Dropout)  # relevance passes through unchanged
_SHAPE = (Flatten, Reshape)  # relevance is reshaped back
_WEIGHTED = (Linear, Conv2D, AvgPool2D, MaxPool2D)  # relevance is redistributed by a rule


def _layers(net: Layer, params: Params, prefix: str = "") -> list[tuple[str, Layer, Params]]:
    """A chain of nested nets flattened into ``(path, layer, params)`` in order; any other
    layer (a leaf, or a composition LRP has no rule for) stands alone."""
    if not isinstance(net, Net):
        return [(prefix.rstrip(".") or "0", net, params)]
    return [item for i, (layer, p) in enumerate(zip(net.layers, params))
            for item in _layers(layer, p, f"{prefix}{i}.")]


def _targets(logits: Array, target: Array | None) -> Array:
    return logits.argmax(axis=-1) if target is None else jnp.asarray(target)


def _stabilise(z: Array, epsilon: float) -> Array:
    return z + epsilon * jnp.where(z >= 0, 1.0, -1.0)


def _rule(rule: str, layer: Layer, params: Params, x: Array, relevance: Array,
          epsilon: float, alpha: float, beta: float) -> Array:
    def f(p, v):
        return layer.apply(p, v)

    if rule == "epsilon" or isinstance(layer, (MaxPool2D, AvgPool2D)):
        z, vjp = jax.vjp(lambda v: f(params, v), x)
        return x * vjp(relevance / _stabilise(z, epsilon))[0]

    def signed(part):  # the layer with only its positive (or negative) weights, no bias
        clip = (lambda w: jnp.maximum(w, 0)) if part > 0 else (lambda w: jnp.minimum(w, 0))
        return {"W": clip(params["W"]), **({"b": jnp.zeros_like(params["b"])} if "b" in params
                                            else {})}

    def contribution(weights: Params, inputs: Array) -> tuple[Array, Any]:
        return jax.vjp(lambda v: f(weights, v), inputs)

    def share(pairs) -> Array:
        """Relevance shared in proportion to the contributions ``w_ij x_i`` of ``pairs``."""
        outs = [contribution(w, v) for w, v in pairs]
        z = outs[0][0]
        for o, _ in outs[1:]:
            z = z + o
        s = relevance / _stabilise(z, epsilon)
        return sum(v * vjp(s)[0] for (_, vjp), (_, v) in zip(outs, pairs))

    x_pos, x_neg = jnp.maximum(x, 0), jnp.minimum(x, 0)
    w_pos, w_neg = signed(1), signed(-1)
    if rule == "zplus":
        return share([(w_pos, x_pos), (w_neg, x_neg)])
    # alphabeta: positive and negative contributions, each conserved separately
    return (alpha * share([(w_pos, x_pos), (w_neg, x_neg)])
            - beta * share([(w_pos, x_neg), (w_neg, x_pos)]))


def lrp(net: Net, params: Params, x: Array, target: Array | None = None, *,
        rule: str = "epsilon", rules: Mapping[str, str] | None = None, epsilon: float = 1e-6,
        alpha: float = 2.0, beta: float = 1.0) -> Array:
    """Layer-wise relevance propagation of the ``target`` logit back to the input.

    Args:
      net, params: the net (nested nets are flattened) and its params.
      x: inputs ``(N, ...)``.
      target: the class explained for each example ``(N,)``; default: the predicted one.
      rule: the rule of every weighted layer: ``"epsilon"``, ``"zplus"`` or ``"alphabeta"``.
      rules: per-layer overrides keyed by index path (``{"0": "zplus", "5.1": "epsilon"}``),
        e.g. z+ near the input and epsilon near the output.
      epsilon: the stabiliser added to every denominator (with the sign of the denominator).
      alpha, beta: the alpha-beta weights; alpha - beta should be 1 to conserve relevance.

    Returns:
      Relevance ``(N, ...)`` of the shape of ``x``. With the epsilon rule, a tiny epsilon and
      no biases, each example's relevance sums to its target logit.
    """
    layers = _layers(net, params)
    for path, layer, _ in layers:
        if not isinstance(layer, _PASS + _SHAPE + _WEIGHTED):
            raise LayerError(f"layer {path} ({type(layer).__name__})",
                             f"LRP does not support {type(layer).__name__}; it supports "
                             f"{', '.join(sorted(c.__name__ for c in _PASS + _SHAPE + _WEIGHTED))}")
    rules = dict(rules or {})
    for path, name in [("*", rule), *rules.items()]:
        if name not in RULES:
            raise ValueError(f"lrp: unknown rule {name!r} for layer {path}; use one of {RULES}")
    inputs = [x]
    for _, layer, p in layers:
        inputs.append(layer.apply(p, inputs[-1]))
    logits = inputs[-1]
    chosen = jax.nn.one_hot(_targets(logits, target), logits.shape[-1], dtype=logits.dtype)
    relevance = logits * chosen
    for (path, layer, p), layer_input in zip(reversed(layers), reversed(inputs[:-1])):
        if isinstance(layer, _PASS):
            continue
        if isinstance(layer, _SHAPE):
            relevance = relevance.reshape(layer_input.shape)
            continue
        relevance = _rule(rules.get(path, rule), layer, p, layer_input, relevance, epsilon,
                          alpha, beta)
    return relevance


def _target_logit_grad(net: Layer, params: Params, x: Array, target: Array | None) -> Array:
    target = _targets(net.apply(params, x), target)

    def total(v):
        return jnp.take_along_axis(net.apply(params, v), target[:, None], axis=-1).sum()

    return jax.grad(total)(x)


def saliency(net: Layer, params: Params, x: Array, target: Array | None = None) -> Array:
    """The gradient of the target logit with respect to the input (take ``abs`` for a map)."""
    return _target_logit_grad(net, params, x, target)


def gradient_x_input(net: Layer, params: Params, x: Array,
                     target: Array | None = None) -> Array:
    """The gradient of the target logit times the input."""
    return x * _target_logit_grad(net, params, x, target)


def integrated_gradients(net: Layer, params: Params, x: Array, target: Array | None = None,
                         *, baseline: Array | None = None, steps: int = 64) -> Array:
    """Integrated gradients along the straight path from ``baseline`` (default zeros) to ``x``.

    The integral is the midpoint rule with ``steps`` points; the attributions of an example
    sum to ``logit(x) - logit(baseline)`` up to that rule's error.
    """
    baseline = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(baseline, x.shape)
    target = _targets(net.apply(params, x), target)
    fractions = (jnp.arange(steps, dtype=x.dtype) + 0.5) / steps

    def grad_at(fraction):
        return _target_logit_grad(net, params, baseline + fraction * (x - baseline), target)

    mean_grad = jax.lax.map(grad_at, fractions).mean(axis=0)
    return (x - baseline) * mean_grad
