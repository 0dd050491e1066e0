"""RNN, LSTM and GRU against torch.nn.RNN / LSTM / GRU (batch_first)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from minitorch import nn
from minitorch.errors import ShapeError
from tests.helpers import assert_matches_torch, check_layer_grads

IN, HIDDEN = 3, 4
KINDS = {"RNN": (nn.RNN, {}), "RNN_relu": (nn.RNN, {"nonlinearity": "relu"}),
         "LSTM": (nn.LSTM, {}), "GRU": (nn.GRU, {})}


def torch_recurrent(kind, kwargs, t, bias, with_initial):
    """PyTorch's layer run on our params (W_ih is its weight_ih_l0.T)."""
    import torch

    module = getattr(torch.nn, kind)(IN, HIDDEN, batch_first=True, bias=bias, **kwargs)
    weights = {"weight_ih_l0": t["W_ih"].T, "weight_hh_l0": t["W_hh"].T}
    if bias:
        weights.update(bias_ih_l0=t["b_ih"], bias_hh_l0=t["b_hh"])
    initial = None
    if with_initial:
        initial = ((t["h0"][None], t["c0"][None]) if kind == "LSTM" else t["h0"][None])
    return torch.func.functional_call(module, weights, (t["x"], initial))[0]


class RecurrentTorchTest(parameterized.TestCase):

    @parameterized.product(kind=sorted(KINDS), bias=(True, False), initial=(False, True))
    def test_values_and_gradients_equal_pytorch(self, kind, bias, initial):
        cls, kwargs = KINDS[kind]
        layer = cls(IN, HIDDEN, bias=bias, **kwargs)
        rng = np.random.default_rng(0)
        arrays = {k: np.asarray(v) for k, v in layer.init(jax.random.key(0)).items()}
        if bias:  # non-zero, distinct biases so a swapped b_ih / b_hh would show
            arrays.update(b_ih=rng.normal(size=arrays["b_ih"].shape).astype(np.float32),
                          b_hh=rng.normal(size=arrays["b_hh"].shape).astype(np.float32))
        arrays["x"] = rng.normal(size=(2, 6, IN)).astype(np.float32)
        if initial:
            arrays["h0"] = rng.normal(size=(2, HIDDEN)).astype(np.float32)
            arrays["c0"] = rng.normal(size=(2, HIDDEN)).astype(np.float32)
        names = ["W_ih", "W_hh", *(["b_ih", "b_hh"] if bias else [])]

        def ours(a):
            start = None
            if initial:
                start = (a["h0"], a["c0"]) if kind == "LSTM" else a["h0"]
            return layer.apply({k: a[k] for k in names}, a["x"], initial=start)

        if initial and kind != "LSTM":
            del arrays["c0"]
        assert_matches_torch(ours, lambda t: torch_recurrent(
            kind.split("_")[0], kwargs, t, bias, initial), arrays, rtol=1e-5, atol=1e-6)


