"""The layer protocol, ``Net``, and the trace-time checks every layer shares.

A layer is an immutable object holding hyperparameters only, with two pure entry points::

    params = layer.init(key)                                  # a pytree of arrays
    y = layer.apply(params, x, *, key=None, train=False)      # same inputs, same output

All checks here look at shapes, dtypes and tree structure only, so they run once,
at trace time, under ``jax.jit``, and cost nothing in the compiled step.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, overload

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from minitorch.errors import (
    ArgumentError,
    DTypeError,
    IdError,
    KeyArgError,
    LayerError,
    ParamsError,
    ShapeError,
    StateError,
    check_int,
    describe,
)

Array = jax.Array
Params = Any  # a pytree of arrays: dict for a layer, list of them for a Net
State = Any  # buffers such as BatchNorm's running statistics, kept apart from params
PRNGKey = jax.Array  # new-style ``jax.random.key`` or raw ``uint32[2]`` ``PRNGKey``


Tap = Callable[[str, Any], None]  # receives (sub-layer path, its output) at trace time


@dataclasses.dataclass(frozen=True)
class Layer:
    """Base class of every layer: a frozen dataclass of hyperparameters.

    Subclasses override ``init`` (default: no params) and ``apply``. A layer with buffers
    (``BatchNorm``) sets ``stateful = True``, overrides ``init_state``, takes ``state=`` in
    ``apply`` and returns ``(y, new_state)``.

    Inside the library every layer is called one way, :meth:`run` (state in, state out), so
    nets, compositions, ``summary``, telemetry and the train steps treat all layers alike.
    """

    stateful: ClassVar[bool] = False

    def init(self, key: PRNGKey) -> Params:
        """Create this layer's params from ``key``; a parameterless layer returns ``{}``."""
        check_key(self, key, "init")
        return {}

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Any:
        """``y``; for a stateful layer, which also takes ``state=``, ``(y, new_state)``."""
        raise NotImplementedError

    def init_state(self) -> State:
        """This layer's initial state; ``{}`` for a layer without buffers."""
        return {}

    def run(self, params: Params, state: State, x: Any, *, key: PRNGKey | None = None,
            train: bool = False, tap: Tap | None = None, **kwargs: Any) -> tuple[Any, State]:
        """``apply`` in the library's one internal convention: ``(y, new_state)`` for every
        layer, stateful or not (a stateless layer returns ``state`` unchanged).

        ``tap(path, output)``, when given, receives the output of every sub-layer, addressed
        by its path below this layer (``"2.attn"``); a leaf layer has none to report.
        ``kwargs`` (e.g. ``mask=``) reach ``apply``.
        """
        apply: Callable[..., Any] = self.apply  # a stateful leaf's apply also takes state=
        if self.stateful:  # a leaf written in the public form: apply(..., state=) -> (y, state)
            return apply(params, x, key=key, train=train, state=state, **kwargs)
        return apply(params, x, key=key, train=train, **kwargs), state

    def children(self) -> tuple[tuple[str | None, Layer], ...]:
        """The sub-layers, each with its name in the params tree (None: the same tree)."""
        return ()

    def scans_well(self) -> bool:
        """Whether this layer runs about as fast inside a ``lax.scan`` (a compiled loop of
        steps) as step by step; ``fit(loop="auto")`` steps through nets where one does
        not. A container scans well when all its sub-layers do; a leaf whose kernels
        slow down inside loops overrides this."""
        return all(layer.scans_well() for _, layer in self.children())

    def labels(self) -> list[tuple[int | str | None, Layer]]:
        """``(label, layer)`` per sub-layer as errors name it: an index for a numbered
        sub-layer (``layer 2``), the name for a named one (``attn``), None for a wrapper's
        single unnamed sub-layer, whose errors need no extra level."""
        return [(label_of(name), layer) for name, layer in self.children()]

    def tensor_axes(self) -> Any:
        """For tensor parallelism (``parallel.param_shardings(..., tensor=)``): a tree shaped
        like the params holding, per param, the axis split over the mesh's tensor axis, or
        None to keep it whole. Nothing is split by default; a container gathers its
        sub-layers' choices, and a layer with weights worth splitting (``Linear``,
        convolutions, attention, recurrent layers, ``Embedding``) declares its own,
        Megatron-style."""
        return jax.tree.map(lambda _: None, self.param_spec)

    @functools.cached_property
    def param_spec(self) -> Params:
        """Shapes and dtypes ``init`` creates (``jax.ShapeDtypeStruct`` leaves); no FLOPs spent."""
        return jax.eval_shape(self.init, jax.random.key(0))

    @functools.cached_property
    def state_spec(self) -> State:
        """Shapes and dtypes ``init_state`` creates."""
        return jax.eval_shape(self.init_state)


