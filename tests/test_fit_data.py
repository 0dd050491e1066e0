"""fit on any data: pytree inputs and targets, custom objectives, params the caller keeps,
validation compiled once, progress without tqdm, CSV and TensorBoard logging."""

import csv
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minitorch import losses, metrics, nn, optim, train
from minitorch.errors import ArgumentError
from minitorch.fit import fit
from minitorch.loggers import CSVLogger, TensorBoardLogger
from tests import forked


class TwoInputs(nn.Composite):
    """A model of two inputs: features and a per-example scale."""

    f: nn.Layer

    def forward(self, call, x):
        features, scale = x
        return call("f", features) * scale


def two_input_data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 4)).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, size=(n, 1)).astype(np.float32)
    labels = rng.integers(0, 3, n).astype(np.int32)
    return (features, scale), labels


def by_hand(step, params, opt_state, data, batch_size):
    """Consecutive slices, in order, through a make_step step (shuffle=False's epoch)."""
    count = len(jax.tree.leaves(data)[0])
    for i in range(0, count, batch_size):
        batch = jax.tree.map(lambda a, i=i: a[i:i + batch_size], data)
        params, opt_state, _ = step(params, opt_state, batch, None)
    return params


def test_tuple_inputs_train_as_make_step_does():
    net = TwoInputs(nn.Linear(4, 3))
    data = two_input_data()
    opt = optim.sgd(0.1)
    p0 = net.init(jax.random.key(0))
    params, _, history = fit(net, losses.softmax_cross_entropy, opt, data, epochs=1,
                             batch_size=8, params=p0, shuffle=False, progress=False)
    step = train.make_step(net, losses.softmax_cross_entropy, opt, donate=False)
    want = by_hand(step, p0, opt.init(p0), data, 8)
    np.testing.assert_allclose(params["f"]["W"], want["f"]["W"], rtol=1e-6)
    assert "accuracy" in history


