"""Weights from and to PyTorch: :func:`from_torch` and :func:`to_torch`.

minitorch's layers compute what PyTorch's modules compute, in PyTorch's layouts; what
differs is how the weights are named and, for a few, stored. A net's PyTorch names follow
its structure, as PyTorch's own containers name them: a ``Net``'s i-th layer is ``"i."``
(``torch.nn.Sequential``), a composite's field its name (a module attribute), a sequence
field's element ``"blocks.0."`` (``torch.nn.ModuleList``); ``Residual``, ``MixedPrecision``
and other wrappers add nothing. An ``nn.Repeat``'s copies are named as a ``ModuleList`` of
them (``"blocks.3."``): copy ``i``'s tensors are row ``i`` of the stacked params (and
state). These are the paths of :mod:`minitorch.nn.paths`, so a param's PyTorch name is its
minitorch path with the layer's own names swapped:

================================  =============================================  ==========
minitorch layer (params, state)   PyTorch module's ``state_dict``                 stored
================================  =============================================  ==========
``Linear`` ``W``, ``b``           ``weight`` (out, in), ``bias``                  transposed
``Conv1D/2D/3D`` ``W``, ``b``     ``weight``, ``bias``                           as is
``ConvTranspose1D/2D/3D`` W, b    ``weight``, ``bias``                           as is
``BatchNorm`` ``scale``, ``bias``  ``weight``, ``bias``; state ``mean``, ``var``, as is
 ``num_batches_tracked``          ``running_mean``, ``running_var``,
                                  ``num_batches_tracked``
``LayerNorm``/``GroupNorm``       ``weight``, ``bias``                           as is
``RMSNorm`` ``scale``             ``weight``                                     as is
``Embedding`` ``W``               ``weight``                                     as is
``PReLU`` ``a``                   ``weight``                                     as is
``MultiHeadAttention``            ``in_proj_weight`` (3E, E), ``in_proj_bias``,  q, k, v
 ``q``/``k``/``v``/``o``          ``out_proj.weight``, ``out_proj.bias``          stacked,
                                                                                 transposed
``RNN``/``LSTM``/``GRU``          ``weight_ih_l0``, ``weight_hh_l0``,             transposed
 ``W_ih``, ``W_hh``, ``b_ih``,    ``bias_ih_l0``, ``bias_hh_l0`` (``_l1``,
 ``b_hh`` (``l0``, ``l0_reverse``  ``_l0_reverse``, ...)
 ... when stacked)
``nn.Param`` field                the attribute (an ``nn.Parameter``)            as is
any other layer                   its params' own dotted names                   as is
================================  =============================================  ==========

PyTorch is never imported here: ``from_torch`` reads the tensors the caller hands in
(``.numpy()``, or DLPack for dtypes NumPy lacks) or a ``.safetensors`` file, and
``to_torch`` returns NumPy arrays (``torch.as_tensor`` each to load them).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from minitorch.errors import ArgumentError
from minitorch.nn.activations import PReLU
from minitorch.nn.attention import MultiHeadAttention
from minitorch.nn.composite import Param
from minitorch.nn.conv import _Conv, _ConvTranspose
from minitorch.nn.core import Layer, Params, State
from minitorch.nn.embedding import Embedding
from minitorch.nn.linear import Linear
from minitorch.nn.normalization import BatchNorm, GroupNorm, LayerNorm, RMSNorm
from minitorch.nn.paths import dotted, join
from minitorch.nn.recurrent import _Recurrent
from minitorch.nn.repeat import repeats_below, split_copies, stack_copies

__all__ = ["InteropError", "Unmatched", "from_torch", "to_torch"]


class InteropError(KeyError, ValueError):
    """A PyTorch name missing, unexpected, or with a shape that does not fit; the message
    names the PyTorch name and the minitorch path."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Unmatched(NamedTuple):
    """What ``from_torch(..., strict=False)`` left unmatched: ``missing`` PyTorch names the
    net needs and the weights lacked (those params keep their given or initial values),
    ``unexpected`` names in the weights that the net has no place for."""

    missing: list[str]
    unexpected: list[str]


