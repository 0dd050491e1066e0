import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads

from minitorch import nn
from minitorch.errors import ShapeError
from tests.helpers import assert_matches_torch, check_layer_grads, to_f64


def layer_norm_ref(x, shape, scale, bias, eps=1e-5):
    axes = tuple(range(-len(shape), 0))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


class LayerNormTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((5, (3, 5)), ((4, 5), (2, 3, 4, 5)), (6, (2, 2, 6)))
    def test_matches_numpy(self, normalized_shape, x_shape):
        layer = nn.LayerNorm(normalized_shape)
        params = layer.init(jax.random.key(0))
        shape = params["scale"].shape
        params = {"scale": jax.random.normal(jax.random.key(1), shape),
                  "bias": jax.random.normal(jax.random.key(2), shape)}
        x = np.random.default_rng(0).normal(2.0, 3.0, size=x_shape).astype(np.float32)
        y = self.variant(layer.apply)(params, x)
        expected = layer_norm_ref(x.astype(np.float64), shape, np.asarray(params["scale"]),
                                  np.asarray(params["bias"]))
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)

    def test_init_is_identity_affine(self):
        params = nn.LayerNorm((2, 3)).init(jax.random.key(0))
        np.testing.assert_array_equal(params["scale"], np.ones((2, 3)))
        np.testing.assert_array_equal(params["bias"], np.zeros((2, 3)))
        self.assertEqual(nn.LayerNorm(3, elementwise_affine=False).init(jax.random.key(0)), {})

    def test_gradients(self):
        layer = nn.LayerNorm(4)
        params = {"scale": jnp.array([1.0, 2.0, 0.5, -1.0]), "bias": jnp.arange(4.0)}
        check_layer_grads(layer, params, np.random.default_rng(0).normal(size=(3, 4)))

    def test_eps_matters_for_constant_rows(self):
        y = nn.LayerNorm(3, eps=1e-5).apply(nn.LayerNorm(3).init(jax.random.key(0)),
                                            jnp.full((1, 3), 7.0))
        np.testing.assert_array_equal(y, np.zeros((1, 3)))


def batch_norm_ref(x, scale, bias, eps=1e-5):
    """NumPy training-mode batch norm over every axis but 1; returns y, mean, unbiased var."""
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    n = x.size // x.shape[1]
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return y * scale.reshape(shape) + bias.reshape(shape), mean, var * n / (n - 1)


class BatchNormTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((6, 3), (5, 3, 7), (4, 3, 5, 6))
    def test_train_mode_matches_numpy(self, *shape):
        layer = nn.BatchNorm(3, momentum=0.2)
        params = {"scale": jnp.array([1.0, 2.0, -0.5]), "bias": jnp.array([0.0, 1.0, 3.0])}
        state = {"mean": jnp.array([0.5, 0.0, -1.0]), "var": jnp.array([1.0, 2.0, 0.5]),
                 "num_batches_tracked": jnp.asarray(5, jnp.int32)}
        x = np.random.default_rng(0).normal(1.0, 2.0, size=shape)
        y, new = self.variant(lambda p, x, s: layer.apply(p, x, state=s, train=True))(
            params, x.astype(np.float32), state)
        ref, mean, var = batch_norm_ref(x, np.asarray(params["scale"]), np.asarray(params["bias"]))
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(new["mean"], 0.8 * np.asarray(state["mean"]) + 0.2 * mean,
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new["var"], 0.8 * np.asarray(state["var"]) + 0.2 * var,
                                   rtol=1e-5, atol=1e-6)
        self.assertEqual(int(new["num_batches_tracked"]), 6)  # one more batch, as PyTorch
        self.assertEqual(new["num_batches_tracked"].dtype, jnp.int32)

    @chex.variants(with_jit=True, without_jit=True)
    def test_eval_mode_uses_running_stats_and_keeps_state(self):
        layer = nn.BatchNorm(2)
        params = {"scale": jnp.array([2.0, 1.0]), "bias": jnp.array([0.0, -1.0])}
        state = {"mean": jnp.array([1.0, -1.0]), "var": jnp.array([4.0, 0.25]),
                 "num_batches_tracked": jnp.asarray(3, jnp.int32)}
        x = np.random.default_rng(1).normal(size=(3, 2, 4)).astype(np.float32)
        y, new = self.variant(lambda p, x, s: layer.apply(p, x, state=s))(params, x, state)
        expected = ((x - np.array([1.0, -1.0])[:, None]) / np.sqrt(np.array([4.0, 0.25]) + 1e-5)
                    [:, None] * np.array([2.0, 1.0])[:, None] + np.array([0.0, -1.0])[:, None])
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_equal(new, state)

    @parameterized.parameters(((8, 4), "1d"), ((8, 4, 6), "1d"), ((8, 4, 5, 5), "2d"),
                              ((4, 4, 3, 4, 5), "3d"))
    def test_matches_pytorch_over_several_steps_in_both_modes(self, shape, kind):
        torch = pytest.importorskip("torch")
        layer = nn.BatchNorm(4, momentum=0.3)
        params, state = layer.init(jax.random.key(0)), layer.init_state()
        module = {"1d": torch.nn.BatchNorm1d, "2d": torch.nn.BatchNorm2d,
                  "3d": torch.nn.BatchNorm3d}[kind](4, momentum=0.3)
        rng = np.random.default_rng(2)
        for _ in range(3):
            x = rng.normal(0.5, 2.0, size=shape).astype(np.float32)
            y, state = layer.apply(params, x, state=state, train=True)
            module.train()
            np.testing.assert_allclose(y, module(torch.tensor(x)).detach().numpy(), atol=1e-5)
        np.testing.assert_allclose(state["mean"], module.running_mean.numpy(), rtol=1e-5)
        np.testing.assert_allclose(state["var"], module.running_var.numpy(), rtol=1e-5)
        self.assertEqual(int(state["num_batches_tracked"]), int(module.num_batches_tracked))
        module.eval()
        x = rng.normal(size=shape).astype(np.float32)
        y, _ = layer.apply(params, x, state=state)
        np.testing.assert_allclose(y, module(torch.tensor(x)).detach().numpy(), atol=1e-5)

    def test_gradients(self):
        layer = nn.BatchNorm(3)
        params = {"scale": jnp.array([1.0, 2.0, 0.5]), "bias": jnp.arange(3.0)}
        x = np.random.default_rng(3).normal(size=(5, 3, 2))
        with jax.enable_x64(True):
            state = to_f64(layer.init_state())
            check_grads(lambda p, v: layer.apply(p, v, state=state, train=True)[0],
                        (to_f64(params), jnp.asarray(x)), order=1, modes=("fwd", "rev"))

    def test_state_is_not_a_parameter(self):
        net = nn.Net([nn.Linear(3, 4), nn.BatchNorm(4), nn.ReLU()])
        params = net.init(jax.random.key(0))
        self.assertEqual(sorted(params[1]), ["bias", "scale"])
        self.assertEqual(jax.tree.map(jnp.shape, net.init_state()),
                         [{}, {"mean": (4,), "var": (4,), "num_batches_tracked": ()}, {}])

    @pytest.mark.cpu_only  # 8 virtual CPU devices
    def test_pmap_statistics_are_those_of_the_global_batch(self):
        layer = nn.BatchNorm(3, axis_name="batch")
        params, state = layer.init(jax.random.key(0)), layer.init_state()
        x = np.random.default_rng(4).normal(2, 3, size=(16, 3, 2, 2)).astype(np.float32)
        y, new = jax.pmap(lambda x: layer.apply(params, x, state=state, train=True),
                          axis_name="batch")(x.reshape(8, 2, 3, 2, 2))
        y_single, new_single = nn.BatchNorm(3).apply(params, x, state=state, train=True)
        np.testing.assert_allclose(y.reshape(x.shape), y_single, rtol=1e-4, atol=1e-5)
        for leaf, single in zip(jax.tree.leaves(new), jax.tree.leaves(new_single)):
            np.testing.assert_allclose(leaf, np.broadcast_to(single, leaf.shape), rtol=1e-5)

    def test_errors(self):
        layer = nn.BatchNorm(3)
        params = layer.init(jax.random.key(0))
        with self.assertRaisesRegex(nn.StateError, "BatchNorm: expected state="):
            layer.apply(params, jnp.ones((2, 3)), train=True)
        with self.assertRaisesRegex(nn.ShapeError, r"BatchNorm: expected input of shape \(N, 3\)"):
            layer.apply(params, jnp.ones((2, 4)), state=layer.init_state())
        net = nn.Net([nn.Linear(2, 3), nn.BatchNorm(3)])
        with self.assertRaisesRegex(nn.StateError, r"layers 1 \(BatchNorm\) keep state"):
            net.apply(net.init(jax.random.key(0)), jnp.ones((2, 2)))
        with self.assertRaisesRegex(nn.StateError, "no stateful layers"):
            nn.Net([nn.ReLU()]).apply([{}], jnp.ones(2), state=[{"mean": jnp.ones(2)}])


