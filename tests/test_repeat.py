"""nn.Repeat: n copies with stacked params equal a Net of n copies (values, gradients,
dropout keys, BatchNorm state, decoding caches; eager and under jit), address copies by
path, trace the repeated layer once, and shard the stack as the layer declares."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from minitorch import nn, parallel
from minitorch.errors import ParamsError, ShapeError
from tests.helpers import Block

pytestmark = pytest.mark.slow  # stacks of transformer blocks, eagerly and under jit

WIDTH = 16


def block():
    return Block(nn.LayerNorm(WIDTH), nn.MultiHeadAttention(WIDTH, 2, causal=True),
                 nn.Net([nn.Linear(WIDTH, 2 * WIDTH), nn.GELU(), nn.Dropout(0.1),
                         nn.Linear(2 * WIDTH, WIDTH)]))


def copies(params, n):
    return [jax.tree.map(lambda a, i=i: a[i], params) for i in range(n)]


@pytest.mark.parametrize("jit", [False, True])
def test_equals_a_net_of_copies_in_values_gradients_and_dropout(jit):
    n = 3
    stack, chain = nn.Repeat(block(), n), nn.Net([block() for _ in range(n)])
    params = stack.init(jax.random.key(0))
    chex.assert_trees_all_equal(copies(params, n), chain.init(jax.random.key(0)))
    x = nn.init.normal(jax.random.key(1), (2, 5, WIDTH))

    def loss(net, params, x):
        return jnp.sum(jnp.sin(net.apply(params, x, key=jax.random.key(2), train=True)))

    grad = jax.value_and_grad(loss, argnums=(1, 2))
    if jit:
        grad = jax.jit(grad, static_argnums=0)
    value, (grads, x_grad) = grad(stack, params, x)
    chain_value, (chain_grads, chain_x_grad) = grad(chain, copies(params, n), x)
    np.testing.assert_allclose(value, chain_value, rtol=1e-5)
    chex.assert_trees_all_close(copies(grads, n), chain_grads, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(x_grad, chain_x_grad, rtol=1e-4, atol=1e-4)


def test_state_stacks_and_updates_as_the_copies_do():
    layer = nn.Residual(nn.Net([nn.Linear(4, 4), nn.BatchNorm(4)]))
    stack, chain = nn.Repeat(layer, 2), nn.Net([layer, layer])
    params = stack.init(jax.random.key(0))
    state = stack.init_state()
    assert state[1]["mean"].shape == (2, 4)  # the single layer's state, stacked
    x = jax.random.normal(jax.random.key(1), (6, 4))
    y, new = stack.apply(params, x, state=state, train=True)
    chain_y, chain_new = chain.apply(copies(params, 2), x, state=chain.init_state(),
                                     train=True)
    np.testing.assert_allclose(y, chain_y, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(copies(new, 2), chain_new, rtol=1e-6, atol=1e-7)


def test_decodes_with_stacked_caches_as_the_full_sequence():
    model = nn.Net([nn.Embedding(11, WIDTH), nn.Repeat(block(), 3), nn.Linear(WIDTH, 11)])
    params = model.init(jax.random.key(0))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 11, (2, 7)))
    cache = model.init_cache(2, 7)
    assert cache[1]["attn"]["k"].shape == (3, 2, 7, 2, WIDTH // 2)
    first, cache = model.apply(params, ids[:, :4], cache=cache)
    second, _ = model.apply(params, ids[:, 4:], cache=cache)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), model.apply(params, ids),
                               rtol=1e-5, atol=1e-5)
    greedy = nn.generate(model, params, ids[:, :2], 4)
    assert greedy.shape == (2, 6)


def test_copies_have_paths_and_the_layer_is_traced_once():
    traced = []

    class Counted(nn.Composite):
        inner: nn.Layer

        def forward(self, call, x):
            traced.append(1)
            return x + call("inner", x)

    class Model(nn.Composite):
        blocks: nn.Layer

        def forward(self, call, x):
            return call("blocks", x)

    model = Model(nn.Repeat(Counted(nn.Linear(4, 4)), 8))
    assert [p for p in nn.named_layers(model) if p.count(".") == 1] == [
        f"blocks.{i}" for i in range(8)]
    params = model.init(jax.random.key(0))
    x = jnp.ones((2, 4))
    traced.clear()
    jax.jit(model.apply).lower(params, x)
    assert len(traced) == 1  # one copy traced, under the scan
    _, outputs = nn.intermediates(model, params, x)  # a tap: each copy at its path
    assert {f"blocks.{i}" for i in range(8)} <= set(outputs)
    np.testing.assert_allclose(outputs["blocks.7"], model.apply(params, x), rtol=1e-6)


def test_errors_name_the_repeat():
    with pytest.raises(ShapeError, match=r"Repeat: expected the repeated Linear to keep its "
                                         r"input's shape and dtype \(2, 4\)"):
        stack = nn.Repeat(nn.Linear(4, 3), 2)
        stack.apply(stack.init(jax.random.key(0)), jnp.ones((2, 4)))
    stack = nn.Repeat(nn.Linear(4, 4), 3)
    with pytest.raises(ParamsError, match=r"Repeat: expected params stacked on a leading axis "
                                          r"of 3"):
        stack.apply(nn.Linear(4, 4).init(jax.random.key(0)), jnp.ones((2, 4)))


@pytest.mark.cpu_only  # 8 virtual CPU devices
def test_param_shardings_split_the_stack_as_the_layer_declares():
    mesh = parallel.make_mesh(data=2, model=4)
    stack = nn.Repeat(nn.Residual(nn.Linear(8, 8)), 6)
    spec = jax.tree.map(lambda s: s.spec, parallel.param_shardings(stack, mesh, tensor="model"))
    assert spec == {"W": P(None, None, "model"), "b": P(None, "model")}
    params = jax.jit(stack.init, out_shardings=parallel.param_shardings(
        stack, mesh, tensor="model"))(jax.random.key(0))
    assert params["W"].shape == (6, 8, 8)


def test_the_scan_keeps_the_products_outputs_not_every_activation():
    """Repeat's backward pass reads back each copy's matrix products only (the elementwise
    rest recomputed): fewer temporaries than a scan keeping every activation (a repeated
    Remat "everything"), more than one keeping nothing; the same gradients."""
    mlp = nn.Residual(nn.Net([nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(),
                              nn.Linear(4 * WIDTH, WIDTH)]))
    x = jnp.ones((8, 32, WIDTH))

    def compiled(layer):
        def loss(params):
            return jnp.sum(jnp.sin(layer.apply(params, x)))
        params = layer.init(jax.random.key(0))
        return jax.jit(jax.grad(loss)).lower(params).compile(), params

    temporaries, grads = {}, {}
    for policy in ("everything", None, "nothing"):
        step, params = compiled(nn.Repeat(mlp if policy is None else nn.Remat(mlp, policy), 6))
        temporaries[policy] = step.memory_analysis().temp_size_in_bytes
        grads[policy] = step(params)
    assert temporaries["nothing"] < temporaries[None] < temporaries["everything"], temporaries
    for policy in ("everything", "nothing"):
        chex.assert_trees_all_close(grads[policy], grads[None], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n, remat, loops", [(1, False, False), (2, False, False),
                                             (3, False, True), (2, True, True)])
def test_two_copies_run_unrolled_and_a_remat_always_loops(n, remat, loops):
    """A loop of two compiles and runs no faster than its copies, so up to two are
    unrolled (the same values: the scan unrolled); a repeated Remat loops at any n, since
    its policy takes effect only in a loop."""
    layer = nn.Residual(nn.Linear(4, 4))
    stack = nn.Repeat(nn.Remat(layer, "nothing") if remat else layer, n)
    params = stack.init(jax.random.key(0))
    x = jnp.ones((2, 4))
    grad = jax.jit(jax.grad(lambda p: jnp.sum(stack.apply(p, x))))
    assert (" while(" in grad.lower(params).compile().as_text()) == loops
    chain = nn.Net([layer] * n)
    np.testing.assert_allclose(stack.apply(params, x), chain.apply(copies(params, n), x),
                               rtol=1e-6)
