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
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from minitorch.errors import (
    DTypeError,
    KeyArgError,
    LayerError,
    ParamsError,
    ShapeError,
    StateError,
)

Array = jax.Array
Params = Any  # a pytree of arrays: dict for a layer, list of them for a Net
State = Any  # buffers such as BatchNorm's running statistics, kept apart from params
PRNGKey = jax.Array  # new-style ``jax.random.key`` or raw ``uint32[2]`` ``PRNGKey``


@dataclasses.dataclass(frozen=True)
class Layer:
    """Base class of every layer: a frozen dataclass of hyperparameters.

    Subclasses override ``init`` (default: no params) and ``apply``. A layer with buffers
    (``BatchNorm``) sets ``stateful = True``, overrides ``init_state``, takes ``state=`` in
    ``apply`` and returns ``(y, new_state)``.
    """

    stateful: ClassVar[bool] = False

    def init(self, key: PRNGKey) -> Params:
        """Create this layer's params from ``key``; a parameterless layer returns ``{}``."""
        check_key(self, key, "init")
        return {}

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False) -> Array:
        raise NotImplementedError

    def init_state(self) -> State:
        """This layer's initial state; ``{}`` for a layer without buffers."""
        return {}

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
    if jax.tree.structure(tree) != jax.tree.structure(expected):
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


def split_key(key: PRNGKey | None, num: int) -> list[PRNGKey | None]:
    """``num`` independent subkeys of ``key`` (or ``num`` Nones when ``key`` is None)."""
    if key is None:
        return [None] * num
    return list(jax.random.split(key, num))


@dataclasses.dataclass(frozen=True, init=False)
class Net(Layer):
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

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    @property
    def stateful(self) -> bool:  # type: ignore[override]
        """Whether any layer keeps state (then ``apply`` takes ``state=`` and returns it)."""
        return any(layer.stateful for layer in self.layers)

    def init(self, key: PRNGKey) -> list[Params]:
        check_key(self, key, "init")
        keys = split_key(key, len(self.layers))
        return [self._at(i, layer.init, k) for i, (layer, k) in enumerate(zip(self.layers, keys))]

    def init_state(self) -> list[State]:
        """One entry per layer: ``{}`` for most, running statistics for ``BatchNorm``."""
        return [layer.init_state() for layer in self.layers]

    def apply(self, params: Params, x: Array, *, key: PRNGKey | None = None,
              train: bool = False, state: State = None) -> Any:
        """Apply the layers in order.

        Returns ``y``; for a net with stateful layers, which needs ``state=``, ``(y, new_state)``.
        """
        y, new_states, _ = self._run(params, x, key=key, train=train, state=state)
        return (y, new_states) if self.stateful else y

    def _run(self, params: Params, x: Array, *, key: PRNGKey | None = None,
             train: bool = False, state: State = None,
             capture: bool = False) -> tuple[Array, list[State], list[Any]]:
        """``apply``'s loop: the output, the new states, and with ``capture`` every layer's
        output (a nested net's as a list of its layers' outputs)."""
        self._check_params(params)
        states = self._check_state(state)
        if key is not None:
            check_key(self, key)
        keys = split_key(key, len(self.layers))
        new_states, outputs = [], []
        for i, (layer, layer_params, layer_key) in enumerate(zip(self.layers, params, keys)):
            layer_state = states[i] if states else ({} if not layer.stateful else None)
            if isinstance(layer, Net) and capture:
                x, layer_state, inner = self._at(i, layer._run, layer_params, x, key=layer_key,
                                                 train=train, state=states[i] if states
                                                 and layer.stateful else None, capture=True)
                outputs.append(inner)
            elif layer.stateful:
                x, layer_state = self._at(i, layer.apply, layer_params, x, key=layer_key,
                                          train=train, state=layer_state)
                outputs.append(x)
            else:
                x = self._at(i, layer.apply, layer_params, x, key=layer_key, train=train)
                outputs.append(x)
            new_states.append(layer_state)
        return x, new_states, outputs

    def _check_state(self, state: State) -> list[State] | None:
        if not self.stateful:
            if state is not None and jax.tree.leaves(state):
                raise StateError(name_of(self), "this net has no stateful layers; call apply "
                                 "without state=")
            return None
        if not isinstance(state, (list, tuple)) or len(state) != len(self.layers):
            which = [f"{i} ({name_of(layer)})" for i, layer in enumerate(self.layers)
                     if layer.stateful]
            got = "None" if state is None else (
                f"{len(state)} entries" if isinstance(state, (list, tuple))
                else type(state).__name__)
            raise StateError(name_of(self), f"layers {', '.join(which)} keep state: expected "
                             f"state=net.init_state(), a list of {len(self.layers)} entries, "
                             f"received {got}")
        return list(state)

    def _check_params(self, params: Params) -> None:
        if not isinstance(params, (list, tuple)) or len(params) != len(self.layers):
            got = (f"{len(params)} entries" if isinstance(params, (list, tuple))
                   else type(params).__name__)
            raise ParamsError(name_of(self), f"expected params as a list of {len(self.layers)} "
                              f"entries (one per layer), received {got}; were these params "
                              f"made by this net's init?")

    def _at(self, index: int, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LayerError as err:
            raise err.at(index, self.layers[index]).with_traceback(err.__traceback__) from None


def set_fields(layer: Layer, **fields: Any) -> None:
    """Set fields of a frozen layer from its own ``__init__``."""
    for name, value in fields.items():
        object.__setattr__(layer, name, value)


def positive_int(value: Any, name: str, owner: str) -> int:
    """``value`` if it is an int >= 1, else ValueError naming ``owner`` and ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, received {value!r}")
    return value


def index_paths(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten the nested lists a net produces (its params, its layers' outputs, its
    ``layer_tree``) into ``[(index path, entry)]``: ``"3"`` for layer 3, ``"5.0"`` for
    layer 0 of the nested net at index 5. A non-list ``tree`` is the single entry ``"0"``."""
    if not isinstance(tree, (list, tuple)):
        return [(prefix.rstrip(".") or "0", tree)]
    return [item for i, sub in enumerate(tree) for item in index_paths(sub, f"{prefix}{i}.")]


def layer_tree(layer: Layer) -> Any:
    """A net's layers as nested lists shaped like its params (a leaf layer stands alone)."""
    return [layer_tree(inner) for inner in layer.layers] if isinstance(layer, Net) else layer


def conv_output_size(size: int, kernel: int, stride: int, dilation: int,
                     pad: tuple[int, int]) -> int:
    """Output length of a strided, dilated window over ``size`` padded by ``pad``."""
    return (size + pad[0] + pad[1] - dilation * (kernel - 1) - 1) // stride + 1


def as_pair(value: int | Sequence[int], name: str, owner: str) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(2, 3) -> (2, 3)``; anything else raises ValueError naming ``owner``."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{owner}: {name} must be a positive int or a pair of them, "
                         f"received {value!r}")
    return pair  # type: ignore[return-value]