class GroupNormTest(chex.TestCase):

    @parameterized.parameters((3, 6, (2, 6, 4, 5)), (1, 4, (3, 4, 7)), (4, 4, (2, 4)),
                              (2, 8, (1, 8, 3, 3)))
    def test_values_and_gradients_equal_pytorch(self, groups, channels, x_shape):
        layer = nn.GroupNorm(groups, channels)
        rng = np.random.default_rng(0)
        arrays = {"scale": rng.normal(size=channels).astype(np.float32),
                  "bias": rng.normal(size=channels).astype(np.float32),
                  "x": rng.normal(1.0, 2.0, size=x_shape).astype(np.float32)}

        def theirs(t):
            import torch
            return torch.nn.functional.group_norm(t["x"], groups, t["scale"], t["bias"])

        assert_matches_torch(lambda a: layer.apply({"scale": a["scale"], "bias": a["bias"]},
                                                   a["x"]), theirs, arrays, atol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    def test_same_in_training_and_evaluation_and_per_example(self):
        layer = nn.GroupNorm(2, 4)
        params = layer.init(jax.random.key(0))
        x = nn.init.normal(jax.random.key(1), (3, 4, 5))
        y = self.variant(lambda p, v: layer.apply(p, v, train=True))(params, x)
        np.testing.assert_allclose(y, self.variant(layer.apply)(params, x))
        np.testing.assert_allclose(y[1:2], self.variant(layer.apply)(params, x[1:2]), atol=1e-6)

    def test_gradients_float64_and_under_jit(self):
        layer = nn.GroupNorm(2, 4)
        params = {"scale": np.linspace(0.5, 1.5, 4), "bias": np.linspace(-1, 1, 4)}
        check_layer_grads(layer, params, np.random.default_rng(0).normal(size=(2, 4, 3)))

    def test_bad_arguments_and_inputs(self):
        with pytest.raises(ValueError, match="GroupNorm: num_groups=3 must divide "
                                             "num_channels=4"):
            nn.GroupNorm(3, 4)
        with pytest.raises(ValueError, match="GroupNorm: eps must be a finite number > 0"):
            nn.GroupNorm(2, 4, eps=float("nan"))
        net = nn.Net([nn.Conv2D(1, 6, 3), nn.GroupNorm(2, 4)])
        with pytest.raises(ShapeError, match=r"^layer 1 \(GroupNorm\): expected input of shape "
                                             r"\(N, 4, \.\.\.\), received \(1, 6, 3, 3\)$"):
            net.apply(net.init(jax.random.key(0)), jnp.ones((1, 1, 5, 5)))


class RMSNormTest(chex.TestCase):

    @parameterized.parameters((5, (3, 5), None), ((4, 5), (2, 3, 4, 5), 1e-3), (6, (6,), None))
    def test_values_and_gradients_equal_pytorch(self, shape, x_shape, eps):
        layer = nn.RMSNorm(shape, eps)
        rng = np.random.default_rng(0)
        normalized = (shape,) if isinstance(shape, int) else shape
        arrays = {"scale": rng.normal(size=normalized).astype(np.float32),
                  "x": rng.normal(0.5, 2.0, size=x_shape).astype(np.float32)}

        def theirs(t):
            import torch
            return torch.nn.functional.rms_norm(t["x"], normalized, t["scale"], eps)

        assert_matches_torch(lambda a: layer.apply({"scale": a["scale"]}, a["x"]), theirs,
                             arrays, atol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    def test_default_eps_is_the_dtypes_machine_epsilon(self):
        layer = nn.RMSNorm(3)
        params = layer.init(jax.random.key(0))
        np.testing.assert_array_equal(params["scale"], np.ones(3))
        x = jnp.zeros((2, 3), jnp.float32).at[0, 0].set(1e-4)
        y = self.variant(layer.apply)(params, x)
        eps = np.finfo(np.float32).eps
        np.testing.assert_allclose(y[0, 0], 1e-4 / np.sqrt(1e-8 / 3 + eps), rtol=1e-5)

    def test_gradients_float64_and_under_jit(self):
        layer = nn.RMSNorm(4, eps=1e-5)
        check_layer_grads(layer, {"scale": np.linspace(0.5, 1.5, 4)},
                          np.random.default_rng(0).normal(size=(3, 4)))

    def test_bad_arguments_and_inputs(self):
        for eps in (0.0, -1.0, float("nan"), "1e-5", True):
            with pytest.raises(ValueError, match="RMSNorm: eps must be a finite number > 0"):
                nn.RMSNorm(4, eps=eps)
        with pytest.raises(ValueError, match="RMSNorm: normalized_shape must be"):
            nn.RMSNorm(())
        net = nn.Net([nn.Linear(3, 5), nn.RMSNorm(4)])
        with pytest.raises(ShapeError, match=r"^layer 1 \(RMSNorm\): expected input of shape "
                                             r"\(\.\.\., 4\), received \(2, 5\)$"):
            net.apply(net.init(jax.random.key(0)), jnp.ones((2, 3)))


class NarrowInputTest(chex.TestCase):
    """Narrow inputs with float32 params, and edge shapes."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_rms_norm_of_bfloat16_and_float16_uses_float32s_epsilon(self):
        import torch

        layer = nn.RMSNorm(8)
        params = layer.init(jax.random.key(0))
        rng = np.random.default_rng(0)
        x32 = (rng.normal(size=(4, 8)) * 1e-2).astype(np.float32)  # mean square ~1e-4
        for dtype, torch_dtype in ((jnp.bfloat16, torch.bfloat16), (jnp.float16, torch.float16)):
            x = jnp.asarray(x32, dtype)
            got = self.variant(layer.apply)(params, x)
            self.assertEqual(got.dtype, jnp.float32)
            exact = np.asarray(x, np.float64)
            want = exact / np.sqrt((exact ** 2).mean(-1, keepdims=True)
                                   + np.finfo(np.float32).eps)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
            theirs = torch.nn.functional.rms_norm(torch.tensor(x32).to(torch_dtype), (8,))
            np.testing.assert_allclose(np.asarray(got.astype(dtype), np.float32),
                                       theirs.float().numpy(), rtol=1e-2, atol=1e-2)

    def test_group_norm_of_an_empty_batch_is_empty(self):
        layer = nn.GroupNorm(2, 4)
        params = layer.init(jax.random.key(0))
        for shape in ((0, 4), (0, 4, 3), (0, 4, 2, 2)):
            y = layer.apply(params, jnp.ones(shape))
            self.assertEqual(y.shape, shape)
            self.assertEqual(jax.jit(layer.apply)(params, jnp.ones(shape)).shape, shape)
