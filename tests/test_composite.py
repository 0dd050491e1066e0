"""Composites as people write them: Param fields, sequences of sub-layers, keywords from
apply to any depth, call.train / call.key(), repeated calls with fresh keys, errors inside
forward with the composite's path, and leaf layers as frozen dataclasses."""

import dataclasses
import tempfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from minitorch import checkpoint, freeze, monitor, nn, parallel
from minitorch.errors import (
    ArgumentError,
    ForwardError,
    KeyArgError,
    KeywordError,
    ParamsError,
    PathError,
    ShapeError,
)
from minitorch.summary import summary
from tests.helpers import assert_matches_torch, check_layer_grads

E, HEADS, L = 8, 2, 5


class Block(nn.Composite):
    """Pre-norm self-attention block taking a padding mask."""

    norm: nn.Layer
    attn: nn.Layer

    def forward(self, call, x, *, mask=None):
        return x + call("attn", call("norm", x), mask=mask)


class Encoder(nn.Composite):
    """A class token and positions it owns, a tuple of blocks, a head: a small ViT."""

    embed: nn.Layer
    cls: nn.Param
    pos: nn.Param
    blocks: tuple
    head: nn.Layer

    def forward(self, call, x, *, mask=None):
        h = call("embed", x)                                            # (N, L, E)
        cls = jnp.broadcast_to(call.param("cls"), (h.shape[0], 1, h.shape[2]))
        h = jnp.concatenate([cls, h], axis=1) + call.param("pos")
        if mask is not None:
            mask = jnp.concatenate([jnp.ones((h.shape[0], 1), bool), mask], axis=1)
        for i in range(len(self.blocks)):
            h = call(f"blocks.{i}", h, mask=mask)
        return call("head", h[:, 0])


def block():
    return Block(norm=nn.LayerNorm(E), attn=nn.MultiHeadAttention(E, HEADS))


def encoder(depth=2):
    return Encoder(embed=nn.Linear(3, E), cls=nn.Param((1, 1, E)),
                   pos=nn.Param((1, L + 1, E), init="normal"),
                   blocks=[block() for _ in range(depth)], head=nn.Linear(E, 4))


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(2, L, 3)), jnp.float32)
    mask = jnp.asarray([[True] * L, [True, True, True, False, False]])
    return x, mask


class ParamTest(parameterized.TestCase):

    def test_init_layout_and_counts(self):
        model = encoder()
        params = model.init(jax.random.key(0))
        self.assertEqual(sorted(params), ["blocks", "cls", "embed", "head", "pos"])
        self.assertEqual(params["cls"].shape, (1, 1, E))
        np.testing.assert_array_equal(params["cls"], 0)          # "zeros" by default
        self.assertGreater(float(jnp.std(params["pos"])), 0.5)   # "normal"
        self.assertIsInstance(params["blocks"], list)
        self.assertLen(params["blocks"], 2)
        expected = (3 * E + E) + E + (L + 1) * E + 2 * (2 * E + 4 * (E * E + E)) + E * 4 + 4
        self.assertEqual(nn.count_params(params), expected)
        self.assertEqual(summary(model, (L, 3)).total_params, expected)

    def test_param_is_read_by_call_param_and_trained(self):
        model = encoder()
        params = model.init(jax.random.key(0))
        x, _ = inputs()
        grads = jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2))(params)
        self.assertGreater(float(jnp.abs(grads["cls"]).sum()), 0)
        self.assertGreater(float(jnp.abs(grads["pos"]).sum()), 0)

    def test_bad_param_arguments(self):
        with pytest.raises(ArgumentError, match=r"Param: shape must be a tuple"):
            nn.Param("big")
        with pytest.raises(ValueError, match="Param: unknown initialiser 'huh'"):
            nn.Param((2,), init="huh")
        with pytest.raises(ArgumentError, match="Param: dtype must be a floating-point"):
            nn.Param((2,), dtype="int32")
        self.assertEqual(nn.Param(3).shape, (3,))

    def test_call_param_and_call_confused(self):
        class Confused(nn.Composite):
            w: nn.Param
            f: nn.Layer

            def forward(self, call, x):
                return call("w", x) if x.ndim == 2 else call.param("f")

        layer = Confused(w=nn.Param((2,)), f=nn.ReLU())
        params = layer.init(jax.random.key(0))
        with pytest.raises(PathError, match=r"Confused: 'w' is a Param: read it with "
                                            r"call.param\('w'\)"):
            layer.apply(params, jnp.ones((2, 2)))
        with pytest.raises(PathError, match=r"'f' is a ReLU: run it with call\('f', x\)"):
            layer.apply(params, jnp.ones((2,)))


