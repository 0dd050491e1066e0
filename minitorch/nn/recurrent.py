"""Recurrent layers, batch first, as ``torch.nn.RNN`` / ``LSTM`` / ``GRU(batch_first=True)``.

Each maps ``x (N, T, input_size)`` to every step's hidden state ``(N, T, hidden_size)``.
The loop is a ``lax.scan`` over time, so a sequence of any length compiles one step, not
``T`` copies. Each step of ``RNN`` and ``LSTM`` computes its gates as one product
``[x_t, h] @ [W_ih; W_hh]`` (``GRU``: two, its new gate needs ``h W_hn`` apart), computed
gate-major (:func:`gate_product`). On XLA:CPU both choices were measured on the shapes of
benchmarks/sequence_peers.py's LSTM (benchmarks/sequence_formulations.py): one product per
step beats hoisting every step's input projection out of the loop into one large product,
and the gate-major layout beats the plain product.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from minitorch.errors import CacheError, KeyArgError, ShapeError
from minitorch.nn import init as initializers
from minitorch.nn.checks import (
    check_cache,
    check_float,
    check_key,
    check_params,
    check_room,
    check_shape,
    name_of,
)
from minitorch.nn.core import Array, Cache, Layer, Params, PRNGKey, set_fields, split_key
from minitorch.nn.regularization import dropout as drop
from minitorch.validate import flag, float_dtype, one_of, positive_int, real

Carry = Any  # h (N, H); for LSTM the pair (h, c)


class _Recurrent(Layer):
    """The parts every recurrent layer shares: params, checks, stacking and directions, the
    scan over time.

    A subclass gives ``num_gates`` (G), ``cell`` (one step from the gates and the carry)
    and, for LSTM, how a carry is made and read; GRU also how its gates are computed.

    One layer in one direction (the default) keeps its params flat (``W_ih``, ...). With
    ``num_layers > 1`` or ``bidirectional=True`` the params hold one such dict per layer and
    direction, named as PyTorch suffixes its weights: ``"l0"`` (``weight_ih_l0``),
    ``"l0_reverse"`` (``weight_ih_l0_reverse``), ``"l1"``, ...
    """

    num_gates: ClassVar[int]
    carry_names: ClassVar[tuple[str, ...]] = ("h",)  # the carry's parts, as cached
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    dropout: float
    bias: bool
    unroll: int
    dtype: Any

    def __init__(self, input_size: int, hidden_size: int, *, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, bias: bool = True,
                 unroll: int = 1, dtype: Any = jnp.float32):
        owner = type(self).__name__
        set_fields(self, input_size=positive_int(input_size, "input_size", owner),
                   hidden_size=positive_int(hidden_size, "hidden_size", owner),
                   num_layers=positive_int(num_layers, "num_layers", owner),
                   bidirectional=flag(bidirectional, "bidirectional", owner),
                   dropout=real(dropout, "dropout", owner, minimum=0, below=1),
                   bias=flag(bias, "bias", owner), unroll=positive_int(unroll, "unroll", owner),
                   dtype=float_dtype(dtype, owner))

    @property
    def stacked(self) -> bool:
        """Whether the params hold one dict per layer and direction (``"l0"``, ...)."""
        return self.num_layers > 1 or self.bidirectional

    def cells(self) -> list[tuple[str, int, bool]]:
        """``(name, input width, reverse)`` of each layer and direction, in PyTorch's order:
        ``l0``, ``l0_reverse``, ``l1``, ..."""
        directions = (False, True) if self.bidirectional else (False,)
        width = self.hidden_size * len(directions)
        return [(f"l{layer}{'_reverse' if reverse else ''}",
                 self.input_size if layer == 0 else width, reverse)
                for layer in range(self.num_layers) for reverse in directions]

    def init(self, key: PRNGKey) -> Params:
        """Every param uniform(-1/sqrt(H), 1/sqrt(H)), as PyTorch."""
        check_key(self, key, "init")
        if not self.stacked:
            return self._init_cell(key, self.input_size)
        cells = self.cells()
        return {name: self._init_cell(k, width)
                for (name, width, _), k in zip(cells, split_key(key, len(cells)))}

    def _init_cell(self, key: PRNGKey, input_size: int) -> Params:
        width, bound = self.num_gates * self.hidden_size, 1.0 / math.sqrt(self.hidden_size)
        shapes: dict[str, tuple[int, ...]] = {"W_ih": (input_size, width),
                                              "W_hh": (self.hidden_size, width)}
        if self.bias:
            shapes.update(b_ih=(width,), b_hh=(width,))
        keys = split_key(key, len(shapes))
        return {name: initializers.uniform(k, shape, self.dtype, -bound, bound)
                for (name, shape), k in zip(shapes.items(), keys)}

    def tensor_axes(self) -> dict[str, int]:
        """Split by gate columns (``W_ih``, ``W_hh`` axis 1 and the biases), every layer and
        direction alike."""
        return {"W_ih": 1, "W_hh": 1, "b_ih": 0, "b_hh": 0}

    def init_cache(self, batch_size: int, max_length: int, dtype: Any = None) -> Cache:
        """The carry between calls (``h``, and ``c`` for LSTM, each ``(N, H)``, zeros),
        ``index`` (how many positions it has consumed) and ``max_length``; one such dict per
        layer (``"l0"``, ...) when stacked; ``{}`` when bidirectional (the reverse direction
        needs the whole sequence at every call)."""
        if self.bidirectional:
            return {}
        owner = name_of(self)
        n = positive_int(batch_size, "batch_size", owner)
        positive_int(max_length, "max_length", owner)
        dtype = jnp.dtype(self.dtype if dtype is None else float_dtype(dtype, owner))
        cell = {**{name: jnp.zeros((n, self.hidden_size), dtype) for name in self.carry_names},
                "index": jnp.zeros((), jnp.int32),
                "max_length": jnp.asarray(max_length, jnp.int32)}
        return {name: dict(cell) for name, _, _ in self.cells()} if self.stacked else cell

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False, initial: Carry | None = None,
              cache: Cache | None = None, return_carry: bool = False) -> Any:
        """Every step's hidden state ``(N, T, D * H)`` (D = 2 when bidirectional: forward
        then reverse); with ``return_carry=True`` also the final carry (PyTorch's ``h_n``,
        and ``c_n`` for LSTM); with ``cache=`` (from :meth:`init_cache`), ``(outputs,
        new_cache)``, continuing from the cached carry."""
        check_params(self, params)
        check_float(self, x)
        check_shape(self, x, ("N", "T", self.input_size))
        dtype = jnp.result_type(x, *jax.tree.leaves(params))
        x = x.astype(dtype)  # the carry stays in this dtype, never rounded to the input's
        cells = self.cells()
        if cache is not None:
            initial = self._from_cache(cache, initial, x)
        carries = self._initial(initial, x.shape[0], dtype)
        keys = split_key(key, len(cells)) if train and self.dropout > 0 else [None] * len(cells)
        lasts, h, outs = [], x, []
        for (name, _, reverse), carry, layer_key in zip(cells, carries, keys):
            out, last = self._scan(params[name] if self.stacked else params, h, carry, reverse)
            outs.append(out)
            lasts.append(last)
            if len(outs) == (2 if self.bidirectional else 1):  # a layer is complete
                h, outs = jnp.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0], []
                if layer_key is not None and len(lasts) < len(cells):  # between layers
                    h = drop(layer_key, self.dropout, h)
        if self.dropout > 0 and train and key is None and self.num_layers > 1:
            raise KeyArgError(name_of(self), f"expected a PRNG key with train=True and "
                              f"dropout={self.dropout} (pass key=...), received None")
        if cache is not None:
            return self._to_cache(cache, h, lasts, x.shape[1])
        return (h, self._final(lasts)) if return_carry else h

    def _scan(self, params: Params, x: Array, carry: Carry, reverse: bool
              ) -> tuple[Array, Carry]:
        """One layer in one direction: every step's ``h (N, T, H)`` and the last carry."""
        weights = self.step_weights(params)  # once, outside the loop

        def step(carry: Carry, x_t: Array) -> tuple[Carry, Array]:
            carry = self.cell(self.gates(weights, x_t, self._hidden(carry)), carry)
            return carry, self._hidden(carry)

        last, hs = jax.lax.scan(step, carry, x.swapaxes(0, 1), unroll=self.unroll,
                                reverse=reverse)
        return hs.swapaxes(0, 1), last

    def step_weights(self, params: Params) -> Any:
        """What every step multiplies by: ``[W_ih; W_hh]`` transposed, ``(G * H, in + H)``,
        and ``b_ih + b_hh``."""
        bias = params["b_ih"] + params["b_hh"] if self.bias else None
        return jnp.concatenate([params["W_ih"], params["W_hh"]]).T, bias

    def gates(self, weights: Any, x_t: Array, h: Array) -> Any:
        """One step's pre-activations ``x_t W_ih + b_ih + h W_hh + b_hh``, ``(N, G * H)``."""
        w_t, bias = weights
        z = gate_product(w_t, jnp.concatenate([x_t, h.astype(x_t.dtype)], axis=-1))
        return z if bias is None else z + bias

    def cell(self, gates: Any, carry: Carry) -> Carry:
        """One step: the new carry from this step's ``gates`` and the previous carry."""
        raise NotImplementedError

    def _hidden(self, carry: Carry) -> Array:
        return carry

    def _parts(self, carry: Carry) -> tuple[Array, ...]:
        """A cell's carry as a tuple of its parts, in ``carry_names`` order."""
        return carry if isinstance(carry, tuple) else (carry,)

    def _joined(self, parts: Any) -> Carry:
        """A cell's carry from its parts."""
        parts = tuple(parts)
        return parts if len(parts) > 1 else parts[0]

    def _initial(self, initial: Carry | None, n: int, dtype: Any) -> list[Carry]:
        """One carry per cell: zeros, or split from ``initial`` (``(N, H)`` parts for one
        cell, ``(D * num_layers, N, H)`` parts when stacked, as PyTorch's ``h_0``)."""
        count = len(self.cells())
        if initial is None:
            zeros = jnp.zeros((n, self.hidden_size), dtype)
            return [self._joined([zeros] * len(self.carry_names))] * count
        parts = self._given_parts(initial)
        expected = (count, n, self.hidden_size) if self.stacked else (n, self.hidden_size)
        for name, value in zip(self.carry_names, parts):
            if tuple(jnp.shape(value)) != expected:
                shown = "(D * num_layers, N, H)" if self.stacked else "(N, H)"
                what = f"initial {name}0" if len(parts) > 1 else "initial"
                raise ShapeError(name_of(self), f"expected {what} of shape {shown} = "
                                 f"{expected}, received {tuple(jnp.shape(value))}")
        arrays = [jnp.asarray(value, dtype) for value in parts]
        if not self.stacked:
            return [self._joined(arrays)]
        return [self._joined(part[i] for part in arrays) for i in range(count)]

    def _given_parts(self, initial: Carry) -> tuple[Any, ...]:
        if len(self.carry_names) == 1:
            return (initial,)
        if not isinstance(initial, (tuple, list)) or len(initial) != len(self.carry_names):
            names = ", ".join(f"{name}0" for name in self.carry_names)
            raise ShapeError(name_of(self), f"expected initial=({names}), received "
                             f"{type(initial).__name__}")
        return tuple(initial)

    def _final(self, lasts: list[Carry]) -> Carry:
        """The final carry as ``initial`` takes it (stacked: each part ``(D * L, N, H)``)."""
        if not self.stacked:
            return lasts[0]
        parts = zip(*(self._parts(last) for last in lasts))
        return self._joined(jnp.stack(part) for part in parts)

    def _from_cache(self, cache: Cache, initial: Carry | None, x: Array) -> Carry:
        owner = name_of(self)
        if initial is not None:
            raise CacheError(owner, "give initial= or cache=, not both (the cache holds the "
                             "carry to continue from)")
        shape = {**{name: (x.shape[0], self.hidden_size) for name in self.carry_names},
                 "index": (), "max_length": ()}
        if self.stacked:
            names = [name for name, _, _ in self.cells()]
            if not isinstance(cache, dict) or sorted(cache) != sorted(names):
                raise CacheError(owner, f"expected a cache with entries {sorted(names)} (from "
                                 f"init_cache), received {type(cache).__name__}")
            cells = [cache[name] for name in names]
        else:
            cells = [cache]
        for cell in cells:
            check_cache(self, cell, shape)
        check_room(self, cells[0]["index"], x.shape[1], cells[0]["max_length"])
        parts = [[cell[name] for cell in cells] for name in self.carry_names]
        if not self.stacked:
            return self._joined(part[0] for part in parts)
        return self._joined(jnp.stack(part) for part in parts)

    def _to_cache(self, cache: Cache, hs: Array, lasts: list[Carry], steps: int
                  ) -> tuple[Array, Cache]:
        cells = [cache[name] for name, _, _ in self.cells()] if self.stacked else [cache]
        end = cells[0]["index"] + steps
        new = [{**{name: part.astype(cell[name].dtype)
                   for name, part in zip(self.carry_names, self._parts(last))},
                "index": jnp.asarray(end, jnp.int32), "max_length": cell["max_length"]}
               for cell, last in zip(cells, lasts)]
        # Under jit the index is not known when tracing: outputs past max_length are NaN.
        hs = jnp.where(end <= cells[0]["max_length"], hs, jnp.nan)
        if not self.stacked:
            return hs, new[0]
        return hs, {name: cell for (name, _, _), cell in zip(self.cells(), new)}


