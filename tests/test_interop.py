"""minitorch.interop against PyTorch: for every layer family and container, a torch module
gives minitorch's outputs with the converted weights, to_torch loads into torch with
strict=True and gives the same outputs, round trips are exact, and mismatches name both
the PyTorch name and the minitorch path."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from minitorch import interop, nn
from minitorch.errors import ArgumentError
from tests.helpers import Block

torch = pytest.importorskip("torch")
tnn = torch.nn


def as_torch(state_dict):
    return {k: torch.as_tensor(v) for k, v in state_dict.items()}


def torch_out(module, *inputs):
    with torch.no_grad():
        out = module(*(torch.as_tensor(np.asarray(x)) for x in inputs))
    out = out[0] if isinstance(out, tuple) else out
    return out.numpy()


def randomised(module, seed=0):
    """Every float tensor of ``module`` (params and buffers) drawn anew, so that no weight
    keeps a symmetric default (ones, zeros) that would hide a swap or a transpose."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                fresh = torch.rand(tensor.shape, generator=generator) + 0.5
                if not name.endswith("running_var"):
                    fresh = fresh - 1.0
                tensor.copy_(fresh)
    return module


def x_of(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# (minitorch layer, torch module, input shape, how minitorch applies it)
LEAVES = {
    "Linear": (lambda: nn.Linear(3, 5), lambda: tnn.Linear(3, 5), (4, 3)),
    "Linear square, no bias": (lambda: nn.Linear(4, 4, bias=False),
                               lambda: tnn.Linear(4, 4, bias=False), (3, 4)),
    "Conv1D": (lambda: nn.Conv1D(2, 4, 3, padding=1), lambda: tnn.Conv1d(2, 4, 3, padding=1),
               (2, 2, 7)),
    "Conv2D": (lambda: nn.Conv2D(2, 4, 3, stride=2, groups=2),
               lambda: tnn.Conv2d(2, 4, 3, stride=2, groups=2), (2, 2, 7, 7)),
    "Conv3D": (lambda: nn.Conv3D(2, 4, 3, padding=1), lambda: tnn.Conv3d(2, 4, 3, padding=1),
               (2, 2, 4, 5, 3)),
    "ConvTranspose1D": (lambda: nn.ConvTranspose1D(2, 4, 3, stride=2),
                        lambda: tnn.ConvTranspose1d(2, 4, 3, stride=2), (2, 2, 5)),
    "ConvTranspose2D": (lambda: nn.ConvTranspose2D(2, 4, 3, stride=2),
                        lambda: tnn.ConvTranspose2d(2, 4, 3, stride=2), (2, 2, 4, 4)),
    "ConvTranspose3D": (lambda: nn.ConvTranspose3D(2, 4, 2, stride=2, groups=2),
                        lambda: tnn.ConvTranspose3d(2, 4, 2, stride=2, groups=2),
                        (2, 2, 2, 3, 2)),
    "LayerNorm": (lambda: nn.LayerNorm(6), lambda: tnn.LayerNorm(6), (3, 6)),
    "GroupNorm": (lambda: nn.GroupNorm(2, 4), lambda: tnn.GroupNorm(2, 4), (2, 4, 3, 3)),
    "RMSNorm": (lambda: nn.RMSNorm(6, eps=1e-6), lambda: tnn.RMSNorm(6, eps=1e-6), (3, 6)),
    "Embedding": (lambda: nn.Embedding(7, 4), lambda: tnn.Embedding(7, 4), None),
    "PReLU": (lambda: nn.PReLU(4), lambda: tnn.PReLU(4), (3, 4)),
    "RNN": (lambda: nn.RNN(3, 5), lambda: tnn.RNN(3, 5, batch_first=True), (2, 6, 3)),
    "LSTM stacked, bidirectional": (
        lambda: nn.LSTM(3, 5, num_layers=2, bidirectional=True),
        lambda: tnn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True),
        (2, 6, 3)),
    "GRU stacked": (lambda: nn.GRU(3, 5, num_layers=2),
                    lambda: tnn.GRU(3, 5, num_layers=2, batch_first=True), (2, 6, 3)),
}


