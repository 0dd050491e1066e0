import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from minitorch import losses, monitor, nn, optim


def net():
    return nn.Net([nn.Linear(4, 6), nn.ReLU(), nn.Net([nn.Linear(6, 5), nn.Tanh()]),
                   nn.Linear(5, 3)])


def setup():
    n = net()
    params = n.init(jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)
    y = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
    return n, params, x, y


def test_grad_norms_per_layer_match_numpy():
    n, params, x, y = setup()
    grads = jax.grad(lambda p: losses.softmax_cross_entropy(n.apply(p, x), y))(params)
    norms = jax.jit(monitor.grad_norms)(grads)
    assert sorted(norms) == ["0", "2.0", "3"]
    expected = np.sqrt(sum(np.sum(np.asarray(g) ** 2) for g in grads[2][0].values()))
    np.testing.assert_allclose(norms["2.0"], expected, rtol=1e-6)


def test_param_stats_match_numpy():
    _, params, _, _ = setup()
    stats = jax.jit(monitor.param_stats)(params)
    assert sorted(stats) == ["0.W", "0.b", "2.0.W", "2.0.b", "3.W", "3.b"]
    w = np.asarray(params[3]["W"])
    np.testing.assert_allclose(stats["3.W"]["mean"], w.mean(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats["3.W"]["var"], w.var(), rtol=1e-5)


def test_update_ratios():
    n, params, x, y = setup()
    opt = optim.sgd(0.1)
    grads = jax.grad(lambda p: losses.softmax_cross_entropy(n.apply(p, x), y))(params)
    updates, _ = opt.update(grads, opt.init(params), params)
    ratios = monitor.update_ratios(updates, params)
    expected = np.linalg.norm(0.1 * np.asarray(grads[0]["W"])) / np.linalg.norm(params[0]["W"])
    np.testing.assert_allclose(ratios["0.W"], expected, rtol=1e-5)
    assert np.isfinite(ratios["0.b"])  # zero-initialised bias: finite, not a division by 0
    new = optax.apply_updates(params, updates)
    assert not np.allclose(new[0]["W"], params[0]["W"])


def test_capture_returns_every_output_and_ends_with_apply():
    n, params, x, _ = setup()
    outs = jax.jit(lambda p, v: monitor.capture(n, p, v))(params, x)
    assert {k: np.shape(o) for k, o in outs.items()} == {
        "0": (8, 6), "1": (8, 6), "2.0": (8, 5), "2.1": (8, 5), "2": (8, 5), "3": (8, 3)}
    np.testing.assert_allclose(outs["3"], n.apply(params, x), rtol=1e-6)
    np.testing.assert_allclose(outs["1"], np.maximum(outs["0"], 0))
    np.testing.assert_allclose(outs["2.1"], np.tanh(outs["2.0"]), rtol=1e-6)
    np.testing.assert_array_equal(outs["2"], outs["2.1"])


def test_activation_stats_and_dead_relus():
    n, params, x, _ = setup()
    params[0]["b"] = params[0]["b"].at[:3].set(-100.0)  # units 0-2 can never fire: dead
    stats = monitor.activation_stats(n, monitor.capture(n, params, x))
    assert sorted(stats) == ["0", "1", "2", "2.0", "2.1", "3"]
    np.testing.assert_allclose(stats["1"]["dead"], 0.5)  # 3 of 6 units
    assert "dead" not in stats["2.1"]  # tanh units cannot die
    out = np.asarray(monitor.capture(n, params, x)["2.1"])
    np.testing.assert_allclose(stats["2.1"]["var"], out.var(), rtol=1e-5)


def test_capture_with_batchnorm_state():
    n = nn.Net([nn.Linear(3, 4), nn.BatchNorm(4), nn.ReLU()])
    params, state = n.init(jax.random.key(0)), n.init_state()
    x = jnp.ones((5, 3))
    outs = monitor.capture(n, params, x, state=state, train=True)
    np.testing.assert_allclose(outs["2"], n.apply(params, x, state=state, train=True)[0])


def test_step_and_fit_record_telemetry():
    import contextlib
    import io

    from minitorch import train
    from minitorch.fit import fit

    n, params, x, y = setup()
    opt = optim.sgd(0.1)
    plain = train.make_step(n, losses.softmax_cross_entropy, opt, donate=False)
    step = train.make_step(n, losses.softmax_cross_entropy, opt, telemetry=True, donate=False)
    new_plain, _, m_plain = plain(params, opt.init(params), (x, y), None)
    new, _, metrics = step(params, opt.init(params), (x, y), None)
    import chex
    chex.assert_trees_all_close(new, new_plain, rtol=1e-6)  # telemetry changes nothing
    grads = jax.grad(lambda p: losses.softmax_cross_entropy(n.apply(p, x), y))(params)
    telemetry = metrics.telemetry   # apart from the metrics, by structure
    assert set(metrics) == set(m_plain) and not m_plain.telemetry
    np.testing.assert_allclose(telemetry["grad_norm/3"], monitor.grad_norms(grads)["3"],
                               rtol=1e-5)
    np.testing.assert_allclose(telemetry["param_mean/0.W"], np.mean(params[0]["W"]), rtol=1e-5)
    assert {"act_dead/1", "act_mean/2.1", "update_ratio/3.W"} <= set(telemetry)
    with contextlib.redirect_stderr(io.StringIO()):
        _, _, history = fit(n, losses.softmax_cross_entropy, opt, (x, y), epochs=2,
                            batch_size=4, telemetry=True)
    assert len(history["grad_norm/0"]) == 2 and len(history["act_dead/1"]) == 2


def test_step_records_telemetry_at_the_interval_the_caller_chooses():
    """``step(..., telemetry=i % 2 == 0)``: telemetry on even calls only, and the params
    after four calls are those of four plain steps (recording changes nothing)."""
    from minitorch import train

    n, params, x, y = setup()
    opt = optim.sgd(0.1, momentum=0.9)
    plain = train.make_step(n, losses.softmax_cross_entropy, opt, donate=False)
    step = train.make_step(n, losses.softmax_cross_entropy, opt, telemetry=True,
                           donate=False)
    p_plain, o_plain = params, opt.init(params)
    p, o = params, opt.init(params)
    recorded = []
    for i in range(4):
        p_plain, o_plain, m_plain = plain(p_plain, o_plain, (x, y), None)
        p, o, metrics = step(p, o, (x, y), None, telemetry=i % 2 == 0)
        recorded.append(bool(metrics.telemetry))
        np.testing.assert_allclose(metrics["loss"], m_plain["loss"], rtol=1e-6)
    assert recorded == [True, False, True, False]
    assert set(metrics) == set(m_plain)  # an unrecorded call returns the plain metrics
    chex.assert_trees_all_close(p, p_plain, rtol=1e-6)
    _, _, default = step(p, o, (x, y), None)  # the default records
    assert "act_dead/1" in default.telemetry


def test_pmapped_step_chooses_telemetry_per_call():
    from functools import partial

    from minitorch import parallel, train

    n, params, x, y = setup()
    opt = optim.sgd(0.1)
    step = train.make_step(n, losses.softmax_cross_entropy, opt, axis_name="batch",
                           jit=False, telemetry=True)
    batch = parallel.split((x, y), 1)
    args = (parallel.replicate(params, 1), parallel.replicate(opt.init(params), 1), batch,
            None)
    _, _, recorded = jax.pmap(step, axis_name="batch", in_axes=(0, 0, 0, None))(*args)
    _, _, plain = jax.pmap(partial(step, telemetry=False), axis_name="batch",
                           in_axes=(0, 0, 0, None))(*args)
    assert "grad_norm/0" in recorded.telemetry and not plain.telemetry
    np.testing.assert_allclose(recorded["loss"], plain["loss"], rtol=1e-6)


def test_fit_telemetry_probe_changes_no_params():
    import contextlib
    import io

    from minitorch.fit import fit

    n, _, x, y = setup()
    x, y = jnp.tile(x, (4, 1)), jnp.tile(y, 4)
    runs = {}
    for every in (None, 2, 0):
        with contextlib.redirect_stderr(io.StringIO()):
            runs[every] = fit(n, losses.softmax_cross_entropy, optim.sgd(0.1), (x, y),
                              epochs=2, batch_size=4, telemetry=every != 0,
                              telemetry_every=every or None)
    for every in (None, 2):
        for a, b in zip(jax.tree.leaves(runs[every][0]), jax.tree.leaves(runs[0][0])):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert "grad_norm/0" in runs[2][2] and "grad_norm/0" not in runs[0][2]
    assert runs[None][2]["grad_norm/0"] != runs[2][2]["grad_norm/0"]  # last step vs mean


@pytest.mark.parametrize("every", [1, 3, 5])
def test_probe_intervals_agree_between_scan_and_steps(every):
    """Telemetry every 1, 3 (uneven: 8 steps -> 2 intervals and a tail of 2) or 5 steps:
    the scanned epoch and the dispatched steps probe the same steps, train the same params
    and report the same loss as an epoch without probes."""
    import contextlib
    import io

    from minitorch.fit import fit

    n, _, x, y = setup()
    x, y = jnp.tile(x, (4, 1)), jnp.tile(y, 4)
    runs = {}
    for loop, telemetry in (("scan", True), ("steps", True), ("scan", False)):
        with contextlib.redirect_stderr(io.StringIO()):
            runs[loop, telemetry] = fit(n, losses.softmax_cross_entropy, optim.sgd(0.1),
                                        (x, y), epochs=2, batch_size=2, loop=loop,
                                        telemetry=telemetry, telemetry_every=every)
    scan, steps, plain = runs["scan", True], runs["steps", True], runs["scan", False]
    chex.assert_trees_all_close(scan[0], plain[0], rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(steps[0], plain[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scan[2]["loss"], plain[2]["loss"], rtol=1e-6)
    for name in ("grad_norm/0", "act_mean/1", "update_ratio/0.W"):
        np.testing.assert_allclose(scan[2][name], steps[2][name], rtol=1e-5)


def test_telemetry_switch_with_state_and_checks():
    """The per-call switch works for a net with BatchNorm (state in and out) and for a
    checked step."""
    from minitorch import train

    n = nn.Net([nn.Linear(4, 6), nn.BatchNorm(6), nn.ReLU(), nn.Linear(6, 3)])
    _, _, x, y = setup()
    params, state, opt = n.init(jax.random.key(0)), n.init_state(), optim.sgd(0.1)
    step = train.make_step(n, losses.softmax_cross_entropy, opt, telemetry=True,
                           donate=False)
    *_, recorded = step(params, state, opt.init(params), (x, y), None)
    p_plain, s_plain, _, plain = step(params, state, opt.init(params), (x, y), None,
                                      telemetry=False)
    assert "act_dead/2" in recorded.telemetry and not plain.telemetry
    chex.assert_trees_all_close(s_plain, step(params, state, opt.init(params), (x, y),
                                              None)[1])
    checked = train.make_step(net(), losses.softmax_cross_entropy, opt, telemetry=True,
                              checked=True)
    p0 = net().init(jax.random.key(0))
    assert "grad_norm/0" in checked(p0, opt.init(p0), (x, y), None)[2].telemetry
    assert "telemetry" not in checked(p0, opt.init(p0), (x, y), None, telemetry=False)[2]
    with pytest.raises(ValueError, match="labels are class ids outside"):
        checked(p0, opt.init(p0), (x, y + 5), None, telemetry=False)
