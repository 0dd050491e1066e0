import contextlib
import io
import os
import pickle
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minitorch import checkpoint, losses, nn, optim
from minitorch.checkpoint import CheckpointError, CheckpointManager
from minitorch.fit import fit


def tree():
    net = nn.Net([nn.Linear(3, 4), nn.BatchNorm(4), nn.ReLU(), nn.Linear(4, 2)])
    params = net.init(jax.random.key(0))
    opt = optim.sgd(optax_schedule(), momentum=0.9)
    return {"params": params, "state": net.init_state(), "opt_state": opt.init(params),
            "key": jax.random.key(7), "raw_key": jax.random.PRNGKey(3),
            "half": jnp.arange(4, dtype=jnp.bfloat16) / 3, "step": jnp.int32(12)}


def optax_schedule():
    import optax
    return optax.linear_schedule(0.1, 0.01, 100)


def test_round_trip_keeps_values_dtypes_and_structure(tmp_path):
    original = tree()
    checkpoint.save(tmp_path / "a.npz", original, {"epoch": 3, "note": "hello"})
    loaded, meta = checkpoint.load(tmp_path / "a.npz", tree())
    assert meta == {"epoch": 3, "note": "hello"}
    assert jax.tree.structure(loaded) == jax.tree.structure(original)
    for a, b in zip(jax.tree.leaves(original), jax.tree.leaves(loaded)):
        assert jnp.result_type(a) == jnp.result_type(b)
    np.testing.assert_array_equal(jax.random.key_data(loaded["key"]),
                                  jax.random.key_data(original["key"]))
    plain = [(a, b) for a, b in zip(jax.tree.leaves(original), jax.tree.leaves(loaded))
             if not jax.dtypes.issubdtype(jnp.result_type(a), jax.dtypes.prng_key)]
    for a, b in plain:
        np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))


def test_mismatch_is_reported_by_path(tmp_path):
    checkpoint.save(tmp_path / "a.npz", {"params": [{"W": jnp.ones((3, 4))}]})
    with pytest.raises(CheckpointError, match=r"\['params'\]\[0\]\['W'\] expected "
                                              r"float32\[3, 5\], found float32\[3, 4\]"):
        checkpoint.load(tmp_path / "a.npz", {"params": [{"W": jnp.ones((3, 5))}]})
    with pytest.raises(CheckpointError, match=r"missing \[\"\['params'\]\[0\]\['b'\]\"\]"):
        checkpoint.load(tmp_path / "a.npz", {"params": [{"W": jnp.ones((3, 4)),
                                                         "b": jnp.ones(4)}]})
    with jax.enable_x64(True):
        wider = {"params": [{"W": jnp.ones((3, 4), jnp.float64)}]}
        with pytest.raises(CheckpointError, match=r"expected float64\[3, 4\], found float32"):
            checkpoint.load(tmp_path / "a.npz", wider)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"PK\x03\x04truncated",
                                     pickle.dumps(Exploit())])
def test_bad_files_raise_and_run_nothing(tmp_path, content, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"bad\.npz"):
        checkpoint.load(path, {"W": jnp.ones(2)})
    assert not (tmp_path / "pwned").exists()


def test_pickled_array_inside_an_npz_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "obj.npz"
    np.savez(path, W=np.array([Exploit()], dtype=object))
    with pytest.raises(CheckpointError):
        checkpoint.read(path)
    assert not (tmp_path / "pwned").exists()


def test_truncated_checkpoint_is_detected(tmp_path):
    path = checkpoint.save(tmp_path / "a.npz", tree())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable or incomplete"):
        checkpoint.read(path)


def test_manager_keeps_the_last_n_and_skips_incomplete_files(tmp_path):
    manager = CheckpointManager(tmp_path / "run", keep=2)
    for step in range(4):
        manager.save(step, {"w": jnp.full(3, float(step))})
    assert manager.steps() == [2, 3]
    manager.path(4).write_bytes(b"PK\x03\x04half written")
    assert manager.latest_step() == 3
    step, (restored, meta) = manager.restore_latest({"w": jnp.zeros(3)})
    assert step == 3 and meta["step"] == 3
    np.testing.assert_array_equal(restored["w"], [3.0, 3.0, 3.0])
    assert CheckpointManager(tmp_path / "empty").restore_latest({"w": jnp.zeros(3)}) is None


def test_no_temporary_files_are_left_behind(tmp_path):
    checkpoint.save(tmp_path / "a.npz", {"w": jnp.ones(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]


def _fit(epochs, manager=None, seed=0):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x.sum(axis=1) > 0).astype(np.int32)
    net = nn.Net([nn.Linear(3, 8), nn.BatchNorm(8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2)])
    with contextlib.redirect_stderr(io.StringIO()):
        return fit(net, losses.softmax_cross_entropy, optim.sgd(0.05, momentum=0.9), (x, y),
                   epochs=epochs, batch_size=16, seed=seed, checkpoint=manager)


def test_fit_resumes_from_the_latest_checkpoint_bit_for_bit(tmp_path):
    uninterrupted = _fit(5)
    manager = CheckpointManager(tmp_path / "run", keep=2)
    _fit(2, manager)                      # "crash" after epoch 1
    resumed = _fit(5, manager)            # picks up at epoch 2
    chex.assert_trees_all_equal(resumed[0], uninterrupted[0])
    chex.assert_trees_all_equal(resumed[1], uninterrupted[1])
    assert resumed[3]["epoch"] == list(range(5))
    np.testing.assert_array_equal(resumed[3]["loss"], uninterrupted[3]["loss"])


RESUME_SCRIPT = """
import sys, contextlib, io, numpy as np
sys.path.insert(0, {root!r})
from tests.test_checkpoint import _fit
from minitorch.checkpoint import CheckpointManager
params = _fit(int(sys.argv[1]), CheckpointManager(sys.argv[2]))[0]
np.save(sys.argv[3], np.concatenate([np.ravel(p["W"]) for p in params if "W" in p]))
"""


def test_resume_in_a_fresh_process_equals_an_uninterrupted_run(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT.format(root=root))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}

    def run(epochs, directory, out):
        subprocess.run([sys.executable, str(script), str(epochs), str(directory), str(out)],
                       check=True, env=env, capture_output=True, timeout=300)
        return np.load(out)

    run(2, tmp_path / "a", tmp_path / "first.npy")
    resumed = run(5, tmp_path / "a", tmp_path / "resumed.npy")
    straight = run(5, tmp_path / "b", tmp_path / "straight.npy")
    np.testing.assert_array_equal(resumed, straight)
