"""Residual, Parallel and Composite: values, params layout, keys, state, paths, errors."""

import tempfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from minitorch import checkpoint, losses, nn, optim, train
from minitorch.errors import ParamsError, ShapeError, StateError
from minitorch.summary import summary
from tests.helpers import check_layer_grads


class Block(nn.Composite):
    """A pre-norm residual MLP block: the shape of a transformer block without attention."""

    norm: nn.Layer
    mlp: nn.Layer
    scale: float = 1.0

    def forward(self, call, x):
        return x + self.scale * call("mlp", call("norm", x))


class Twice(nn.Composite):
    """One sub-layer called twice: weight sharing."""

    f: nn.Layer

    def forward(self, call, x):
        return call("f", call("f", x))


class TiedLM(nn.Composite):
    """Embedding table reused as the output projection: weight tying."""

    embed: nn.Layer
    body: nn.Layer

    def forward(self, call, ids):
        return call("embed", call("body", call("embed", ids)), attend=True)


def block(width=8, stateful=False):
    norm = nn.BatchNorm(width) if stateful else nn.LayerNorm(width)
    return Block(norm=norm, mlp=nn.Net([nn.Linear(width, 16), nn.GELU(), nn.Linear(16, width)]))


def x_of(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


class ResidualTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_adds_the_input_and_keeps_the_wrapped_params(self):
        inner = nn.Net([nn.Linear(6, 6), nn.Tanh()])
        layer, key, x = nn.Residual(inner), jax.random.key(3), x_of((4, 6))
        params = layer.init(key)
        chex.assert_trees_all_equal(params, inner.init(key))
        y = self.variant(layer.apply)(params, x)
        np.testing.assert_allclose(y, x + np.tanh(x @ params[0]["W"] + params[0]["b"]),
                                   rtol=1e-5, atol=1e-6)

    def test_shape_change_names_residual(self):
        net = nn.Net([nn.Linear(4, 4), nn.Residual(nn.Linear(4, 3))])
        with pytest.raises(ShapeError, match=r"^layer 1 \(Residual\): expected the wrapped "
                                             r"Linear to keep the input's shape \(2, 4\), "
                                             r"received \(2, 3\)$"):
            net.apply(net.init(jax.random.key(0)), jnp.ones((2, 4)))

    def test_inner_error_keeps_the_inner_path(self):
        net = nn.Net([nn.Residual(nn.Net([nn.ReLU(), nn.Linear(5, 4)]))])
        with pytest.raises(ShapeError, match=r"^layer 0 \(Residual\) > layer 1 \(Linear\): "
                                             r"expected input of shape \(\.\.\., 5\)"):
            net.apply(net.init(jax.random.key(0)), jnp.ones((2, 4)))

    def test_gradients(self):
        layer = nn.Residual(nn.Net([nn.Linear(3, 3), nn.Tanh()]))
        check_layer_grads(layer, layer.init(jax.random.key(0)), x_of((2, 3)))


class ParallelTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_concat_and_sum_of_branches(self):
        branches = [nn.Linear(4, 3), nn.Linear(4, 2)]
        cat = nn.Parallel(branches, combine="concat", axis=1)
        params, x = cat.init(jax.random.key(0)), x_of((5, 4))
        self.assertEqual(len(params), 2)
        y = self.variant(cat.apply)(params, x)
        expected = np.concatenate([x @ p["W"] + p["b"] for p in params], axis=1)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
        summed = nn.Parallel([nn.Linear(4, 3), nn.Tanh()], combine="sum")
        with pytest.raises(ShapeError, match=r"Parallel: combine='sum' expected every "
                                             r"branch's output of one shape, received "
                                             r"\[\(5, 3\), \(5, 4\)\]"):
            summed.apply(summed.init(jax.random.key(0)), x)
        same = nn.Parallel([nn.Linear(4, 3), nn.Linear(4, 3)], combine="sum")
        p2 = same.init(jax.random.key(1))
        np.testing.assert_allclose(self.variant(same.apply)(p2, x),
                                   sum(x @ p["W"] + p["b"] for p in p2), rtol=1e-5, atol=1e-6)

    def test_conv_stem_concatenates_channels(self):
        stem = nn.Parallel([nn.Conv2D(8, 4, 1), nn.Conv2D(8, 4, 3, padding=1)],
                           combine="concat", axis=1)
        y = stem.apply(stem.init(jax.random.key(0)), x_of((2, 8, 6, 6)))
        self.assertEqual(y.shape, (2, 8, 6, 6))

    def test_each_branch_gets_its_own_subkey(self):
        drop = nn.Parallel([nn.Dropout(0.5), nn.Dropout(0.5)], combine="concat", axis=0)
        y = drop.apply(drop.init(jax.random.key(0)), jnp.ones((64,)), key=jax.random.key(1),
                       train=True)
        self.assertFalse(np.array_equal(y[:64] == 0, y[64:] == 0))

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="combine must be 'concat' or 'sum'"):
            nn.Parallel([nn.ReLU()], combine="mean")
        with pytest.raises(TypeError, match="Parallel: branch 1 must be a minitorch layer"):
            nn.Parallel([nn.ReLU(), jnp.tanh])
        with pytest.raises(ValueError, match="at least one branch"):
            nn.Parallel([])

    def test_gradients(self):
        layer = nn.Parallel([nn.Linear(3, 2), nn.Net([nn.Linear(3, 2), nn.Tanh()])])
        check_layer_grads(layer, layer.init(jax.random.key(0)), x_of((2, 3)))


