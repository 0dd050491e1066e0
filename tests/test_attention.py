"""MultiHeadAttention against torch.nn.functional.multi_head_attention_forward."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from minitorch import nn
from minitorch.errors import DTypeError, KeyArgError, ShapeError
from tests.helpers import assert_matches_torch, check_layer_grads

E, H = 8, 2


def params_of(rng, bias=True):
    """Random params (not the init's: biases non-zero), flat for the torch comparison."""
    flat = {f"{p}.W": rng.normal(size=(E, E)).astype(np.float32) * 0.4 for p in "qkvo"}
    if bias:
        flat.update({f"{p}.b": rng.normal(size=(E,)).astype(np.float32) * 0.2 for p in "qkvo"})
    return flat


def nest(flat):
    return {p: {k: flat[f"{p}.{k}"] for k in "Wb" if f"{p}.{k}" in flat} for p in "qkvo"}


def torch_attention(t, *, causal=False, padding=None, mask=None, cross=False, bias=True):
    """PyTorch's attention on batch-first tensors, weights given in minitorch's layout."""
    import torch

    query = t["x"].transpose(0, 1)
    context = t["context"].transpose(0, 1) if cross else query
    length, source = query.shape[0], context.shape[0]
    in_w = torch.cat([t["q.W"].T, t["k.W"].T, t["v.W"].T])
    in_b = torch.cat([t["q.b"], t["k.b"], t["v.b"]]) if bias else None
    attn_mask = None
    if causal:
        attn_mask = ~torch.tril(torch.ones(length, source, dtype=torch.bool))
    if mask is not None:  # (N, H, L, S) allowed -> PyTorch's (N * H, L, S) disallowed
        full = np.broadcast_to(mask, (mask.shape[0], H, length, source)).copy()
        disallowed = ~torch.as_tensor(full)
        disallowed = disallowed.reshape(-1, length, source)
        attn_mask = disallowed if attn_mask is None else attn_mask | disallowed
    out, _ = torch.nn.functional.multi_head_attention_forward(
        query, context, context, E, H, in_w, in_b, None, None, False, 0.0, t["o.W"].T,
        t["o.b"] if bias else None, training=False,
        key_padding_mask=None if padding is None else torch.as_tensor(~padding),
        need_weights=False, attn_mask=attn_mask)
    return out.transpose(0, 1)


CASES = {
    "self": {},
    "causal": {"causal": True},
    "padding": {"padding": True},
    "causal_and_padding": {"causal": True, "padding": True},
    "general_mask": {"mask": True},
    "cross": {"cross": True},
    "cross_with_padding": {"cross": True, "padding": True},
    "no_bias": {"bias": False},
}


class AttentionTorchTest(parameterized.TestCase):

    @parameterized.named_parameters(*[(name, case) for name, case in CASES.items()])
    def test_values_and_gradients_equal_pytorch(self, case):
        rng = np.random.default_rng(0)
        n, length, source = 3, 5, 7 if case.get("cross") else 5
        arrays = {"x": rng.normal(size=(n, length, E)).astype(np.float32),
                  **params_of(rng, case.get("bias", True))}
        if case.get("cross"):
            arrays["context"] = rng.normal(size=(n, source, E)).astype(np.float32)
        padding = mask = None
        if case.get("padding"):
            padding = np.ones((n, source), bool)
            padding[0, 3:] = False
            padding[2, 1:] = False
        if case.get("mask"):
            mask = rng.uniform(size=(n, 1, length, source)) > 0.3
            mask[..., 0] = True  # every query keeps one key: PyTorch would give NaN rows
        layer = nn.MultiHeadAttention(E, H, causal=case.get("causal", False),
                                      bias=case.get("bias", True))
        chosen = padding if padding is not None else mask

        def ours(a):
            x = (a["x"], a["context"]) if case.get("cross") else a["x"]
            return layer.apply(nest(a), x, mask=None if chosen is None else jnp.asarray(chosen))

        assert_matches_torch(ours, lambda t: torch_attention(
            t, causal=case.get("causal", False), padding=padding, mask=mask,
            cross=case.get("cross", False), bias=case.get("bias", True)), arrays,
            rtol=1e-4, atol=1e-5)


class AttentionTest(chex.TestCase):

    def test_params_and_init(self):
        params = nn.MultiHeadAttention(16, 4).init(jax.random.key(0))
        self.assertEqual(sorted(params), ["k", "o", "q", "v"])
        for p in params.values():
            self.assertEqual((p["W"].shape, p["b"].shape), ((16, 16), (16,)))
            np.testing.assert_array_equal(p["b"], 0)
        bound = np.sqrt(6 / (16 + 48))  # PyTorch's xavier_uniform over the (3E, E) stack
        self.assertLessEqual(float(jnp.abs(params["q"]["W"]).max()), bound)
        self.assertGreater(float(jnp.abs(params["q"]["W"]).max()), 0.8 * bound)
        self.assertNotIn("b", nn.MultiHeadAttention(16, 4, bias=False).init(
            jax.random.key(0))["q"])

    @chex.variants(with_jit=True, without_jit=True)
    def test_causal_output_ignores_the_future(self):
        layer = nn.MultiHeadAttention(E, H, causal=True)
        params = layer.init(jax.random.key(0))
        x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, E)), jnp.float32)
        changed = x.at[:, 4:].set(9.0)
        y, y2 = self.variant(layer.apply)(params, x), self.variant(layer.apply)(params, changed)
        np.testing.assert_allclose(y[:, :4], y2[:, :4], rtol=1e-5, atol=1e-6)
        self.assertFalse(np.allclose(y[:, 4:], y2[:, 4:]))

    def test_fully_masked_row_attends_uniformly_not_nan(self):
        layer = nn.MultiHeadAttention(E, H)
        params = layer.init(jax.random.key(0))
        x = jnp.ones((1, 3, E))
        y = layer.apply(params, x, mask=jnp.zeros((1, 3), bool))
        self.assertTrue(np.all(np.isfinite(y)))

    def test_attention_dropout(self):
        layer = nn.MultiHeadAttention(E, H, dropout=0.5)
        params = layer.init(jax.random.key(0))
        x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, E)), jnp.float32)
        evaluation = layer.apply(params, x)
        np.testing.assert_allclose(evaluation, nn.MultiHeadAttention(E, H).apply(params, x))
        a = layer.apply(params, x, key=jax.random.key(1), train=True)
        b = layer.apply(params, x, key=jax.random.key(2), train=True)
        self.assertFalse(np.allclose(a, b))
        with pytest.raises(KeyArgError, match="MultiHeadAttention: expected a PRNG key"):
            layer.apply(params, x, train=True)

    def test_gradients_float64_and_under_jit(self):
        layer = nn.MultiHeadAttention(4, 2, causal=True)
        x = np.random.default_rng(0).normal(size=(2, 3, 4))
        check_layer_grads(layer, layer.init(jax.random.key(0)), x,
                          mask=jnp.array([[True, True, False], [True, True, True]]))
        cross = nn.MultiHeadAttention(4, 2)
        check_layer_grads(cross, cross.init(jax.random.key(1)),
                          (x, np.random.default_rng(1).normal(size=(2, 5, 4))))

    def test_bad_inputs_name_the_layer_path(self):
        net = nn.Net([nn.Linear(4, 32), nn.MultiHeadAttention(64, 4)])
        params = net.init(jax.random.key(0))
        with pytest.raises(ShapeError, match=r"^layer 1 \(MultiHeadAttention\): expected input "
                                             r"of shape \(N, L, 64\), received \(4, 10, 32\)$"):
            net.apply(params, jnp.ones((4, 10, 4)))
        layer = nn.MultiHeadAttention(8, 2)
        p = layer.init(jax.random.key(0))
        with pytest.raises(ShapeError, match=r"expected input of shape \(N, L, 8\), received "
                                             r"\(10, 8\)"):
            layer.apply(p, jnp.ones((10, 8)))  # sequence rank
        with pytest.raises(ShapeError, match=r"expected a mask of shape \(N, S\) = \(2, 5\) or "
                                             r"broadcastable to \(N, num_heads, L, S\)"):
            layer.apply(p, jnp.ones((2, 5, 8)), mask=jnp.ones((2, 4), bool))
        with pytest.raises(DTypeError, match="expected a boolean mask"):
            layer.apply(p, jnp.ones((2, 5, 8)), mask=jnp.ones((2, 5)))
        with pytest.raises(ShapeError, match="same batch size"):
            layer.apply(p, (jnp.ones((2, 5, 8)), jnp.ones((3, 4, 8))))
        with pytest.raises(ValueError, match=r"MultiHeadAttention: embed_dim=10 must be "
                                             r"divisible by num_heads=4"):
            nn.MultiHeadAttention(10, 4)
        with pytest.raises(ValueError, match=r"dropout must be a finite number in \[0, 1\)"):
            nn.MultiHeadAttention(8, 2, dropout=1.5)