class RecurrentTest(chex.TestCase):

    @parameterized.parameters(*sorted(KINDS))
    def test_params_shapes_and_pytorch_init_range(self, kind):
        cls, kwargs = KINDS[kind]
        params = cls(IN, HIDDEN, **kwargs).init(jax.random.key(0))
        gates = cls.num_gates
        self.assertEqual({k: v.shape for k, v in params.items()},
                         {"W_ih": (IN, gates * HIDDEN), "W_hh": (HIDDEN, gates * HIDDEN),
                          "b_ih": (gates * HIDDEN,), "b_hh": (gates * HIDDEN,)})
        for value in params.values():
            self.assertLessEqual(float(jnp.abs(value).max()), 1 / np.sqrt(HIDDEN))
        self.assertEqual(sorted(cls(IN, HIDDEN, bias=False, **kwargs).init(jax.random.key(0))),
                         ["W_hh", "W_ih"])

    @chex.variants(with_jit=True, without_jit=True)
    def test_unroll_changes_nothing_but_speed(self):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, IN)), jnp.float32)
        params = nn.LSTM(IN, HIDDEN).init(jax.random.key(0))
        np.testing.assert_allclose(self.variant(nn.LSTM(IN, HIDDEN, unroll=4).apply)(params, x),
                                   self.variant(nn.LSTM(IN, HIDDEN).apply)(params, x),
                                   rtol=1e-6, atol=1e-7)

    def test_one_step_is_compiled_whatever_the_length(self):
        layer = nn.GRU(IN, HIDDEN)
        params = layer.init(jax.random.key(0))
        sizes = [len(jax.jit(layer.apply).lower(params, jnp.ones((2, t, IN))).as_text())
                 for t in (4, 64)]
        self.assertLess(abs(sizes[1] - sizes[0]), 200)  # the scan body, not T copies of it

    @parameterized.parameters(*sorted(KINDS))
    def test_gradients_float64_and_under_jit(self, kind):
        cls, kwargs = KINDS[kind]
        layer = cls(IN, HIDDEN, **kwargs)
        x = np.random.default_rng(0).normal(size=(2, 4, IN))
        check_layer_grads(layer, layer.init(jax.random.key(0)), x)

    def test_bad_inputs_name_the_layer_path(self):
        net = nn.Net([nn.Embedding(10, 8), nn.LSTM(6, HIDDEN)])
        params = net.init(jax.random.key(0))
        with pytest.raises(ShapeError, match=r"^layer 1 \(LSTM\): expected input of shape "
                                             r"\(N, T, 6\), received \(2, 5, 8\)$"):
            net.apply(params, jnp.zeros((2, 5), jnp.int32))
        lstm, gru = nn.LSTM(IN, HIDDEN), nn.GRU(IN, HIDDEN)
        x = jnp.ones((2, 5, IN))
        with pytest.raises(ShapeError, match=r"expected input of shape \(N, T, 3\), received "
                                             r"\(5, 3\)"):
            gru.apply(gru.init(jax.random.key(0)), jnp.ones((5, IN)))  # sequence rank
        with pytest.raises(ShapeError, match=r"GRU: expected initial of shape \(N, H\) = "
                                             r"\(2, 4\), received \(2, 5\)"):
            gru.apply(gru.init(jax.random.key(0)), x, initial=jnp.zeros((2, 5)))
        with pytest.raises(ShapeError, match=r"LSTM: expected initial=\(h0, c0\)"):
            lstm.apply(lstm.init(jax.random.key(0)), x, initial=jnp.zeros((2, HIDDEN)))
        with pytest.raises(ShapeError, match=r"LSTM: expected initial c0 of shape \(N, H\)"):
            lstm.apply(lstm.init(jax.random.key(0)), x,
                       initial=(jnp.zeros((2, HIDDEN)), jnp.zeros((3, HIDDEN))))
        with pytest.raises(ValueError, match="RNN: nonlinearity must be 'tanh' or 'relu'"):
            nn.RNN(IN, HIDDEN, nonlinearity="sigmoid")


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("x_dtype", ["bfloat16", "float16"])
def test_narrow_inputs_keep_the_carry_in_the_compute_dtype(kind, x_dtype):
    """float32 params with bfloat16 inputs compute in float32 throughout: the carry is never
    rounded to the input's dtype, so the result equals float32 on the rounded inputs."""
    layer = getattr(nn, kind)(3, 8)
    params = layer.init(jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 12, 3)), x_dtype)
    y = jax.jit(layer.apply)(params, x)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, layer.apply(params, x.astype(jnp.float32)), rtol=1e-6,
                               atol=1e-6)


STACKS = [(2, False), (1, True), (3, True)]


def stacked_arrays(layer, rng, with_initial):
    """Flat ``"l1.W_ih"``-style arrays of a stacked layer's params (biases made distinct),
    the input and, optionally, PyTorch-shaped initial carries."""
    params = layer.init(jax.random.key(0))
    arrays = {f"{cell}.{name}": np.asarray(value) + (rng.normal(size=value.shape).astype(
        np.float32) if name.startswith("b") else 0) for cell, p in params.items()
        for name, value in p.items()}
    arrays["x"] = rng.normal(size=(2, 5, IN)).astype(np.float32)
    cells = len(params)
    if with_initial:
        arrays["h0"] = rng.normal(size=(cells, 2, HIDDEN)).astype(np.float32)
        if isinstance(layer, nn.LSTM):
            arrays["c0"] = rng.normal(size=(cells, 2, HIDDEN)).astype(np.float32)
    return arrays


