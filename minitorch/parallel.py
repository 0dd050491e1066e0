"""Data parallelism: the same step on many devices, on one host or several.

Two paths, both taking the step that ``train.make_step`` builds (or your own):

* ``jax.pmap``: params replicated with a leading device axis, each device gets a slice of
  the global batch, gradients and metrics averaged with ``lax.pmean`` (build the step with
  ``axis_name=`` and ``jit=False``)::

      step = jax.pmap(train.make_step(net, loss, opt, axis_name="batch", jit=False),
                      axis_name="batch", donate_argnums=(0, 1))
      params, opt_state = replicate(params), replicate(opt_state)
      params, opt_state, metrics = step(params, opt_state, split(batch), None)

* ``jax.jit`` over a ``Mesh`` (JAX's recommended path): the batch is sharded along its
  first axis, params replicated, and XLA inserts the all-reduce; the step is unchanged::

      mesh = data_mesh()
      params, opt_state = replicate_on(mesh, (params, opt_state))
      params, opt_state, metrics = step(params, opt_state, shard_batch(mesh, batch), None)

With several processes (``jax.distributed.initialize``), ``data_mesh`` spans every
process's devices and ``shard_batch`` assembles the global batch from each process's
local part.

Sharded parameters, when a model or its optimiser state outgrows one device: the params
themselves are split over a mesh and the same step runs unchanged (XLA's SPMD partitioner
inserts the collectives)::

    mesh = make_mesh(data=4, model=2)
    shardings = param_shardings(net, mesh, fsdp="data", tensor="model")
    params = jax.jit(net.init, out_shardings=shardings)(key)   # never whole on one device
    opt_state = opt.init(params)      # eagerly: zeros_like keeps each param's sharding
    params, opt_state, metrics = step(params, opt_state, shard_batch(mesh, batch), key)

``opt.init`` runs eagerly there on purpose: under ``jax.jit`` the params are tracers
without a sharding, and XLA places the zeros it creates whole on every device (the first
step then lays them out like the params).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from minitorch.errors import ArgumentError
from minitorch.nn.containers import Container
from minitorch.nn.core import Layer
from minitorch.nn.paths import dotted
from minitorch.nn.repeat import Repeat
from minitorch.validate import is_int

DATA_AXIS = "data"


def replicate(tree: Any, num_devices: int | None = None) -> Any:
    """Stack ``tree`` ``num_devices`` times (default: the local devices) along a new first
    axis, the layout ``jax.pmap`` expects for replicated params."""
    n = jax.local_device_count() if num_devices is None else num_devices
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *jnp.shape(a))), tree)


def unreplicate(tree: Any) -> Any:
    """The first replica of a pmapped tree (after a pmean'd step all replicas are equal)."""
    return jax.tree.map(lambda a: a[0], tree)


def split(batch: Any, num_devices: int | None = None) -> Any:
    """Reshape every leaf ``(N, ...) -> (num_devices, N / num_devices, ...)`` for pmap."""
    n = jax.local_device_count() if num_devices is None else num_devices

    def one(a):
        if jnp.shape(a)[0] % n:
            raise ValueError(f"split: the batch axis ({jnp.shape(a)[0]}) must be divisible by "
                             f"the number of devices ({n})")
        return jnp.reshape(a, (n, -1, *jnp.shape(a)[1:]))

    return jax.tree.map(one, batch)


def data_mesh(axis_name: str = DATA_AXIS, devices: Any = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (axis_name,))


def shard_batch(mesh: Mesh, batch: Any, axis_name: str | None = None, *,
                batch_axis: int = 0) -> Any:
    """Place a batch split along its examples axis over ``mesh``.

    In one process ``batch`` is the global batch. With several processes each passes its
    own local part (the rows its devices should see) and gets back the global array, of
    ``process_count`` times as many rows.

    Args:
      mesh: the mesh; the batch is split over ``axis_name`` (default: its first axis) and
        replicated over the others.
      batch: a pytree of arrays sharing the examples axis.
      batch_axis: the examples axis of every leaf: 0, or 1 for a stack of batches
        ``(steps, N, ...)`` (as ``fit`` streams them).

    Raises:
      ArgumentError: when the examples do not split evenly over the axis.
    """
    axis = mesh.axis_names[0] if axis_name is None else axis_name
    sharding = NamedSharding(mesh, PartitionSpec(*[None] * batch_axis, axis))
    devices = _axis_size(mesh, axis, "axis_name", "shard_batch")
    for path, leaf in jax.tree_util.tree_flatten_with_path(batch)[0]:
        rows = np.shape(leaf)[batch_axis] * jax.process_count()
        if rows % devices:
            raise ArgumentError(
                f"shard_batch: batch{jax.tree_util.keystr(path)} has {rows} examples (axis "
                f"{batch_axis}{', over all processes' if jax.process_count() > 1 else ''}), "
                f"which do not split over the mesh axis {axis!r} of {devices} devices; use "
                f"a batch size divisible by {devices}")
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), batch)


def replicate_on(mesh: Mesh, tree: Any) -> Any:
    """Place a copy of every leaf of ``tree`` on every device of ``mesh``.

    With several processes, every process must pass the same values (e.g. params from the
    same seed).
    """
    sharding = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree)