class LeafTest(parameterized.TestCase):

    @parameterized.named_parameters(*[(name.replace(" ", "_").replace(",", ""), name)
                                      for name in LEAVES])
    def test_torch_weights_give_torch_outputs_both_ways(self, name):
        make, make_torch, shape = LEAVES[name]
        layer, module = make(), randomised(make_torch())
        x = (np.random.default_rng(0).integers(0, 7, (3, 5)) if shape is None
             else x_of(shape))
        params = interop.from_torch(layer, module.state_dict())
        np.testing.assert_allclose(layer.apply(params, jnp.asarray(x)), torch_out(module, x),
                                   rtol=1e-5, atol=1e-5)
        back = make_torch()
        back.load_state_dict(as_torch(interop.to_torch(layer, params)), strict=True)
        np.testing.assert_allclose(torch_out(back, x), torch_out(module, x), rtol=1e-6,
                                   atol=1e-6)
        again = interop.from_torch(layer, interop.to_torch(layer, params))
        chex.assert_trees_all_equal(again, params)

    @parameterized.parameters(True, False)
    def test_attention_with_masks(self, bias):
        layer = nn.MultiHeadAttention(8, 2, bias=bias)
        module = randomised(tnn.MultiheadAttention(8, 2, bias=bias, batch_first=True))
        params = interop.from_torch(layer, module.state_dict())
        query, context = x_of((2, 3, 8)), x_of((2, 5, 8), seed=2)
        keep = np.arange(5)[None] < np.asarray([[5], [3]])  # True: attend (the second padded)
        got = layer.apply(params, (jnp.asarray(query), jnp.asarray(context)),
                          mask=jnp.asarray(keep))
        with torch.no_grad():
            want, _ = module(*(torch.as_tensor(a) for a in (query, context, context)),
                             key_padding_mask=torch.as_tensor(~keep), need_weights=False)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
        back = tnn.MultiheadAttention(8, 2, bias=bias, batch_first=True)
        back.load_state_dict(as_torch(interop.to_torch(layer, params)), strict=True)
        chex.assert_trees_all_equal(interop.from_torch(layer, interop.to_torch(layer, params)),
                                    params)

    def test_batchnorm_running_statistics_and_batch_count(self):
        layer = nn.BatchNorm(4)
        module = randomised(tnn.BatchNorm2d(4))
        module.train()
        for seed in range(3):  # three training batches: running stats and the count move
            module(torch.as_tensor(x_of((8, 4, 3, 3), seed=seed)))
        module.eval()
        params, state = interop.from_torch(layer, module.state_dict())
        self.assertEqual(int(state["num_batches_tracked"]), 3)
        x = x_of((2, 4, 3, 3), seed=9)
        y, _ = layer.apply(params, jnp.asarray(x), state=state)
        np.testing.assert_allclose(y, torch_out(module, x), rtol=1e-5, atol=1e-5)
        # a training step counts one more batch, as PyTorch does
        _, trained = layer.apply(params, jnp.asarray(x), state=state, train=True)
        self.assertEqual(int(trained["num_batches_tracked"]), 4)
        back = tnn.BatchNorm2d(4)
        back.load_state_dict(as_torch(interop.to_torch(layer, params, state)), strict=True)
        back.eval()
        np.testing.assert_allclose(torch_out(back, x), torch_out(module, x), rtol=1e-6)
        self.assertEqual(int(back.num_batches_tracked), 3)


# --- containers --------------------------------------------------------------------------

class Model(nn.Composite):
    tokens: nn.Layer
    cls: nn.Layer
    blocks: tuple
    head: nn.Layer

    def forward(self, call, ids):
        x = call("tokens", ids) + call.param("cls")
        for i in range(len(self.blocks)):
            x = call(f"blocks.{i}", x)
        return call("head", x)