def test_dict_inputs_and_targets_with_a_custom_objective_and_a_mask():
    rng = np.random.default_rng(1)
    inputs = {"ids": rng.integers(0, 5, (20, 6)).astype(np.int32)}
    targets = {"next": rng.integers(0, 5, (20, 6)).astype(np.int32),
               "mask": rng.uniform(size=(20, 6)) > 0.3}
    net = nn.Net([nn.Embedding(5, 8), nn.Linear(8, 5)])

    def objective(params, batch, key):
        x, y = batch
        logits = net.apply(params, x["ids"], key=key, train=True)
        loss = losses.softmax_cross_entropy(logits, y["next"], where=y["mask"])
        return loss, {"kept": jnp.mean(y["mask"])}

    opt = optim.sgd(0.5)
    p0 = net.init(jax.random.key(2))
    params, _, history = fit(None, objective, opt, (inputs, targets), epochs=2, batch_size=5,
                             params=p0, shuffle=False, progress=False,
                             val_data=(inputs, targets))
    step = train.make_step(None, objective, opt, donate=False)
    state, want = opt.init(p0), p0
    for _ in range(2):
        for i in range(0, 20, 5):
            batch = jax.tree.map(lambda a, i=i: a[i:i + 5], (inputs, targets))
            want, state, _ = step(want, state, batch, jax.random.key(0))
    np.testing.assert_allclose(params[0]["W"], want[0]["W"], rtol=1e-5, atol=1e-7)
    assert history["loss"][1] < history["loss"][0]
    assert set(history) >= {"loss", "kept", "val_loss", "val_kept"}
    val = train.evaluate(None, objective, params, (inputs, targets))
    assert val["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-6)


def test_custom_objective_needs_params():
    with pytest.raises(ArgumentError, match=r"fit: with a custom objective \(net=None\) there "
                                            r"is no net to initialise: pass params="):
        fit(None, lambda p, b, k: 0.0, optim.sgd(0.1), two_input_data(), epochs=1,
            batch_size=4, progress=False)


@pytest.mark.parametrize("data, message", [
    (((np.ones((8, 2)), np.ones((7, 1))), np.zeros(8)),
     r"fit: train_data inputs: every array needs the same number of examples \(first "
     r"axis\); fit: train_data inputs\[0\] has 8, fit: train_data inputs\[1\] has 7"),
    ((np.ones((8, 2)), {"y": np.zeros(6)}),
     r"fit: train_data: every array needs the same number of examples \(first axis\); "
     r"fit: train_data\['inputs'\] has 8, fit: train_data\['targets'\]\['y'\] has 6"),
    (((np.ones((8, 2)), "text"), np.zeros(8)),
     r"fit: train_data inputs\[1\]: expected an array, received str"),
    (({}, np.zeros(8)), r"fit: train_data inputs: expected a pytree of arrays, received an "
                        r"empty dict"),
    ((np.ones((8, 2)), np.float32(1.0)),
     r"fit: train_data\['targets'\]: expected a first axis of examples, received a scalar"),
])
def test_bad_batches_name_the_leaf(data, message):
    with pytest.raises(ArgumentError, match=message):
        fit(nn.Linear(2, 1), losses.mse, optim.sgd(0.1), data, epochs=1, batch_size=2,
            progress=False)


def test_the_callers_params_stay_valid_and_unchanged():
    net = nn.Net([nn.Linear(4, 3)])
    data = (np.ones((8, 4), np.float32), np.zeros(8, np.int32))
    p0 = net.init(jax.random.key(0))
    before = jax.tree.map(np.asarray, p0)
    opt = optim.sgd(0.5)
    o0 = opt.init(p0)
    params, _, _ = fit(net, losses.softmax_cross_entropy, opt, data, epochs=2, batch_size=4,
                       params=p0, opt_state=o0, progress=False)
    np.testing.assert_array_equal(net.apply(p0, data[0]), net.apply(before, data[0]))
    assert float(jnp.abs(params[0]["W"] - p0[0]["W"]).max()) > 0


def test_donated_params_get_the_librarys_error():
    net = nn.Net([nn.Linear(4, 3)])
    opt = optim.sgd(0.1)
    params = net.init(jax.random.key(0))
    step = train.make_step(net, losses.softmax_cross_entropy, opt)
    batch = (jnp.ones((2, 4)), jnp.zeros(2, jnp.int32))
    step(params, opt.init(params), batch, None)   # donates params
    with pytest.raises(ValueError, match=r"params holds arrays that were donated"):
        net.apply(params, batch[0])
    with pytest.raises(ValueError, match=r"predict: params holds arrays that were donated"):
        train.predict(net, params, batch[0])
    with pytest.raises(ValueError, match=r"evaluate: params holds arrays that were donated"):
        train.evaluate(net, losses.softmax_cross_entropy, params, batch)


def test_validation_compiles_once():
    traced = []

    def counted(outputs, targets):
        traced.append(outputs.shape)
        return jnp.mean(outputs)

    net = nn.Net([nn.Linear(4, 3)])
    data = (np.ones((16, 4), np.float32), np.zeros(16, np.int32))

    after_each_epoch = []
    fit(net, losses.softmax_cross_entropy, optim.sgd(0.1), data, epochs=4, batch_size=8,
        val_data=data, metrics={"m": counted}, progress=False,
        callbacks=[lambda epoch, logs, context: after_each_epoch.append(len(traced))])
    # traced by the first epoch (training and validation), never again
    assert after_each_epoch[0] >= 1 and len(set(after_each_epoch)) == 1, after_each_epoch
    traced.clear()
    params = net.init(jax.random.key(0))
    for _ in range(3):
        train.evaluate(net, losses.softmax_cross_entropy, params, data, metrics={"m": counted})
    assert len(traced) <= 1


def test_evaluate_and_predict_take_pytrees():
    net = TwoInputs(nn.Linear(4, 3))
    (features, scale), labels = two_input_data(n=10)
    params = net.init(jax.random.key(0))
    out = train.predict(net, params, (features, scale), batch_size=4)
    np.testing.assert_allclose(out, net.apply(params, (features, scale)), rtol=1e-6)
    got = train.evaluate(net, losses.softmax_cross_entropy, params,
                         ((features, scale), labels), batch_size=3)
    want = losses.softmax_cross_entropy(out, labels)
    assert got["loss"] == pytest.approx(float(want), rel=1e-5)


def test_progress_prints_a_line_per_epoch_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    net = nn.Net([nn.Linear(4, 3)])
    data = (np.ones((8, 4), np.float32), np.zeros(8, np.int32))
    fit(net, losses.softmax_cross_entropy, optim.sgd(0.1), data, epochs=3, batch_size=4)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert [line.split(":")[0] for line in lines] == ["epoch 0", "epoch 1", "epoch 2"]
    assert "loss" in lines[0] and "accuracy" in lines[0]


def test_csv_logger_writes_a_row_per_epoch(tmp_path):
    net = nn.Net([nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3)])
    data = (np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32),
            np.zeros(16, np.int32))
    path = tmp_path / "logs" / "run.csv"
    _, _, history = fit(net, losses.softmax_cross_entropy, optim.sgd(0.1), data, epochs=3,
                        batch_size=8, val_data=data, telemetry=True, progress=False,
                        callbacks=[CSVLogger(path)], metrics={"f1": metrics.F1(3)})
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for name in ("loss", "val_loss", "f1", "val_f1", "grad_norm/0"):
        assert [float(r[name]) for r in rows] == pytest.approx(history[name], rel=1e-6), name