def make_mesh(*, devices: Any = None, **axes: int) -> Mesh:
    """A mesh of named axes over ``devices`` (default: every device of every process).

    ``make_mesh(data=4, model=2)`` lays 8 devices out as 4 x 2; the sizes must multiply to
    the number of devices. Axes are JAX's ``Auto`` kind, so XLA's partitioner decides how
    every intermediate is laid out and model code needs no sharding annotations.

    Raises:
      ArgumentError: no axis, a size that is not a positive int, or sizes whose product
        is not the number of devices.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not axes:
        raise ArgumentError("make_mesh: give at least one named axis, e.g. make_mesh(data=8)")
    for name, size in axes.items():
        if not is_int(size) or size < 1:
            raise ArgumentError(f"make_mesh: axis {name!r} must have a positive int size, "
                                f"received {size!r}")
    if math.prod(axes.values()) != len(devices):
        raise ArgumentError(f"make_mesh: the axis sizes {dict(axes)} multiply to "
                            f"{math.prod(axes.values())}, but there are {len(devices)} devices")
    grid = np.asarray(devices, dtype=object).reshape(tuple(axes.values()))
    return Mesh(grid, tuple(axes), axis_types=(AxisType.Auto,) * len(axes))


def _axis_size(mesh: Mesh, name: str | None, argument: str,
               where: str = "param_shardings") -> int:
    if name is None:
        return 1
    if name not in mesh.shape:
        raise ArgumentError(f"{where}: {argument}={name!r} is not an axis of the mesh; "
                            f"its axes are {list(mesh.axis_names)}")
    return mesh.shape[name]


def _partition(shape: tuple[int, ...], tensor_axis: int | None, tensor: str | None,
               tensor_size: int, fsdp: str | None, fsdp_size: int) -> PartitionSpec:
    """One param's layout: its declared axis over ``tensor`` (when divisible), then its
    largest remaining axis that ``fsdp`` divides (the first of equals)."""
    parts: list[str | None] = [None] * len(shape)
    if tensor is not None and tensor_axis is not None and shape[tensor_axis] % tensor_size == 0:
        parts[tensor_axis] = tensor
    if fsdp is not None:
        free = [i for i in range(len(shape))
                if parts[i] is None and shape[i] % fsdp_size == 0 and shape[i] >= fsdp_size]
        if free:
            parts[max(free, key=lambda i: (shape[i], -i))] = fsdp
    return PartitionSpec(*parts)


def param_shardings(layer: Layer, mesh: Mesh, *, fsdp: str | None = None,
                    tensor: str | None = None) -> Any:
    """``NamedSharding`` s shaped like ``layer``'s params, splitting them over ``mesh``.

    Args:
      layer: a layer or net.
      mesh: the mesh (:func:`make_mesh`).
      fsdp: a mesh axis over which every param's largest axis that it divides is split
        (fully sharded data parallelism); params it divides no axis of stay replicated.
      tensor: a mesh axis for tensor (Megatron) parallelism: each param is split along the
        axis its layer declares (:meth:`minitorch.nn.Layer.tensor_axes`: attention by
        heads, a widening ``Linear`` by columns, a narrowing one by rows, convolutions by
        output channels; norms whole), when the axis size divides it.

    Neither axis: every param replicated. With both, a param's tensor axis is taken first
    and FSDP splits the largest of the others. Use the result as
    ``jax.jit(net.init, out_shardings=shardings)(key)``; the step then runs unchanged.

    Example:
      >>> import jax
      >>> from minitorch import nn, parallel
      >>> mesh = parallel.make_mesh(model=1, devices=jax.devices()[:1])
      >>> shardings = parallel.param_shardings(nn.Net([nn.Linear(4, 8)]), mesh, tensor="model")
      >>> shardings[0]["W"].spec
      P(None, 'model')
    """
    if fsdp is not None and fsdp == tensor:
        raise ArgumentError(f"param_shardings: fsdp and tensor must be different mesh axes, "
                            f"both are {fsdp!r}")
    fsdp_size = _axis_size(mesh, fsdp, "fsdp")
    tensor_size = _axis_size(mesh, tensor, "tensor")
    return _layout(layer, lambda shape, axis: NamedSharding(
        mesh, _partition(shape, axis, tensor, tensor_size, fsdp, fsdp_size)))


def _layout(layer: Layer, place: Any) -> Any:
    """``place(shape, declared tensor axis or None)`` for every param of ``layer``, in a tree
    shaped like its params: a container's from its sub-layers', a leaf's from its own
    declarations (:meth:`~minitorch.nn.Layer.tensor_axes`) matched by path."""
    if isinstance(layer, Repeat):  # stacked copies: the stacking axis kept whole
        n = layer.n
        return _layout(layer.layer, lambda shape, axis: place(
            (n, *shape), None if axis is None else axis + 1))
    if isinstance(layer, Container):
        return layer.pack([_layout(child, place) for _, child in layer.children()])
    declared = layer.tensor_axes()

    def axis_of(path: str) -> int | None:
        named = [name for name in declared if path == name or path.endswith(f".{name}")]
        return declared[max(named, key=len)] if named else None

    return jax.tree_util.tree_map_with_path(
        lambda key_path, leaf: place(tuple(leaf.shape), axis_of(dotted(key_path))),
        layer.param_spec)


def bytes_per_device(tree: Any) -> dict[Any, int]:
    """How many bytes of ``tree``'s arrays each device holds (every shard counted where it
    lives, replicas included)."""
    held: dict[Any, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
    return held