@dataclasses.dataclass(frozen=True)
class _Tensor:
    """One PyTorch tensor and the minitorch leaves it holds.

    ``torch``: its PyTorch name; ``paths``: the dotted paths of the minitorch leaves (in
    ``tree``, "params" or "state"); ``join(arrays) -> tensor`` and ``split(tensor) ->
    arrays`` convert between them."""

    torch: str
    paths: tuple[str, ...]
    tree: str = "params"
    join: Callable[[list[np.ndarray]], np.ndarray] = lambda arrays: arrays[0]
    split: Callable[[np.ndarray], list[np.ndarray]] = lambda tensor: [tensor]

    def below(self, prefix: str) -> _Tensor:
        return dataclasses.replace(self, torch=join(prefix, self.torch),
                                   paths=tuple(join(prefix, p) for p in self.paths))


def _transposed(torch: str, path: str) -> _Tensor:
    return _Tensor(torch, (path,), join=lambda a: a[0].T, split=lambda t: [t.T])


def _stacked_transposed(torch: str, paths: tuple[str, ...]) -> _Tensor:
    """Attention's ``in_proj_weight`` (3E, E): q, k and v's ``W.T`` one under the other."""
    def split(t: np.ndarray) -> list[np.ndarray]:
        return [part.T for part in np.split(t, len(paths))]

    return _Tensor(torch, paths, join=lambda a: np.concatenate([w.T for w in a]), split=split)


def _stacked(torch: str, paths: tuple[str, ...]) -> _Tensor:
    return _Tensor(torch, paths, join=np.concatenate,
                   split=lambda t: list(np.split(t, len(paths))))


def _renamed(params: Params, names: Mapping[str, str]) -> list[_Tensor]:
    """The layer's params present in ``params`` under PyTorch's ``names``, as is."""
    return [_Tensor(names[name], (name,)) for name in names if name in params]


def _linear(layer: Linear, params: Params) -> list[_Tensor]:
    return [_transposed("weight", "W"), *_renamed(params, {"b": "bias"})]


def _norm(layer: Layer, params: Params) -> list[_Tensor]:
    return _renamed(params, {"scale": "weight", "bias": "bias"})


def _batch_norm(layer: BatchNorm, params: Params) -> list[_Tensor]:
    return [*_norm(layer, params),
            *(_Tensor(torch, (name,), "state") for name, torch in
              (("mean", "running_mean"), ("var", "running_var"),
               ("num_batches_tracked", "num_batches_tracked")))]


def _attention(layer: MultiHeadAttention, params: Params) -> list[_Tensor]:
    qkv = ("q", "k", "v")
    tensors = [_stacked_transposed("in_proj_weight", tuple(f"{n}.W" for n in qkv)),
               _transposed("out_proj.weight", "o.W")]
    if layer.bias:
        tensors += [_stacked("in_proj_bias", tuple(f"{n}.b" for n in qkv)),
                    _Tensor("out_proj.bias", ("o.b",))]
    return tensors


def _recurrent(layer: _Recurrent, params: Params) -> list[_Tensor]:
    tensors = []
    for cell, _, _ in layer.cells():
        suffix = cell[1:]  # "l0_reverse" -> "0_reverse": PyTorch's weight_ih_l0_reverse
        where = cell if layer.stacked else ""
        cell_params = params[cell] if layer.stacked else params
        tensors += [_transposed(f"weight_ih_l{suffix}", join(where, "W_ih")),
                    _transposed(f"weight_hh_l{suffix}", join(where, "W_hh"))]
        tensors += [_Tensor(f"{torch}_l{suffix}", (join(where, name),))
                    for name, torch in (("b_ih", "bias_ih"), ("b_hh", "bias_hh"))
                    if name in cell_params]
    return tensors


def _own_names(layer: Layer, params: Params) -> list[_Tensor]:
    """Any other layer: each param under its own dotted name (a ``Param``: the attribute)."""
    return [_Tensor(path, (path,)) for path in _leaf_paths(params)]


