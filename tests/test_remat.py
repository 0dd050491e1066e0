"""nn.Remat: the bare layer's params, values and gradients under every policy (eager and
under jit, with dropout keys and BatchNorm state), and fewer live temporaries where it
takes effect: a checkpointed body of a lax.scan."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minitorch import nn
from minitorch.errors import ArgumentError
from tests.helpers import Block, decode_in_chunks

pytestmark = pytest.mark.slow  # transformer blocks differentiated eagerly and under jit


def block(width=16):
    return Block(nn.LayerNorm(width), nn.MultiHeadAttention(width, 2, causal=True),
                 nn.Net([nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(0.1),
                         nn.Linear(4 * width, width)]))


@pytest.mark.parametrize("policy, jit", [("everything", True), ("dots", True),
                                         ("nothing", True), ("nothing", False)])
def test_same_params_values_and_gradients_as_the_bare_layer(policy, jit):
    """Every policy under jit, and eagerly the one most unlike the bare program."""
    bare = nn.Net([block(), nn.BatchNorm(6), block()])
    lean = nn.Net([nn.Remat(block(), policy), nn.BatchNorm(6), nn.Remat(block(), policy)])
    key = jax.random.key(0)
    params = bare.init(key)
    chex.assert_trees_all_equal(lean.init(key), params)
    x = nn.init.normal(jax.random.key(1), (3, 6, 16))

    def loss(net, params, state, x):
        y, new_state = net.apply(params, x, key=jax.random.key(2), train=True, state=state)
        return jnp.sum(jnp.sin(y)), new_state

    grad = jax.value_and_grad(loss, argnums=(1, 3), has_aux=True)
    if jit:
        grad = jax.jit(grad, static_argnums=0)
    (value, state), grads = grad(bare, params, bare.init_state(), x)
    (lean_value, lean_state), lean_grads = grad(lean, params, lean.init_state(), x)
    np.testing.assert_allclose(lean_value, value, rtol=1e-6)
    chex.assert_trees_all_close(lean_state, state, rtol=1e-6)
    chex.assert_trees_all_close(lean_grads, grads, rtol=1e-4, atol=1e-5)  # float32 order


def test_paths_summary_keywords_and_decoding_pass_through():
    lean = nn.Net([nn.Embedding(11, 16), nn.Remat(block())])
    params = lean.init(jax.random.key(0))
    assert set(nn.named_layers(lean)) == set(nn.named_layers(nn.Net([nn.Embedding(11, 16),
                                                                      block()])))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 11, (2, 5)))
    _, outputs = jax.jit(nn.intermediates, static_argnums=0)(lean, params, ids)
    assert "1.attn" in outputs and "1.mlp.0" in outputs
    full = jax.jit(lean.apply)(params, ids)
    chunked, _ = decode_in_chunks(lean, params, ids, (3, 2))
    np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-5)


def test_bad_policy_names_the_choices():
    with pytest.raises(ArgumentError, match=r"Remat: policy must be 'everything', 'dots' or "
                                            r"'nothing', received 'some'"):
        nn.Remat(nn.Linear(2, 2), "some")


def temporaries(layer, depth=6, width=64, length=32):
    """Bytes of temporaries of the compiled gradient of ``depth`` copies of ``layer``
    scanned over (params stacked on a leading axis), as XLA reports them."""
    params = jax.vmap(layer.init)(jax.random.split(jax.random.key(0), depth))
    x = jnp.ones((8, length, width))

    def loss(params, x):
        def body(h, p):
            return layer.apply(p, h), None

        return jnp.sum(jax.lax.scan(body, x, params)[0])

    compiled = jax.jit(jax.grad(loss)).lower(params, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_under_a_scan_nothing_saved_means_fewer_temporaries():
    """Inside a scan the checkpointed body keeps only its input per step, not every
    activation: at least 2x fewer temporaries (XLA:CPU: ~4x here)."""
    width = 64
    mlp = nn.Net([nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)])
    bare = temporaries(nn.Residual(mlp), width=width)
    lean = temporaries(nn.Remat(nn.Residual(mlp), "nothing"), width=width)
    assert lean * 2 <= bare, (lean, bare)
