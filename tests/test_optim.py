import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from minitorch import optim


def pytorch_sgd_reference(params, grads_seq, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """torch.optim.SGD's documented algorithm (dampening 0), in NumPy float64."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    buf = None
    for t, grads in enumerate(grads_seq):
        rate = lr(t) if callable(lr) else lr
        g = {k: np.asarray(grads[k], np.float64) + weight_decay * p[k] for k in p}
        if momentum:
            buf = g if buf is None else {k: momentum * buf[k] + g[k] for k in p}
            g = {k: g[k] + momentum * buf[k] for k in p} if nesterov else buf
        p = {k: p[k] - rate * g[k] for k in p}
    return p


def run(opt, params, grads_seq):
    state = opt.init(params)
    update = jax.jit(opt.update)
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.01, momentum=0.5, weight_decay=1e-2),
    dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=5e-4),
]


class SGDTest(parameterized.TestCase):

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(0)
        self.params = {"W": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
                       "b": jnp.asarray(rng.normal(size=2), jnp.float32)}
        self.grads = [{k: jnp.asarray(rng.normal(size=v.shape), jnp.float32)
                       for k, v in self.params.items()} for _ in range(12)]

    @parameterized.parameters(*CONFIGS)
    def test_matches_pytorch_algorithm(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        got = run(optim.sgd(lr, momentum, nesterov, weight_decay), self.params, self.grads)
        expected = pytorch_sgd_reference(self.params, self.grads, lr, momentum, nesterov,
                                         weight_decay)
        for k in expected:
            np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6)

    @parameterized.parameters(*CONFIGS)
    def test_equals_optax(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        reference = optax.chain(optax.add_decayed_weights(weight_decay),
                                optax.sgd(lr, momentum or None, nesterov))
        chex.assert_trees_all_equal(
            run(optim.sgd(lr, momentum, nesterov, weight_decay), self.params, self.grads),
            run(reference, self.params, self.grads))

    def test_schedule_is_read_at_the_number_of_updates_done(self):
        schedule = optax.exponential_decay(0.1, transition_steps=1, decay_rate=0.5)
        got = run(optim.sgd(schedule, momentum=0.9), self.params, self.grads)
        expected = pytorch_sgd_reference(self.params, self.grads, lambda t: 0.1 * 0.5**t, 0.9)
        for k in expected:
            np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6)

    def test_composes_with_optax_transforms(self):
        opt = optax.chain(optax.clip_by_global_norm(1e-3), optim.sgd(1.0))
        got = run(opt, self.params, self.grads[:1])
        moved = optax.tree.norm(jax.tree.map(jnp.subtract, got, self.params))
        np.testing.assert_allclose(moved, 1e-3, rtol=1e-4)

    def test_plain_sgd_keeps_no_momentum_state(self):
        self.assertEqual(jax.tree.leaves(optim.sgd(0.1).init(self.params)), [])

    def test_is_pure(self):
        opt = optim.sgd(0.1, momentum=0.9)
        state = opt.init(self.params)
        a = opt.update(self.grads[0], state, self.params)
        b = opt.update(self.grads[0], state, self.params)
        chex.assert_trees_all_equal(a, b)

    @parameterized.parameters(
        (dict(learning_rate=-0.1), ValueError, "learning_rate must be > 0"),
        (dict(learning_rate=0.1, momentum=1.5), ValueError, r"momentum must be in \[0, 1\)"),
        (dict(learning_rate=0.1, nesterov=True), ValueError, "nesterov=True needs momentum"),
        (dict(learning_rate=0.1, weight_decay=-1.0), ValueError, "weight_decay must be >= 0"),
        (dict(learning_rate="0.1"), TypeError, "learning_rate must be a number or an optax"),
    )
    def test_bad_arguments(self, kwargs, error, message):
        with self.assertRaisesRegex(error, "sgd: " + message):
            optim.sgd(**kwargs)


@pytest.mark.parametrize("config", CONFIGS)
def test_matches_torch_when_installed(config):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    w0, grads = rng.normal(size=(4, 3)), [rng.normal(size=(4, 3)) for _ in range(6)]
    kwargs = {k: v for k, v in config.items() if k != "lr"}
    weight = torch.nn.Parameter(torch.tensor(w0))
    torch_opt = torch.optim.SGD([weight], lr=config["lr"], **kwargs)
    for g in grads:
        weight.grad = torch.tensor(g)
        torch_opt.step()
    with jax.enable_x64(True):
        got = run(optim.sgd(config["lr"], **kwargs), {"W": jnp.asarray(w0)},
                  [{"W": jnp.asarray(g)} for g in grads])
        np.testing.assert_allclose(got["W"], weight.detach().numpy(), rtol=1e-12)


def test_weight_decay_needs_params():
    opt = optim.sgd(0.1, weight_decay=0.1)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="sgd: update needs params when weight_decay > 0"):
        opt.update(params, opt.init(params))
