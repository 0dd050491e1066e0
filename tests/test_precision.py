"""Mixed precision: float32 params around bfloat16/float16 compute, float32 losses and
statistics, and dynamic loss scaling for float16."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from minitorch import losses, nn, optim, train
from minitorch.errors import ArgumentError
from minitorch.fit import fit


def cnn():
    return nn.Net([nn.Conv2D(1, 8, 3, padding=1), nn.BatchNorm(8), nn.ReLU(), nn.Flatten(),
                   nn.Linear(8 * 8 * 8, 10)])


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, n))


class MixedPrecisionTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_computes_in_bfloat16_with_float32_params_outputs_and_state(self):
        net = cnn()
        mixed = nn.MixedPrecision(net)
        params = mixed.init(jax.random.key(0))
        chex.assert_trees_all_equal(params, net.init(jax.random.key(0)))
        x, _ = data()
        apply = self.variant(lambda p, s, x: mixed.apply(p, x, state=s, train=True))
        y, state = apply(params, mixed.init_state(), x)
        self.assertEqual(y.dtype, jnp.float32)
        chex.assert_trees_all_equal_dtypes(state, net.init_state())  # running stats float32
        _, inside = nn.intermediates(mixed, params, x, state=mixed.init_state(), train=True)
        self.assertEqual(inside["0"].dtype, jnp.bfloat16)  # the convolution ran in bfloat16
        want, _ = net.apply(params, x, state=net.init_state(), train=True)
        np.testing.assert_allclose(y, want, rtol=0.05, atol=0.05)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gradients_are_float32_and_near_the_float32_ones(self):
        net = nn.Net([nn.Linear(16, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 4)])
        mixed = nn.MixedPrecision(net)
        params = net.init(jax.random.key(1))
        x = np.random.default_rng(1).normal(size=(8, 16)).astype(np.float32)
        y = np.arange(8) % 4

        def grads(layer):
            return self.variant(jax.grad(
                lambda p: losses.softmax_cross_entropy(layer.apply(p, x), y)))(params)

        low, high = grads(mixed), grads(net)
        chex.assert_trees_all_equal_dtypes(low, params)
        for a, b in zip(jax.tree.leaves(low), jax.tree.leaves(high)):
            np.testing.assert_allclose(a, b, rtol=0.1, atol=0.02 * float(np.abs(b).max()))

    def test_make_step_and_fit_train_a_mixed_precision_net(self):
        mixed = nn.MixedPrecision(cnn())
        x, y = data(64)
        params, _, _, history = fit(mixed, losses.softmax_cross_entropy,
                                     optim.sgd(0.05, momentum=0.9), (x, y), epochs=8,
                                     batch_size=16, seed=0, progress=False)
        chex.assert_trees_all_equal_dtypes(params, mixed.init(jax.random.key(0)))
        self.assertLess(history["loss"][-1], 0.5 * history["loss"][0])

    def test_bad_dtypes_are_refused_by_name(self):
        with self.assertRaisesRegex(ArgumentError, "MixedPrecision: compute_dtype must be a "
                                                   "floating-point dtype.*'int8'"):
            nn.MixedPrecision(nn.Linear(2, 2), "int8")
        with self.assertRaisesRegex(TypeError, "MixedPrecision: layer must be a minitorch"):
            nn.MixedPrecision(lambda x: x)
        self.assertEqual(repr(nn.MixedPrecision(nn.ReLU(), "float16")),
                         "MixedPrecision(layer=ReLU(), compute_dtype='float16', "
                         "output_dtype='float32')")


@pytest.mark.parametrize("loss, args", [
    (losses.softmax_cross_entropy, (np.array([[1.0, 2.0, 0.5]]), np.array([1]))),
    (losses.mse, (np.array([1.0, 2.5]), np.array([0.5, 2.0]))),
    (losses.binary_cross_entropy, (np.array([0.25, 0.75]), np.array([0.0, 1.0]))),
    (losses.binary_cross_entropy_with_logits, (np.array([-1.0, 2.0]), np.array([0.0, 1.0]))),
])
@pytest.mark.parametrize("low", [jnp.bfloat16, jnp.float16])
def test_losses_of_narrow_floats_are_float32_and_exact_for_the_rounded_inputs(loss, args, low):
    narrow = tuple(jnp.asarray(a, low) if a.dtype.kind == "f" else a for a in args)
    value = loss(*narrow)
    assert value.dtype == jnp.float32
    rounded = tuple(np.asarray(a, np.float32) if a.dtype != np.int64 else a for a in narrow)
    np.testing.assert_allclose(value, loss(*rounded), rtol=1e-6)


@pytest.mark.parametrize("layer, shape", [
    (nn.LayerNorm(64), (4, 64)), (nn.RMSNorm(64), (4, 64)),
    (nn.GroupNorm(4, 16), (2, 16, 4)), (nn.BatchNorm(16), (8, 16)),
])
def test_norm_statistics_are_float32_for_bfloat16_inputs(layer, shape):
    # Values around 100 with spread 1: bfloat16 sums over 64 of them lose the spread.
    x = jnp.asarray(100 + np.random.default_rng(0).normal(size=shape), jnp.bfloat16)
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), layer.init(jax.random.key(0)))
    state = layer.init_state()
    kwargs = {"state": state, "train": True} if layer.stateful else {}
    out = layer.apply(params, x, **kwargs)
    y, new_state = out if layer.stateful else (out, None)
    assert y.dtype == jnp.bfloat16
    exact = layer.apply(jax.tree.map(lambda a: a.astype(jnp.float32), params),
                        x.astype(jnp.float32), **kwargs)
    exact = exact[0] if layer.stateful else exact
    np.testing.assert_allclose(np.asarray(y, np.float32), exact, atol=0.02, rtol=0.02)
    if new_state is not None:
        chex.assert_trees_all_equal_dtypes(new_state, state)


class DynamicLossScaleTest(chex.TestCase):

    def test_skips_non_finite_steps_halves_the_scale_and_grows_after_an_interval(self):
        opt = optim.dynamic_loss_scale(optim.sgd(1.0, momentum=0.5), initial_scale=8.0,
                                       growth_interval=2)
        params = {"w": jnp.ones(3)}
        state = opt.init(params)
        updates, bad = opt.update({"w": jnp.array([1.0, jnp.inf, 0.0])}, state, params)
        chex.assert_trees_all_equal(updates, {"w": jnp.zeros(3)})
        chex.assert_trees_all_equal(bad.inner, state.inner)  # momentum untouched
        self.assertEqual(float(bad.scale), 4.0)
        updates, good = opt.update({"w": jnp.full(3, 8.0)}, bad, params)
        np.testing.assert_allclose(updates["w"], -2.0)  # 8 / scale 4, learning rate 1
        self.assertEqual((float(good.scale), int(good.good_steps)), (4.0, 1))
        _, grown = opt.update({"w": jnp.full(3, 8.0)}, good, params)
        self.assertEqual((float(grown.scale), int(grown.good_steps)), (8.0, 0))
        self.assertEqual(optim.loss_scale(grown), grown.scale)
        self.assertEqual(optim.loss_scale(optim.sgd(0.1).init(params)), 1.0)

    def test_float16_gradients_with_a_scale_beyond_float16s_range(self):
        # 2^17 is inf in float16: dividing float16 gradients by it in float16 gave zeros
        # that passed for a finite step. Unscaled in float32, they give the true update.
        opt = optim.dynamic_loss_scale(optim.sgd(1.0), initial_scale=2.0 ** 17,
                                       growth_interval=1)
        params = {"w": jnp.ones(2, jnp.float16)}
        state = opt.init(params)
        grads = {"w": jnp.full(2, 2.0 ** 14, jnp.float16)}          # true gradient 1/8
        updates, state = opt.update(grads, state, params)
        np.testing.assert_array_equal(updates["w"], np.full(2, -0.125, np.float16))
        # The scale grows only up to the largest power of two finite in float16.
        self.assertEqual(float(state.scale), 2.0 ** 15)
        updates, state = opt.update(grads, state, params)
        self.assertEqual(float(state.scale), 2.0 ** 15)
        np.testing.assert_array_equal(updates["w"], np.full(2, -0.5, np.float16))
        # Overflowed (inf) float16 gradients are a skipped step, and the scale halves.
        updates, state = opt.update({"w": jnp.full(2, jnp.inf, jnp.float16)}, state, params)
        np.testing.assert_array_equal(updates["w"], np.zeros(2, np.float16))
        self.assertEqual(float(state.scale), 2.0 ** 14)

    def test_float16_gradients_survive_only_with_loss_scaling(self):
        # Gradients of order 1e-9: below float16's smallest subnormal (6e-8) unless scaled up.
        net = nn.MixedPrecision(nn.Net([nn.Linear(4, 4)]), "float16")
        params = net.init(jax.random.key(0))
        x = np.ones((2, 4), np.float32)

        def tiny_loss(outputs, targets):
            return 1e-8 * losses.mse(outputs, targets)

        def moved(opt):
            step = train.make_step(net, tiny_loss, opt, accuracy=False)
            start = jax.tree.map(jnp.copy, params)  # the step donates what it is given
            new, _, _ = step(start, opt.init(start), (x, np.zeros((2, 4), np.float32)), None)
            return float(jnp.abs(new[0]["W"] - params[0]["W"]).max())

        self.assertEqual(moved(optim.sgd(1.0)), 0.0)
        scaled = moved(optim.dynamic_loss_scale(optim.sgd(1.0)))
        reference = jax.grad(lambda p: tiny_loss(nn.Net([nn.Linear(4, 4)]).apply(p, x),
                                                 jnp.zeros((2, 4))))(params)
        np.testing.assert_allclose(scaled, float(jnp.abs(reference[0]["W"]).max()), rtol=0.05)

    def test_a_hand_written_step_scales_with_loss_scale(self):
        opt = optim.dynamic_loss_scale(optax.adam(1e-2), initial_scale=1024.0)
        net = nn.MixedPrecision(nn.Net([nn.Linear(3, 2)]), "float16")
        params = net.init(jax.random.key(2))
        opt_state = opt.init(params)
        x, y = np.ones((4, 3), np.float32), np.zeros(4, np.int32)

        @jax.jit
        def step(params, opt_state):
            scale = optim.loss_scale(opt_state)
            grads = jax.grad(
                lambda p: losses.softmax_cross_entropy(net.apply(p, x), y) * scale)(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        new, new_state = step(params, opt_state)
        self.assertEqual(int(new_state.good_steps), 1)
        self.assertTrue(bool(jnp.all(new[0]["W"] != params[0]["W"])))

    def test_bad_settings_are_refused(self):
        for kwargs in ({"initial_scale": 0.5}, {"factor": 1.0}, {"growth_interval": 0}):
            with self.assertRaises(ValueError):
                optim.dynamic_loss_scale(optim.sgd(0.1), **kwargs)
