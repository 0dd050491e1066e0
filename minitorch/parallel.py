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
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

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


def shard_batch(mesh: Mesh, batch: Any, axis_name: str | None = None) -> Any:
    """Place a batch split along its first axis over ``mesh``.

    In one process ``batch`` is the global batch. With several processes each passes its
    own local part (the rows its devices should see) and gets back the global array, of
    ``process_count`` times as many rows.
    """
    axis = mesh.axis_names[0] if axis_name is None else axis_name
    sharding = NamedSharding(mesh, PartitionSpec(axis))
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
