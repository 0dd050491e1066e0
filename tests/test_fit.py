import contextlib
import importlib
import io

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minitorch import losses, nn, optim, train
from minitorch.epoch import make_epoch, make_epoch_steps
from minitorch.fit import EarlyStopping, fit

LOSS = losses.softmax_cross_entropy


def mlp(dropout=0.0):
    return nn.Net([nn.Linear(4, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3)])


def data(n=100, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 1)


def test_compiled_epoch_equals_a_loop_of_steps_over_the_same_order():
    net, opt = mlp(0.2), optim.sgd(0.05, momentum=0.9)
    x, y = data(50)
    update = train.make_update(net, LOSS, opt)
    epoch = make_epoch(update, 50, 16)  # 3 full batches and a last one of 2
    params = net.init(jax.random.key(0))
    key = jax.random.key(7)
    # the order and step keys the epoch draws, reproduced by hand
    order_key, step_key = jax.random.split(jax.random.fold_in(key, 3))
    order = np.asarray(jax.random.permutation(order_key, 50))
    keys = jax.random.split(step_key, 4)
    p, o = jax.tree.map(jnp.copy, params), opt.init(params)
    losses_seen = []
    for i, start in enumerate(range(0, 50, 16)):
        rows = order[start:start + 16]
        p, _, o, m = jax.jit(update)(p, None, o, (x[rows], y[rows]), keys[i])
        losses_seen.append(float(m["loss"]) * len(rows))
    got, _, _, metrics = epoch(params, None, opt.init(params), (x, y), key, 3)
    chex.assert_trees_all_close(got, p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["loss"], sum(losses_seen) / 50, rtol=1e-5)


def run_fit(epochs, **kwargs):
    with contextlib.redirect_stderr(io.StringIO()):
        return fit(mlp(0.1), LOSS, optim.sgd(0.05, momentum=0.9), data(), epochs=epochs,
                   batch_size=16, seed=3, **kwargs)


def test_history_has_one_entry_per_epoch_and_training_learns():
    params, opt_state, history = run_fit(8, val_data=data(40, seed=1))
    assert history["epoch"] == list(range(8))
    for name in ("loss", "accuracy", "val_loss", "val_accuracy", "time"):
        assert len(history[name]) == 8
    assert history["loss"][-1] < history["loss"][0]
    assert history["accuracy"][-1] > 0.8


def test_same_seed_same_params_bit_for_bit():
    a, b = run_fit(4, progress=False), run_fit(4, progress=False)
    chex.assert_trees_all_equal(a[0], b[0])


def test_resume_after_k_epochs_equals_an_uninterrupted_run():
    full_params, _, full_history = run_fit(6)
    params, opt_state, history = run_fit(3)
    params, opt_state, history = run_fit(6, params=params, opt_state=opt_state, start_epoch=3,
                                         history=history)
    chex.assert_trees_all_equal(params, full_params)
    assert history["epoch"] == list(range(6))
    np.testing.assert_array_equal(history["loss"], full_history["loss"])


def test_stateful_net_returns_state():
    net = nn.Net([nn.Linear(4, 8), nn.BatchNorm(8), nn.ReLU(), nn.Linear(8, 3)])
    params, state, opt_state, history = fit(net, LOSS, optim.sgd(0.05), data(), epochs=2,
                                            batch_size=16, progress=False,
                                            val_data=data(20, seed=2))
    assert not np.allclose(state[1]["mean"], 0)  # running statistics moved
    assert len(history["val_loss"]) == 2


def test_early_stopping_stops_and_restores_the_best_params():
    calls = []

    def record(epoch, logs, context):
        calls.append((epoch, logs["loss"], jax.tree.map(jnp.copy, context["params"])))

    stopper = EarlyStopping("loss", patience=2, mode="max")  # loss never rises: stop early
    params, _, history = run_fit(20, callbacks=[record, stopper])
    assert len(history["epoch"]) == 3
    assert stopper.best_epoch == 0
    chex.assert_trees_all_equal(params, calls[0][2])


