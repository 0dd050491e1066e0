import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from minitorch import nn
from minitorch.errors import KeyArgError, ParamsError, ShapeError


def cnn():
    return nn.Net([nn.Conv2D(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2),
                   nn.Flatten(), nn.Linear(8 * 4 * 4, 10)])


def mlp(dropout=0.0):
    return nn.Net([nn.Linear(4, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 3)])


class NetTest(chex.TestCase):

    def test_params_are_a_list_one_entry_per_layer(self):
        params = cnn().init(jax.random.key(0))
        self.assertIsInstance(params, list)
        self.assertEqual([sorted(p) for p in params], [["W", "b"], [], [], [], ["W", "b"]])
        self.assertEqual(params[0]["W"].shape, (8, 1, 3, 3))
        self.assertEqual(params[4]["W"].shape, (128, 10))

    def test_init_splits_the_key_one_subkey_per_layer(self):
        net, key = cnn(), jax.random.key(7)
        params = net.init(key)
        keys = jax.random.split(key, len(net))
        for layer, layer_params, layer_key in zip(net.layers, params, keys):
            chex.assert_trees_all_equal(layer_params, layer.init(layer_key))

    def test_both_key_kinds_give_the_same_params(self):
        chex.assert_trees_all_equal(mlp().init(jax.random.key(3)),
                                    mlp().init(jax.random.PRNGKey(3)))

    def test_same_seed_same_params_other_seed_other_params(self):
        a, b, c = (mlp().init(jax.random.key(s)) for s in (1, 1, 2))
        chex.assert_trees_all_equal(a, b)
        self.assertFalse(np.allclose(a[0]["W"], c[0]["W"]))
        self.assertEqual(jax.tree.structure(a), jax.tree.structure(c))

    @chex.variants(with_jit=True, without_jit=True)
    def test_apply_composes_layers_in_order(self):
        net = cnn()
        params = net.init(jax.random.key(0))
        x = np.random.default_rng(0).normal(size=(3, 1, 8, 8)).astype(np.float32)
        y = self.variant(net.apply)(params, x)
        h = x
        for layer, p in zip(net.layers, params):
            h = layer.apply(p, h)
        np.testing.assert_allclose(y, h, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_apply_is_pure(self):
        net = mlp(0.5)
        params = net.init(jax.random.key(0))
        x, key = jnp.ones((8, 4)), jax.random.key(5)
        f = self.variant(lambda p, x, k: net.apply(p, x, key=k, train=True))
        chex.assert_trees_all_equal(f(params, x, key), f(params, x, key))
        chex.assert_trees_all_equal(params, net.init(jax.random.key(0)))  # nothing mutated

    def test_apply_splits_its_key_between_layers(self):
        net = mlp(0.5)
        params = net.init(jax.random.key(0))
        x, key = jnp.ones((8, 4)), jax.random.key(5)
        keys = jax.random.split(key, len(net))
        h = x
        for layer, p, k in zip(net.layers, params, keys):
            h = layer.apply(p, h, key=k, train=True)
        np.testing.assert_array_equal(net.apply(params, x, key=key, train=True), h)

    def test_nets_nest(self):
        inner = nn.Net([nn.Linear(4, 5), nn.ReLU()])
        outer = nn.Net([inner, nn.Linear(5, 2)])
        params = outer.init(jax.random.key(0))
        self.assertEqual(jax.tree.map(jnp.shape, params),
                         [[{"W": (4, 5), "b": (5,)}, {}], {"W": (5, 2), "b": (2,)}])
        x = jnp.ones((3, 4))
        expected = outer.layers[1].apply(params[1], inner.apply(params[0], x))
        np.testing.assert_array_equal(outer.apply(params, x), expected)

    def test_nets_are_immutable_and_hashable(self):
        net = mlp()
        with self.assertRaises(AttributeError):
            net.layers = ()
        self.assertEqual(hash(net), hash(mlp()))
        self.assertEqual(net, mlp())

    def test_count_params(self):
        self.assertEqual(nn.count_params(mlp().init(jax.random.key(0))), 4 * 16 + 16 + 16 * 3 + 3)


class NetErrorTest(parameterized.TestCase):

    def test_shape_mismatch_names_index_type_expected_and_received(self):
        net = cnn()
        params = net.init(jax.random.key(0))
        with self.assertRaisesRegex(
                ShapeError, r"^layer 4 \(Linear\): expected input of shape \(\.\.\., 128\), "
                r"received \(2, 72\)$"):
            jax.jit(net.apply)(params, jnp.ones((2, 1, 6, 6)))
        with self.assertRaisesRegex(
                ShapeError, r"^layer 0 \(Conv2D\): expected input of shape \(N, 1, H, W\), "
                r"received \(2, 3, 8, 8\)$"):
            net.apply(params, jnp.ones((2, 3, 8, 8)))

    def test_nested_nets_report_the_whole_path(self):
        outer = nn.Net([nn.Linear(3, 4), nn.Net([nn.ReLU(), nn.Linear(5, 2)])])
        with self.assertRaisesRegex(ShapeError, r"^layer 1 \(Net\) > layer 1 \(Linear\): "
                                    r"expected input of shape \(\.\.\., 5\), received \(2, 4\)"):
            outer.apply(outer.init(jax.random.key(0)), jnp.ones((2, 3)))

    def test_params_from_another_net_are_a_structure_mismatch(self):
        other = nn.Net([nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)]).init(jax.random.key(0))
        net = nn.Net([nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)])
        with self.assertRaisesRegex(ParamsError, r"layer 0 \(Linear\): params\['W'\] expected "
                                    r"shape \(4, 8\), received \(4, 16\)"):
            jax.jit(net.apply)(other, jnp.ones((2, 4)))
        with self.assertRaisesRegex(ParamsError, "expected params as a list of 3 entries"):
            net.apply(other[:2], jnp.ones((2, 4)))
        with self.assertRaisesRegex(ParamsError, r"layer 1 \(ReLU\): params structure mismatch"):
            own = net.init(jax.random.key(0))
            net.apply([own[0], own[0], own[2]], jnp.ones((2, 4)))

    def test_bad_keys_raise(self):
        with self.assertRaisesRegex(KeyArgError, "Net: init expected a PRNG key"):
            mlp().init(0)
        with self.assertRaisesRegex(KeyArgError, "a batch of keys"):
            mlp().init(jax.random.split(jax.random.key(0), 2))
        with self.assertRaisesRegex(KeyArgError, "Net: key expected a PRNG key"):
            mlp().apply(mlp().init(jax.random.key(0)), jnp.ones((1, 4)), key=jnp.ones(3))

    def test_dropout_inside_a_net_without_key_says_so(self):
        net = mlp(0.5)
        with self.assertRaisesRegex(KeyArgError, r"layer 2 \(Dropout\): expected a PRNG key"):
            net.apply(net.init(jax.random.key(0)), jnp.ones((2, 4)), train=True)

    def test_non_layers_are_rejected(self):
        with self.assertRaisesRegex(TypeError, "Net: layer 1 must be a minitorch layer"):
            nn.Net([nn.ReLU(), jnp.tanh])