def name_of(layer: Layer) -> str:
    return type(layer).__name__


def check_key(layer: Layer, key: Any, argument: str = "key") -> None:
    """Raise KeyArgError unless ``key`` is a typed PRNG key or a raw ``uint32[2]`` key."""
    if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        if key.shape != ():
            raise KeyArgError(name_of(layer), f"{argument} expected a single PRNG key, "
                              f"received a batch of keys of shape {key.shape}")
        return
    shape, dtype = getattr(key, "shape", None), getattr(key, "dtype", None)
    if shape == (2,) and dtype == jnp.uint32:
        return
    received = f"{type(key).__name__}" if shape is None else f"{dtype}{list(shape)}"
    raise KeyArgError(name_of(layer), f"{argument} expected a PRNG key (jax.random.key(seed) "
                      f"or jax.random.PRNGKey(seed)), received {received}")


def _shapes(tree: Any) -> Any:
    return jax.tree.map(lambda leaf: tuple(jnp.shape(leaf)), tree)


def check_params(layer: Layer, params: Params) -> None:
    """Raise ParamsError unless ``params`` has the structure and shapes ``layer.init`` makes."""
    _check_tree(layer, params, layer.param_spec, "params", ParamsError)


def check_state(layer: Layer, state: State) -> None:
    """Raise StateError unless ``state`` has the structure and shapes ``init_state`` makes."""
    if state is None:
        raise StateError(name_of(layer), "expected state=... (from init_state()), received None")
    _check_tree(layer, state, layer.state_spec, "state", StateError)


def _check_tree(layer: Layer, tree: Any, expected: Any, what: str, error: type) -> None:
    if jax.tree.structure(tree) != jax.tree.structure(expected):  # type: ignore[operator]
        raise error(name_of(layer), f"{what} structure mismatch: expected "
                    f"{_shapes(expected)}, received {_describe(tree)}")
    for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(expected),
                                 jax.tree.leaves(tree)):
        if tuple(want.shape) != tuple(jnp.shape(got)):
            raise error(name_of(layer), f"{what}{jax.tree_util.keystr(path)} expected "
                        f"shape {tuple(want.shape)}, received {tuple(jnp.shape(got))}")


def _describe(tree: Any) -> str:
    try:
        return str(_shapes(tree))
    except Exception:  # not a pytree of arrays at all
        return type(tree).__name__


