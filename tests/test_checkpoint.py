import contextlib
import io
import json
import os
import pickle
import threading
import time
import tracemalloc

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from minitorch import checkpoint, losses, nn, optim
from minitorch.checkpoint import CheckpointError, CheckpointManager
from minitorch.fit import fit
from tests import forked


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
    checkpoint.save(tmp_path / "a.safetensors", original, {"epoch": 3, "note": "hello"})
    loaded, meta = checkpoint.load(tmp_path / "a.safetensors", tree())
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
    checkpoint.save(tmp_path / "a.safetensors", {"params": [{"W": jnp.ones((3, 4))}]})
    with pytest.raises(CheckpointError, match=r"params\.0\.W expected "
                                              r"float32\[3, 5\], found float32\[3, 4\]"):
        checkpoint.load(tmp_path / "a.safetensors", {"params": [{"W": jnp.ones((3, 5))}]})
    with pytest.raises(CheckpointError, match=r"missing \['params\.0\.b'\]"):
        checkpoint.load(tmp_path / "a.safetensors", {"params": [{"W": jnp.ones((3, 4)),
                                                         "b": jnp.ones(4)}]})
    with jax.enable_x64(True):
        wider = {"params": [{"W": jnp.ones((3, 4), jnp.float64)}]}
        with pytest.raises(CheckpointError, match=r"expected float64\[3, 4\], found float32"):
            checkpoint.load(tmp_path / "a.safetensors", wider)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"PK\x03\x04truncated",
                                     pickle.dumps(Exploit())])