class SequenceTest(parameterized.TestCase):

    def test_a_list_becomes_a_tuple_and_the_layer_stays_hashable(self):
        model = encoder()
        self.assertIsInstance(model.blocks, tuple)
        self.assertEqual(hash(model), hash(encoder()))
        self.assertEqual(model, encoder())

    def test_mixed_sequence_refused(self):
        with pytest.raises(ArgumentError, match=r"Encoder: field 'blocks' mixes layers and "
                                                r"other values \(element 1 is int\)"):
            Encoder(embed=nn.Linear(3, E), cls=nn.Param((1,)), pos=nn.Param((1,)),
                    blocks=[block(), 3], head=nn.ReLU())

    def test_element_paths_everywhere(self):
        model = encoder()
        params = model.init(jax.random.key(0))
        x, _ = inputs()
        paths = list(nn.named_layers(model))
        self.assertEqual(paths, ["embed", "cls", "pos", "blocks.0", "blocks.0.norm",
                                 "blocks.0.attn", "blocks.1", "blocks.1.norm",
                                 "blocks.1.attn", "head"])
        _, outputs = nn.intermediates(model, params, x)
        self.assertIn("blocks.1.attn", outputs)
        self.assertEqual(outputs["blocks.0"].shape, (2, L + 1, E))
        rows = [r.index for r in summary(model, (L, 3)).rows]
        self.assertEqual(rows, paths)
        grads = jax.grad(lambda p: jnp.sum(model.apply(p, x)))(params)
        norms = monitor.grad_norms(grads)
        self.assertIn("blocks.1.attn.q", norms)
        self.assertIn("blocks.0.norm", norms)
        # A params leaf's dotted path is its layer's path and the param's name.
        leaves = nn.paths.leaf_paths(params)
        layer_paths = set(paths)
        for leaf in leaves:
            owner = leaf if leaf in layer_paths else leaf.rsplit(".", 1)[0]
            while owner not in layer_paths:
                owner = owner.rsplit(".", 1)[0]
            self.assertIn(owner, layer_paths)

    def test_freezing_an_element_and_a_param(self):
        model = encoder()
        params = model.init(jax.random.key(0))
        frozen = freeze.mask(params, ["blocks.1", "cls"])
        self.assertTrue(all(jax.tree.leaves(frozen["blocks"][1])))
        self.assertFalse(any(jax.tree.leaves(frozen["blocks"][0])))
        self.assertTrue(frozen["cls"])
        self.assertFalse(frozen["pos"])

    def test_errors_name_the_element(self):
        model = encoder()
        params = model.init(jax.random.key(0))
        params["blocks"][1]["attn"]["q"]["W"] = jnp.zeros((E, E + 1))
        with pytest.raises(ParamsError, match=r"^blocks\.1 \(Block\) > attn "
                                              r"\(MultiHeadAttention\): params"):
            model.apply(params, inputs()[0])
        params = model.init(jax.random.key(0))
        params["blocks"] = params["blocks"][:1]
        with pytest.raises(ParamsError, match=r"Encoder: expected params\['blocks'\] as a "
                                              r"list of 2 entries \(one per element\), "
                                              r"received 1 entries"):
            model.apply(params, inputs()[0])

    def test_checkpoint_round_trip(self):
        model = encoder()
        params = model.init(jax.random.key(0))
        with tempfile.TemporaryDirectory() as d:
            checkpoint.save(f"{d}/p.safetensors", params)
            restored, _ = checkpoint.load(f"{d}/p.safetensors", params)
        chex.assert_trees_all_equal(restored, params)

    @pytest.mark.cpu_only
    def test_param_shardings_cover_params_and_elements(self):
        model = encoder()
        mesh = parallel.make_mesh(data=4, model=2)
        shardings = parallel.param_shardings(model, mesh, fsdp="data", tensor="model")
        self.assertEqual(jax.tree.structure(shardings), jax.tree.structure(model.param_spec))
        params = jax.jit(model.init, out_shardings=shardings)(jax.random.key(0))
        x, _ = inputs()
        np.testing.assert_allclose(model.apply(params, x),
                                   model.apply(model.init(jax.random.key(0)), x), rtol=1e-5,
                                   atol=1e-6)


class KeywordTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_mask_reaches_attention_two_composites_down(self):
        model = encoder()
        params = model.init(jax.random.key(0))
        x, mask = inputs()
        got = self.variant(lambda p, v, m: model.apply(p, v, mask=m))(params, x, mask)
        # By hand: the same arithmetic with each block's attention given the mask directly.
        h = nn.Linear(3, E).apply(params["embed"], x)
        h = jnp.concatenate([jnp.broadcast_to(params["cls"], (2, 1, E)), h], 1) + params["pos"]
        full = jnp.concatenate([jnp.ones((2, 1), bool), mask], axis=1)
        for p in params["blocks"]:
            normed = nn.LayerNorm(E).apply(p["norm"], h)
            h = h + nn.MultiHeadAttention(E, HEADS).apply(p["attn"], normed, mask=full)
        want = nn.Linear(E, 4).apply(params["head"], h[:, 0])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        # The mask matters: padding changes the second example only.
        free = model.apply(params, x)
        np.testing.assert_allclose(got[0], free[0], rtol=1e-5, atol=1e-6)
        self.assertGreater(float(jnp.abs(got[1] - free[1]).max()), 1e-4)

    def test_undeclared_keyword_names_the_composite_and_what_it_accepts(self):
        model = encoder()
        params = model.init(jax.random.key(0))
        with pytest.raises(KeywordError, match=r"^Encoder: forward\(\) got lengths=, which "
                                               r"it does not declare; it accepts \['mask'\]"):
            model.apply(params, inputs()[0], lengths=3)

    def test_undeclared_keyword_of_a_leaf_names_its_path(self):
        class Passes(nn.Composite):
            f: nn.Layer

            def forward(self, call, x):
                return call("f", x, mask=None)

        net = nn.Net([nn.ReLU(), Passes(f=nn.Linear(2, 2))])
        params = net.init(jax.random.key(0))
        with pytest.raises(KeywordError, match=r"^layer 1 \(Passes\) > f \(Linear\): apply\(\) "
                                               r"got mask=, which it does not declare; it "
                                               r"accepts no extra keywords"):
            net.apply(params, jnp.ones((1, 2)))

    def test_net_with_a_keyword_says_to_write_a_composite(self):
        net = nn.Net([nn.Linear(2, 2)])
        with pytest.raises(KeywordError, match=r"^Net: apply\(\) got mask=.*write a Composite "
                                               r"whose forward\(self, call, x, \*, mask=None\)"):
            net.apply(net.init(jax.random.key(0)), jnp.ones((1, 2)), mask=None)
        with pytest.raises(KeywordError, match=r"^Parallel: apply\(\) got mask="):
            nn.Parallel([nn.ReLU()]).apply([{}], jnp.ones((1, 2)), mask=None)

    def test_residual_passes_keywords_to_its_layer(self):
        attn = nn.MultiHeadAttention(E, HEADS)
        params = attn.init(jax.random.key(0))
        x, mask = inputs()
        x = jnp.tile(x[..., :1], (1, 1, E))
        got = nn.Residual(attn).apply(params, x, mask=mask)
        np.testing.assert_allclose(got, x + attn.apply(params, x, mask=mask), rtol=1e-6)


class Noisy(nn.Composite):
    """Noise injection in forward: reads call.train and draws call.key()."""

    f: nn.Layer

    def forward(self, call, x):
        h = call("f", x)
        if call.train:
            h = h + jax.random.normal(call.key(), h.shape) + jax.random.normal(call.key(),
                                                                               h.shape)
        return h


class DropTwice(nn.Composite):
    drop: nn.Layer
    other: nn.Layer

    def forward(self, call, x):
        return call("drop", x), call("drop", x), call("other", x)


class KeyTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_call_train_and_call_key(self):
        layer = Noisy(f=nn.Linear(3, 3))
        params = layer.init(jax.random.key(0))
        x = jnp.ones((256, 3))
        run = self.variant(lambda p, k, train: layer.apply(p, x, key=k, train=train),
                           static_argnums=(2,))
        clean = run(params, jax.random.key(1), False)
        np.testing.assert_allclose(clean, nn.Linear(3, 3).apply(params["f"], x), rtol=1e-6)
        noisy = run(params, jax.random.key(1), True)
        again = run(params, jax.random.key(1), True)
        np.testing.assert_array_equal(noisy, again)                # seeded
        noise = noisy - clean                                       # two independent N(0, 1)
        self.assertAlmostEqual(float(jnp.var(noise)), 2.0, delta=0.4)
        # Each call.key() is a new key: the two draws differ, and neither is the subkey
        # that the sub-layer "f" gets.
        key = jax.random.key(1)
        draws = [jax.random.fold_in(key, (1 << 31) + i) for i in (1, 2)]
        want = sum(jax.random.normal(k, clean.shape) for k in draws)
        np.testing.assert_allclose(noise, want, rtol=1e-4, atol=1e-4)
        own = jax.random.key_data(jax.random.split(key, 1)[0])
        for k in draws:
            self.assertFalse(bool(jnp.all(jax.random.key_data(k) == own)))

    def test_call_key_without_a_key_is_an_error(self):
        layer = nn.Net([nn.ReLU(), Noisy(f=nn.ReLU())])
        with pytest.raises(KeyArgError, match=r"^layer 1 \(Noisy\): call.key\(\) needs a key"):
            layer.apply([{}, {"f": {}}], jnp.ones((2, 3)), train=True)

    @chex.variants(with_jit=True, without_jit=True)
    def test_repeated_calls_draw_new_masks_and_the_first_is_unchanged(self):
        layer = DropTwice(drop=nn.Dropout(0.5), other=nn.Dropout(0.5))
        x = jnp.ones((64, 64))
        key = jax.random.key(3)
        first, second, other = self.variant(
            lambda k: layer.apply({"drop": {}, "other": {}}, x, key=k, train=True))(key)
        self.assertGreater(float(jnp.mean(first != second)), 0.3)
        # The first call's subkey is the one a single call gets: split(key, 2)[0], so
        # seeded results of composites that call each sub-layer once are unchanged.
        keys = jax.random.split(key, 2)
        np.testing.assert_array_equal(first, nn.Dropout(0.5).apply({}, x, key=keys[0],
                                                                   train=True))
        np.testing.assert_array_equal(other, nn.Dropout(0.5).apply({}, x, key=keys[1],
                                                                   train=True))


class ForwardErrorTest(parameterized.TestCase):

    def test_arithmetic_error_carries_the_path_and_keeps_its_class(self):
        class Clash(nn.Composite):
            f: nn.Layer

            def forward(self, call, x):
                return call("f", x) + jnp.ones((3, 3))

        net = nn.Net([nn.ReLU(), Clash(f=nn.ReLU())])
        with pytest.raises(TypeError, match=r"^layer 1 \(Clash\): TypeError: add got "
                                            r"incompatible shapes") as info:
            net.apply([{}, {"f": {}}], jnp.ones((2, 2)))
        self.assertIsInstance(info.value, ForwardError)
        self.assertIsInstance(info.value.__cause__, TypeError)
        with pytest.raises(ForwardError, match=r"^layer 1 \(Clash\)"):
            jax.jit(net.apply)([{}, {"f": {}}], jnp.ones((2, 2)))

    def test_users_own_value_error_and_unknown_name(self):
        class Checks(nn.Composite):
            f: nn.Layer

            def forward(self, call, x):
                if x.shape[-1] != 2:
                    raise ValueError(f"expected 2 features, received {x.shape[-1]}")
                return call("g", x)

        model = nn.Net([Checks(f=nn.ReLU())])
        with pytest.raises(ValueError, match=r"^layer 0 \(Checks\): ValueError: expected 2 "
                                             r"features, received 3"):
            model.apply([{"f": {}}], jnp.ones((1, 3)))
        with pytest.raises(PathError, match=r"^layer 0 \(Checks\): call\('g', \.\.\.\) names "
                                            r"no sub-layer; its sub-layers are \['f'\]"):
            model.apply([{"f": {}}], jnp.ones((1, 2)))

    def test_sub_layer_error_keeps_its_own_path(self):
        model = encoder()
        with pytest.raises(ShapeError, match=r"^embed \(Linear\): expected input of shape "
                                             r"\(\.\.\., 3\), received \(2, 5, 4\)"):
            model.apply(model.init(jax.random.key(0)), jnp.ones((2, L, 4)))