def test_tensorboard_logger_writes_scalars_tensorboard_reads(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    net = nn.Net([nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3)])
    data = (np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32),
            np.zeros(16, np.int32))
    logger = TensorBoardLogger(tmp_path / "tb")
    _, _, history = fit(net, losses.softmax_cross_entropy, optim.sgd(0.1), data, epochs=3,
                        batch_size=8, val_data=data, telemetry=True, progress=False,
                        callbacks=[logger])
    logger.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "val_loss", "accuracy", "telemetry/grad_norm/0"} <= tags
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [0, 1, 2]
    assert [e.value for e in loss] == pytest.approx(history["loss"], rel=1e-6)


# --- streaming ---------------------------------------------------------------------------

def stream_data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 4)).astype(np.float32),
            rng.integers(0, 3, n).astype(np.int32))


def test_streamed_epochs_equal_a_hand_written_loop_over_the_same_loader():
    from minitorch.data import ArrayDataset, DataLoader

    net = nn.Net([nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)])
    loader = DataLoader(ArrayDataset(*stream_data()), 16, shuffle=True, seed=3)
    opt = optim.sgd(0.1, momentum=0.9)
    p0 = net.init(jax.random.key(0))
    params, _, history = fit(net, losses.softmax_cross_entropy, opt, loader, epochs=3,
                             params=p0, progress=False)
    step = train.make_step(net, losses.softmax_cross_entropy, opt, donate=False)
    want, state, means = p0, opt.init(p0), []
    for epoch in range(3):
        loader.set_epoch(epoch)
        total = 0.0
        for x, y in loader:
            want, state, m = step(want, state, (x, y), None)
            total += float(m["loss"]) * len(x)
        means.append(total / 40)
    np.testing.assert_allclose(params[2]["W"], want[2]["W"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(history["loss"], means, rtol=1e-5)


def test_a_list_of_batches_and_a_generator_with_steps_per_epoch():
    net = nn.Net([nn.Linear(4, 3)])
    x, y = stream_data()
    batches = [(x[i:i + 10], y[i:i + 10]) for i in range(0, 40, 10)]
    opt = optim.sgd(0.1)
    p0 = net.init(jax.random.key(0))
    listed, _, _ = fit(net, losses.softmax_cross_entropy, opt, batches, epochs=2, params=p0,
                       progress=False)

    def forever():
        while True:
            yield from batches

    generated, _, _ = fit(net, losses.softmax_cross_entropy, opt, forever(), epochs=2,
                          params=p0, steps_per_epoch=4, progress=False)
    np.testing.assert_allclose(listed[0]["W"], generated[0]["W"], rtol=1e-6)
    with pytest.raises(ArgumentError, match=r"fit: train_data is a single-use iterator "
                                            r"\(list_iterator\), which cannot give 2 epochs: "
                                            r"pass "
                                            r"a re-iterable"):
        fit(net, losses.softmax_cross_entropy, opt, iter(batches), epochs=2, params=p0,
            progress=False)


def test_a_resumed_streamed_run_equals_an_uninterrupted_one(tmp_path):
    from minitorch.checkpoint import CheckpointManager
    from minitorch.data import ArrayDataset, DataLoader

    net = nn.Net([nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3)])

    def run(epochs, directory=None):
        loader = DataLoader(ArrayDataset(*stream_data()), 8, shuffle=True, seed=1)
        manager = None if directory is None else CheckpointManager(directory)
        return fit(net, losses.softmax_cross_entropy, optim.sgd(0.1, momentum=0.9), loader,
                   epochs=epochs, seed=4, checkpoint=manager, progress=False)

    whole, _, whole_history = run(4)
    run(2, tmp_path / "run")                     # stopped after two epochs
    resumed, _, history = run(4, tmp_path / "run")
    for got, want in zip(jax.tree.leaves(resumed), jax.tree.leaves(whole)):
        np.testing.assert_array_equal(got, want)
    assert history["loss"] == whole_history["loss"]


def test_a_grain_pipeline_streams_a_new_order_each_epoch_and_resumes_exactly(tmp_path):
    grain = pytest.importorskip("grain")
    from minitorch.checkpoint import CheckpointManager
    from minitorch.data import ArrayDataset, Epochs

    rows = grain.MapDataset.source(ArrayDataset(*stream_data()))
    batches = Epochs(lambda epoch: rows.shuffle(seed=epoch).batch(16))
    net = nn.Net([nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3)])
    opt = optim.sgd(0.1, momentum=0.9)
    p0 = net.init(jax.random.key(0))
    args = (net, losses.softmax_cross_entropy, opt, batches)
    params, _, history = fit(*args, epochs=3, params=p0, progress=False)
    assert len(history["loss"]) == 3

    orders = [np.concatenate([b[1] for b in rows.shuffle(seed=e).batch(16)]) for e in (0, 1)]
    assert not np.array_equal(orders[0], orders[1])  # a new order each epoch
    step = train.make_step(net, losses.softmax_cross_entropy, opt, donate=False)
    keys = jax.random.split(jax.random.key(0))[1]  # fit's epoch keys: seed 0's second half
    want, state = p0, opt.init(p0)
    for epoch in range(3):
        for i, (x, y) in enumerate(rows.shuffle(seed=epoch).batch(16)):
            key = jax.random.fold_in(jax.random.fold_in(keys, epoch), i)
            want, state, _ = step(want, state, (x, y), key)
    for got, expected in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)

    fit(*args, epochs=1, params=p0, progress=False, checkpoint=CheckpointManager(tmp_path))
    resumed, _, _ = fit(*args, epochs=3, params=p0, progress=False,
                        checkpoint=CheckpointManager(tmp_path))
    for got, expected in zip(jax.tree.leaves(resumed), jax.tree.leaves(params)):
        np.testing.assert_array_equal(got, expected)


