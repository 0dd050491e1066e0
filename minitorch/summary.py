"""``summary``: a table of a net's layers, output shapes and parameter counts.

Computed with ``jax.eval_shape``: no parameter is initialised and no FLOP is spent, so a
summary of a large net is instant. A shape mismatch found on the way is reported as the
core reports it (the layer's path and type, expected and received shapes). Containers
(nested nets, ``Residual``, ``Parallel``, ``Composite``) are expanded, a row per sub-layer.

Example (run as a doctest)::

    >>> from minitorch import nn
    >>> net = nn.Net([nn.Conv2D(1, 8, 3, padding=1), nn.BatchNorm(8), nn.ReLU(),
    ...               nn.MaxPool2D(2), nn.Flatten(), nn.Net([nn.Linear(8 * 4 * 4, 32)])])
    >>> print(summary(net, (1, 8, 8)))
    index  layer      output shape  params   bytes
    ----------------------------------------------
    0      Conv2D     (N, 8, 8, 8)      80     320
    1      BatchNorm  (N, 8, 8, 8)      16      64
    2      ReLU       (N, 8, 8, 8)       0       0
    3      MaxPool2D  (N, 8, 4, 4)       0       0
    4      Flatten    (N, 128)           0       0
    5      Net        (N, 32)            0       0
    5.0    Linear     (N, 32)        4,128  16,512
    ----------------------------------------------
    total: 4,224 params, 16,896 bytes (0.02 MiB); input (N, 1, 8, 8)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from minitorch.errors import LayerError
from minitorch.nn.containers import intermediates
from minitorch.nn.core import Layer
from minitorch.nn.paths import named_layers


@dataclasses.dataclass(frozen=True)
class Row:
    """One layer: its path (``"3"``, ``"1.0"`` inside a nested net, ``"2.attn"`` inside a
    composite), type name, output shape (batch axis first), parameter count and bytes (a
    container's own: none)."""

    index: str
    layer: str
    output_shape: tuple[int, ...]
    params: int
    bytes: int


@dataclasses.dataclass(frozen=True)
class Summary:
    """The rows of :func:`summary` and their totals; ``str()`` gives the printable table."""

    rows: tuple[Row, ...]
    input_shape: tuple[int, ...]
    batch_size: int

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total_bytes(self) -> int:
        return sum(r.bytes for r in self.rows)

    def __str__(self) -> str:
        def shape(s: tuple[int, ...]) -> str:
            if not s:  # no output of its own (a Param, or a part forward never calls)
                return "-"
            return "(" + ", ".join(["N", *map(str, s[1:])]) + ("," if len(s) == 1 else "") + ")"

        header = ("index", "layer", "output shape", "params", "bytes")
        body = [(r.index, r.layer, shape(r.output_shape), f"{r.params:,}", f"{r.bytes:,}")
                for r in self.rows]
        widths = [max(len(str(c)) for c in column) for column in zip(header, *body)]
        lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(cells, widths)))
                 for cells in (header, *body)]
        rule = "-" * len(lines[0])
        total = (f"total: {self.total_params:,} params, {self.total_bytes:,} bytes "
                 f"({self.total_bytes / 2**20:.2f} MiB); input {shape((0, *self.input_shape))}")
        return "\n".join([lines[0], rule, *lines[1:], rule, total])


def summary(net: Layer, input_shape: tuple[int, ...], *, dtype: Any = jnp.float32,
            batch_size: int = 1) -> Summary:
    """Summarise ``net`` for inputs of shape ``(batch_size, *input_shape)``.

    Args:
      net: any layer. Containers are expanded: a row per sub-layer, indexed by its path
        (``"3"``, ``"5.0"``, ``"2.attn"``); a container's row counts only its own params
        (none), so the rows add up to the total.
      input_shape: one example's shape, without the batch axis.
      dtype: the input dtype (integer for ``Embedding`` nets).
      batch_size: the batch size used to trace (output shapes show it as ``N``).

    Returns:
      A :class:`Summary`: ``rows`` (index, layer, output shape, params, bytes) and totals.
    """
    x = jax.ShapeDtypeStruct((batch_size, *tuple(input_shape)), jnp.dtype(dtype))
    try:
        out, outputs = jax.eval_shape(lambda p, s, v: intermediates(net, p, v, state=s),
                                      net.param_spec, net.state_spec, x)
    except LayerError as err:  # the core's own error, without JAX's note on traced frames
        raise type(err)(err.where, err.detail) from None
    layers = named_layers(net) or {"0": net}  # a lone layer is its own row
    outputs = outputs or {"0": out[0] if net.stateful else out}
    rows = [_row(path, layer, tuple(outputs[path].shape) if path in outputs else ())
            for path, layer in layers.items()]
    return Summary(tuple(rows), tuple(input_shape), batch_size)


def _row(path: str, layer: Layer, output_shape: tuple[int, ...]) -> Row:
    own = [] if layer.children() else jax.tree.leaves(layer.param_spec)
    return Row(path, type(layer).__name__, output_shape, sum(math.prod(p.shape) for p in own),
               sum(math.prod(p.shape) * p.dtype.itemsize for p in own))
