"""Faults and mistakes around training: resuming, early stopping, data, donation, and values
that can be seen eagerly. Each test asserts the behaviour, not only that something raised."""

import contextlib
import gc
import io
import threading
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

from minitorch import checkpoint, losses, nn, optim, train
from minitorch.checkpoint import CheckpointError, CheckpointManager
from minitorch.data import ArrayDataset, DataLoader
from minitorch.errors import ArgumentError, IdError, ShapeError
from minitorch.fit import EarlyStopping, fit

LOSS = losses.softmax_cross_entropy


def mlp(hidden=8, act=None):
    return nn.Net([nn.Linear(3, hidden), act or nn.ReLU(), nn.Linear(hidden, 2)])


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x.sum(axis=1) > 0).astype(np.int32)


def quiet_fit(net, train_data, **kwargs):
    kwargs = {"epochs": 3, "batch_size": 16, "progress": False, **kwargs}
    with contextlib.redirect_stderr(io.StringIO()):
        return fit(net, LOSS, optim.sgd(0.1, momentum=0.9), train_data, **kwargs)


# --------------------------------------------------------------------------- resuming

@pytest.mark.parametrize("change, named", [
    (dict(seed=1), "seed: 0 in the checkpoint, 1 now"),
    (dict(batch_size=8), "batch_size: 16 in the checkpoint, 8 now"),
    (dict(train_data=data(48)), "num_examples: 64 in the checkpoint, 48 now"),
    (dict(net=mlp(act=nn.Tanh())), "net: "),
    (dict(shuffle=False), "shuffle: True in the checkpoint, False now"),
])
def test_resuming_a_different_run_names_what_differs(tmp_path, change, named):
    manager = CheckpointManager(tmp_path / "run")
    quiet_fit(mlp(), data(), epochs=2, checkpoint=manager)
    kwargs = {"net": mlp(), "train_data": data(), **change}
    with pytest.raises(CheckpointError, match=r"differs from the one that wrote the "
                                              r"checkpoint \(.*" + named):
        quiet_fit(kwargs.pop("net"), kwargs.pop("train_data"), epochs=4, checkpoint=manager,
                  **kwargs)
    # explicitly overridden, it resumes at epoch 2
    kwargs = {"net": mlp(), "train_data": data(), **change}
    _, _, history = quiet_fit(kwargs.pop("net"), kwargs.pop("train_data"), epochs=4,
                              checkpoint=manager, strict_resume=False, **kwargs)
    assert history["epoch"] == [0, 1, 2, 3]


def test_a_directory_fit_did_not_write_is_a_clear_error(tmp_path):
    net = mlp()
    params = net.init(jax.random.key(0))
    manager = CheckpointManager(tmp_path / "run")
    opt_state = optim.sgd(0.1, momentum=0.9).init(params)
    manager.save(3, {"params": params, "state": None, "opt_state": opt_state})
    manager.close()
    with pytest.raises(CheckpointError, match=r"ckpt_00000003\.safetensors: not written by fit"):
        quiet_fit(net, data(), checkpoint=CheckpointManager(tmp_path / "run"))


# --------------------------------------------------------------------------- early stopping

def scripted(values):
    """A callback that writes the next of ``values`` into the logs as ``score``."""
    it = iter(values)

    def callback(epoch, logs, context):
        logs["score"] = next(it)

    return callback


def test_nan_never_counts_as_best():
    stopper = EarlyStopping("score", patience=2)
    context = {"params": {"w": jnp.zeros(1)}, "state": None, "opt_state": ()}
    outcomes = []
    for epoch, value in enumerate([float("nan"), 3.0, 2.0, float("nan"), 1.0]):
        context["params"] = {"w": jnp.full(1, float(epoch))}
        outcomes.append(stopper(epoch, {"score": value}, context))
    assert outcomes == [False] * 5
    assert stopper.best == 1.0 and stopper.best_epoch == 4
    stopper = EarlyStopping("score", patience=2)
    assert [stopper(e, {"score": float("nan")}, context) for e in range(2)] == [False, True]
    assert stopper.best is None


def test_early_stopping_state_survives_a_retry_and_the_best_stays_on_disk(tmp_path):
    manager = CheckpointManager(tmp_path / "run", keep=1)
    scores = [5.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]

    def run(epochs):
        stopper = EarlyStopping("score", patience=2, checkpoint=manager)
        callbacks = [scripted(scores[len(_history(manager)):]), stopper]
        return quiet_fit(mlp(), data(), epochs=epochs, checkpoint=manager,
                         callbacks=callbacks), stopper

    (params, _, history), stopper = run(7)
    assert history["epoch"] == [0, 1, 2, 3] and stopper.best_epoch == 1
    assert manager.steps() == [3]
    best, meta = manager.restore_best({"params": params, "state": None,
                                       "opt_state": optim.sgd(0.1, momentum=0.9).init(params)})
    assert meta == {"epoch": 1, "score": 1.0}
    chex.assert_trees_all_equal(best["params"], params)   # fit returned the best epoch's
    # a retried job resumes from the stop: it trains no further
    (again, _, history_again), _ = run(7)
    assert history_again["epoch"] == [0, 1, 2, 3]
    chex.assert_trees_all_equal(again, params)


