"""Helper for tests/test_checkpoint_faults.py: saves checkpoints in a loop until killed.

Usage: python tests/checkpoint_writer.py DIRECTORY
Checkpoint ``s`` holds arrays filled with the value ``s``, so a reader can tell a fully
written checkpoint from a torn one. Prints ``saved s`` after each save.
"""

import sys

import numpy as np

from minitorch.checkpoint import CheckpointManager

SIZE = 256 * 1024  # 1 MiB of float32 per array: a save takes a while, so kills land mid-write


def main() -> None:
    manager = CheckpointManager(sys.argv[1], keep=3)
    start = (manager.latest_step() or 0) + 1
    for step in range(start, start + 100_000):
        tree = {"params": [{"W": np.full(SIZE, step, np.float32)},
                           {"b": np.full(SIZE // 4, step, np.float32)}],
                "opt_state": {"trace": np.full(SIZE, -step, np.float32)}}
        manager.save(step, tree, {"step_written": step})
        print(f"saved {step}", flush=True)


if __name__ == "__main__":
    main()
