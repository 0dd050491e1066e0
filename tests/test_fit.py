import contextlib
import io

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minitorch import losses, nn, optim, train
from minitorch.fit import EarlyStopping, fit, make_epoch

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
    with pytest.raises(ValueError, match="same length, received 100 and 99"):
        fit(mlp(), LOSS, optim.sgd(0.1), (x, y[:-1]), epochs=1, batch_size=10)


def test_steps_epoch_equals_the_scan_epoch():
    from minitorch.fit import make_epoch_steps

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


def test_conv_nets_default_to_steps_and_resume_exactly():
    full = conv_fit(4)
    params, opt_state, history = conv_fit(2)
    resumed = conv_fit(4, params=params, opt_state=opt_state, start_epoch=2, history=history)
    chex.assert_trees_all_equal(resumed[0], full[0])
    scanned = conv_fit(4, loop="scan")
    chex.assert_trees_all_close(scanned[0], full[0], rtol=1e-4, atol=1e-5)


def test_bad_loop_mode():
    with pytest.raises(ValueError, match="fit: loop must be 'auto', 'scan' or 'steps'"):
        fit(mlp(), LOSS, optim.sgd(0.1), data(), epochs=1, batch_size=10, loop="fast")


def test_auto_loop_steps_only_through_grouped_convolutions_on_cpu():
    from minitorch.fit import _has_slow_conv

    plain = nn.Net([nn.Conv2D(2, 4, 3), nn.ReLU(), nn.Flatten()])
    grouped = nn.Net([nn.Linear(4, 4), nn.Net([nn.Conv2D(2, 4, 3, groups=2)])])
    assert not _has_slow_conv(plain)
    assert _has_slow_conv(grouped) == (jax.default_backend() == "cpu")


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
    import minitorch.fit as fit_module

    calls = []
    original = fit_module._bar_advance

    def counting(bar, start, ticks):
        advance = original(bar, start, ticks)
        return lambda done: (calls.append(int(done)), advance(done))

    monkeypatch.setattr(fit_module, "_bar_advance", counting)
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
    from minitorch.fit import _epoch_seconds

    assert _epoch_seconds([(10.0, 4), (10.3, 8), (11.2, 20)], 40, 5.0) == pytest.approx(3.0)
    assert _epoch_seconds([(10.0, 4)], 40, 5.0) == 5.0  # one tick: the measured time
    assert _epoch_seconds([], 40, 0.2) == 0.2