def test_a_plain_grain_map_dataset_and_grain_data_loader_are_re_iterables():
    grain = pytest.importorskip("grain")
    from minitorch.data import ArrayDataset

    x, y = stream_data()
    batches = grain.MapDataset.source(ArrayDataset(x, y)).batch(10)
    net = nn.Net([nn.Linear(4, 3)])
    p0 = net.init(jax.random.key(0))
    got, _, _ = fit(net, losses.softmax_cross_entropy, optim.sgd(0.1), batches, epochs=2,
                    params=p0, progress=False)
    listed, _, _ = fit(net, losses.softmax_cross_entropy, optim.sgd(0.1),
                       [(x[i:i + 10], y[i:i + 10]) for i in range(0, 40, 10)], epochs=2,
                       params=p0, progress=False)
    np.testing.assert_array_equal(got[0]["W"], listed[0]["W"])
    # Grain's DataLoader (a sampler and batching operations) is a re-iterable too
    loader = grain.DataLoader(
        data_source=ArrayDataset(x, y), worker_count=0,
        sampler=grain.samplers.IndexSampler(40, shuffle=False, seed=0, num_epochs=1),
        operations=[grain.transforms.Batch(10)])
    loaded, _, _ = fit(net, losses.softmax_cross_entropy, optim.sgd(0.1), loader, epochs=2,
                       params=p0, progress=False)
    np.testing.assert_allclose(loaded[0]["W"], listed[0]["W"], rtol=1e-6)