_FAMILIES: tuple[tuple[type | tuple[type, ...], Callable[[Any, Params], list[_Tensor]]], ...] = (
    (Linear, _linear), (BatchNorm, _batch_norm), (LayerNorm, _norm), (GroupNorm, _norm),
    (RMSNorm, _norm), (Embedding, lambda layer, params: [_Tensor("weight", ("W",))]),
    (PReLU, lambda layer, params: [_Tensor("weight", ("a",))]),
    (MultiHeadAttention, _attention), (_Recurrent, _recurrent), (Param, _own_names),
    # Convolutions store W and b in PyTorch's layouts.
    ((_Conv, _ConvTranspose), lambda layer, params: _renamed(params, {"W": "weight",
                                                                       "b": "bias"})),
)


def _tensors(layer: Layer, params: Params, prefix: str = "") -> list[_Tensor]:
    """Every PyTorch tensor of ``layer`` (params laid out as ``params``), named below
    ``prefix``: containers by their children's names, leaves by their family."""
    children = layer.children()
    if children:
        entries = layer.unpack(params, "params")  # type: ignore[attr-defined]
        return [t for (name, child), sub in zip(children, entries)
                for t in _tensors(child, sub, join(prefix, name))]
    for family, tensors in _FAMILIES:
        if isinstance(layer, family):
            return [t.below(prefix) for t in tensors(layer, params)]
    return [t.below(prefix) for t in _own_names(layer, params)]


