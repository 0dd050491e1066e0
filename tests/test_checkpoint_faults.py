"""SIGKILL a process while it writes checkpoints, 20 times at random moments: the latest
checkpoint must always load and be one that was written completely."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minitorch.checkpoint import CheckpointManager

pytestmark = pytest.mark.slow  # subprocesses killed mid-write

ROOT = Path(__file__).resolve().parent.parent
KILLS = 20


def template():
    size = 256 * 1024
    return {"params": [{"W": np.zeros(size, np.float32)}, {"b": np.zeros(size // 4, np.float32)}],
            "opt_state": {"trace": np.zeros(size, np.float32)}}


def test_sigkill_during_writes_never_leaves_a_broken_latest_checkpoint(tmp_path):
    rng = random.Random(1234)
    directory = tmp_path / "run"
    env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},
           "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    highest, torn = 0, 0
    for kill in range(KILLS):
        writer = subprocess.Popen([sys.executable, str(ROOT / "tests" / "checkpoint_writer.py"),
                                   str(directory)], stdout=subprocess.PIPE, text=True, env=env)
        first = writer.stdout.readline()  # wait until it is writing
        assert first.startswith("saved"), first
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
        writer.stdout.close()
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