class ClassToken(nn.Layer):
    """A leaf written as fields and init/apply, no decorator."""

    dim: int
    scale: float = 1.0

    def init(self, key):
        return {"token": jax.random.normal(key, (1, 1, self.dim))}

    def apply(self, params, x, *, key=None, train=False):
        token = jnp.broadcast_to(params["token"], (x.shape[0], 1, self.dim))
        return jnp.concatenate([self.scale * token, x], axis=1)


@dataclasses.dataclass(frozen=True)
class Decorated(nn.Layer):
    """An explicit decorator on top of the implicit one still works."""

    k: int = 2

    def apply(self, params, x, *, key=None, train=False):
        return x * self.k


class LeafTest(parameterized.TestCase):

    def test_leaf_subclass_is_a_frozen_dataclass(self):
        token = ClassToken(4)
        self.assertEqual(token, ClassToken(dim=4, scale=1.0))
        self.assertEqual(repr(token), "ClassToken(dim=4, scale=1.0)")
        self.assertEqual(hash(token), hash(ClassToken(4)))
        with pytest.raises(dataclasses.FrozenInstanceError, match=r"dataclasses\.replace"):
            token.dim = 3
        self.assertEqual(dataclasses.replace(token, dim=3).dim, 3)
        y = token.apply(token.init(jax.random.key(0)), jnp.ones((2, 5, 4)))
        self.assertEqual(y.shape, (2, 6, 4))
        self.assertEqual(Decorated(3).apply({}, jnp.ones(2)).tolist(), [3.0, 3.0])
        with pytest.raises(dataclasses.FrozenInstanceError):
            Decorated().k = 1

    def test_library_layers_keep_their_constructors(self):
        self.assertEqual(nn.MaxPool1D(2).kernel_size, nn.MaxPool1D(kernel_size=2).kernel_size)
        with pytest.raises(dataclasses.FrozenInstanceError):
            nn.Linear(2, 3).in_features = 4


class TorchOracleTest(parameterized.TestCase):

    def test_param_and_sequence_composite_equal_pytorch(self):
        import torch

        class Model(nn.Composite):
            offset: nn.Param
            layers: tuple

            def forward(self, call, x):
                h = x + call.param("offset")
                for i in range(len(self.layers)):
                    h = jnp.tanh(call(f"layers.{i}", h))
                return h

        model = Model(offset=nn.Param((3,), init="normal"),
                      layers=[nn.Linear(3, 4), nn.Linear(4, 2)])
        params = model.init(jax.random.key(0))
        flat = {"offset": np.asarray(params["offset"]),
                "W0": np.asarray(params["layers"][0]["W"]),
                "b0": np.asarray(params["layers"][0]["b"]) + 0.1,
                "W1": np.asarray(params["layers"][1]["W"]),
                "b1": np.asarray(params["layers"][1]["b"]) - 0.2,
                "x": np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)}

        def ours(a):
            p = {"offset": a["offset"], "layers": [{"W": a["W0"], "b": a["b0"]},
                                                   {"W": a["W1"], "b": a["b1"]}]}
            return model.apply(p, a["x"])

        def theirs(t):
            h = t["x"] + t["offset"]
            h = torch.tanh(h @ t["W0"] + t["b0"])
            return torch.tanh(h @ t["W1"] + t["b1"])

        assert_matches_torch(ours, theirs, flat)

    def test_gradients_in_float64_and_under_jit(self):
        model = encoder(depth=1)
        params = model.init(jax.random.key(0))
        x, mask = inputs()
        check_layer_grads(model, params, x, mask=mask)
