"""Helper for tests/test_checkpoint_faults.py: saves checkpoints in a loop until killed.

``write_until_killed(directory, connection)`` runs in a child process: checkpoint ``s``
holds arrays filled with the value ``s``, so a reader can tell a fully written checkpoint
from a torn one; it sends ``s`` on ``connection`` after each save. The test forks each
writer from a server that imported this module (tests/forked.py): 20 children, one import
of jax.
"""

from multiprocessing.connection import Connection

import jax
import numpy as np

from minitorch.checkpoint import CheckpointManager

SIZE = 256 * 1024  # 1 MiB of float32 per array: a save takes a while, so kills land mid-write


def write_until_killed(directory: str, connection: Connection) -> None:
    jax.config.update("jax_platforms", "cpu")  # on an accelerator host too: files, no kernels
    manager = CheckpointManager(directory, keep=3)
    start = (manager.latest_step() or 0) + 1
    for step in range(start, start + 100_000):
        tree = {"params": [{"W": np.full(SIZE, step, np.float32)},
                           {"b": np.full(SIZE // 4, step, np.float32)}],
                "opt_state": {"trace": np.full(SIZE, -step, np.float32)}}
        manager.save(step, tree, {"step_written": step})
        connection.send(step)
