"""Argument validation shared by the whole package: constructors, ``fit``, checkpoints.

Each function returns the value in its canonical Python form or raises an
:class:`~minitorch.errors.ArgumentError` (a ``TypeError`` and a ``ValueError``) naming the
owner (a layer's class, a function) and the argument: bools are not ints, NumPy scalars
are numbers, and strings, arrays (which would become tracers later), NaN and infinities
are refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from minitorch.errors import ArgumentError, check_int


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (a NumPy integer too), and not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def positive_int(value: Any, name: str, owner: str) -> int:
    """``value`` as an int >= 1 (NumPy integers too, bools not)."""
    return check_int(owner, name, value, 1)


def real(value: Any, name: str, owner: str, *, minimum: float | None = None,
         maximum: float | None = None, above: float | None = None,
         below: float | None = None) -> float:
    """``value`` as a finite float within the given bounds (``minimum <= value``,
    ``value < below``, ...): a Python or NumPy int or float, not a bool, string or array."""
    bounds = [(minimum, float.__ge__), (above, float.__gt__), (maximum, float.__le__),
              (below, float.__lt__)]
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))
    if not (number and math.isfinite(value)
            and all(test(float(value), bound) for bound, test in bounds if bound is not None)):
        raise ArgumentError(f"{owner}: {name} must be a finite number"
                            f"{_range_text(minimum, above, maximum, below)}, received {value!r}")
    return float(value)


def _range_text(minimum: float | None, above: float | None, maximum: float | None,
                below: float | None) -> str:
    """`` in [0, 1)``, `` > 0``, `` <= 1`` or nothing."""
    low, high = (minimum, "[") if minimum is not None else (above, "("), \
        (maximum, "]") if maximum is not None else (below, ")")
    if low[0] is not None and high[0] is not None:
        return f" in {low[1]}{low[0]:g}, {high[0]:g}{high[1]}"
    if low[0] is not None:
        return f" {'>=' if low[1] == '[' else '>'} {low[0]:g}"
    if high[0] is not None:
        return f" {'<=' if high[1] == ']' else '<'} {high[0]:g}"
    return ""


def flag(value: Any, name: str, owner: str) -> bool:
    """``value`` as a bool; ``1`` or ``"False"`` is refused rather than read as truth."""
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentError(f"{owner}: {name} must be True or False, received {value!r}")
    return bool(value)


def float_dtype(value: Any, owner: str, name: str = "dtype") -> str:
    """``value``'s name (``"float32"``) if it is a floating-point dtype (params must be
    differentiable). A name, not a ``jnp.dtype``, so that a layer's repr is a valid call."""
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ArgumentError(f"{owner}: {name} must be a floating-point dtype (float32, "
                            f"bfloat16, ...), received {value!r}")
    return dtype.name


def renamed_argument(owner: str, argument: str, value: Any, default: Any, field: str,
                     field_value: Any) -> Any:
    """The value of an argument whose field has another name: ``init=`` is stored as the
    field ``weight_init`` (a field cannot share the name of the layer's ``init`` method).
    The constructor takes either name, so ``dataclasses.replace`` and the repr (which use
    the field's) are valid calls; giving both is an error."""
    if field_value is None:
        return value
    if value is not default and value != default:
        raise ArgumentError(f"{owner}: give {argument}= or {field}= (the same argument), "
                            f"not both; received {value!r} and {field_value!r}")
    return field_value


def check_fits_32_bits(array: np.ndarray, where: str, error: type = ArgumentError) -> None:
    """Refuse 64-bit integers beyond 32 bits while 64-bit mode is off: JAX would wrap them
    (``2**32 + 1`` becomes 1, a valid-looking id)."""
    if (jax.config.read("jax_enable_x64") or array.dtype.kind not in "iu"
            or array.dtype.itemsize != 8 or not array.size):
        return
    narrow = np.iinfo(np.int32 if array.dtype.kind == "i" else np.uint32)
    low, high = array.min(), array.max()
    if low < narrow.min or high > narrow.max:
        raise error(f"{where}: {array.dtype} values in [{low}, {high}] do not fit "
                    f"{narrow.dtype}, and 64-bit mode is off, so JAX would turn them into "
                    f"other numbers. Enable it first: jax.config.update('jax_enable_x64', True)")


def int_tuple(value: Any, n: int, minimum: int) -> tuple[int, ...] | None:
    """``value`` as ``n`` ints >= ``minimum`` (an int repeated, or a tuple or list of ``n``),
    or None when it is not that."""
    values = (value,) * n if is_int(value) else tuple(value) if isinstance(
        value, (tuple, list)) else ()
    if len(values) != n or not all(is_int(v) and v >= minimum for v in values):
        return None
    return tuple(int(v) for v in values)


def several(n: int) -> str:
    return "a pair of them" if n == 2 else f"a tuple of {n}"


def as_tuple(value: int | Sequence[int], n: int, name: str, owner: str) -> tuple[int, ...]:
    """``3 -> (3,) * n``; a sequence of ``n`` positive ints is kept; anything else raises
    ValueError naming ``owner`` and ``name``."""
    values = int_tuple(value, n, 1)
    if values is None:
        raise ArgumentError(f"{owner}: {name} must be a positive int or {several(n)}, "
                         f"received {value!r}")
    return values


def as_pair(value: int | Sequence[int], name: str, owner: str) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(2, 3) -> (2, 3)``; anything else raises ValueError naming ``owner``."""
    return as_tuple(value, 2, name, owner)  # type: ignore[return-value]


def one_of(value: Any, choices: Sequence[Any], name: str, owner: str) -> Any:
    """``value`` if it is one of ``choices``; otherwise an ArgumentError listing them."""
    if not any(value is c or (type(value) is type(c) and value == c) for c in choices):
        shown = [repr(c) for c in choices]
        either = (" or ".join(shown) if len(shown) <= 2
                  else f"{', '.join(shown[:-1])} or {shown[-1]}")
        raise ArgumentError(f"{owner}: {name} must be {either}, received {value!r}")
    return value


def layer_argument(value: Any, name: str, owner: str) -> Any:
    """``value`` if it is a minitorch layer (for containers' constructors)."""
    from minitorch.nn.core import Layer  # validation is below nn/ in the import order

    if not isinstance(value, Layer):
        raise ArgumentError(f"{owner}: {name} must be a minitorch layer, received "
                            f"{type(value).__name__} ({value!r})")
    return value


def layer_sequence(values: Any, name: str, owner: str, element: str = "element") -> tuple:
    """``values`` (a list or tuple of minitorch layers) as a tuple; an element that is not
    a layer is named by its index (``layer 2 must be a minitorch layer``)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ArgumentError(f"{owner}: {name} must be a list or tuple of minitorch layers, "
                            f"received {type(values).__name__}")
    values = tuple(values)
    for i, value in enumerate(values):
        layer_argument(value, f"{element} {i}", owner)
    return values