@pytest.mark.parametrize("jit", [False, True])
def test_causal_row_with_every_key_padded_never_sees_the_future(jit):
    """A padding mask that blocks a whole row: under causal=True the row attends uniformly to
    the keys up to its own position, never to future ones."""
    layer = nn.MultiHeadAttention(E, 2, causal=True)
    params = layer.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 5, E)), jnp.float32)
    mask = jnp.asarray([[True] * 5, [False] * 5])
    run = jax.jit(layer.apply) if jit else layer.apply
    y = run(params, x, mask=mask)
    later = x.at[:, 3:].set(jnp.asarray(rng.normal(size=(2, 2, E)), jnp.float32))
    np.testing.assert_allclose(run(params, later, mask=mask)[:, :3], y[:, :3], rtol=1e-6,
                               atol=1e-6)
    v = x[1] @ params["v"]["W"] + params["v"]["b"]                    # (L, E)
    uniform = jnp.cumsum(v, axis=0) / jnp.arange(1, 6)[:, None]       # mean of keys j <= i
    want = uniform @ params["o"]["W"] + params["o"]["b"]
    np.testing.assert_allclose(y[1], want, rtol=1e-5, atol=1e-5)
    assert bool(jnp.all(jnp.isfinite(jax.grad(lambda v: jnp.sum(run(params, v, mask=mask)))(x))))