def test_a_net_reads_one_layer_per_line():
    net = nn.Net([nn.Linear(2, 3), nn.Net([nn.ReLU(), nn.Tanh()])])
    assert repr(net) == ("Net([\n"
                         f"    {nn.Linear(2, 3)!r},\n"
                         "    Net([\n"
                         "        ReLU(),\n"
                         "        Tanh(),\n"
                         "    ]),\n"
                         "])")


def test_a_subclass_is_named_once_by_its_own_name():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class MyFlatten(nn.Flatten):
        pass

    net = nn.Net([nn.Linear(2, 3), MyFlatten()])
    with pytest.raises(nn.ShapeError) as info:
        net.apply(net.init(jax.random.key(0)), jnp.ones((2,)))
    assert str(info.value).startswith("layer 1 (MyFlatten): expected input of shape (N, ...)")


LAYERS = [nn.Linear(4, 2), nn.Linear(4, 2, init="xavier", dtype=jnp.bfloat16, bias=False),
          nn.Conv2D(1, 2, 3, padding="same"), nn.Conv1D(2, 4, 3, stride=2),
          nn.ConvTranspose2D(2, 3, 3, stride=2, output_padding=1), nn.Embedding(5, 3),
          nn.PReLU(3, init=0.1), nn.LayerNorm((2, 3)), nn.BatchNorm(3, momentum=0.2),
          nn.GroupNorm(2, 4), nn.RMSNorm(4), nn.MultiHeadAttention(8, 2, causal=True),
          nn.LSTM(3, 4), nn.RNN(3, 4, nonlinearity="relu"), nn.MaxPool2D(2),
          nn.AvgPool1D(3, stride=1, padding=1), nn.Dropout(0.3), nn.LeakyReLU(0.2),
          nn.GELU(approximate=True), nn.Softmax(axis=1), nn.Reshape((2, -1)),
          nn.Residual(nn.Linear(2, 2)), nn.Parallel([nn.ReLU(), nn.Tanh()], combine="sum"),
          nn.Net([nn.Linear(2, 2), nn.Net([nn.ReLU()])])]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: type(layer).__name__)
def test_layers_are_honest_dataclasses(layer):
    """Every field is a constructor argument: the repr is a valid call that rebuilds the
    layer, and dataclasses.replace works."""
    import dataclasses

    assert eval(repr(layer), vars(nn)) == layer
    assert dataclasses.replace(layer) == layer
    fields = {f.name for f in dataclasses.fields(layer)}
    if "weight_init" in fields:
        changed = dataclasses.replace(layer, weight_init="zeros")
        assert not np.any(np.asarray(changed.init(jax.random.key(0))["W"]))


def test_an_argument_and_its_field_name_cannot_both_be_given():
    from minitorch.errors import ArgumentError

    with pytest.raises(ArgumentError, match=r"Linear: give init= or weight_init= .*not both"):
        nn.Linear(2, 3, init="xavier", weight_init="zeros")
    assert nn.Linear(2, 3, weight_init="zeros").weight_init == "zeros"