def _leaf_paths(tree: Any) -> list[str]:
    return [dotted(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _flat(tree: Any) -> dict[str, Any]:
    return {dotted(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def to_torch(net: Layer, params: Params, state: State = None) -> dict[str, np.ndarray]:
    """``net``'s params (and, for a stateful net, ``state``) as a PyTorch ``state_dict``
    of NumPy arrays, named as a PyTorch model of the same structure names them.

    Load it with ``model.load_state_dict({k: torch.as_tensor(v) for k, v in
    sd.items()})``; ``from_torch(net, sd)`` gives the params back exactly.

    Raises:
      ArgumentError: a stateful net without ``state``.
    """
    if net.stateful and state is None:
        raise ArgumentError(f"to_torch: {type(net).__name__} keeps state (BatchNorm's running "
                            f"statistics): pass state=...")
    repeats = repeats_below(net)
    trees = {"params": split_copies(_flat(params), repeats),
             "state": split_copies(_flat(state), repeats) if net.stateful else {}}
    # C-ordered, writable copies: what torch.as_tensor and safetensors' writer expect
    return {t.torch: np.array(t.join([np.asarray(trees[t.tree][p]) for p in t.paths]),
                              order="C")
            for t in _tensors(net, params)}


def from_torch(net: Layer, weights: Any, *, strict: bool = True, params: Params = None,
               state: State = None) -> Any:
    """``net``'s params (and state) from a PyTorch ``state_dict``.

    Args:
      net: the minitorch net, built with the same structure as the PyTorch model.
      weights: a dict of PyTorch tensors or NumPy arrays by PyTorch name (a
        ``state_dict()``, or ``to_torch``'s output), or the path of a ``.safetensors``
        file (``str`` or ``os.PathLike``; the format Hugging Face ships weights in).
      strict: True (default) raises on a missing or unexpected name; False loads what
        matches and returns what did not.
      params, state: what missing tensors keep with ``strict=False`` (default: ``net.init``
        from key 0 and ``net.init_state()``); also the dtypes the loaded arrays take.

    Returns:
      ``params``, or ``(params, state)`` for a stateful net; with ``strict=False``, the
      same followed by an :class:`Unmatched`.

    Raises:
      InteropError: a missing name (naming the PyTorch name and the minitorch path), an
        unexpected one (its PyTorch name), or a shape that does not fit (both names, both
        shapes).
    """
    given = _read(weights)
    template = net.init(jax.random.key(0)) if params is None else params
    state_template = (net.init_state() if state is None else state) if net.stateful else None
    repeats = repeats_below(net)
    trees = {"params": split_copies(_flat(template), repeats),
             "state": split_copies(_flat(state_template), repeats)}
    missing = []
    for tensor in _tensors(net, template):
        if tensor.torch not in given:
            missing.append(tensor)
            continue
        leaves = trees[tensor.tree]
        value = given.pop(tensor.torch)
        for path, array in zip(tensor.paths, _split(tensor, value, leaves)):
            leaves[path] = jnp.asarray(array, dtype=jnp.result_type(leaves[path]))
    if strict and (missing or given):
        raise InteropError(_unmatched_message(missing, sorted(given)))
    loaded_params = _rebuilt(template, stack_copies(trees["params"], repeats))
    out: Any = ((loaded_params, _rebuilt(state_template, stack_copies(trees["state"],
                                                                         repeats)))
                if net.stateful
                else loaded_params)
    if strict:
        return out
    unmatched = Unmatched([t.torch for t in missing], sorted(given))
    return (*out, unmatched) if net.stateful else (out, unmatched)


def _split(tensor: _Tensor, value: np.ndarray, leaves: dict[str, Any]) -> list[np.ndarray]:
    """``value`` split into the leaves ``tensor`` holds; an InteropError naming both names
    and both shapes when it does not fit them (a square ``Linear`` fits either way: it is
    transposed all the same, so its outputs are right)."""
    wanted = [np.shape(leaves[p]) for p in tensor.paths]
    try:
        arrays = tensor.split(value)
    except ValueError:  # np.split of an axis the leaves do not divide
        arrays = []
    if [np.shape(a) for a in arrays] == wanted:
        return arrays
    # only on the way to the error: the PyTorch shape the leaves need
    expected = tensor.join([np.broadcast_to(np.zeros((), np.float32), w) for w in wanted]).shape
    raise InteropError(f"from_torch: {tensor.torch!r} has shape {tuple(value.shape)}, "
                       f"but minitorch {tensor.tree} {', '.join(tensor.paths)} needs "
                       f"{tuple(expected)} in PyTorch's layout")


def _unmatched_message(missing: list[_Tensor], unexpected: list[str]) -> str:
    parts = []
    if missing:
        shown = "; ".join(f"{t.torch!r} (minitorch {t.tree} {', '.join(t.paths)})"
                          for t in missing[:10])
        parts.append(f"{len(missing)} missing: {shown}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (no minitorch param takes them): "
                     f"{', '.join(repr(n) for n in unexpected[:10])}")
    return (f"from_torch: the weights do not match the net: {'; '.join(parts)}; pass "
            f"strict=False to load what matches")


def _rebuilt(template: Any, flat: dict[str, Any]) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    return jax.tree_util.tree_unflatten(treedef, [flat[dotted(p)] for p, _ in leaves])


def _read(weights: Any) -> dict[str, np.ndarray]:
    """The weights as ``{name: NumPy array}``."""
    if isinstance(weights, (str, os.PathLike)):
        import safetensors.numpy

        return dict(safetensors.numpy.load_file(os.fspath(weights)))
    if not isinstance(weights, Mapping):
        raise ArgumentError(f"from_torch: weights must be a dict of tensors or arrays (a "
                            f"state_dict) or a .safetensors path, received "
                            f"{type(weights).__name__}")
    return {str(name): _numpy(name, value) for name, value in weights.items()}


def _numpy(name: Any, value: Any) -> np.ndarray:
    """A tensor or array as NumPy: ``.numpy()`` for a PyTorch tensor (detached, on the
    CPU), DLPack for dtypes NumPy lacks (bfloat16)."""
    if hasattr(value, "detach"):  # a torch.Tensor, read without importing torch
        value = value.detach().cpu()
        try:
            return value.numpy()
        except TypeError:
            return np.asarray(jnp.from_dlpack(value))
    if not hasattr(value, "shape"):
        raise ArgumentError(f"from_torch: weights[{name!r}] must be a tensor or an array, "
                            f"received {type(value).__name__}")
    return np.asarray(value)
