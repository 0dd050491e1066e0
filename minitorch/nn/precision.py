"""``MixedPrecision``: run any layer in bfloat16 (or float16) while its params stay float32.

The policy of mixed-precision training (Micikevicius et al. 2018), applied around a model
without touching its code::

    net = nn.MixedPrecision(model)                    # compute bfloat16, outputs float32
    params = net.init(key)                            # float32, exactly model.init(key)
    step = train.make_step(net, losses.softmax_cross_entropy, opt)

- params are stored, updated and checkpointed in float32; each step casts them (and the
  floating inputs) to ``compute_dtype`` on the way in, so the matmuls and convolutions run
  there, and their gradients come back in float32 through the casts;
- the outputs are cast to ``output_dtype`` (float32), and every loss computes in at least
  float32 (:mod:`minitorch.losses`); so do the normalisation layers' statistics, and
  ``BatchNorm``'s running statistics are kept in float32 (state is never cast);
- with ``compute_dtype="float16"``, whose 5 exponent bits underflow small gradients, wrap
  the optimiser in :func:`minitorch.optim.dynamic_loss_scale`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from minitorch.nn.compose import Wrapper
from minitorch.nn.core import Array, Cache, Layer, Params, PRNGKey, State, set_fields
from minitorch.nn.paths import Tap
from minitorch.validate import float_dtype


def at_least_f32(x: Array) -> Array:
    """``x`` cast up to float32 when it is a narrower float (bfloat16, float16): statistics
    and losses are long reductions that 8 or 11 bits of mantissa would spoil."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Every floating-point leaf of ``tree`` cast to ``dtype``; other leaves unchanged."""
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a,
        tree)


class MixedPrecision(Wrapper):
    """``layer`` computed in ``compute_dtype`` with float32 params and outputs.

    Args:
      layer: any layer or net; its params and state are this layer's, unchanged.
      compute_dtype: the dtype the params and floating inputs are cast to for the
        computation: ``"bfloat16"`` (default) or ``"float16"`` (use
        :func:`minitorch.optim.dynamic_loss_scale`), or ``"float32"`` to switch it off.
      output_dtype: the dtype of the floating outputs (``"float32"``).

    Shapes: those of ``layer``; only dtypes change.
    """

    compute_dtype: str
    output_dtype: str

    def __init__(self, layer: Layer, compute_dtype: Any = "bfloat16",
                 output_dtype: Any = "float32"):
        super().__init__(layer)
        set_fields(self, compute_dtype=float_dtype(compute_dtype, type(self).__name__,
                                                   "compute_dtype"),
                   output_dtype=float_dtype(output_dtype, type(self).__name__, "output_dtype"))

    def run(self, params: Params, state: State, x: Any, *, key: PRNGKey | None = None,
            train: bool = False, tap: Tap | None = None, cache: Cache = None,
            offset: Any = 0, **kwargs: Any) -> tuple[Any, State, Cache]:
        compute = jnp.dtype(self.compute_dtype)
        y, state, cache = self.layer.run(cast_floating(params, compute), state,
                                         cast_floating(x, compute), key=key, train=train,
                                         tap=tap, cache=cache, offset=offset, **kwargs)
        return cast_floating(y, jnp.dtype(self.output_dtype)), state, cache


__all__ = ["MixedPrecision", "cast_floating"]