class CompositeTest(chex.TestCase):

    def test_is_a_frozen_hashable_dataclass(self):
        b = block()
        self.assertEqual(b, block())
        self.assertEqual(hash(b), hash(block()))
        with pytest.raises(AttributeError):
            b.scale = 2.0
        self.assertEqual([name for name, _ in b.children()], ["norm", "mlp"])

    def test_params_keyed_by_field_with_one_subkey_each_in_field_order(self):
        b, key = block(), jax.random.key(5)
        params = b.init(key)
        self.assertEqual(sorted(params), ["mlp", "norm"])
        k_norm, k_mlp = jax.random.split(key, 2)
        chex.assert_trees_all_equal(params["norm"], b.norm.init(k_norm))
        chex.assert_trees_all_equal(params["mlp"], b.mlp.init(k_mlp))

    @chex.variants(with_jit=True, without_jit=True)
    def test_forward_matches_the_sub_layers_by_hand(self):
        b, x = block(), x_of((3, 8))
        params = b.init(jax.random.key(0))
        y = self.variant(b.apply)(params, x)
        expected = x + b.mlp.apply(params["mlp"], b.norm.apply(params["norm"], x))
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
        half = Block(norm=b.norm, mlp=b.mlp, scale=0.5)  # a hyperparameter field
        np.testing.assert_allclose(self.variant(half.apply)(params, x),
                                   x + 0.5 * (expected - x), rtol=1e-5, atol=1e-6)

    def test_weight_sharing_reuses_params_and_sums_their_gradients(self):
        layer = Twice(f=nn.Linear(3, 3))
        params, x = layer.init(jax.random.key(0)), x_of((2, 3))
        w, b = params["f"]["W"], params["f"]["b"]
        np.testing.assert_allclose(layer.apply(params, x), (x @ w + b) @ w + b, rtol=1e-5)

        def by_hand(w):
            return jnp.sum(jnp.sin((x @ w + b) @ w + b))

        grad = jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(layer.apply(p, x)))))(params)
        np.testing.assert_allclose(grad["f"]["W"], jax.grad(by_hand)(w), rtol=1e-5)
        check_layer_grads(layer, params, x)

    def test_weight_tying_projects_onto_the_embedding_table(self):
        lm = TiedLM(embed=nn.Embedding(11, 6), body=nn.Linear(6, 6))
        params = lm.init(jax.random.key(0))
        ids = jnp.array([[1, 4, 10], [0, 2, 3]])
        table = params["embed"]["W"]
        h = table[ids] @ params["body"]["W"] + params["body"]["b"]
        np.testing.assert_allclose(lm.apply(params, ids), h @ table.T, rtol=1e-5, atol=1e-5)
        grad = jax.grad(lambda p: lm.apply(p, ids).sum())(params)
        self.assertEqual(grad["embed"]["W"].shape, (11, 6))  # one table, both uses

    def test_stateful_sub_layer_makes_the_composite_stateful(self):
        b, x = block(stateful=True), x_of((6, 8))
        params, state = b.init(jax.random.key(0)), b.init_state()
        self.assertTrue(b.stateful)
        self.assertEqual(sorted(state), ["mlp", "norm"])
        y, new_state = b.apply(params, x, state=state, train=True)
        np.testing.assert_allclose(new_state["norm"]["mean"], 0.1 * np.asarray(x).mean(0),
                                   rtol=1e-5, atol=1e-7)
        with pytest.raises(StateError, match=r"Block: layers norm \(BatchNorm\) keep state"):
            b.apply(params, x)
        y_eval, same = b.apply(params, x, state=state)
        chex.assert_trees_all_equal(same, state)
        self.assertEqual(y.shape, y_eval.shape)

    def test_kwargs_reach_the_sub_layer(self):
        class Masked(nn.Composite):
            embed: nn.Layer

            def forward(self, call, ids):
                return call("embed", call("embed", ids), attend=True)

        lm = Masked(embed=nn.Embedding(5, 3))
        self.assertEqual(lm.apply(lm.init(jax.random.key(0)), jnp.array([[0, 4]])).shape,
                         (1, 2, 5))

    def test_errors_name_the_path(self):
        net = nn.Net([nn.Linear(4, 8), nn.ReLU(), Block(norm=nn.LayerNorm(8),
                                                        mlp=nn.Linear(4, 8))])
        with pytest.raises(ShapeError, match=r"^layer 2 \(Block\) > mlp \(Linear\): expected "
                                             r"input of shape \(\.\.\., 4\), received \(2, 8\)$"):
            net.apply(net.init(jax.random.key(0)), jnp.ones((2, 4)))

    def test_unknown_sub_layer_and_bad_params(self):
        class Typo(nn.Composite):
            f: nn.Layer

            def forward(self, call, x):
                return call("g", x)

        layer = Typo(f=nn.ReLU())
        with pytest.raises(ValueError, match=r"Typo: call\('g', \.\.\.\) names no sub-layer; "
                                             r"its sub-layers are \['f'\]"):
            layer.apply({"f": {}}, jnp.ones(3))
        with pytest.raises(ParamsError, match=r"Block: expected params as a dict with keys "
                                              r"\['norm', 'mlp'\]"):
            block().apply([{}, {}], jnp.ones((2, 8)))

    def test_gradients(self):
        b = block(width=4)
        check_layer_grads(b, b.init(jax.random.key(0)), x_of((3, 4)))


