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
