import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minitorch import explain, nn
from minitorch.errors import LayerError


def cnn(bias=False):
    return nn.Net([nn.Conv2D(1, 4, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2D(2),
                   nn.Conv2D(4, 6, 3, padding=1, bias=bias), nn.LeakyReLU(0.1),
                   nn.AvgPool2D(2), nn.Flatten(),
                   nn.Net([nn.Linear(6 * 2 * 2, 16, bias=bias), nn.ReLU()]),
                   nn.Linear(16, 5, bias=bias)])


def data(n=3):
    return jnp.asarray(np.random.default_rng(0).uniform(size=(n, 1, 8, 8)), jnp.float32)


def target_logits(net, params, x, target):
    return np.take_along_axis(np.asarray(net.apply(params, x)), np.asarray(target)[:, None],
                              axis=1)[:, 0]


@pytest.mark.parametrize("rule", ["epsilon", "zplus"])
def test_lrp_conserves_relevance_without_biases(rule):
    net, x = cnn(), data()
    params = net.init(jax.random.key(1))
    target = jnp.array([0, 3, 4])
    relevance = jax.jit(lambda p, v: explain.lrp(net, p, v, target, rule=rule,
                                                 epsilon=1e-9))(params, x)
    assert relevance.shape == x.shape
    sums = np.asarray(relevance).reshape(3, -1).sum(axis=1)
    np.testing.assert_allclose(sums, target_logits(net, params, x, target), rtol=1e-4,
                               atol=1e-6)


def test_alphabeta_is_zplus_at_alpha_1_beta_0_and_finite_otherwise():
    # alpha-beta conserves only where a neuron has both positive and negative
    # contributions (a missing part makes its share 0), so it is checked by its definition
    net, x = cnn(), data()
    params = net.init(jax.random.key(1))
    np.testing.assert_allclose(explain.lrp(net, params, x, rule="alphabeta", alpha=1.0,
                                           beta=0.0), explain.lrp(net, params, x, rule="zplus"),
                               rtol=1e-5, atol=1e-7)
    relevance = explain.lrp(net, params, x, rule="alphabeta")
    assert np.isfinite(relevance).all()
    assert not np.allclose(relevance, explain.lrp(net, params, x, rule="zplus"))


def test_per_layer_rules_and_default_target():
    net, x = cnn(), data()
    params = net.init(jax.random.key(1))
    mixed = explain.lrp(net, params, x, rules={"0": "zplus", "7.0": "alphabeta"}, epsilon=1e-9)
    predicted = np.argmax(net.apply(params, x), axis=1)
    np.testing.assert_allclose(np.asarray(mixed).reshape(3, -1).sum(axis=1),
                               target_logits(net, params, x, predicted), rtol=1e-4, atol=1e-6)
    assert not np.allclose(mixed, explain.lrp(net, params, x, epsilon=1e-9))


def test_epsilon_absorbs_relevance():
    net, x = cnn(), data()
    params = net.init(jax.random.key(1))
    tiny = np.abs(explain.lrp(net, params, x, epsilon=1e-9)).sum()
    large = np.abs(explain.lrp(net, params, x, epsilon=10.0)).sum()
    assert large < tiny


def test_unsupported_layer_is_named():
    net = nn.Net([nn.Linear(4, 4), nn.Net([nn.ReLU(), nn.Tanh()]), nn.Linear(4, 2)])
    with pytest.raises(LayerError, match=r"layer 1\.1 \(Tanh\): LRP does not support Tanh"):
        explain.lrp(net, net.init(jax.random.key(0)), jnp.ones((1, 4)))
    with pytest.raises(ValueError, match="lrp: unknown rule 'gamma'"):
        explain.lrp(cnn(), cnn().init(jax.random.key(0)), data(), rule="gamma")


def test_saliency_and_gradient_x_input():
    net, x = cnn(bias=True), data()
    params = net.init(jax.random.key(2))
    target = jnp.array([1, 1, 2])
    grad = jax.grad(lambda v: net.apply(params, v)[jnp.arange(3), target].sum())(x)
    np.testing.assert_allclose(explain.saliency(net, params, x, target), grad, rtol=1e-6)
    np.testing.assert_allclose(explain.gradient_x_input(net, params, x, target), x * grad,
                               rtol=1e-6)


def test_integrated_gradients_completeness():
    net, x = cnn(bias=True), data()
    params = net.init(jax.random.key(2))
    target = jnp.array([0, 2, 4])
    attributions = jax.jit(lambda p, v: explain.integrated_gradients(
        net, p, v, target, steps=256))(params, x)
    gap = target_logits(net, params, x, target) - target_logits(net, params, 0 * x, target)
    np.testing.assert_allclose(np.asarray(attributions).reshape(3, -1).sum(axis=1), gap,
                               rtol=1e-2, atol=1e-4)