def test_bad_files_raise_and_run_nothing(tmp_path, content, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        checkpoint.load(path, {"W": jnp.ones(2)})
    assert not (tmp_path / "pwned").exists()


def test_pickled_array_inside_an_npz_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "obj.safetensors"
    np.savez(path, W=np.array([Exploit()], dtype=object))
    with pytest.raises(CheckpointError):
        checkpoint.read(path)
    assert not (tmp_path / "pwned").exists()


def test_truncated_checkpoint_is_detected(tmp_path):
    path = checkpoint.save(tmp_path / "a.safetensors", tree())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
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
    checkpoint.save(tmp_path / "a.safetensors", {"w": jnp.ones(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]


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

    def run(epochs, directory, out):  # a fresh process: forked, its own backend
        done = forked.run_python(script, epochs, directory, out, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return np.load(out)

    run(2, tmp_path / "a", tmp_path / "first.npy")
    resumed = run(5, tmp_path / "a", tmp_path / "resumed.npy")
    straight = run(5, tmp_path / "b", tmp_path / "straight.npy")
    np.testing.assert_array_equal(resumed, straight)


# --------------------------------------------------------------------------- hostile files

def crafted(path, header, data=b"", record=None, length=None):
    """A safetensors file with the given header (``__metadata__`` holds ``record``)."""
    if isinstance(header, dict) and record is not False:
        header = dict(header)
        record = record if record is not None else {
            "format": checkpoint.FORMAT, "order": [n for n in header if n != "__metadata__"],
            "keys": {}, "metadata": {}}
        header.setdefault("__metadata__", {"minitorch": record if isinstance(record, str)
                                           else json.dumps(record)})
    raw = json.dumps(header).encode() if isinstance(header, dict) else header
    raw += b" " * (-len(raw) % 8)
    path.write_bytes((len(raw) if length is None else length).to_bytes(8, "little") + raw + data)
    return path


def f32(shape, begin=0, end=None):
    end = begin + 4 * int(np.prod(shape)) if end is None else end
    return {"dtype": "F32", "shape": list(shape), "data_offsets": [begin, end]}


def npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def deep(depth):
    return "[" * depth + "]" * depth


HOSTILE = {
    "huge shape, tiny data": (lambda p: crafted(p, {"W": f32((10**9, 10**6), 0, 8)}, b"\0" * 8),
                              r"needs 4000000000000000 bytes"),
    "huge shape and offsets": (lambda p: crafted(p, {"W": f32((10**9, 10**6))}, b"\0" * 8),
                               r"the file 8 \(truncated"),
    "header longer than the file": (lambda p: crafted(p, {"W": f32((2,))}, b"\0" * 8,
                                                      length=2**62), r"header declares"),
    "header is a list": (lambda p: p.write_bytes((8).to_bytes(8, "little") + b"[1,2,3] "),
                         r"not a JSON object"),
    "header is not JSON": (lambda p: p.write_bytes((8).to_bytes(8, "little") + b"{{{{{{{{"),
                           r"not valid JSON"),
    "deeply nested header": (lambda p: crafted(p, deep(200_000).encode(), record=False),
                             r"nested too deeply"),
    "deeply nested record": (lambda p: crafted(p, {"W": f32((2,))}, b"\0" * 8,
                                               record=deep(200_000)), r"nested too deeply"),
    "record is a list": (lambda p: crafted(p, {"W": f32((2,))}, b"\0" * 8, record=[1, 2]),
                         r"record is a list"),
    "no record": (lambda p: crafted(p, {"W": f32((2,))}, b"\0" * 8, record=False),
                  r"not a minitorch checkpoint"),
    "record missing order": (lambda p: crafted(p, {"W": f32((2,))}, b"\0" * 8, record={
        "format": checkpoint.FORMAT, "keys": {}, "metadata": {}}), r"'order' is not a list"),
    "order mistyped": (lambda p: crafted(p, {"W": f32((2,))}, b"\0" * 8, record={
        "format": checkpoint.FORMAT, "order": "W", "keys": {}, "metadata": {}}),
        r"'order' is not a list"),
    "metadata mistyped": (lambda p: crafted(p, {"W": f32((2,))}, b"\0" * 8, record={
        "format": checkpoint.FORMAT, "order": ["W"], "keys": {}, "metadata": 3}),
        r"'metadata' is not an object"),
    "format version 1": (lambda p: crafted(p, {"W": f32((2,))}, b"\0" * 8, record={
        "format": 1, "order": ["W"], "keys": {}, "metadata": {}}), r"format version 1"),
    "format version as a string": (lambda p: crafted(p, {"W": f32((2,))}, b"\0" * 8, record={
        "format": str(checkpoint.FORMAT), "order": ["W"], "keys": {}, "metadata": {}}),
        rf"format version '{checkpoint.FORMAT}'"),
    "dtype as a number": (lambda p: crafted(p, {"W": {**f32((2,)), "dtype": 7}}, b"\0" * 8),
                          r"W: unknown dtype 7"),
    "dtype disagrees with the data": (lambda p: crafted(
        p, {"W": {**f32((2,)), "dtype": "F64"}}, b"\0" * 8), r"W: F64\[2\] needs 16 bytes"),
    "shape mistyped": (lambda p: crafted(p, {"W": {**f32((2,)), "shape": [2.0]}}, b"\0" * 8),
                       r"W: shape \[2.0\]"),
    "negative offsets": (lambda p: crafted(p, {"W": f32((2,), -8, 0)}, b"\0" * 8),
                         r"data_offsets"),
    "overlapping tensors": (lambda p: crafted(p, {"W": f32((2,)), "b": f32((2,))}, b"\0" * 16),
                            r"overlap or gap"),
    "duplicate member names": (lambda p: crafted(p, (
        b'{"W":' + json.dumps(f32((2,))).encode() + b',"W":' + json.dumps(f32((2,))).encode()
        + b',"__metadata__":{"minitorch":' + json.dumps(json.dumps({
            "format": checkpoint.FORMAT, "order": ["W"], "keys": {}, "metadata": {}})).encode()
        + b"}}"), b"\0" * 8, record=False), r"duplicate name 'W'"),
    "key data that is not U32": (lambda p: crafted(p, {"k": f32((2,))}, b"\0" * 8, record={
        "format": checkpoint.FORMAT, "order": ["k"], "keys": {"k": "threefry2x32"},
        "metadata": {}}), r"PRNG key data must be U32"),
    "an npz file": (lambda p: p.write_bytes(npz_bytes(W=np.ones(3))), r"a zip \(\.npz\) file"),
    "a dimension of 2**64": (lambda p: crafted(p, {"W": f32((2**64,), 0, 0)}),
                             r"W: shape \[18446744073709551616\] is too large for an array"),
    "a rank-65 tensor": (lambda p: crafted(p, {"W": f32((1,) * 65)}, b"\0" * 4),
                         r"W: 65 dimensions; at most 64"),
    "0 x (2**63 - 1) elements": (lambda p: crafted(p, {"W": f32((0, 2**63 - 1), 0, 0)}),
                                 r"W: shape \[0, 9223372036854775807\] is too large"),
    "a UTF-16 header": (lambda p: crafted(p, json.dumps({"W": f32((2,))}).encode("utf-16"),
                                          b"\0" * 8, record=False), r"the header is not UTF-8"),
    "metadata values that are not strings": (lambda p: crafted(p, {
        "W": f32((2,)), "__metadata__": {"minitorch": {"format": checkpoint.FORMAT}}},
        b"\0" * 8), r"__metadata__ is not an object of strings"),
    # A Repeat's stacks stored as copies ("copies": {stacked: [rows, [copy names]]}).
    "copies not an object": (lambda p: with_copies(p, [1]), r"'copies' is not an object"),
    "copies with no rows": (lambda p: with_copies(p, {"S": [[], ["W"]]}),
                            r"'S': its copies record is not \[rows, \[leaf names\]\]"),
    "copies with 65 row axes": (lambda p: with_copies(p, {"S": [[1] * 65, ["W"]]}),
                                r"its copies record is not"),
    "copies fewer than the rows": (lambda p: with_copies(p, {"S": [[10**12, 10**12], ["W"]]}),
                                   r"'S': 1 copies for rows \[1000000000000, 1000000000000\]"),
    "a copy that is not stored": (lambda p: with_copies(p, {"S": [[2], ["W", "V"]]}),
                                  r"'S': its copies are not stored leaves of this stack alone"),
    "a copy in two stacks": (lambda p: with_copies(p, {"S": [[2], ["W", "b"]],
                                                       "T": [[1], ["W"]]}),
                             r"its copies are not stored leaves of this stack alone"),
    "a stack named as a stored leaf": (lambda p: with_copies(p, {"W": [[2], ["W", "b"]]}),
                                       r"its copies are not stored leaves"),
    "copies of different shapes": (lambda p: with_copies(p, {"S": [[2], ["W", "c"]]}),
                                   r"c: its dtype or shape differs from W's, another copy of S"),
}


def with_copies(path, copies):
    """Three float32 tensors, W (2,), b (2,) and c (3,), and the record's ``copies``."""
    header = {"W": f32((2,)), "b": f32((2,), 8), "c": f32((3,), 16)}
    return crafted(path, header, b"\0" * 28, record={
        "format": checkpoint.FORMAT, "order": list(header), "keys": {}, "metadata": {},
        "copies": copies})


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_raise_checkpoint_error_in_bounded_memory(tmp_path, name):
    make, message = HOSTILE[name]
    path = tmp_path / "hostile.safetensors"
    make(path)
    tracemalloc.start()
    start = time.perf_counter()
    for call in (lambda: checkpoint.read(path), lambda: checkpoint.load(path, {"W": jnp.ones(2)}),
                 lambda: checkpoint.verify(path)):
        with pytest.raises(CheckpointError, match=r"hostile\.safetensors: .*" + message):
            call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - start < 5
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("name, message", [
    ("c.part-0-of-0.safetensors", r"c\.part-0-of-0\.safetensors: its name says part 0-of-0"),
    ("c.part-3-of-2.safetensors", r"its name says part 3-of-2"),
    ("c.part-0-of-1000000000000.safetensors",
     r"c\.safetensors: 999999999999 of 1000000000000 parts missing \(the first: "
     r"\[1, 2, 3, 4, 5\]"),
])
def test_part_file_names_that_cannot_be_are_refused_at_once(tmp_path, name, message):
    """A part's name is as hostile as its header: a count of 0, an index past the count,
    or a count of 10**12 (whose missing parts must not be listed one by one)."""
    (tmp_path / name).write_bytes(b"")
    start = time.perf_counter()
    for call in (lambda: checkpoint.verify(tmp_path / "c.safetensors"),
                 lambda: checkpoint.read(tmp_path / "c.safetensors"),
                 lambda: checkpoint.load(tmp_path / "c.safetensors", {"W": jnp.ones(2)})):
        with pytest.raises(CheckpointError, match=message):
            call()
    manager = CheckpointManager(tmp_path / "run")
    manager.save(1, {"W": jnp.ones(2)})
    (tmp_path / "run" / name.replace("c.", "ckpt_00000002.")).write_bytes(b"")
    assert manager.latest_step() == 1  # the bad step is skipped, not a hang or a crash
    assert manager.restore_latest({"W": jnp.ones(2)})[0] == 1
    assert time.perf_counter() - start < 5  # listing 10**12 missing parts would never end


def test_a_format_2_file_keeps_loading(tmp_path):
    """Files written before leaves were named by dotted paths (``['params'][0]['W']``)."""
    import safetensors.numpy

    arrays = {"['params'][0]['W']": np.arange(6, dtype=np.float32).reshape(2, 3),
              "['opt_state'][0].count": np.array(3, np.int32)}
    record = {"format": 2, "order": list(arrays), "keys": {}, "metadata": {"epoch": 4}}
    safetensors.numpy.save_file(arrays, str(tmp_path / "old.safetensors"),
                                metadata={"minitorch": json.dumps(record)})
    template = {"params": [{"W": jnp.zeros((2, 3))}],
                "opt_state": [optax.ScaleByScheduleState(count=jnp.int32(0))]}
    tree, meta = checkpoint.load(tmp_path / "old.safetensors", template)
    np.testing.assert_array_equal(tree["params"][0]["W"], arrays["['params'][0]['W']"])
    assert int(tree["opt_state"][0].count) == 3 and meta == {"epoch": 4}
    flat, _ = checkpoint.read(tmp_path / "old.safetensors")
    assert sorted(flat) == ["opt_state.0.count", "params.0.W"]


def test_names_are_dotted_paths_and_params_restore_alone(tmp_path):
    net = nn.Net([nn.Linear(4, 8), nn.BatchNorm(8), nn.ReLU(), nn.Linear(8, 3)])
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    y = np.arange(32) % 3
    params, state, _, _ = fit(net, losses.softmax_cross_entropy, optim.sgd(0.1, momentum=0.9),
                              (x, y), epochs=2, batch_size=8, progress=False,
                              checkpoint=CheckpointManager(tmp_path))
    flat, meta = checkpoint.read(CheckpointManager(tmp_path).path(1))
    assert {"params.0.W", "params.3.b", "state.1.mean", "state.1.num_batches_tracked",
            "opt_state.trace.0.W"} <= set(flat), sorted(flat)
    assert {"epoch", "history", "run", "stopped", "callbacks", "step"} <= set(meta)
    step, (alone, _) = CheckpointManager(tmp_path).restore_latest(
        net.init(jax.random.key(1)), under="params")
    assert step == 1
    chex.assert_trees_all_equal(alone, params)
    with pytest.raises(CheckpointError, match="no leaves under 'weights'"):
        checkpoint.load(CheckpointManager(tmp_path).path(1), params, under="weights")
    with pytest.raises(CheckpointError, match=r"both be stored as 'a\.b'"):
        checkpoint.save(tmp_path / "x.safetensors", {"a.b": jnp.ones(1), "a": {"b": jnp.ones(1)}})


def test_a_compressed_bomb_is_rejected_without_inflating(tmp_path):
    path = tmp_path / "bomb.safetensors"
    buffer = io.BytesIO()
    np.savez_compressed(buffer, W=np.zeros(2**28, np.uint8))   # 256 MiB inflated, 250 kB on disk
    path.write_bytes(buffer.getvalue())
    manager = CheckpointManager(tmp_path / "run")
    manager.save(1, {"W": jnp.ones(2)})
    manager.path(2).write_bytes(path.read_bytes())
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="a zip"):
        checkpoint.load(path, {"W": jnp.ones(2)})
    assert manager.latest_step() == 1
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - start < 2 and peak < 16 * 2**20


def test_shapes_are_checked_against_the_template_before_any_data_is_read(tmp_path):
    path = checkpoint.save(tmp_path / "a.safetensors", {"W": jnp.ones((512, 512))})
    data = bytearray(path.read_bytes())
    data[-4:] = b"\xff\xff\xff\xff"    # damaging the data cannot matter: it is never read
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r": W expected float32\[3\], found "
                                              r"float32\[512, 512\]"):
        checkpoint.load(path, {"W": jnp.ones(3)})


def test_the_file_is_standard_safetensors(tmp_path):
    import safetensors
    tree = {"W": jnp.arange(6.0).reshape(2, 3), "half": jnp.arange(3, dtype=jnp.bfloat16)}
    path = checkpoint.save(tmp_path / "a.safetensors", tree, {"epoch": 2})
    with safetensors.safe_open(path, framework="numpy") as f:
        assert sorted(f.keys()) == ["W", "half"]  # dotted paths
        np.testing.assert_array_equal(f.get_tensor("W"), np.arange(6.0).reshape(2, 3))
        assert json.loads(f.metadata()["minitorch"])["metadata"] == {"epoch": 2}
    import torch
    from safetensors.torch import load_file
    loaded = load_file(path)
    assert loaded["half"].dtype == torch.bfloat16
    np.testing.assert_array_equal(loaded["half"].float().numpy(), [0, 1, 2])


@pytest.mark.parametrize("leaf, message", [
    (np.array([object()], dtype=object), "dtype object"),
    (np.array(["a", "bc"]), "dtype <U2"),
    (np.array([1 + 2j], np.complex128), "dtype complex128"),
    (np.array([2**40], np.int64), r"int64 values in \[1099511627776, 1099511627776\] do not "
                                  r"fit int32.*jax_enable_x64"),
    (np.array([2**33], np.uint64), "do not fit uint32"),
])
def test_leaves_that_could_not_load_back_are_refused_at_save(tmp_path, leaf, message):
    with pytest.raises(CheckpointError, match=r"checkpoint\.save: bad.*" + message):
        checkpoint.save(tmp_path / "a.safetensors", {"ok": jnp.ones(2), "bad": leaf})
    assert list(tmp_path.iterdir()) == []


def test_64_bit_integers_come_back_exactly_or_not_at_all(tmp_path):
    small = checkpoint.save(tmp_path / "small.safetensors", {"n": np.array([7, -3], np.int64)})
    back, _ = checkpoint.load(small, {"n": jnp.zeros(2, jnp.int32)})
    np.testing.assert_array_equal(back["n"], [7, -3])
    with jax.enable_x64(True):
        big = checkpoint.save(tmp_path / "big.safetensors", {"n": jnp.array([2**40], jnp.int64)})
        back, _ = checkpoint.load(big, {"n": jnp.zeros(1, jnp.int64)})
        assert int(back["n"][0]) == 2**40
    with pytest.raises(CheckpointError, match=r"big\.safetensors: n: int64 values .* do "
                                              r"not fit int32"):
        checkpoint.load(big, {"n": jnp.zeros(1, jnp.int32)})


# --------------------------------------------------------------------------- the manager

def test_manager_finds_and_retains_any_non_negative_step(tmp_path):
    manager = CheckpointManager(tmp_path / "run", keep=2)
    for step in (5, 10**8, 10**12):
        manager.save(step, {"w": jnp.full(2, float(step % 1000))})
    assert manager.steps() == [10**8, 10**12]
    assert manager.latest_step() == 10**12
    assert manager.path(10**12).name == "ckpt_1000000000000.safetensors"
    (tmp_path / "run" / "ckpt_012.safetensors").write_bytes(b"")   # not a name we write
    assert manager.steps() == [10**8, 10**12]


@pytest.mark.parametrize("call, error, message", [
    (lambda m: m.save(-1, {}), ValueError, r"step must be a non-negative int, received -1"),
    (lambda m: m.save(2.0, {}), TypeError, r"step must be a non-negative int, received 2\.0"),
    (lambda m: m.save(True, {}), TypeError, r"step must be a non-negative int, received True"),
    (lambda m: CheckpointManager(m.directory, keep=2.5), TypeError,
     r"keep must be a positive int, received 2\.5"),
    (lambda m: CheckpointManager(m.directory, keep="3"), TypeError,
     r"keep must be a positive int, received '3'"),
    (lambda m: CheckpointManager(m.directory, keep=0), ValueError, r"keep must be a positive int"),
])
def test_manager_rejects_bad_steps_and_keep_at_the_call(tmp_path, call, error, message):
    manager = CheckpointManager(tmp_path / "run")
    with pytest.raises(error, match=message):
        call(manager)
    assert manager.steps() == []


def test_manager_accepts_numpy_integer_steps(tmp_path):
    manager = CheckpointManager(tmp_path / "run")
    path = manager.save(np.int64(3), {"w": jnp.ones(2)})
    assert manager.steps() == [3] and checkpoint.verify(path)["step"] == 3


def test_a_save_never_deletes_the_file_it_wrote(tmp_path):
    manager = CheckpointManager(tmp_path / "run", keep=2)
    for step in (10, 11):
        manager.save(step, {"w": jnp.ones(2)})
    path = manager.save(5, {"w": jnp.zeros(2)})
    assert path.exists() and manager.steps() == [5, 11]


def test_latest_step_skips_an_unreadable_newest_file(tmp_path):
    manager = CheckpointManager(tmp_path / "run")
    manager.save(1, {"w": jnp.ones(2)})
    manager.path(2).write_bytes(b"\x00" * 100)
    manager.path(3).mkdir()      # not even a file
    assert manager.latest_step() == 1


def test_a_second_writer_in_the_same_directory_is_refused(tmp_path):
    first = CheckpointManager(tmp_path / "run", keep=2)
    first.save(1, {"w": jnp.ones(2)})
    second = CheckpointManager(tmp_path / "run", keep=2)
    with pytest.raises(CheckpointError, match=rf"run: another CheckpointManager \(process "
                                              rf"{os.getpid()}\) is writing"):
        second.save(2, {"w": jnp.ones(2)})
    assert second.latest_step() == 1           # reading needs no lock
    first.close()
    second.save(2, {"w": jnp.ones(2)})
    with CheckpointManager(tmp_path / "other") as third:
        third.save(1, {"w": jnp.ones(2)})
    CheckpointManager(tmp_path / "other").save(2, {"w": jnp.ones(2)})


def test_concurrent_saves_lose_nothing(tmp_path):
    managers = [CheckpointManager(tmp_path / "run", keep=50) for _ in range(10)]
    shared = CheckpointManager(tmp_path / "run", keep=50)
    outcomes = []

    def save(i):
        try:
            (shared if i % 2 else managers[i % 10]).save(i, {"w": jnp.full(2, float(i))})
            outcomes.append("saved")
        except CheckpointError as err:
            assert "another CheckpointManager" in str(err)
            outcomes.append("refused")

    threads = [threading.Thread(target=save, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    saved = manager_steps = CheckpointManager(tmp_path / "run").steps()
    assert len(outcomes) == 50 and outcomes.count("saved") == len(manager_steps)
    for step in saved:
        tree, _ = checkpoint.load(CheckpointManager(tmp_path / "run").path(step),
                                  {"w": jnp.zeros(2)})
        np.testing.assert_array_equal(tree["w"], [step, step])
    assert not list((tmp_path / "run").glob("*.tmp"))


# --------------------------------------------------------------------------- Repeat's copies

def repeat_model():
    """A Repeat of residual MLPs, a Repeat of Repeats and a Repeat with BatchNorm state."""
    block = nn.Residual(nn.Net([nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4)]))
    return nn.Net([nn.Linear(3, 4), nn.Repeat(block, 3),
                   nn.Repeat(nn.Repeat(nn.Linear(4, 4), 2), 2),
                   nn.Repeat(nn.Net([nn.Linear(4, 4), nn.BatchNorm(4)]), 2), nn.Linear(4, 2)])


def by_path(tree):
    from minitorch.nn.paths import leaf_paths
    return dict(zip(leaf_paths(tree), map(np.asarray, jax.tree.leaves(tree)), strict=True))


def test_a_repeats_copies_are_stored_under_their_own_paths(tmp_path):
    import optax
    import safetensors.numpy

    net = repeat_model()
    params = jax.tree.map(lambda a: a + 1, net.init(jax.random.key(0)))
    opt_state = optax.adam(1e-3).init(params)
    opt_state = jax.tree.map(lambda a: a + 2 if a.ndim else a, opt_state)  # moments non-zero
    saved = {"params": params, "state": net.init_state(), "opt_state": opt_state}
    path = checkpoint.save(tmp_path / "c.safetensors", saved, net=net)
    stored, flat = safetensors.numpy.load_file(path), by_path(saved)
    # Each copy's rows under the copy's path (as PyTorch names a ModuleList's blocks), the
    # stacked names gone; the moments of Adam and the BatchNorm state alike.
    for copy, stacked, row in [("params.1.2.0.W", "params.1.0.W", (2,)),
                               ("params.2.1.0.W", "params.2.W", (1, 0)),
                               ("opt_state.0.mu.1.0.2.b", "opt_state.0.mu.1.2.b", (0,)),
                               ("state.3.1.1.mean", "state.3.1.mean", (1,)),
                               ("params.0.W", "params.0.W", ())]:
        np.testing.assert_array_equal(stored[copy], flat[stacked][row])
    assert not {"params.1.0.W", "params.2.W", "opt_state.0.nu.2.b"} & set(stored)
    assert "opt_state.0.count" in stored
    # Back into the stacked tree, whole or the params alone; one copy by its path; and the
    # copies into a Net of copies, whose paths they are.
    chex.assert_trees_all_equal(checkpoint.load(path, saved)[0], saved)
    chex.assert_trees_all_equal(checkpoint.load(path, params, under="params")[0], params)
    assert sorted(checkpoint.read(path)[0]) == sorted(flat)
    block = net.layers[1].layer
    copy, _ = checkpoint.load(path, block.init(jax.random.key(1)), under="params.1.2")
    chex.assert_trees_all_equal(copy, jax.tree.map(lambda a: a[2], params[1]))
    unrolled = nn.Net([nn.Linear(3, 4), nn.Net([block] * 3),
                       nn.Net([nn.Net([nn.Linear(4, 4)] * 2)] * 2),
                       nn.Net([nn.Net([nn.Linear(4, 4), nn.BatchNorm(4)])] * 2), nn.Linear(4, 2)])
    loaded, _ = checkpoint.load(path, unrolled.init(jax.random.key(2)), under="params")
    np.testing.assert_array_equal(loaded[2][1][0]["W"], params[2]["W"][1, 0])
    # Without the net, the stacks are stored whole, as before.
    plain = checkpoint.save(tmp_path / "plain.safetensors", saved)
    assert "params.1.0.W" in safetensors.numpy.load_file(plain)
    chex.assert_trees_all_equal(checkpoint.load(plain, saved)[0], saved)


def test_fit_checkpoints_a_repeats_copies_and_resumes_from_them(tmp_path):
    import safetensors.numpy

    from minitorch.fit import EarlyStopping

    net = nn.Net([nn.Linear(3, 4), nn.Repeat(nn.Residual(nn.Linear(4, 4)), 3), nn.Linear(4, 2)])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 3)).astype(np.float32), rng.integers(0, 2, 32)

    def run(epochs, manager=None):
        callbacks = [EarlyStopping("loss", patience=10, checkpoint=manager)] if manager else []
        return fit(net, losses.softmax_cross_entropy, optim.sgd(0.1, momentum=0.9), (x, y),
                   epochs=epochs, batch_size=8, seed=1, checkpoint=manager, progress=False,
                   callbacks=callbacks)

    manager = CheckpointManager(tmp_path / "run")
    run(2, manager)
    for file in (manager.path(1), manager.best_path):
        stored = safetensors.numpy.load_file(file)
        assert {"params.1.2.W", "opt_state.trace.1.0.b"} <= set(stored)
        assert "params.1.W" not in stored
    resumed, straight = run(4, manager), run(4)
    chex.assert_trees_all_equal(resumed.params, straight.params)