def transformer_like():
    return nn.Net([nn.Linear(4, 8), block(), nn.Residual(nn.Net([nn.Linear(8, 8), nn.ReLU()])),
                   nn.Parallel([nn.Linear(8, 3), nn.Linear(8, 2)]), nn.Linear(5, 3)])


class SeeingInsideTest(parameterized.TestCase):

    def test_intermediates_address_every_sub_layer_by_path(self):
        net, x = transformer_like(), x_of((5, 4))
        params = net.init(jax.random.key(0))
        y, outs = jax.jit(lambda p, v: nn.intermediates(net, p, v))(params, x)
        self.assertEqual(sorted(outs), sorted(
            ["0", "1.norm", "1.mlp.0", "1.mlp.1", "1.mlp.2", "1.mlp", "1", "2.0", "2.1", "2",
             "3.0", "3.1", "3", "4"]))
        np.testing.assert_allclose(outs["4"], y)
        np.testing.assert_allclose(outs["2"], outs["1"] + outs["2.1"], rtol=1e-6)
        np.testing.assert_allclose(outs["3"], np.concatenate([outs["3.0"], outs["3.1"]], 1))
        self.assertEqual(set(nn.named_layers(net)), set(outs))

    def test_summary_rows_by_path(self):
        s = summary(transformer_like(), (4,), batch_size=2)
        rows = {r.index: (r.layer, r.output_shape, r.params) for r in s.rows}
        self.assertEqual(rows["1"], ("Block", (2, 8), 0))
        self.assertEqual(rows["1.mlp.0"], ("Linear", (2, 16), 8 * 16 + 16))
        self.assertEqual(rows["3.1"], ("Linear", (2, 2), 8 * 2 + 2))
        self.assertEqual(s.total_params, nn.count_params(transformer_like().init(
            jax.random.key(0))))

    def test_telemetry_keys_by_path(self):
        net = transformer_like()
        step = train.make_step(net, losses.softmax_cross_entropy, optim.sgd(0.1),
                               telemetry=True)
        params = net.init(jax.random.key(0))
        _, _, metrics = step(params, optax.sgd(0.1).init(params),
                             (x_of((6, 4)), jnp.array([0, 1, 2, 0, 1, 2])), None)
        for key in ("act_mean/1.mlp.1", "act_dead/2.1", "grad_norm/1.norm", "grad_norm/1.mlp.0",
                    "param_mean/3.1.W", "update_ratio/1.mlp.2.b"):
            self.assertIn(key, metrics.telemetry)
            self.assertTrue(np.isfinite(metrics.telemetry[key]))

    def test_checkpoint_round_trip_by_path(self):
        net = transformer_like()
        params = net.init(jax.random.key(0))
        with tempfile.TemporaryDirectory() as d:
            path = checkpoint.save(f"{d}/c.safetensors", params)
            names = set(checkpoint.read(path)[0])
            self.assertIn("1.mlp.0.W", names)
            back, _ = checkpoint.load(path, net.init(jax.random.key(1)))
        chex.assert_trees_all_equal(back, params)

    def test_stateful_composite_trains_in_a_step(self):
        net = nn.Net([nn.Linear(4, 8), block(stateful=True), nn.Linear(8, 3)])
        opt = optim.sgd(0.1)
        step = train.make_step(net, losses.softmax_cross_entropy, opt)
        params, state = net.init(jax.random.key(0)), net.init_state()
        opt_state = opt.init(params)
        x, y = x_of((6, 4)), jnp.array([0, 1, 2, 0, 1, 2])
        before = losses.softmax_cross_entropy(net.apply(params, x, state=state)[0], y)
        for _ in range(20):
            params, state, opt_state, metrics = step(params, state, opt_state, (x, y), None)
        self.assertLess(float(metrics["loss"]), float(before))
        self.assertFalse(np.allclose(state[1]["norm"]["mean"], 0))