def torch_stacked(layer, t, output):
    """PyTorch's multi-layer / bidirectional module on the same weights; ``output`` picks
    what to compare: the outputs, h_n or c_n."""
    import torch

    kind = type(layer).__name__
    module = getattr(torch.nn, kind)(IN, HIDDEN, num_layers=layer.num_layers,
                                     bidirectional=layer.bidirectional, batch_first=True)
    weights = {}
    for key, value in t.items():
        if "." not in key:
            continue
        cell, name = key.split(".")
        layer_index, reverse = cell[1:].split("_")[0], "_reverse" if "reverse" in cell else ""
        torch_name = {"W_ih": "weight_ih", "W_hh": "weight_hh", "b_ih": "bias_ih",
                      "b_hh": "bias_hh"}[name]
        weights[f"{torch_name}_l{layer_index}{reverse}"] = value.T if name[0] == "W" else value
    initial = None
    if "h0" in t:
        initial = (t["h0"], t["c0"]) if kind == "LSTM" else t["h0"]
    y, carry = torch.func.functional_call(module, weights, (t["x"], initial))
    if output == "y":
        return y
    return carry[0 if output == "h" else 1] if kind == "LSTM" else carry


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("num_layers, bidirectional", STACKS)
@pytest.mark.parametrize("with_initial", [False, True])
def test_stacked_and_bidirectional_equal_pytorch(kind, num_layers, bidirectional,
                                                 with_initial):
    layer = getattr(nn, kind)(IN, HIDDEN, num_layers=num_layers, bidirectional=bidirectional)
    arrays = stacked_arrays(layer, np.random.default_rng(1), with_initial)
    cells = [name for name, _, _ in layer.cells()]
    assert sorted(layer.init(jax.random.key(0))) == sorted(cells)
    assert cells[:2] == (["l0", "l0_reverse"] if bidirectional else ["l0", "l1"])

    def run(a):
        params = {c: {n: a[f"{c}.{n}"] for n in ("W_ih", "W_hh", "b_ih", "b_hh")}
                  for c in cells}
        initial = None
        if "h0" in a:
            initial = (a["h0"], a["c0"]) if kind == "LSTM" else a["h0"]
        return layer.apply(params, a["x"], initial=initial, return_carry=True)

    outputs = ["y", "h", *(["c"] if kind == "LSTM" else [])]

    def ours(a):  # the outputs, h_n and c_n, flattened into one vector: one comparison
        y, carry = run(a)
        return jnp.concatenate([v.ravel() for v in (y, *(carry if kind == "LSTM"
                                                         else (carry,)))])

    def theirs(t):
        import torch

        return torch.cat([torch_stacked(layer, t, output).reshape(-1) for output in outputs])

    assert_matches_torch(ours, theirs, arrays, rtol=1e-5, atol=1e-5)


def test_dropout_between_layers_only_in_training():
    layer = nn.LSTM(IN, HIDDEN, num_layers=2, dropout=0.5)
    params = layer.init(jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6, IN)), jnp.float32)
    key = jax.random.key(3)
    plain = layer.apply(params, x)
    np.testing.assert_array_equal(layer.apply(params, x, key=key), plain)  # not training
    dropped = layer.apply(params, x, key=key, train=True)
    first = nn.LSTM(IN, HIDDEN).apply(params["l0"], x)
    by_hand = nn.LSTM(HIDDEN, HIDDEN).apply(params["l1"], nn.Dropout(0.5).apply(
        {}, first, train=True, key=jax.random.split(key, 2)[0]))
    np.testing.assert_allclose(dropped, by_hand, rtol=1e-6, atol=1e-6)
    assert float(jnp.abs(dropped - plain).max()) > 1e-3
    with pytest.raises(TypeError, match=r"LSTM: expected a PRNG key with train=True and "
                                        r"dropout=0.5"):
        layer.apply(params, x, train=True)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_return_carry_of_one_layer_is_the_last_step(kind):
    layer = getattr(nn, kind)(IN, HIDDEN)
    params = layer.init(jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, IN)), jnp.float32)
    y, carry = jax.jit(lambda p, v: layer.apply(p, v, return_carry=True))(params, x)
    h = carry[0] if kind == "LSTM" else carry
    np.testing.assert_allclose(h, y[:, -1], rtol=1e-6)
    # Continuing from the carry equals running the whole sequence.
    whole = layer.apply(params, jnp.concatenate([x, x], axis=1))
    np.testing.assert_allclose(layer.apply(params, x, initial=carry), whole[:, 5:], rtol=1e-5,
                               atol=1e-6)


def test_stacked_bad_initial_and_arguments():
    layer = nn.GRU(IN, HIDDEN, num_layers=2, bidirectional=True)
    params = layer.init(jax.random.key(0))
    with pytest.raises(ShapeError, match=r"GRU: expected initial of shape "
                                         r"\(D \* num_layers, N, H\) = \(4, 2, 4\), received "
                                         r"\(2, 4\)"):
        layer.apply(params, jnp.ones((2, 3, IN)), initial=jnp.zeros((2, HIDDEN)))
    with pytest.raises(ValueError, match=r"LSTM: dropout must be a finite number in \[0, 1\)"):
        nn.LSTM(IN, HIDDEN, dropout=1.0)
    with pytest.raises(ValueError, match="RNN: num_layers must be a positive int"):
        nn.RNN(IN, HIDDEN, num_layers=0)
    assert nn.GRU(IN, HIDDEN, bidirectional=True).init_cache(2, 4) == {}
    check_layer_grads(nn.LSTM(IN, HIDDEN, num_layers=2, bidirectional=True),
                      nn.LSTM(IN, HIDDEN, num_layers=2, bidirectional=True).init(
                          jax.random.key(0)), np.random.default_rng(0).normal(size=(2, 3, IN)))


def test_stacked_decodes_with_a_cache():
    layer = nn.LSTM(IN, HIDDEN, num_layers=2)
    params = layer.init(jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, IN)), jnp.float32)
    cache = layer.init_cache(2, 6)
    first, cache = layer.apply(params, x[:, :4], cache=cache)
    second, cache = layer.apply(params, x[:, 4:], cache=cache)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), layer.apply(params, x),
                               rtol=1e-5, atol=1e-6)
    assert int(cache["l1"]["index"]) == 6
