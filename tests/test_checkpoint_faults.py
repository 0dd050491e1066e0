"""SIGKILL a process while it writes checkpoints, 20 times at random moments: the latest
checkpoint must always load and be one that was written completely."""

import os
import random
import signal
import time

import numpy as np
import pytest

from minitorch.checkpoint import CheckpointManager
from tests import checkpoint_writer, forked

pytestmark = pytest.mark.slow  # child processes killed mid-write

KILLS = 20


def template():
    size = 256 * 1024
    return {"params": [{"W": np.zeros(size, np.float32)}, {"b": np.zeros(size // 4, np.float32)}],
            "opt_state": {"trace": np.zeros(size, np.float32)}}


def test_sigkill_during_writes_never_leaves_a_broken_latest_checkpoint(tmp_path):
    rng = random.Random(1234)
    directory = tmp_path / "run"
    context = forked.context()  # each writer a fork of a server that imported jax once
    highest, torn = 0, 0
    for kill in range(KILLS):
        receiver, sender = context.Pipe(duplex=False)
        writer = context.Process(target=checkpoint_writer.write_until_killed,
                                 args=(str(directory), sender))
        writer.start()
        sender.close()
        assert receiver.poll(60) and receiver.recv() >= 1  # wait until it is writing
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(timeout=30)
        assert writer.exitcode == -signal.SIGKILL
        receiver.close()
        torn += any(directory.glob(".ckpt_*.tmp"))  # killed in the middle of a write

        manager = CheckpointManager(directory, keep=3)
        step, (tree, meta) = manager.restore_latest(template())
        assert meta["step_written"] == step
        np.testing.assert_array_equal(tree["params"][0]["W"], step)
        np.testing.assert_array_equal(tree["params"][1]["b"], step)
        np.testing.assert_array_equal(tree["opt_state"]["trace"], -step)
        assert step >= highest, f"kill {kill}: went back from {highest} to {step}"
        highest = step
    assert highest > KILLS  # the writer made progress across the kills
    print(f"{torn} of {KILLS} kills landed in the middle of a write")
    assert torn >= 3, "the kills must hit writes in progress for this test to mean anything"