@pytest.mark.cpu_only
@pytest.mark.parametrize("streamed", [False, True], ids=["arrays", "loader"])
def test_fit_over_a_mesh_splits_every_batch_and_equals_one_device(streamed):
    """44 examples in batches of 16 on 8 devices: the last batch of 12 does not split
    evenly (placed whole, split by the step's constraint)."""
    from minitorch import parallel
    from minitorch.data import ArrayDataset, DataLoader

    x, y = stream_data(44)
    net = nn.Net([nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3)])
    mesh = parallel.data_mesh()
    seen = []

    def objective(params, batch, key):
        inputs, labels = batch
        jax.debug.inspect_array_sharding(inputs, callback=seen.append)
        return losses.softmax_cross_entropy(net.apply(params, inputs, key=key), labels)

    def run(mesh):
        data = DataLoader(ArrayDataset(x, y), 16, shuffle=True, seed=2) if streamed else (x, y)
        return fit(None, objective, optim.sgd(0.1, momentum=0.9), data, epochs=3,
                   batch_size=None if streamed else 16, params=net.init(jax.random.key(0)),
                   progress=False, mesh=mesh)

    one, _, one_history = run(None)
    seen.clear()
    many, opt_state, history = run(mesh)
    assert seen and all(s.spec == jax.sharding.PartitionSpec("data") for s in seen), seen
    for got, want in zip(jax.tree.leaves(many), jax.tree.leaves(one)):
        assert got.sharding.is_fully_replicated and len(got.sharding.device_set) == 8
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history["loss"], one_history["loss"], rtol=1e-5)


@pytest.mark.cpu_only
def test_shard_batch_says_when_a_batch_does_not_split():
    from minitorch import parallel

    mesh = parallel.data_mesh()
    batch = {"x": np.zeros((3, 12, 2), np.float32)}
    placed = parallel.shard_batch(mesh, {"x": np.zeros((3, 16, 2), np.float32)}, batch_axis=1)
    assert placed["x"].sharding.spec == jax.sharding.PartitionSpec(None, "data")
    with pytest.raises(ArgumentError, match=r"shard_batch: batch\['x'\] has 12 examples "
                                            r"\(axis 1\), which do not split over the mesh "
                                            r"axis 'data' of 8 devices"):
        parallel.shard_batch(mesh, batch, batch_axis=1)


