"""Checkpoints of sharded arrays: saved without gathering, restored onto given shardings, and
the parts several processes write checked as strictly as one file (the two-process run
itself is examples/multihost.py, launched by tests/test_examples.py)."""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import safetensors.numpy

from minitorch import checkpoint, nn, parallel
from minitorch.checkpoint import CheckpointError, CheckpointManager

# 8 virtual CPU devices; slow: sharded saves and loads on several meshes
pytestmark = [pytest.mark.cpu_only, pytest.mark.slow]


def sharded_state():
    net = nn.Net([nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 16)])
    mesh = parallel.make_mesh(data=4, model=2)
    shardings = parallel.param_shardings(net, mesh, fsdp="data", tensor="model")
    params = jax.jit(net.init, out_shardings=shardings)(jax.random.key(0))
    return net, mesh, shardings, params


def test_sharded_params_round_trip_onto_their_shardings(tmp_path):
    _, _, shardings, params = sharded_state()
    opt_state = optax.adam(1e-3).init(params)
    path = checkpoint.save(tmp_path / "c.safetensors", {"params": params, "opt": opt_state,
                                                        "key": jax.random.key(3)})
    # A standard file: each array whole, readable by any safetensors reader.
    stored = safetensors.numpy.load_file(path)
    np.testing.assert_array_equal(stored["params.0.W"], np.asarray(params[0]["W"]))
    template = {"params": params, "opt": opt_state, "key": jax.random.key(0)}
    tree_shardings = {"params": shardings, "opt": jax.tree.map(lambda a: a.sharding, opt_state),
                      "key": jax.sharding.SingleDeviceSharding(jax.devices()[1])}
    loaded, _ = checkpoint.load(path, template, shardings=tree_shardings)
    for got, want, sharding in zip(jax.tree.leaves(loaded["params"]), jax.tree.leaves(params),
                                   jax.tree.leaves(shardings)):
        assert got.sharding.is_equivalent_to(sharding, got.ndim)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        for shard in got.addressable_shards:  # each device holds its own slice, not the whole
            np.testing.assert_array_equal(np.asarray(shard.data), np.asarray(want)[shard.index])
    assert loaded["key"].devices() == {jax.devices()[1]}
    np.testing.assert_array_equal(jax.random.key_data(loaded["key"]),
                                  jax.random.key_data(jax.random.key(3)))
    # Without shardings: one array per leaf on the default device, as before.
    whole, _ = checkpoint.load(path, template)
    assert len(whole["params"][0]["W"].devices()) == 1


def test_one_sharding_for_every_leaf_and_a_wrong_tree_is_refused(tmp_path):
    _, mesh, _, params = sharded_state()
    path = checkpoint.save(tmp_path / "c.safetensors", params)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    loaded, _ = checkpoint.load(path, params, shardings=replicated)
    assert all(leaf.sharding.is_fully_replicated and len(leaf.devices()) == 8
               for leaf in jax.tree.leaves(loaded))
    with pytest.raises(TypeError, match="shaped like the template"):
        checkpoint.load(path, params, shardings=[replicated])


def test_manager_restores_latest_onto_shardings(tmp_path):
    _, _, shardings, params = sharded_state()
    with CheckpointManager(tmp_path, keep=2) as manager:
        manager.save(1, params)
        manager.save(2, jax.tree.map(lambda a: a + 1, params))
        step, (tree, meta) = manager.restore_latest(params, shardings=shardings)
    assert step == 2 and meta["step"] == 2
    np.testing.assert_array_equal(tree[2]["W"], params[2]["W"] + 1)
    assert tree[2]["W"].sharding.is_equivalent_to(shardings[2]["W"], 2)


# ---- parts written by several processes ------------------------------------------------

def write_part(directory, index, count, pieces, leaves, metadata=None):
    """A part as process ``index`` of ``count`` writes it: ``pieces`` is
    ``[(leaf, start, array, whole shape)]``."""
    arrays, shards = {}, {}
    for leaf, start, array, shape in pieces:
        name = f"{leaf}@{','.join(map(str, start))}"
        arrays[name] = array
        shards[name] = {"leaf": leaf, "start": list(start), "shape": list(shape)}
    record = {"format": 2, "order": list(arrays), "keys": {}, "metadata": metadata or {},
              "shards": shards, "leaves": leaves, "part": [index, count]}
    path = checkpoint.part_path(directory / "c.safetensors", index, count)
    safetensors.numpy.save_file(arrays, str(path), metadata={"minitorch": json.dumps(record)})
    return path


def two_parts(directory, second=None):
    w = np.arange(24, dtype=np.float32).reshape(4, 6)
    write_part(directory, 0, 2, [("['W']", (0, 0), w[:2], (4, 6)),
                                 ("['b']", (), np.array(7, np.float32), ())], ["['W']", "['b']"])
    write_part(directory, 1, 2, second if second is not None else
               [("['W']", (2, 0), w[2:], (4, 6))], ["['W']", "['b']"])
    return w


def test_parts_assemble_whole_and_onto_shardings(tmp_path):
    w = two_parts(tmp_path)
    template = {"W": jnp.zeros((4, 6)), "b": jnp.float32(0)}
    tree, _ = checkpoint.load(tmp_path / "c.safetensors", template)
    np.testing.assert_array_equal(tree["W"], w)
    assert float(tree["b"]) == 7
    mesh = parallel.make_mesh(data=2, model=4)
    by_columns = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
    tree, _ = checkpoint.load(tmp_path / "c.safetensors", template,
                              shardings={"W": by_columns, "b": jax.sharding.NamedSharding(
                                  mesh, jax.sharding.PartitionSpec())})
    np.testing.assert_array_equal(tree["W"], w)  # rows from two files, split by columns
    assert checkpoint.verify(tmp_path / "c.safetensors") == {}


