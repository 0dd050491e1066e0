"""``Remat``: recompute a layer's activations in the backward pass instead of keeping them.

``jax.checkpoint`` around any layer, with the policy chosen by name::

    lean = nn.Remat(block, policy="nothing")   # keep nothing: recompute the block's forward
    params = lean.init(key)                    # exactly block.init(key)

The params, state, values and gradients are the bare layer's; what changes is what the
compiled backward pass keeps alive. Where it takes effect: inside a loop (a ``lax.scan``
over blocks or steps, such as ``fit``'s scanned epoch over a scanned stack), the
checkpointed body's residuals are the policy's only; in a straight-line jitted program
XLA may merge the recomputation with the forward again and keep the activations anyway
(measured on XLA:CPU: the same temporaries with and without it), so Remat there saves
memory only where XLA's scheduler finds it pays.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax

from minitorch.nn.checks import name_of
from minitorch.nn.compose import Wrapper
from minitorch.nn.core import Cache, Layer, Params, PRNGKey, State, set_fields
from minitorch.nn.paths import Tap
from minitorch.validate import one_of


class Remat(Wrapper):
    """``layer`` whose activations are recomputed in the backward pass (``jax.checkpoint``).

    Args:
      layer: any layer or net; params and state are exactly its own, paths unchanged.
      policy: what the forward pass keeps for the backward pass: ``"everything"`` (every
        activation: no recomputation, the bare layer's program), ``"dots"`` (the outputs of
        matrix products without batch dimensions; the rest is recomputed) or
        ``"nothing"`` (only the inputs: the whole forward is recomputed).

    Shapes and dtypes: those of ``layer``. Decoding (``cache=``) and telemetry probes (a
    ``tap``, which reads every sub-layer's output) run the layer as it is: neither takes
    gradients through a checkpoint.
    """

    POLICIES: ClassVar[dict[str, Any]] = {
        "everything": jax.checkpoint_policies.everything_saveable,
        "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
        "nothing": jax.checkpoint_policies.nothing_saveable,
    }
    policy: str

    def __init__(self, layer: Layer, policy: str = "nothing"):
        super().__init__(layer)
        set_fields(self, policy=one_of(policy, tuple(self.POLICIES), "policy", name_of(self)))

    def run(self, params: Params, state: State, x: Any, *, key: PRNGKey | None = None,
            train: bool = False, tap: Tap | None = None, cache: Cache = None,
            offset: Any = 0, **kwargs: Any) -> tuple[Any, State, Cache]:
        if cache is not None or tap is not None:
            return self.layer.run(params, state, x, key=key, train=train, tap=tap,
                                  cache=cache, offset=offset, **kwargs)

        def forward(params: Params, state: State, x: Any, key: PRNGKey | None,
                    kwargs: dict[str, Any]) -> tuple[Any, State]:
            y, state, _ = self.layer.run(params, state, x, key=key, train=train,
                                         offset=offset, **kwargs)
            return y, state

        y, state = jax.checkpoint(forward, policy=self.POLICIES[self.policy])(
            params, state, x, key, kwargs)
        return y, state, cache
