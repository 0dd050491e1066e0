import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from minitorch import losses, nn, optim, train


def mlp():
    return nn.Net([nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3)])


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 5)).astype(np.float32), rng.integers(0, 3, size=n))


def hand_written(net, opt):
    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(
            lambda p: losses.softmax_cross_entropy(net.apply(p, x), y))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss
    return step


def test_step_equals_the_hand_written_step():
    net, opt = mlp(), optim.sgd(0.1, momentum=0.9)
    x, y = data()
    step = train.make_step(net, losses.softmax_cross_entropy, opt)
    reference = hand_written(net, opt)
    params = net.init(jax.random.key(0))
    p1, o1 = params, opt.init(params)
    p2, o2 = jax.tree.map(jnp.copy, params), opt.init(params)
    for _ in range(5):
        p1, o1, metrics = step(p1, o1, (x, y), None)
        p2, o2, loss = reference(p2, o2, x, y)
        np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
    chex.assert_trees_all_close(p1, p2, rtol=1e-6, atol=1e-7)


def test_metrics_hold_loss_and_accuracy_for_class_ids_only():
    net, opt = mlp(), optim.sgd(0.1)
    x, y = data()
    params = net.init(jax.random.key(0))
    logits = net.apply(params, x)  # before the step, which donates params
    _, _, metrics = train.make_step(net, losses.softmax_cross_entropy, opt)(
        params, opt.init(params), (x, y), None)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(np.argmax(logits, 1) == y))
    regression = nn.Net([nn.Linear(5, 1)])
    params = regression.init(jax.random.key(0))
    _, _, metrics = train.make_step(regression, losses.mse, opt)(
        params, opt.init(params), (x, x[:, :1]), None)
    assert sorted(metrics) == ["loss"]


def test_dropout_uses_the_step_key():
    net = nn.Net([nn.Linear(5, 16), nn.Dropout(0.5), nn.Linear(16, 3)])
    opt = optim.sgd(0.1)
    step = train.make_step(net, losses.softmax_cross_entropy, opt, donate=False)
    params = net.init(jax.random.key(0))
    state = opt.init(params)
    a = step(params, state, data(), jax.random.key(1))
    b = step(params, state, data(), jax.random.key(1))
    c = step(params, state, data(), jax.random.key(2))
    chex.assert_trees_all_equal(a, b)
    assert not np.allclose(a[2]["loss"], c[2]["loss"])


def test_stateful_net_threads_state_and_keeps_it_out_of_the_gradient():
    net = nn.Net([nn.Linear(5, 8), nn.BatchNorm(8), nn.ReLU(), nn.Linear(8, 3)])
    opt = optim.sgd(0.1, weight_decay=0.1)  # decay would move state if it were a parameter
    step = train.make_step(net, losses.softmax_cross_entropy, opt)
    params, state = net.init(jax.random.key(0)), net.init_state()
    x, y = data()
    _, expected_state = net.apply(params, x, state=state, train=True)
    params, new_state, _, metrics = step(params, state, opt.init(params), (x, y), None)
    chex.assert_trees_all_close(new_state, expected_state, rtol=1e-6)
    assert np.isfinite(metrics["loss"])


def test_custom_objective_plugs_into_the_same_builder():
    net, opt = mlp(), optim.sgd(0.1)

    def objective(params, batch, key):
        x, y = batch
        logits = net.apply(params, x)
        l2 = sum(jnp.sum(w["W"] ** 2) for w in params if "W" in w)
        return losses.softmax_cross_entropy(logits, y) + 1e-3 * l2, {"l2": l2}

    step = train.make_step(None, objective, opt)
    params = net.init(jax.random.key(0))
    _, _, metrics = step(params, opt.init(params), data(), None)
    assert sorted(metrics) == ["l2", "loss"]
    l2 = sum(float(np.sum(np.asarray(w["W"]) ** 2)) for w in net.init(jax.random.key(0))
             if "W" in w)
    np.testing.assert_allclose(metrics["l2"], l2, rtol=1e-5)


def test_evaluate_and_predict():
    net = mlp()
    params = net.init(jax.random.key(0))
    x, y = data(50)
    logits = net.apply(params, x)
    np.testing.assert_allclose(train.predict(net, params, x, batch_size=16), logits, rtol=1e-6)
    metrics = train.evaluate(net, losses.softmax_cross_entropy, params, (x, y), batch_size=16)
    np.testing.assert_allclose(metrics["loss"], losses.softmax_cross_entropy(logits, y),
                               rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(np.argmax(logits, 1) == y),
                               rtol=1e-6)


def test_bad_net_argument():
    with pytest.raises(TypeError, match="make_step: net must be a minitorch layer"):
        train.make_step(lambda x: x, losses.mse, optim.sgd(0.1))