def test_a_callback_returning_true_stops():
    _, _, history = run_fit(10, callbacks=[lambda epoch, logs, ctx: epoch == 1])
    assert history["epoch"] == [0, 1]


def test_progress_bar_reaches_the_total():
    pytest.importorskip("tqdm")
    err = io.StringIO()
    x, y = data(640)
    with contextlib.redirect_stderr(err):
        fit(mlp(), LOSS, optim.sgd(0.05), (x, y), epochs=2, batch_size=16)  # 40 steps/epoch
    assert "80/80" in err.getvalue()


@pytest.mark.parametrize("batch_size", [0, 101, 2.5])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match=r"fit: batch_size must be an int in \[1, 100\]"):
        fit(mlp(), LOSS, optim.sgd(0.1), data(), epochs=1, batch_size=batch_size)


def test_mismatched_lengths():
    x, y = data()
    with pytest.raises(ValueError, match=r"same number of examples \(first axis\); fit: "
                                         r"train_data\['inputs'\] has 100, fit: "
                                         r"train_data\['targets'\] has 99"):
        fit(mlp(), LOSS, optim.sgd(0.1), (x, y[:-1]), epochs=1, batch_size=10)


def test_steps_epoch_equals_the_scan_epoch():
    net, opt = mlp(0.2), optim.sgd(0.05, momentum=0.9)
    x, y = data(50)
    update = train.make_update(net, LOSS, opt)
    params = net.init(jax.random.key(0))
    key = jax.random.key(7)
    scanned = make_epoch(update, 50, 16)(jax.tree.map(jnp.copy, params), None,
                                         opt.init(params), (x, y), key, 1)
    stepped = make_epoch_steps(update, 50, 16)(jax.tree.map(jnp.copy, params), None,
                                               opt.init(params), (x, y), key, 1)
    chex.assert_trees_all_close(stepped[0], scanned[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stepped[3]["loss"], scanned[3]["loss"], rtol=1e-6)


def conv_fit(epochs, **kwargs):
    net = nn.Net([nn.Conv2D(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                  nn.Dropout(0.1), nn.Linear(2 * 4 * 4, 3)])
    x, y = data(48)
    images = np.repeat(x, 4, axis=1).reshape(48, 1, 4, 4)
    with contextlib.redirect_stderr(io.StringIO()):
        return fit(net, LOSS, optim.sgd(0.05, momentum=0.9), (images, y), epochs=epochs,
                   batch_size=16, seed=1, **kwargs)


def test_conv_nets_scan_and_step_alike_and_resume_exactly():
    full = conv_fit(4, loop="steps")
    params, opt_state, history = conv_fit(2, loop="steps")
    resumed = conv_fit(4, params=params, opt_state=opt_state, start_epoch=2, history=history,
                       loop="steps")
    chex.assert_trees_all_equal(resumed[0], full[0])
    scanned = conv_fit(4, loop="scan")      # the other runner, the same plan
    chex.assert_trees_all_close(scanned[0], full[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scanned[2]["loss"], full[2]["loss"], rtol=1e-4)


def test_bad_loop_mode():
    with pytest.raises(ValueError, match="fit: loop must be 'auto', 'scan' or 'steps'"):
        fit(mlp(), LOSS, optim.sgd(0.1), data(), epochs=1, batch_size=10, loop="fast")


@pytest.mark.parametrize("probe_every", [None, 3])
def test_on_step_reports_every_step_every_steps_and_can_be_switched_off(probe_every):
    """``on_step`` sees 4, 8, ... of 10 full steps (chunks without a probe, a per-step check
    with one); ``report=False`` silences it without changing a single number."""
    net, opt = mlp(0.2), optim.sgd(0.05, momentum=0.9)
    x, y = data(166)  # 10 full batches of 16 and a last one of 6
    update = train.make_update(net, LOSS, opt)
    probe = train.make_update(net, LOSS, opt, telemetry=True) if probe_every else None
    seen = []
    epoch = make_epoch(update, 166, 16, on_step=lambda done: seen.append(int(done)),
                       step_every=4, probe=probe, probe_every=probe_every)
    quiet = make_epoch(update, 166, 16, probe=probe, probe_every=probe_every)
    params, key = net.init(jax.random.key(0)), jax.random.key(5)
    runs = {}
    for name, fn, kwargs in (("reported", epoch, {}), ("off", epoch, {"report": False}),
                             ("no on_step", quiet, {})):
        runs[name] = fn(jax.tree.map(jnp.copy, params), None, opt.init(params), (x, y), key,
                        2, **kwargs)
        jax.block_until_ready(runs[name])
        if name == "reported":
            assert sorted(seen) == [4, 8]
            seen.clear()
    assert seen == []  # report=False
    for name in ("off", "no on_step"):
        chex.assert_trees_all_close(runs[name][0], runs["reported"][0], rtol=1e-6)
        np.testing.assert_allclose(runs[name][3]["loss"], runs["reported"][3]["loss"],
                                   rtol=1e-6)


def test_step_every_must_be_positive():
    update = train.make_update(mlp(), LOSS, optim.sgd(0.1))
    with pytest.raises(ValueError, match="make_epoch: step_every must be >= 1, received 0"):
        make_epoch(update, 100, 10, on_step=print, step_every=0)


@pytest.mark.parametrize("threshold, live_epochs", [(0.0, 3), (1e9, 1)])
def test_bar_moves_inside_epochs_only_when_they_are_long(monkeypatch, threshold, live_epochs):
    """Host calls from inside the compiled epoch cost ~1 ms each: after the first epoch,
    only epochs at least LIVE_BAR_SECONDS long keep them (a runtime switch, same numbers)."""
    pytest.importorskip("tqdm")
    fit_module = importlib.import_module("minitorch.fit")  # the module, not the function

    calls = []
    original = fit_module.Progress.on_step

    def counting(self, done):
        calls.append(int(done))
        original(self, done)

    monkeypatch.setattr(fit_module.Progress, "on_step", counting)
    monkeypatch.setattr(fit_module, "LIVE_BAR_SECONDS", threshold)
    x, y = data(640)  # 40 steps per epoch: the bar moves every 4 steps inside an epoch
    with contextlib.redirect_stderr(io.StringIO()) as err:
        params, _, _ = fit(mlp(), LOSS, optim.sgd(0.05), (x, y), epochs=3, batch_size=16,
                           seed=0)
    assert len(calls) == 10 * live_epochs
    assert "120/120" in err.getvalue()
    with contextlib.redirect_stderr(io.StringIO()):
        quiet, _, _ = fit(mlp(), LOSS, optim.sgd(0.05), (x, y), epochs=3, batch_size=16,
                          seed=0, progress=False)
    chex.assert_trees_all_close(params, quiet, rtol=1e-6)


def test_epoch_seconds_from_progress_ticks():
    from minitorch.fit import Progress

    progress = Progress(False, 0, 40)
    progress._ticks[:] = [(10.0, 4), (10.3, 8), (11.2, 20)]
    assert progress._epoch_seconds(5.0) == pytest.approx(3.0)
    progress._ticks[:] = [(10.0, 4)]
    assert progress._epoch_seconds(5.0) == 5.0  # one tick: the measured time
    progress._ticks[:] = []
    assert progress._epoch_seconds(0.2) == 0.2


def test_from_minitorch_import_fit_gives_the_function():
    from minitorch import EarlyStopping as TopLevelStopping
    from minitorch import fit as top_level_fit

    assert top_level_fit is fit and TopLevelStopping is EarlyStopping
    _, _, history = top_level_fit(mlp(), LOSS, optim.sgd(0.1), data(32), epochs=1,
                                  batch_size=16, progress=False)
    assert history["epoch"] == [0]


def custom_objective(net):
    def objective(params, batch, key):
        x, y = batch
        out = net.apply(params, x, key=key, train=True)
        value = LOSS(out, y)
        # metrics of any name, "/" included: a per-batch mean and a batch-size indicator
        return value, {"y/mean": jnp.mean(y.astype(jnp.float32)),
                       "rows": jnp.float32(x.shape[0])}

    return objective


@pytest.mark.parametrize("probe_every", [None, 2])
@pytest.mark.parametrize("n, batch", [(50, 16), (48, 16)])
def test_scan_and_steps_report_the_same_custom_metrics(n, batch, probe_every):
    """One plan: a custom metric named "y/mean" over 50 examples in batches of 16
    (unshuffled) is the example-weighted mean in both runners, partial batch and probes
    included."""
    net, opt = mlp(0.2), optim.sgd(0.05, momentum=0.9)
    x, y = data(n)
    y = y.astype(np.int32)
    update = train.make_update(None, custom_objective(net), opt)
    probe = (train.make_update(None, custom_objective(net), opt, telemetry=True)
             if probe_every else None)
    params = net.init(jax.random.key(0))
    runs = {}
    for name, make in (("scan", make_epoch), ("steps", make_epoch_steps)):
        epoch = make(update, n, batch, shuffle=False, probe=probe, probe_every=probe_every)
        runs[name] = epoch(jax.tree.map(jnp.copy, params), None, opt.init(params), (x, y),
                           jax.random.key(3), 0)
    scan, steps = runs["scan"][3], runs["steps"][3]
    np.testing.assert_allclose(scan["y/mean"], np.mean(y), rtol=1e-6)
    np.testing.assert_allclose(steps["y/mean"], np.mean(y), rtol=1e-6)
    sizes = [batch] * (n // batch) + ([n % batch] if n % batch else [])
    expected_rows = sum(s * s for s in sizes) / n   # the example-weighted mean of batch sizes
    np.testing.assert_allclose([scan["rows"], steps["rows"]], expected_rows, rtol=1e-6)
    np.testing.assert_allclose(scan["loss"], steps["loss"], rtol=1e-5)
    if probe_every:
        assert set(scan.telemetry) == set(steps.telemetry)
        for key in scan.telemetry:
            np.testing.assert_allclose(scan.telemetry[key], steps.telemetry[key],
                                       rtol=1e-4, atol=1e-6)
    else:
        assert "telemetry" not in scan and "telemetry" not in steps


def test_the_plan_probes_the_last_step_of_each_whole_interval():
    from minitorch.epoch import EpochPlan

    plan = EpochPlan(166, 16, probe_every=3)          # 10 full steps and one of 6
    assert plan.sizes == (16,) * 10 + (6,)
    assert [i for i in range(plan.steps) if plan.probes(i)] == [2, 5, 8]
    assert [i for i in range(11) if EpochPlan(166, 16).probes(i)] == [9]
    assert EpochPlan(166, 16, drop_last=True).sizes == (16,) * 10


def test_fit_returns_named_tuples_that_unpack_as_before():
    from minitorch.fit import Fitted, FittedWithState

    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    y = np.arange(16) % 3
    plain = nn.Net([nn.Linear(4, 3)])
    result = fit(plain, losses.softmax_cross_entropy, optim.sgd(0.1), (x, y), epochs=1,
                 batch_size=8, progress=False)
    assert isinstance(result, Fitted) and len(result) == 3
    params, opt_state, history = result
    assert params is result.params and history is result.history
    stateful = nn.Net([nn.Linear(4, 3), nn.BatchNorm(3)])
    result = fit(stateful, losses.softmax_cross_entropy, optim.sgd(0.1), (x, y), epochs=1,
                 batch_size=8, progress=False)
    assert isinstance(result, FittedWithState) and len(result) == 4
    params, state, opt_state, history = result
    assert int(result.state[1]["num_batches_tracked"]) == 2