def gate_product(w_t: Array, v: Array) -> Array:
    """``v @ w_t.T`` for ``v (N, K)`` and ``w_t (G * H, K)``, computed gate-major as
    ``(w_t @ v.T).T``: the same numbers, but XLA:CPU runs the recurrent step's small-batch
    products (and their gradients) faster in this layout (an LSTM's forward and backward
    0.85x the plain product's time, a GRU's 0.92x; benchmarks/sequence_formulations.py)."""
    return (w_t @ v.T).T


_NONLINEARITIES: dict[str, Callable[[Array], Array]] = {"tanh": jnp.tanh, "relu": jax.nn.relu}


class RNN(_Recurrent):
    """Elman RNN: ``h_t = act(x_t W_ih + b_ih + h_{t-1} W_hh + b_hh)``.

    Args:
      input_size, hidden_size: the widths of ``x`` and ``h``.
      nonlinearity: ``"tanh"`` or ``"relu"``.
      num_layers: layers stacked, each taking the previous one's outputs.
      bidirectional: also run each layer over the reversed sequence; the outputs are the
        forward and the reverse hidden states concatenated (``2 * H`` wide).
      dropout: dropped (in training, with a key) from every layer's outputs but the last,
        as PyTorch.
      bias: whether to add ``b_ih`` and ``b_hh``.
      unroll: steps per iteration of the scan (a speed knob; the result is the same).
      dtype: dtype of the params (float32 by default).

    Params: ``W_ih (input_size, H)``, ``W_hh (H, H)``, ``b_ih (H,)``, ``b_hh (H,)``
    (``W_ih`` is PyTorch's ``weight_ih_l0.T``); stacked or bidirectional, one such dict per
    layer and direction: ``params["l1"]["W_ih"]`` is ``weight_ih_l1.T``,
    ``params["l0_reverse"]`` holds the ``_l0_reverse`` weights.
    Shapes: ``x (N, T, input_size) -> (N, T, D * H)`` (D = 2 when bidirectional);
    ``apply(..., initial=h0)`` with ``h0 (N, H)`` (stacked: ``(D * num_layers, N, H)``, as
    PyTorch's ``h_0``) starts from a given state (zeros by default);
    ``apply(..., return_carry=True)`` returns ``(outputs, h_n)`` with ``h_n`` shaped like
    ``h0``.
    """

    num_gates: ClassVar[int] = 1
    nonlinearity: str

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh", *,
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                 bias: bool = True, unroll: int = 1, dtype: Any = jnp.float32):
        one_of(nonlinearity, tuple(_NONLINEARITIES), "nonlinearity", name_of(self))
        super().__init__(input_size, hidden_size, num_layers=num_layers,
                         bidirectional=bidirectional, dropout=dropout, bias=bias,
                         unroll=unroll, dtype=dtype)
        set_fields(self, nonlinearity=nonlinearity)

    def cell(self, gates: Array, carry: Carry) -> Carry:
        return _NONLINEARITIES[self.nonlinearity](gates)