def check_float(layer: Layer, x: Array) -> None:
    """Raise DTypeError unless ``x`` is a floating-point array."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise DTypeError(name_of(layer), f"expected a floating-point input, received {dtype} "
                         f"(cast with x.astype(jnp.float32))")


def check_shape(layer: Layer, x: Array, expected: Sequence[int | str], *,
                leading: bool = False, what: str = "input") -> None:
    """Raise ShapeError unless ``x.shape`` matches ``expected``.

    An int entry must match exactly; a str entry (a name such as ``"N"``) matches any
    size. With ``leading=True`` any number of leading axes may come first, shown as ``...``.
    """
    shape = tuple(jnp.shape(x))
    ndim = len(expected)
    tail = shape[-ndim:] if ndim else ()
    ok = (len(shape) >= ndim if leading else len(shape) == ndim) and all(
        isinstance(want, str) or want == got for want, got in zip(expected, tail))
    if not ok:
        shown = ", ".join(map(str, expected))
        shown = f"(..., {shown})" if leading else f"({shown}{',' if ndim == 1 else ''})"
        raise ShapeError(name_of(layer), f"expected {what} of shape {shown}, received {shape}")


@overload
def split_key(key: PRNGKey, num: int) -> list[PRNGKey]: ...
@overload
def split_key(key: None, num: int) -> list[None]: ...
@overload
def split_key(key: PRNGKey | None, num: int) -> list[PRNGKey] | list[None]: ...


def split_key(key: PRNGKey | None, num: int) -> list[PRNGKey] | list[None]:
    """``num`` independent subkeys of ``key`` (or ``num`` Nones when ``key`` is None)."""
    if key is None:
        return [None] * num
    return list(jax.random.split(key, num))


@overload
def label_of(name: str) -> int | str: ...
@overload
def label_of(name: None) -> None: ...


def label_of(name: str | None) -> int | str | None:
    """How errors name a sub-layer from its path element: ``"2"`` -> 2 (shown ``layer 2``),
    ``"attn"`` -> ``"attn"``; None (a wrapper's unnamed sub-layer) stays None."""
    return None if name is None else int(name) if name.isdigit() else name


def run_child(name: str, layer: Layer, params: Params, state: State, x: Any, *,
              key: PRNGKey | None, train: bool, tap: Tap | None,
              **kwargs: Any) -> tuple[Any, State]:
    """Run a sub-layer the one way every container does.

    Args:
      name: its path element (``"2"``, ``"attn"``); errors and profiles name it by it
        (``layer 2 (Conv2D)``, ``attn (MultiHeadAttention)``).
      layer, params, state, x, key, train, kwargs: as for :meth:`Layer.run`.
      tap: the parent's tap; it receives the sub-layer's output at ``name`` and, through the
        sub-layer's own run, every output below it at ``name.<path>``.
    """
    label = label_of(name)
    try:
        with jax.named_scope(describe(label, layer)):  # profiles read like errors
            y, state = layer.run(params, state, x, key=key, train=train,
                                 tap=_below(tap, name), **kwargs)
    except LayerError as err:
        raise err.at(label, layer).with_traceback(err.__traceback__) from None
    if tap is not None:
        tap(name, y)
    return y, state


def no_keywords(layer: Layer, kwargs: dict[str, Any]) -> None:
    """Containers that pass nothing on to their sub-layers take no extra keywords."""
    if kwargs:
        raise TypeError(f"{type(layer).__name__}.apply() got unexpected keyword arguments "
                        f"{sorted(kwargs)}; only a Composite's call() passes keywords on")


def _below(tap: Tap | None, name: str) -> Tap | None:
    if tap is None:
        return tap
    return lambda path, y: tap(f"{name}.{path}", y)


@dataclasses.dataclass(frozen=True)
class Container(Layer):
    """Base of the layers made of sub-layers (``Net``, ``Residual``, ``Parallel``,
    ``Composite``): they give :meth:`children`, :meth:`run` and how their params are laid
    out (:meth:`pack`); ``init``, ``init_state``, ``apply`` and the checks follow here.

    ``init`` splits its key into one subkey per sub-layer, in order (a single unnamed
    sub-layer gets the key itself). A container is stateful when a sub-layer is; then
    ``apply`` takes ``state=`` and returns ``(y, new_state)``, else it returns ``y``.
    """

    @property
    def stateful(self) -> bool:  # type: ignore[override]
        """Whether any sub-layer keeps state (then ``apply`` takes ``state=`` and returns it)."""
        return any(layer.stateful for _, layer in self.children())

    def pack(self, values: list[Any]) -> Any:
        """The params (or state) tree from one entry per sub-layer; a list by default."""
        return list(values)

    def unpack(self, tree: Any, what: str) -> list[Any]:
        """One entry per sub-layer of a params (``what="params"``) or state tree."""
        count = len(self.children())
        if not isinstance(tree, (list, tuple)) or len(tree) != count:
            got = (f"{len(tree)} entries" if isinstance(tree, (list, tuple))
                   else type(tree).__name__)
            error = ParamsError if what == "params" else StateError
            raise error(name_of(self), f"expected {what} as a list of {count} entries (one per "
                        f"layer), received {got}; were these {what} made by this "
                        f"{name_of(self)}'s init{'' if what == 'params' else '_state'}?")
        return list(tree)

    def unpack_all(self, params: Params, state: State,
                   key: PRNGKey | None
                   ) -> tuple[list[Any], list[Any], list[PRNGKey] | list[None]]:
        """What ``run`` starts from: one params entry, one state entry and one subkey (None
        without a key) per sub-layer, the trees' structure and the key checked."""
        if key is not None:
            check_key(self, key)
        return (self.unpack(params, "params"), self.unpack(state, "state"),
                split_key(key, len(self.children())))

    def init(self, key: PRNGKey) -> Params:
        check_key(self, key, "init")
        children = self.children()
        keys = [key] if _single_unnamed(children) else split_key(key, len(children))
        return self.pack([_named(label, layer, layer.init, k) for (label, layer), k
                          in zip(self.labels(), keys)])

    def init_state(self) -> State:
        return self.pack([layer.init_state() for _, layer in self.children()])

    def tensor_axes(self) -> Any:
        return self.pack([layer.tensor_axes() for _, layer in self.children()])

    def apply(self, params: Params, x: Any, *, key: PRNGKey | None = None,
              train: bool = False, state: State = None, **kwargs: Any) -> Any:
        """Returns ``y``; for a container with stateful sub-layers, which needs ``state=``,
        ``(y, new_state)``."""
        y, new_state = self.run(params, resolve_state(self, state), x, key=key, train=train,
                                **kwargs)
        return public_result(self, y, new_state)


def resolve_state(layer: Layer, state: State) -> State:
    """The state ``layer.run`` takes for the ``state=`` of a public call: the given one for
    a stateful layer (StateError naming the stateful sub-layers when missing), an empty
    ``init_state()`` for one without state (StateError when given one with arrays)."""
    if not layer.stateful:
        if state is not None and jax.tree.leaves(state):
            raise StateError(name_of(layer), f"this {name_of(layer)} has no stateful layers; "
                             f"call it without state=")
        return layer.init_state()
    if state is None:
        which = [f"{label} ({name_of(sub)})" for label, sub in layer.labels()
                 if sub.stateful and label is not None]
        kept = f"layers {', '.join(which)} keep state: " if which else ""
        raise StateError(name_of(layer), f"{kept}expected state={name_of(layer).lower()}"
                         f".init_state(), received None")
    return state


def public_result(layer: Layer, y: Any, state: State) -> Any:
    """What a public call returns from ``run``'s ``(y, state)``: ``(y, state)`` for a
    stateful layer, ``y`` alone for one without state."""
    return (y, state) if layer.stateful else y


def _single_unnamed(children: tuple[tuple[str | None, Layer], ...]) -> bool:
    return len(children) == 1 and children[0][0] is None


def _named(label: int | str | None, layer: Layer, fn: Any, *args: Any) -> Any:
    if label is None:
        return fn(*args)
    try:
        return fn(*args)
    except LayerError as err:
        raise err.at(label, layer).with_traceback(err.__traceback__) from None


@dataclasses.dataclass(frozen=True, init=False)
class Net(Container):
    """A sequence of layers applied one after another; itself a layer, so nets nest.

    ``init`` splits its key into one subkey per layer and returns a list whose i-th
    entry is the i-th layer's params. ``apply`` splits its ``key`` (when given) the
    same way, so one seed fixes every layer. A layer's error is re-raised naming the
    layer's index and type.

    Example::

        net = Net([Linear(4, 16), ReLU(), Linear(16, 3)])
        params = net.init(jax.random.key(0))   # [{"W": (4, 16), "b": (16,)}, {}, {...}]
        logits = net.apply(params, x)           # x: (N, 4) -> (N, 3)
    """

    layers: tuple[Layer, ...]

    def __init__(self, layers: Sequence[Layer]):
        layers = tuple(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Net: layer {i} must be a minitorch layer, received "
                                f"{type(layer).__name__} ({layer!r})")
        set_fields(self, layers=layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        """One layer per line, nested nets indented: ``Net([\n    Linear(...),\n])``."""
        inner = "".join(f"    {repr(layer).replace(chr(10), chr(10) + '    ')},\n"
                        for layer in self.layers)
        return f"{type(self).__name__}([\n{inner}])"

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def children(self) -> tuple[tuple[str | None, Layer], ...]:
        return tuple((str(i), layer) for i, layer in enumerate(self.layers))

    def run(self, params: Params, state: State, x: Any, *, key: PRNGKey | None = None,
            train: bool = False, tap: Tap | None = None,
            **kwargs: Any) -> tuple[Any, list[State]]:
        """Apply the layers in order; ``(y, one new state per layer)``."""
        no_keywords(self, kwargs)
        new_states = []
        for (name, layer), layer_params, layer_state, layer_key in zip(
                self.children(), *self.unpack_all(params, state, key)):
            x, layer_state = run_child(str(name), layer, layer_params, layer_state, x,
                                       key=layer_key, train=train, tap=tap)
            new_states.append(layer_state)
        return x, new_states


def intermediates(layer: Layer, params: Params, x: Any, *, key: PRNGKey | None = None,
                  train: bool = False, state: State = None,
                  **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """``layer.apply``'s result and the output of every sub-layer, keyed by path.

    Paths are ``"3"`` for a net's layer 3, ``"5.0"`` for layer 0 of the net at index 5,
    ``"2.attn"`` for a composite's field ``attn``; a ``Residual`` adds no element of its
    own. A sub-layer called twice reports its last call. Pure and jit-able: the outputs
    are those of the same forward pass that computes ``y``.

    Returns:
      ``(y, outputs)``, or for a stateful layer ``((y, new_state), outputs)``, mirroring
      ``apply``.
    """
    outputs: dict[str, Any] = {}

    def tap(path: str, y: Any) -> None:
        outputs[path] = y

    y, new_state = layer.run(params, resolve_state(layer, state), x, key=key, train=train,
                             tap=tap, **kwargs)
    return public_result(layer, y, new_state), outputs


def named_layers(layer: Layer, prefix: str = "") -> dict[str, Layer]:
    """Every sub-layer below ``layer`` by path (``{"0": Linear, "2": Block, "2.attn": ...}``),
    a container before what is inside it; a ``Residual``'s wrapped layer shares its path."""
    found: dict[str, Layer] = {}
    for name, child in layer.children():
        path = prefix.rstrip(".") if name is None else f"{prefix}{name}"
        if name is not None:
            found[path] = child
        found.update(named_layers(child, f"{path}." if path else ""))
    return found


def set_fields(obj: Layer, /, **fields: Any) -> None:
    """Set fields of a frozen layer from its own ``__init__``."""
    for name, value in fields.items():
        object.__setattr__(obj, name, value)


# Hyperparameter validation, shared by every layer's constructor. Each returns the value in
# its canonical Python form or raises an ArgumentError (a TypeError and a ValueError) naming
# the layer and the argument: bools are not ints, NumPy scalars are numbers, and strings,
# arrays (which would become tracers later), NaN and infinities are refused.

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


def param_groups(tree: Any, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every dict of arrays in a params-like tree (a layer's params, its grads, its updates)
    with its path: ``[("0", {"W": .., "b": ..}), ("2.attn.q", {...}), ...]``.

    Lists contribute their indices and dicts their keys to the path; a parameterless layer's
    ``{}`` is a group with no arrays. A bare layer's params (no container) have path ``"0"``.
    """
    if isinstance(tree, (list, tuple)):
        return [g for i, sub in enumerate(tree) for g in param_groups(sub, f"{prefix}{i}.")]
    if not isinstance(tree, dict):
        return []
    arrays = {k: v for k, v in tree.items() if not isinstance(v, (dict, list, tuple))}
    here = [(prefix.rstrip(".") or "0", arrays)] if arrays or not tree else []
    return here + [g for k, sub in tree.items() if isinstance(sub, (dict, list, tuple))
                   for g in param_groups(sub, f"{prefix}{k}.")]


def conv_output_size(size: int, kernel: int, stride: int, dilation: int,
                     pad: tuple[int, int]) -> int:
    """Output length of a strided, dilated window over ``size`` padded by ``pad``."""
    return (size + pad[0] + pad[1] - dilation * (kernel - 1) - 1) // stride + 1


def spatial_axes(n: int) -> tuple[str, ...]:
    """How shapes in errors name ``n`` spatial axes: ``("L",)`` or ``("H", "W")``."""
    return ("L",) if n == 1 else ("H", "W") if n == 2 else tuple(f"D{i}" for i in range(n))


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


def check_ids(owner: str, ids: Any, upper: int, what: str, keep: Any = None) -> None:
    """Concrete integer ``ids`` (an eager call) must lie in ``[0, upper)`` where ``keep``
    (a boolean mask) is True; raises IdError naming ``owner``. Under ``jit`` the values
    are unknown and nothing is checked (the layer's documented NaN marks them instead)."""
    if isinstance(ids, jax.core.Tracer) or isinstance(keep, jax.core.Tracer):
        return
    values = np.asarray(ids)
    if not np.issubdtype(values.dtype, np.integer):
        return
    if keep is not None:
        values = values[np.broadcast_to(np.asarray(keep), values.shape)]
    outside = (values < 0) | (values >= upper)
    if outside.any():
        raise IdError(owner, f"expected {what} in [0, {upper}), received {int(outside.sum())} "
                             f"outside it (min {values.min()}, max {values.max()})")


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (a NumPy integer too), and not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _int_tuple(value: Any, n: int, minimum: int) -> tuple[int, ...] | None:
    """``value`` as ``n`` ints >= ``minimum`` (an int repeated, or a tuple or list of ``n``),
    or None when it is not that."""
    values = (value,) * n if is_int(value) else tuple(value) if isinstance(
        value, (tuple, list)) else ()
    if len(values) != n or not all(is_int(v) and v >= minimum for v in values):
        return None
    return tuple(int(v) for v in values)


def _several(n: int) -> str:
    return "a pair of them" if n == 2 else f"a tuple of {n}"


def as_tuple(value: int | Sequence[int], n: int, name: str, owner: str) -> tuple[int, ...]:
    """``3 -> (3,) * n``; a sequence of ``n`` positive ints is kept; anything else raises
    ValueError naming ``owner`` and ``name``."""
    values = _int_tuple(value, n, 1)
    if values is None:
        raise ArgumentError(f"{owner}: {name} must be a positive int or {_several(n)}, "
                         f"received {value!r}")
    return values


def as_pair(value: int | Sequence[int], name: str, owner: str) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(2, 3) -> (2, 3)``; anything else raises ValueError naming ``owner``."""
    return as_tuple(value, 2, name, owner)  # type: ignore[return-value]


Padding = int | tuple[int, ...] | str


def resolve_padding(padding: Padding, spatial: Sequence[int], kernel: Sequence[int],
                    stride: Sequence[int], dilation: Sequence[int],
                    owner: str) -> tuple[tuple[int, int], ...]:
    """Explicit ``(before, after)`` pads per spatial axis.

    ``"same"`` gives ``ceil(size / stride)`` outputs, padding ``total // 2`` before and the
    rest after (as XLA and PyTorch do); ``"valid"`` pads nothing; an int, or one int per
    spatial axis, pads symmetrically.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return tuple((0, 0) for _ in spatial)
        if padding == "same":
            pads = []
            for size, k, s, d in zip(spatial, kernel, stride, dilation):
                out = -(-size // s)
                total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise ArgumentError(f"{owner}: padding must be an int, a pair, 'same' or 'valid', "
                         f"received {padding!r}")
    values = _int_tuple(padding, len(spatial), 0)
    if values is None:
        raise ArgumentError(f"{owner}: padding must be a non-negative int, "
                         f"{_several(len(spatial))}, 'same' or 'valid', received {padding!r}")
    return tuple((p, p) for p in values)


def reshape_examples(x: Array, shape: Sequence[int]) -> Array:
    """``jnp.reshape(x, shape)`` for a ``shape`` that keeps axis 0 (the batch) whole.

    Under a ``Mesh`` with explicit axes JAX cannot infer how a reshape that splits axes is
    sharded, so the batch axis keeps its sharding and the other axes are replicated.
    """
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if sharding is None or not spec or sharding.mesh.empty:
        return jnp.reshape(x, shape)
    out = sharding.update(spec=PartitionSpec(spec[0], *[None] * (len(shape) - 1)))
    return jnp.reshape(x, shape, out_sharding=out)


def at_least_f32(x: Array) -> Array:
    """``x`` cast up to float32 when it is a narrower float (bfloat16, float16): statistics
    and losses are long reductions that 8 or 11 bits of mantissa would spoil."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def count_params(params: Params) -> int:
    """Total number of scalars in a params pytree."""
    return sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(params))