def _history(manager):
    step = manager.latest_step()
    return [] if step is None else checkpoint.verify(manager.path(step))["history"]["epoch"]


def test_an_interrupted_run_restores_the_best_epoch_from_disk(tmp_path):
    manager = CheckpointManager(tmp_path / "run", keep=1)
    scores = [5.0, 1.0, 2.0, 3.0, 4.0]
    stopper = EarlyStopping("score", patience=3, checkpoint=manager)
    quiet_fit(mlp(), data(), epochs=3, checkpoint=manager,
              callbacks=[scripted(scores), stopper])             # "killed" after epoch 2
    best_params = manager.restore_best({"params": mlp().init(jax.random.key(0)), "state": None,
                                        "opt_state": optim.sgd(0.1, momentum=0.9).init(
                                            mlp().init(jax.random.key(0)))})[0]["params"]
    fresh = EarlyStopping("score", patience=3, checkpoint=manager)
    params, _, history = quiet_fit(mlp(), data(), epochs=10, checkpoint=manager,
                                   callbacks=[scripted(scores[3:]), fresh])
    assert history["epoch"] == [0, 1, 2, 3, 4] and fresh.best_epoch == 1
    chex.assert_trees_all_equal(params, best_params)


# --------------------------------------------------------------------------- data

def test_an_abandoned_prefetching_iterator_releases_its_thread_and_batches():
    loader = DataLoader(ArrayDataset(np.zeros((4000, 256), np.float32), np.zeros(4000)), 100,
                        prefetch=8, device_put=False)
    before = threading.active_count()
    for _ in range(30):
        batches = iter(loader)
        next(batches)
        del batches
    gc.collect()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
    for _ in loader:   # and a loader still runs whole epochs afterwards
        pass


def test_fit_accepts_an_array_dataset_and_streams_a_data_loader():
    x, y = data()
    straight = quiet_fit(mlp(), (x, y))
    from_dataset = quiet_fit(mlp(), ArrayDataset(x, y), val_data=ArrayDataset(x, y))
    chex.assert_trees_all_equal(straight[0], from_dataset[0])
    streamed = quiet_fit(mlp(), DataLoader(ArrayDataset(x, y), 16))
    assert all(np.isfinite(streamed[-1]["loss"]))
    with pytest.raises(TypeError, match=r"fit: val_data must be .* received a DataLoader"):
        quiet_fit(mlp(), (x, y), val_data=DataLoader(ArrayDataset(x, y), 16))


@pytest.mark.parametrize("item", [lambda i: np.zeros((len(np.atleast_1d(i)), 3)),
                                  lambda i: {"x": np.zeros(3)}])
def test_a_dataset_item_that_is_not_a_tuple_is_a_clear_error(item):
    class Items:
        def __len__(self):
            return 10

        def __getitem__(self, index):
            return item(index)

    with pytest.raises(TypeError, match=r"DataLoader: dataset\[indices\] must return a tuple"):
        next(iter(DataLoader(Items(), 4)))


# --------------------------------------------------------------------------- donation

def after_a_donating_step():
    """A compiled step and what its first call donated: ``(net, step, params, opt_state,
    batch)``, params and optimiser state now deleted."""
    net, opt = mlp(), optim.sgd(0.1)
    params = net.init(jax.random.key(0))
    opt_state = opt.init(params)
    step = train.make_step(net, LOSS, opt)
    batch = tuple(map(jnp.asarray, data(8)))
    step(params, opt_state, batch, None)
    return net, step, params, opt_state, batch


def test_reusing_donated_params_says_so_without_a_runtime_log(capfd):
    net, step, params, opt_state, batch = after_a_donating_step()
    with pytest.raises(ValueError, match=r"step: params holds arrays that were donated to an "
                                         r"earlier call.*donate=False"):
        step(params, opt_state, batch, None)
    assert "Buffer has been deleted" not in capfd.readouterr().err
    x, y = data()
    params = net.init(jax.random.key(0))
    first = quiet_fit(net, (x, y), params=params)    # fit trains copies: params live on
    chex.assert_trees_all_equal(quiet_fit(net, (x, y), params=params)[0], first[0])
    momentum_step = train.make_step(net, LOSS, optim.sgd(0.1, momentum=0.9))
    momentum_step(first[0], first[1], batch, None)   # a step donates fit's results
    with pytest.raises(ValueError, match=r"fit: params holds arrays that were donated"):
        quiet_fit(net, (x, y), params=first[0])