class LSTM(_Recurrent):
    """Long short-term memory, gates in PyTorch's order (input, forget, cell, output):
    ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)``.

    Args: as :class:`RNN` (no nonlinearity).

    Params: ``W_ih (input_size, 4H)``, ``W_hh (H, 4H)``, ``b_ih (4H,)``, ``b_hh (4H,)``
    (stacked or bidirectional: one dict per layer and direction, as :class:`RNN`).
    Shapes: ``x (N, T, input_size) -> (N, T, D * H)``, every step's ``h``;
    ``apply(..., initial=(h0, c0))``, each ``(N, H)`` (stacked: ``(D * num_layers, N, H)``),
    starts from a given carry; ``return_carry=True`` also returns ``(h_n, c_n)``.
    """

    num_gates: ClassVar[int] = 4
    carry_names: ClassVar[tuple[str, ...]] = ("h", "c")

    def cell(self, gates: Array, carry: Carry) -> Carry:
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * carry[1] + jax.nn.sigmoid(i) * jnp.tanh(g)
        return jax.nn.sigmoid(o) * jnp.tanh(c), c

    def _hidden(self, carry: Carry) -> Array:
        return carry[0]


class GRU(_Recurrent):
    """Gated recurrent unit, gates in PyTorch's order (reset, update, new):
    ``n = tanh(x W_in + b_in + r * (h W_hn + b_hn))``, ``h_t = (1 - z) * n + z * h_{t-1}``.

    Args: as :class:`RNN` (no nonlinearity).

    Params: ``W_ih (input_size, 3H)``, ``W_hh (H, 3H)``, ``b_ih (3H,)``, ``b_hh (3H,)``
    (stacked or bidirectional: one dict per layer and direction, as :class:`RNN`).
    Shapes: ``x (N, T, input_size) -> (N, T, D * H)``; ``apply(..., initial=h0)``, ``h0 (N, H)``
    (stacked: ``(D * num_layers, N, H)``); ``return_carry=True`` also returns ``h_n``.
    """

    num_gates: ClassVar[int] = 3

    def step_weights(self, params: Params) -> Any:
        # the new gate needs h W_hn apart from x W_in: two products, each gate-major
        return {**params, "W_ih_t": params["W_ih"].T, "W_hh_t": params["W_hh"].T}

    def gates(self, weights: Any, x_t: Array, h: Array) -> Any:
        p = weights
        from_x, from_h = gate_product(p["W_ih_t"], x_t), gate_product(p["W_hh_t"], h)
        return (from_x + p["b_ih"], from_h + p["b_hh"]) if self.bias else (from_x, from_h)

    def cell(self, gates: Any, carry: Carry) -> Carry:
        (x_r, x_z, x_n), (h_r, h_z, h_n) = (jnp.split(g, 3, axis=-1) for g in gates)
        r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
        return (1 - z) * jnp.tanh(x_n + r * h_n) + z * carry
