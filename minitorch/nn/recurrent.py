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

from minitorch.errors import CacheError, ShapeError
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
from minitorch.validate import flag, float_dtype, positive_int

Carry = Any  # h (N, H); for LSTM the pair (h, c)


class _Recurrent(Layer):
    """The parts every recurrent layer shares: params, checks, the scan over time.

    A subclass gives ``num_gates`` (G), ``cell`` (one step from the gates and the carry)
    and, for LSTM, how a carry is made and read; GRU also how its gates are computed.
    """

    num_gates: ClassVar[int]
    carry_names: ClassVar[tuple[str, ...]] = ("h",)  # the carry's parts, as cached
    input_size: int
    hidden_size: int
    bias: bool
    unroll: int
    dtype: Any

    def __init__(self, input_size: int, hidden_size: int, *, bias: bool = True,
                 unroll: int = 1, dtype: Any = jnp.float32):
        owner = type(self).__name__
        set_fields(self, input_size=positive_int(input_size, "input_size", owner),
                   hidden_size=positive_int(hidden_size, "hidden_size", owner),
                   bias=flag(bias, "bias", owner), unroll=positive_int(unroll, "unroll", owner),
                   dtype=float_dtype(dtype, owner))

    def init(self, key: PRNGKey) -> Params:
        """Every param uniform(-1/sqrt(H), 1/sqrt(H)), as PyTorch."""
        check_key(self, key, "init")
        width, bound = self.num_gates * self.hidden_size, 1.0 / math.sqrt(self.hidden_size)
        shapes: dict[str, tuple[int, ...]] = {"W_ih": (self.input_size, width),
                                              "W_hh": (self.hidden_size, width)}
        if self.bias:
            shapes.update(b_ih=(width,), b_hh=(width,))
        keys = split_key(key, len(shapes))
        return {name: jax.random.uniform(k, shape, self.dtype, -bound, bound)
                for (name, shape), k in zip(shapes.items(), keys)}

    def tensor_axes(self) -> Params:
        """Split by gate columns (``W_ih``, ``W_hh`` axis 1 and the biases)."""
        axes = {"W_ih": 1, "W_hh": 1}
        return {**axes, "b_ih": 0, "b_hh": 0} if self.bias else axes

    def init_cache(self, batch_size: int, max_length: int, dtype: Any = None) -> Cache:
        """The carry between calls (``h``, and ``c`` for LSTM, each ``(N, H)``, zeros) and
        ``index``, how many positions it has consumed (at most ``max_length``)."""
        owner = name_of(self)
        n = positive_int(batch_size, "batch_size", owner)
        positive_int(max_length, "max_length", owner)
        dtype = jnp.dtype(self.dtype if dtype is None else float_dtype(dtype, owner))
        cache: dict[str, Any] = {name: jnp.zeros((n, self.hidden_size), dtype)
                                 for name in self.carry_names}
        return {**cache, "index": jnp.zeros((), jnp.int32),
                "max_length": jnp.asarray(max_length, jnp.int32)}

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False, initial: Carry | None = None,
              cache: Cache | None = None) -> Any:
        """Every step's hidden state ``(N, T, H)``; with ``cache=`` (from
        :meth:`init_cache`), ``(that, new_cache)``, continuing from the cached carry."""
        check_params(self, params)
        check_float(self, x)
        check_shape(self, x, ("N", "T", self.input_size))
        dtype = jnp.result_type(x, params["W_ih"])
        x = x.astype(dtype)  # the carry stays in this dtype, never rounded to the input's
        if cache is not None:
            initial = self._from_cache(cache, initial, x)
        carry = self._initial(initial, x.shape[0], dtype)
        weights = self.step_weights(params)  # once, outside the loop

        def step(carry: Carry, x_t: Array) -> tuple[Carry, Array]:
            carry = self.cell(self.gates(weights, x_t, self._hidden(carry)), carry)
            return carry, self._hidden(carry)

        last, hs = jax.lax.scan(step, carry, x.swapaxes(0, 1), unroll=self.unroll)
        hs = hs.swapaxes(0, 1)
        if cache is None:
            return hs
        end = cache["index"] + x.shape[1]
        parts = last if isinstance(last, tuple) else (last,)
        new = {name: part.astype(cache[name].dtype) for name, part in zip(self.carry_names,
                                                                             parts)}
        # Under jit the index is not known when tracing: outputs past max_length are NaN.
        hs = jnp.where(end <= cache["max_length"], hs, jnp.nan)
        return hs, {**new, "index": jnp.asarray(end, jnp.int32),
                    "max_length": cache["max_length"]}

    def _from_cache(self, cache: Cache, initial: Carry | None, x: Array) -> Carry:
        if initial is not None:
            raise CacheError(name_of(self), "give initial= or cache=, not both (the cache "
                             "holds the carry to continue from)")
        check_cache(self, cache, {**{name: (x.shape[0], self.hidden_size)
                                     for name in self.carry_names},
                                  "index": (), "max_length": ()})
        check_room(self, cache["index"], x.shape[1], cache["max_length"])
        parts = tuple(cache[name] for name in self.carry_names)
        return parts if len(parts) > 1 else parts[0]

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

    def _initial(self, initial: Carry | None, n: int, dtype: Any) -> Carry:
        if initial is None:
            return jnp.zeros((n, self.hidden_size), dtype)
        self._check_carry_part(initial, "initial", n)
        return jnp.asarray(initial, dtype)

    def _check_carry_part(self, value: Any, what: str, n: int) -> None:
        if tuple(jnp.shape(value)) != (n, self.hidden_size):
            raise ShapeError(type(self).__name__, f"expected {what} of shape (N, H) = "
                             f"{(n, self.hidden_size)}, received {tuple(jnp.shape(value))}")


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
      bias: whether to add ``b_ih`` and ``b_hh``.
      unroll: steps per iteration of the scan (a speed knob; the result is the same).
      dtype: dtype of the params (float32 by default).

    Params: ``W_ih (input_size, H)``, ``W_hh (H, H)``, ``b_ih (H,)``, ``b_hh (H,)``
    (``W_ih`` is PyTorch's ``weight_ih_l0.T``).
    Shapes: ``x (N, T, input_size) -> (N, T, H)``; ``apply(..., initial=h0)`` with
    ``h0 (N, H)`` starts from a given state (zeros by default).
    """

    num_gates: ClassVar[int] = 1
    nonlinearity: str

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh", *,
                 bias: bool = True, unroll: int = 1, dtype: Any = jnp.float32):
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', received "
                             f"{nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias=bias, unroll=unroll, dtype=dtype)
        set_fields(self, nonlinearity=nonlinearity)

    def cell(self, gates: Array, carry: Carry) -> Carry:
        return _NONLINEARITIES[self.nonlinearity](gates)


class LSTM(_Recurrent):
    """Long short-term memory, gates in PyTorch's order (input, forget, cell, output):
    ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)``.

    Args: as :class:`RNN` (no nonlinearity).

    Params: ``W_ih (input_size, 4H)``, ``W_hh (H, 4H)``, ``b_ih (4H,)``, ``b_hh (4H,)``.
    Shapes: ``x (N, T, input_size) -> (N, T, H)``, every step's ``h``;
    ``apply(..., initial=(h0, c0))``, each ``(N, H)``, starts from a given carry.
    """

    num_gates: ClassVar[int] = 4
    carry_names: ClassVar[tuple[str, ...]] = ("h", "c")

    def cell(self, gates: Array, carry: Carry) -> Carry:
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * carry[1] + jax.nn.sigmoid(i) * jnp.tanh(g)
        return jax.nn.sigmoid(o) * jnp.tanh(c), c

    def _hidden(self, carry: Carry) -> Array:
        return carry[0]

    def _initial(self, initial: Carry | None, n: int, dtype: Any) -> Carry:
        if initial is None:
            zeros = jnp.zeros((n, self.hidden_size), dtype)
            return zeros, zeros
        if not isinstance(initial, (tuple, list)) or len(initial) != 2:
            raise ShapeError("LSTM", f"expected initial=(h0, c0), each (N, H) = "
                             f"{(n, self.hidden_size)}, received {type(initial).__name__}")
        for what, value in zip(("initial h0", "initial c0"), initial):
            self._check_carry_part(value, what, n)
        return tuple(jnp.asarray(v, dtype) for v in initial)


class GRU(_Recurrent):
    """Gated recurrent unit, gates in PyTorch's order (reset, update, new):
    ``n = tanh(x W_in + b_in + r * (h W_hn + b_hn))``, ``h_t = (1 - z) * n + z * h_{t-1}``.

    Args: as :class:`RNN` (no nonlinearity).

    Params: ``W_ih (input_size, 3H)``, ``W_hh (H, 3H)``, ``b_ih (3H,)``, ``b_hh (3H,)``.
    Shapes: ``x (N, T, input_size) -> (N, T, H)``; ``apply(..., initial=h0)``, ``h0 (N, H)``.
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