def test_donated_arrays_in_new_containers_are_told_by_their_state():
    """The check the step skips (a params container it has not seen) is made after the call
    fails, from the arrays' state: the same clear error, whatever jaxlib's message says."""
    net, step, params, opt_state, batch = after_a_donating_step()
    rebuilt = jax.tree.map(lambda a: a, params)  # new lists and dicts, the deleted arrays
    with pytest.raises(ValueError, match=r"step: params holds arrays that were donated"):
        step(rebuilt, opt_state, batch, None)
    fresh = net.init(jax.random.key(1))
    with pytest.raises(ShapeError):  # any other failure passes through as it is
        step(fresh, optim.sgd(0.1).init(fresh), (batch[0][:, :2], batch[1]), None)


def test_an_optimiser_state_holding_the_params_trains_with_the_defaults():
    opt = optax.contrib.prodigy(1.0)
    net = mlp()
    params = net.init(jax.random.key(0))
    step = train.make_step(net, LOSS, opt)
    batch = tuple(map(jnp.asarray, data(16)))
    state = opt.init(params)
    for _ in range(3):
        params, state, metrics = step(params, state, batch, None)
    assert np.isfinite(metrics["loss"])
    params, _, history = fit(net, LOSS, opt, data(), epochs=2, batch_size=16, progress=False)
    assert np.all(np.isfinite(history["loss"]))


# --------------------------------------------------------------------------- values

def test_embedding_and_labels_out_of_range_raise_eagerly_and_stay_nan_under_jit():
    net = nn.Net([nn.Embedding(5, 2), nn.Flatten(), nn.Linear(2, 3)])
    params = net.init(jax.random.key(0))
    with pytest.raises(IdError, match=r"layer 0 \(Embedding\): expected ids in \[0, 5\), "
                                      r"received 1 outside it"):
        net.apply(params, jnp.array([[1], [7]]))
    with pytest.raises(IdError, match=r"max 4294967297"):
        net.apply(params, np.array([[1], [2**32 + 1]]))      # would wrap to id 1
    assert np.isnan(jax.jit(net.apply)(params, jnp.array([[7]]))).all()


def test_fit_refuses_labels_that_would_wrap():
    x, _ = data()
    y = np.zeros(64, np.int64)
    y[3] = 2**32 + 1
    with pytest.raises(ValueError, match=r"fit: train_data targets: int64 values .* do not fit "
                                         r"int32"):
        quiet_fit(mlp(), (x, y))


def test_batchnorm_refuses_an_empty_training_batch_and_keeps_its_statistics():
    bn = nn.BatchNorm(3)
    params, state = bn.init(jax.random.key(0)), bn.init_state()
    before = jax.tree.map(np.asarray, state)
    with pytest.raises(ShapeError, match=r"BatchNorm: training needs at least one value per "
                                         r"channel.*\(0, 3\)"):
        bn.apply(params, jnp.zeros((0, 3)), state=state, train=True)
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, state), before)
    y, _ = bn.apply(params, jnp.zeros((0, 3)), state=state, train=False)   # eval: fine
    assert y.shape == (0, 3)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Conv2D(1, 2, 3, padding=True), r"Conv2D: padding must be .* received True"),
    (lambda: nn.MaxPool2D(True), r"MaxPool2D: kernel_size must be a positive int"),
    (lambda: nn.LayerNorm(4, eps=float("nan")), r"LayerNorm: eps must be a finite number > 0"),
    (lambda: nn.Dropout(jnp.array(0.5)), r"Dropout: rate must be a finite number in \[0, 1\)"),
    (lambda: nn.LeakyReLU("0.1"), r"LeakyReLU: negative_slope must be a finite number"),
    (lambda: nn.Linear(2, 3, dtype=jnp.int32), r"Linear: dtype must be a floating-point dtype"),
    (lambda: nn.Linear(2, 3, bias="False"), r"Linear: bias must be True or False"),
    (lambda: nn.BatchNorm(3, momentum=float("inf")), r"BatchNorm: momentum must be a finite "
                                                     r"number in \[0, 1\]"),
    (lambda: nn.GELU(approximate=1), r"GELU: approximate must be True or False"),
    (lambda: nn.Softmax(axis=1.0), r"Softmax: axis must be an int"),
    (lambda: nn.MultiHeadAttention(8, 2, causal="yes"), r"MultiHeadAttention: causal must be"),
])
def test_hyperparameters_pass_one_validation(make, message):
    with pytest.raises(ArgumentError, match=message):
        make()


def test_numpy_scalars_are_numbers():
    conv = nn.Conv2D(np.int64(1), np.int32(2), np.int64(3), stride=np.int64(1))
    assert conv.kernel_size == (3, 3) and type(conv.kernel_size[0]) is int
    assert nn.Dropout(np.float32(0.25)).rate == 0.25
    assert nn.LayerNorm(4, eps=np.float64(1e-3)).eps == 1e-3