@pytest.mark.parametrize("second, message", [
    ([("['W']", (1, 0), np.zeros((3, 6), np.float32), (4, 6))], "overlap"),
    ([("['W']", (2, 0), np.zeros((1, 6), np.float32), (4, 6))], "a shard missing"),
    ([("['W']", (3, 0), np.zeros((2, 6), np.float32), (4, 6))], "lies outside"),
    ([("['W']", (2, 0), np.zeros((2, 6), np.float64), (4, 6))], "differs from the leaf"),
])
def test_parts_that_do_not_tile_an_array_are_refused(tmp_path, second, message):
    two_parts(tmp_path, second)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(tmp_path / "c.safetensors", {"W": jnp.zeros((4, 6)),
                                                     "b": jnp.float32(0)})


def test_a_missing_part_is_named(tmp_path):
    two_parts(tmp_path)
    checkpoint.part_path(tmp_path / "c.safetensors", 1, 2).unlink()
    with pytest.raises(CheckpointError, match=r"1 of 2 parts missing \(the first: \[1\]"):
        checkpoint.verify(tmp_path / "c.safetensors")
    manager = CheckpointManager(tmp_path)
    assert manager.latest_step() is None


def test_many_shards_are_checked_in_n_log_n(tmp_path):
    """8,192 shards of one array (a 64 x 128 grid of 2 x 3 blocks), checked by cutting the
    array into the grid their edges make: 0.33 s alone on 2 cores, 1.0 s beside the rest
    of the suite; comparing every pair took 19.6 s for 4,000 and would take ~80 s here, so
    a 5 s bound tells the two apart on a loaded machine. One shard moved by a row is then
    an overlap, found as fast."""
    rows, cols = 64, 128
    w = np.arange(rows * 2 * cols * 3, dtype=np.float32).reshape(rows * 2, cols * 3)
    pieces = [("W", (2 * i, 3 * j), w[2 * i:2 * i + 2, 3 * j:3 * j + 3].copy(), w.shape)
              for i in range(rows) for j in range(cols)]
    write_part(tmp_path, 0, 1, pieces, ["W"])
    start = time.perf_counter()
    checkpoint.verify(tmp_path / "c.safetensors")
    assert time.perf_counter() - start < 5.0
    tree, _ = checkpoint.load(tmp_path / "c.safetensors", {"W": jnp.zeros(w.shape)})
    np.testing.assert_array_equal(tree["W"], w)
    pieces[-1] = ("W", (2 * rows - 3, 3 * (cols - 1)), w[-3:-1, -3:].copy(), w.shape)
    write_part(tmp_path, 0, 1, pieces, ["W"])
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"spans several cells|overlap"):
        checkpoint.verify(tmp_path / "c.safetensors")
    assert time.perf_counter() - start < 5.0


def test_parts_store_a_sharded_repeat_as_its_copies(tmp_path, monkeypatch):
    """Two processes' parts (simulated: process 0 holds every shard, process 1 none) of a
    Repeat's stack sharded along the stacking axis and across columns: each shard stored
    as the rows of each copy it holds, under the copy's path; loaded back whole and onto
    the shardings."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    net = nn.Net([nn.Repeat(nn.Residual(nn.Linear(8, 8)), 4)])
    mesh = parallel.make_mesh(data=4, model=2)
    shardings = [{"W": NamedSharding(mesh, P("data", None, "model")),
                  "b": NamedSharding(mesh, P(None, "model"))}]
    params = jax.device_put(jax.tree.map(lambda a: a + 1, net.init(jax.random.key(0))),
                            shardings)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    for index, tree in ((0, params), (1, jax.tree.map(np.asarray, params))):
        monkeypatch.setattr(jax, "process_index", lambda index=index: index)
        written = checkpoint.save(tmp_path / "c.safetensors", {"params": tree}, net=net)
        assert written.name == f"c.part-{index}-of-2.safetensors"
    monkeypatch.undo()
    stored = safetensors.numpy.load_file(tmp_path / "c.part-0-of-2.safetensors")
    assert sorted(stored) == sorted(
        [f"params.0.{i}.W@0,{c}" for i in range(4) for c in (0, 4)]
        + [f"params.0.{i}.b@{c}" for i in range(4) for c in (0, 4)])
    np.testing.assert_array_equal(stored["params.0.2.W@0,4"], params[0]["W"][2, :, 4:])
    assert safetensors.numpy.load_file(tmp_path / "c.part-1-of-2.safetensors") == {}
    whole, _ = checkpoint.load(tmp_path / "c.safetensors", {"params": params})
    for got, want in zip(jax.tree.leaves(whole), jax.tree.leaves({"params": params}),
                         strict=True):
        np.testing.assert_array_equal(got, want)
    placed, _ = checkpoint.load(tmp_path / "c.safetensors", params, under="params",
                                shardings=shardings)
    np.testing.assert_array_equal(placed[0]["W"], params[0]["W"])
    assert placed[0]["W"].sharding.is_equivalent_to(shardings[0]["W"], 3)
