"""User metrics aggregated correctly (means weighted by examples; F1 from summed counts),
in fit, evaluate and both epoch runners; callbacks that replace params or optimiser state."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import f1_score

from minitorch import losses, metrics, nn, optim, train
from minitorch.epoch import make_epoch, make_epoch_steps
from minitorch.errors import ArgumentError
from minitorch.fit import fit

LOSS = losses.softmax_cross_entropy


def mlp():
    return nn.Net([nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)])


def data(n=50, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, ((x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5)).astype(np.int32)


def top2(outputs, targets):
    best2 = jnp.argsort(outputs, axis=-1)[:, -2:]
    return jnp.mean(jnp.any(best2 == targets[:, None], axis=-1))


def test_f1_equals_sklearn_on_the_whole_data_not_the_mean_of_batches():
    rng = np.random.default_rng(1)
    outputs = rng.normal(size=(50, 3)).astype(np.float32)
    targets = rng.integers(0, 3, 50)
    f1 = metrics.F1(3)
    whole = float(f1.value(f1.counts(outputs, targets)))
    assert whole == pytest.approx(f1_score(targets, outputs.argmax(1), average="macro"))
    summed = jax.tree.map(lambda *c: sum(c), *[f1.counts(outputs[i:i + 16], targets[i:i + 16])
                                              for i in range(0, 50, 16)])
    assert float(f1.value(summed)) == pytest.approx(whole)
    means = np.mean([f1_score(targets[i:i + 16], outputs[i:i + 16].argmax(1), average="macro")
                     for i in range(0, 50, 16)])
    assert abs(means - whole) > 1e-3     # why counts: the mean of batch F1s is another number


def test_evaluate_aggregates_user_metrics_over_batches():
    net = mlp()
    params = net.init(jax.random.key(0))
    x, y = data()
    result = train.evaluate(net, LOSS, params, (x, y), batch_size=16,
                            metrics={"f1": metrics.F1(3), "top2": top2})
    outputs = net.apply(params, x)
    assert result["f1"] == pytest.approx(f1_score(y, np.argmax(outputs, 1), average="macro"),
                                         abs=1e-6)
    assert result["top2"] == pytest.approx(float(top2(outputs, y)), abs=1e-6)


@pytest.mark.parametrize("runner", [make_epoch, make_epoch_steps])
def test_epochs_report_user_metrics_of_the_steps_they_ran(runner):
    """With learning rate 0 every step sees the same params: the epoch's F1 and top-2 rate
    equal those of the whole data in one batch."""
    net = mlp()
    params = net.init(jax.random.key(0))
    x, y = data()
    opt = optax.sgd(0.0)
    update = train.make_update(net, LOSS, opt, metrics={"f1": metrics.F1(3), "top2": top2})
    epoch = runner(update, 50, 16, shuffle=True)
    *_, result = epoch(jax.tree.map(jnp.copy, params), None, opt.init(params), (x, y),
                       jax.random.key(0), 0)
    outputs = net.apply(params, x)
    f1 = metrics.F1(3)
    np.testing.assert_allclose(f1.value(result.counts["f1"]),
                               f1_score(y, np.argmax(outputs, 1), average="macro"), atol=1e-6)
    np.testing.assert_allclose(result["top2"], top2(outputs, y), atol=1e-6)


def test_fit_logs_user_metrics_and_their_validation():
    x, y = data(64)
    seen = []
    _, _, history = fit(mlp(), LOSS, optim.sgd(0.1), (x, y), epochs=2, batch_size=16,
                        val_data=(x, y), progress=False,
                        metrics={"f1": metrics.F1(3), "top2": top2},
                        callbacks=[lambda epoch, logs, context: seen.append(sorted(logs))])
    assert {"f1", "val_f1", "top2", "val_top2"} <= set(history)
    assert "counts" not in history and seen[0] == sorted(
        ["loss", "accuracy", "f1", "top2", "val_loss", "val_accuracy", "val_f1", "val_top2",
         "time"])
    with pytest.raises(ArgumentError, match="fit: metric names must be strings other than"):
        fit(mlp(), LOSS, optim.sgd(0.1), (x, y), epochs=1, batch_size=16, progress=False,
            metrics={"loss": top2})


def test_a_callback_can_replace_params_and_optimiser_state():
    """An EMA of the params swapped in after each epoch, and the learning rate changed
    through optax.inject_hyperparams: training goes on from what the callback left."""
    x, y = data(64)
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    record = {}

    def callback(epoch, logs, context):
        if epoch == 0:
            context["opt_state"].hyperparams["learning_rate"] = jnp.asarray(0.0)
            context["params"] = jax.tree.map(lambda p: p * 0.5, context["params"])
            record["after 0"] = jax.tree.map(np.asarray, context["params"])

    params, opt_state, _ = fit(mlp(), LOSS, opt, (x, y), epochs=3, batch_size=16,
                               progress=False, callbacks=[callback])
    # with the rate set to 0 after epoch 0, epochs 1 and 2 leave the halved params as they were
    chex.assert_trees_all_close(jax.tree.map(np.asarray, params), record["after 0"])
    assert float(opt_state.hyperparams["learning_rate"]) == 0.0


def test_metrics_with_a_custom_objective_are_refused():
    with pytest.raises(ArgumentError, match="metrics= needs a net"):
        train.make_step(None, lambda params, batch, key: 0.0, optim.sgd(0.1),
                        metrics={"top2": top2})


def test_f1_counts_every_token_of_token_level_targets():
    rng = np.random.default_rng(2)
    outputs = rng.normal(size=(6, 7, 4)).astype(np.float32)
    targets = rng.integers(0, 4, (6, 7))
    f1 = metrics.F1(4)
    got = float(f1.value(jax.jit(f1.counts)(outputs, targets)))
    assert got == pytest.approx(f1_score(targets.ravel(), outputs.argmax(-1).ravel(),
                                         average="macro"))


def test_f1_checks_shapes_instead_of_broadcasting():
    from minitorch.errors import DTypeError, ShapeError

    f1 = metrics.F1(3)
    outputs = np.zeros((5, 3), np.float32)
    with pytest.raises(ShapeError, match=r"F1: expected targets of shape \(5,\) .* "
                                         r"received \(5, 1\)"):
        f1.counts(outputs, np.zeros((5, 1), np.int32))
    with pytest.raises(ShapeError, match=r"F1: expected outputs of shape "
                                         r"\(\.\.\., num_classes=3\), received \(5, 4\)"):
        f1.counts(np.zeros((5, 4), np.float32), np.zeros(5, np.int32))
    with pytest.raises(ShapeError, match=r"one-hot or probability rows\?\): pass "
                                         r"targets.argmax\(-1\)"):
        f1.counts(outputs, np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1]])
    with pytest.raises(DTypeError, match="F1: expected integer class ids, received float32"):
        f1.counts(outputs, np.zeros(5, np.float32))


def test_step_metrics_read_as_a_dict_and_move_as_a_pytree():
    """A step's metrics: the means by name (loss first), counts and telemetry apart by
    structure; through jit, scan stacking, pmean and device_get the four fields survive."""
    net, opt = mlp(), optim.sgd(0.1)
    params = net.init(jax.random.key(0))
    x, y = map(jnp.asarray, data(12))
    step = train.make_step(net, LOSS, opt, donate=False,
                           metrics={"top2": top2, "f1": metrics.F1(3)})
    _, _, found = step(params, opt.init(params), (x, y), None)
    assert isinstance(found, metrics.StepMetrics)
    assert list(found) == ["loss", "accuracy", "top2"] and len(found) == 3
    assert set(found.counts) == {"f1"} and found.telemetry == {}
    np.testing.assert_allclose(found["loss"], LOSS(net.apply(params, x), y), rtol=1e-6)
    np.testing.assert_allclose(found["top2"], top2(net.apply(params, x), y), rtol=1e-6)
    assert dict(found) == {"loss": found.loss, **found.means}
    leaves, tree = jax.tree.flatten(found)
    rebuilt = jax.tree.unflatten(tree, [2 * leaf for leaf in leaves])
    np.testing.assert_allclose(rebuilt["loss"], 2 * found["loss"])
    chex.assert_trees_all_equal(rebuilt.counts["f1"], jax.tree.map(lambda c: 2 * c,
                                                                   found.counts["f1"]))
    stacked = jax.tree.map(lambda *v: jnp.stack(v), found, found)
    assert stacked["accuracy"].shape == (2,) and stacked.counts["f1"]["tp"].shape == (2, 3)
    mean = jax.pmap(lambda m: jax.lax.pmean(m, "d"), axis_name="d")(
        jax.tree.map(lambda v: v[None], found))
    np.testing.assert_allclose(mean["loss"][0], found["loss"], rtol=1e-6)
    assert "StepMetrics(loss=" in repr(found)
    with pytest.raises(KeyError):
        found["telemetry"]


def test_a_custom_objective_reporting_its_own_loss_is_refused():
    def objective(params, batch, key):
        loss = jnp.sum(params["w"] ** 2)
        return loss, {"loss": loss}

    step = train.make_step(None, objective, optim.sgd(0.1), donate=False)
    params = {"w": jnp.ones(3)}
    with pytest.raises(ArgumentError, match=r"must not hold 'loss'"):
        step(params, optim.sgd(0.1).init(params), None, None)