KILLED_SCRIPT = r"""
import os, signal, sys
import numpy as np
import jax
from minitorch import losses, nn, optim
from minitorch.checkpoint import CheckpointManager
from minitorch.data import ArrayDataset, DataLoader
from minitorch.fit import fit

directory, kill_at = sys.argv[1], int(sys.argv[2])

class Rows(ArrayDataset):
    reads = 0
    def __getitem__(self, index):
        Rows.reads += 1
        if Rows.reads == kill_at:  # SIGKILL mid-epoch: no handler, no cleanup
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(index)

rng = np.random.default_rng(0)
x = rng.normal(size=(60, 4)).astype(np.float32)
y = rng.integers(0, 3, 60).astype(np.int32)
net = nn.Net([nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3)])
params, _, history = fit(net, losses.softmax_cross_entropy, optim.sgd(0.1, momentum=0.9),
                         DataLoader(Rows(x, y), 8, shuffle=True, seed=1, prefetch=2),
                         epochs=4, seed=4, progress=False,
                         checkpoint=CheckpointManager(directory))
np.savez(directory + "/result.npz", *jax.tree.leaves(params), loss=history["loss"])
"""


def test_a_streamed_run_killed_mid_epoch_resumes_to_the_same_bits(tmp_path):
    """A process training from a DataLoader is SIGKILLed in its third epoch (the loader's
    20th of 8 batches an epoch); a new process resumes from the last complete checkpoint
    and ends with the params and losses of a run that was never stopped."""
    script = tmp_path / "killed.py"
    script.write_text(KILLED_SCRIPT)

    def run(directory, kill_at=0):  # a fresh process: forked, its own backend
        return forked.run_python(script, directory, kill_at, timeout=300)

    killed = run(tmp_path / "resumed", kill_at=20)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "resumed" / "result.npz").exists()
    from minitorch.checkpoint import CheckpointManager
    assert CheckpointManager(tmp_path / "resumed").latest_step() == 1  # epochs 0 and 1 done
    for directory in (tmp_path / "resumed", tmp_path / "whole"):
        done = run(directory)
        assert done.returncode == 0, done.stderr[-3000:]
    resumed = np.load(tmp_path / "resumed" / "result.npz")
    whole = np.load(tmp_path / "whole" / "result.npz")
    assert sorted(resumed.files) == sorted(whole.files)
    for name in whole.files:
        np.testing.assert_array_equal(resumed[name], whole[name])


MEMMAP_SCRIPT = r"""
import resource, sys
import numpy as np
import jax
from minitorch import losses, nn, optim
from minitorch.data import ArrayDataset, DataLoader
from minitorch.fit import fit
x = np.load(sys.argv[1] + "/x.npy", mmap_mode="r")
y = np.load(sys.argv[1] + "/y.npy", mmap_mode="r")
net = nn.Net([nn.Linear(x.shape[1], 3)])
params = net.init(jax.random.key(0))
loader = DataLoader(ArrayDataset(x, y), 8192, shuffle=True, prefetch=2)
fit(net, losses.softmax_cross_entropy, optim.sgd(0.01), loader, epochs=1, steps_per_epoch=2,
    progress=False, params=params)   # compiles (XLA's own peak) on two batches' pages
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fit(net, losses.softmax_cross_entropy, optim.sgd(0.01),
    DataLoader(ArrayDataset(x, y), 8192, shuffle=True, prefetch=2), epochs=2,
    progress=False, params=params)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, x.nbytes + y.nbytes)
"""


def test_a_memmapped_file_streams_without_loading_into_memory(tmp_path):
    """Two epochs over a 256 MiB memory-mapped file, written by this process and read by
    another: the reader's peak memory grows by a small fraction of the file (measured
    ~57 MB: batches in flight and the prefetch buffer), where fitting the same file as
    in-memory arrays grows it by ~660 MB."""
    import subprocess

    rows, width = 1 << 20, 64  # 1M rows of 64 float32: 256 MiB
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32,
                                  shape=(rows, width))
    for start in range(0, rows, 65536):  # written in chunks
        x[start:start + 65536] = np.random.default_rng(start).normal(size=(65536, width))
    x.flush()
    del x
    np.save(tmp_path / "y.npy", (np.arange(rows) % 3).astype(np.int32))
    run = subprocess.run([sys.executable, "-c", MEMMAP_SCRIPT, str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    growth, size = map(int, run.stdout.split())
    assert size >= 256 * 2**20
    assert growth < size / 4, (growth, size)