class TorchBlock(tnn.Module):
    def __init__(self):
        super().__init__()
        self.norm = tnn.LayerNorm(8)
        self.attn = tnn.MultiheadAttention(8, 2, batch_first=True)
        self.mlp = tnn.Sequential(tnn.Linear(8, 16), tnn.GELU(), tnn.Linear(16, 8))

    def forward(self, x):
        h = self.norm(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(x)


class TorchModel(tnn.Module):
    def __init__(self):
        super().__init__()
        self.tokens = tnn.Embedding(11, 8)
        self.cls = tnn.Parameter(torch.zeros(8))
        self.blocks = tnn.ModuleList([TorchBlock(), TorchBlock()])
        self.head = tnn.Linear(8, 11)

    def forward(self, ids):
        x = self.tokens(ids) + self.cls
        for block in self.blocks:
            x = x + block(x)  # minitorch's Residual around each block: no name of its own
        return self.head(x)


def composite_model():
    def block():
        return nn.Residual(Block(nn.LayerNorm(8), nn.MultiHeadAttention(8, 2),
                                 nn.Net([nn.Linear(8, 16), nn.GELU(approximate=False),
                                         nn.Linear(16, 8)])))

    return Model(tokens=nn.Embedding(11, 8), cls=nn.Param((8,)),
                 blocks=(block(), block()), head=nn.Linear(8, 11))


def cnn():
    return nn.Net([nn.Conv2D(1, 4, 3, padding=1), nn.BatchNorm(4), nn.ReLU(),
                   nn.Conv2D(4, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                   nn.MaxPool2D(2), nn.Flatten(), nn.Linear(16, 3)])


def torch_cnn():
    return tnn.Sequential(tnn.Conv2d(1, 4, 3, padding=1), tnn.BatchNorm2d(4), tnn.ReLU(),
                          tnn.Conv2d(4, 4, 3, padding=1), tnn.GroupNorm(2, 4), tnn.ReLU(),
                          tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(16, 3))


class ContainerTest(parameterized.TestCase):

    def test_net_is_sequential_with_batchnorm_state(self):
        net, module = cnn(), randomised(torch_cnn())
        module.eval()
        params, state = interop.from_torch(net, module.state_dict())
        x = x_of((2, 1, 4, 4))
        y, _ = net.apply(params, jnp.asarray(x), state=state)
        np.testing.assert_allclose(y, torch_out(module, x), rtol=1e-5, atol=1e-5)
        sd = interop.to_torch(net, params, state)
        self.assertEqual(set(sd), set(module.state_dict()))
        back = torch_cnn()
        back.load_state_dict(as_torch(sd), strict=True)
        back.eval()
        np.testing.assert_allclose(torch_out(back, x), torch_out(module, x), rtol=1e-6)

    def test_composite_fields_sequences_params_and_wrappers(self):
        model, module = composite_model(), randomised(TorchModel())
        params = interop.from_torch(model, module.state_dict())
        ids = np.random.default_rng(0).integers(0, 11, (2, 5))
        np.testing.assert_allclose(model.apply(params, jnp.asarray(ids)),
                                   torch_out(module, ids), rtol=1e-4, atol=1e-5)
        sd = interop.to_torch(model, params)
        self.assertIn("blocks.1.attn.in_proj_weight", sd)
        self.assertIn("cls", sd)
        back = TorchModel()
        back.load_state_dict(as_torch(sd), strict=True)
        np.testing.assert_allclose(torch_out(back, ids), torch_out(module, ids), rtol=1e-6)
        chex.assert_trees_all_equal(interop.from_torch(model, sd), params)

    def test_a_safetensors_file_and_bfloat16_tensors(self, ):
        import tempfile

        import safetensors.numpy

        net = nn.Net([nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)])
        module = randomised(tnn.Sequential(tnn.Linear(3, 4), tnn.ReLU(), tnn.Linear(4, 2)))
        want = interop.from_torch(net, module.state_dict())
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/model.safetensors"
            safetensors.numpy.save_file(interop.to_torch(net, want), path)
            chex.assert_trees_all_equal(interop.from_torch(net, path), want)
        halves = {k: v.to(torch.bfloat16) for k, v in module.state_dict().items()}
        got = interop.from_torch(net, halves)  # read through DLPack, cast to the params' dtype
        self.assertEqual(got[0]["W"].dtype, jnp.float32)
        np.testing.assert_allclose(got[0]["W"], want[0]["W"], rtol=1e-2, atol=1e-2)


class MismatchTest(parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.net = nn.Net([nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)])
        self.sd = interop.to_torch(self.net, self.net.init(jax.random.key(0)))

    def test_missing_names_the_torch_name_and_the_minitorch_path(self):
        del self.sd["2.weight"]
        with pytest.raises(interop.InteropError, match=r"1 missing: '2.weight' \(minitorch "
                                                       r"params 2.W\)"):
            interop.from_torch(self.net, self.sd)

    def test_unexpected_names_the_torch_name(self):
        self.sd["3.weight"] = np.zeros((2, 2), np.float32)
        with pytest.raises(KeyError, match=r"1 unexpected \(no minitorch param takes them\): "
                                           r"'3.weight'"):
            interop.from_torch(self.net, self.sd)

    def test_a_shape_that_does_not_fit_names_both(self):
        self.sd["0.weight"] = np.zeros((3, 4), np.float32)  # not transposed
        with pytest.raises(ValueError, match=r"'0.weight' has shape \(3, 4\), but minitorch "
                                             r"params 0.W needs \(4, 3\)"):
            interop.from_torch(self.net, self.sd)

    def test_strict_false_loads_what_matches_and_says_what_did_not(self):
        p0 = self.net.init(jax.random.key(5))
        expected = interop.from_torch(self.net, self.sd)
        del self.sd["2.bias"]
        self.sd["extra"] = np.zeros(1, np.float32)
        params, unmatched = interop.from_torch(self.net, self.sd, strict=False, params=p0)
        self.assertEqual(unmatched, interop.Unmatched(["2.bias"], ["extra"]))
        np.testing.assert_array_equal(params[2]["b"], p0[2]["b"])       # kept
        np.testing.assert_array_equal(params[2]["W"], expected[2]["W"])  # loaded

    def test_bad_arguments(self):
        with pytest.raises(ArgumentError, match="from_torch: weights must be a dict"):
            interop.from_torch(self.net, [1, 2])
        with pytest.raises(ArgumentError, match=r"weights\['0.weight'\] must be a tensor"):
            interop.from_torch(self.net, {"0.weight": "abc"})
        with pytest.raises(ArgumentError, match="to_torch: BatchNorm keeps state"):
            interop.to_torch(nn.BatchNorm(2), nn.BatchNorm(2).init(jax.random.key(0)))

    def test_a_bare_layer_uses_unprefixed_names(self):
        layer = nn.Linear(3, 4)
        self.assertEqual(set(interop.to_torch(layer, layer.init(jax.random.key(0)))),
                         {"weight", "bias"})


class RepeatTest(parameterized.TestCase):
    """An nn.Repeat's copies take the names a sequence of the same copies takes (PyTorch's
    ModuleList), each copy's tensors one row of the stacked params and state."""

    def test_a_repeat_is_named_as_a_sequence_of_its_copies_both_ways(self):
        block = nn.Residual(nn.Net([nn.Linear(8, 8), nn.BatchNorm(8), nn.ReLU()]))
        stacked = nn.Net([nn.Linear(4, 8), nn.Repeat(block, 3), nn.Linear(8, 2)])
        copies = nn.Net([nn.Linear(4, 8), nn.Net([block] * 3), nn.Linear(8, 2)])
        params, state = stacked.init(jax.random.key(0)), stacked.init_state()
        state = jax.tree.map(lambda a: a + jnp.arange(3).reshape((3,) + (1,) * (a.ndim - 1)),
                             state)  # each copy's statistics its own

        def rows(tree):
            return [tree[0], [jax.tree.map(lambda a, i=i: a[i], tree[1]) for i in range(3)],
                    tree[2]]

        sd = interop.to_torch(stacked, params, state)
        want = interop.to_torch(copies, rows(params), rows(state))
        self.assertEqual(sorted(sd), sorted(want))
        self.assertIn("1.2.1.running_mean", sd)
        for name in want:
            np.testing.assert_array_equal(sd[name], want[name], err_msg=name)
        got_params, got_state = interop.from_torch(stacked, sd)
        chex.assert_trees_all_equal((got_params, got_state), (params, state))

    def test_a_bare_and_a_nested_repeat_round_trip(self):
        nested = nn.Repeat(nn.Net([nn.Linear(4, 4), nn.Repeat(nn.Linear(4, 4), 2)]), 3)
        params = nested.init(jax.random.key(1))
        sd = interop.to_torch(nested, params)
        self.assertEqual(sorted(sd), sorted(f"{i}.{rest}" for i in range(3) for rest in (
            "0.weight", "0.bias", "1.0.weight", "1.0.bias", "1.1.weight", "1.1.bias")))
        np.testing.assert_array_equal(sd["2.1.1.weight"], params[1]["W"][2, 1].T)
        chex.assert_trees_all_equal(interop.from_torch(nested, sd), params)

    def test_a_copy_that_does_not_fit_is_named_by_its_copy_path(self):
        net = nn.Net([nn.Repeat(nn.Linear(4, 4), 2)])
        sd = interop.to_torch(net, net.init(jax.random.key(0)))
        sd["0.1.weight"] = np.zeros((4, 5), np.float32)
        with pytest.raises(interop.InteropError, match=r"'0.1.weight' has shape \(4, 5\), but "
                                                       r"minitorch params 0.1.W needs \(4, 4\)"):
            interop.from_torch(net, sd)
        del sd["0.1.weight"]
        with pytest.raises(interop.InteropError, match=r"'0.1.weight' \(minitorch params "
                                                       r"0.1.W\)"):
            interop.from_torch(net, sd)