Padding = int | tuple[int, int] | str


def resolve_padding(padding: Padding, spatial: Sequence[int], kernel: Sequence[int],
                    stride: Sequence[int], dilation: Sequence[int],
                    owner: str) -> tuple[tuple[int, int], ...]:
    """Explicit ``(before, after)`` pads per spatial axis.

    ``"same"`` gives ``ceil(size / stride)`` outputs, padding ``total // 2`` before and the
    rest after (as XLA and PyTorch do); ``"valid"`` pads nothing; an int or pair pads
    symmetrically.
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
        raise ValueError(f"{owner}: padding must be an int, a pair, 'same' or 'valid', "
                         f"received {padding!r}")
    pair = (padding, padding) if isinstance(padding, int) else tuple(padding)
    if len(pair) != 2 or not all(isinstance(p, int) and p >= 0 for p in pair):
        raise ValueError(f"{owner}: padding must be a non-negative int, a pair of them, "
                         f"'same' or 'valid', received {padding!r}")
    return tuple((p, p) for p in pair)


def reshape_examples(x: Array, shape: Sequence[int]) -> Array:
    """``jnp.reshape(x, shape)`` for a ``shape`` that keeps axis 0 (the batch) whole.

    Under a ``Mesh`` with explicit axes JAX cannot infer how a reshape that splits axes is
    sharded, so the batch axis keeps its sharding and the other axes are replicated.
    """
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if not spec or sharding.mesh.empty:
        return jnp.reshape(x, shape)
    out = sharding.update(spec=PartitionSpec(spec[0], *[None] * (len(shape) - 1)))
    return jnp.reshape(x, shape, out_sharding=out)


def count_params(params: Params) -> int:
    """Total number of scalars in a params pytree."""
    return sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(params))
