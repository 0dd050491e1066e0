"""Sharded params on 8 devices (FSDP, tensor parallel, both on a 2-D mesh) train exactly as
on one device, and each device holds its share of the params and optimiser state."""

import functools
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from sklearn.datasets import load_digits

from minitorch import losses, nn, optim, parallel, train
from minitorch.errors import ArgumentError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from char_transformer import char_transformer

# 8 virtual CPU devices; slow: 8-device sharded programs, compiled per mesh
pytestmark = [pytest.mark.cpu_only, pytest.mark.slow]
STEPS = 3
LENGTH = 8  # tokens per sequence
LAYOUTS = {  # name: (mesh axes, param_shardings keywords)
    "fsdp": ({"data": 8}, {"fsdp": "data"}),
    "tensor": ({"data": 2, "model": 4}, {"tensor": "model"}),
    "fsdp+tensor": ({"data": 4, "model": 2}, {"fsdp": "data", "tensor": "model"}),
}


def transformer(vocab=16, width=32, heads=8):
    """examples/char_transformer.py's model: Composite blocks, causal attention."""
    return char_transformer(vocab, LENGTH, width=width, heads=heads, depth=2)


def digits_cnn_bn():
        return nn.Net([nn.Conv2D(1, 16, 3, padding=1, bias=False), nn.BatchNorm(16), nn.ReLU(),
                   nn.Conv2D(16, 32, 3, padding=1, bias=False), nn.BatchNorm(32), nn.ReLU(),
                   nn.MaxPool2D(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
                   nn.Linear(64, 10)])


def batches(name):
    rng = np.random.default_rng(0)
    if name == "mlp":
        return [(rng.normal(size=(32, 16)).astype(np.float32), rng.integers(0, 8, 32))
                for _ in range(STEPS)]
    if name == "cnn":
        x, y = load_digits(return_X_y=True)
        x = (x / 16).astype(np.float32).reshape(-1, 1, 8, 8)
        return [(x[i * 32:(i + 1) * 32], y[i * 32:(i + 1) * 32]) for i in range(STEPS)]
    ids = rng.integers(0, 16, size=(STEPS, 16, LENGTH + 1))
    return [(row[:, :-1], row[:, 1:]) for row in ids]


MODELS = {
    "mlp": lambda: nn.Net([nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                           nn.Linear(64, 8)]),
    "cnn": digits_cnn_bn,
    "transformer": transformer,
}


def train_steps(net, mesh, shardings, data):
    """STEPS of make_step's step with SGD and momentum; on one device when mesh is None.

    Not Adam: it divides each gradient by its own magnitude, so a param whose gradient is
    zero up to rounding (attention's key bias) would take full-size steps of noise."""
    opt = optim.sgd(0.1, momentum=0.9)
    step = train.make_step(net, losses.softmax_cross_entropy, opt)
    key = jax.random.key(0)
    if mesh is None:
        params = jax.jit(net.init)(key)
        place = lambda batch: batch  # noqa: E731
    else:
        params = jax.jit(net.init, out_shardings=shardings)(key)
        place = lambda batch: parallel.shard_batch(mesh, batch)  # noqa: E731
    opt_state = opt.init(params)
    state = net.init_state() if net.stateful else None
    for i, batch in enumerate(data):
        k = jax.random.fold_in(key, i)
        if net.stateful:
            params, state, opt_state, _ = step(params, state, opt_state, place(batch), k)
        else:
            params, opt_state, _ = step(params, opt_state, place(batch), k)
    return params, opt_state


@functools.cache
def one_device(model):
    """The params after STEPS on one device: the reference of every layout, computed once."""
    with jax.default_matmul_precision("highest"):
        return train_steps(MODELS[model](), None, None, batches(model))[0]


# Every model on every layout; the test command runs the MLP on all three and the CNN and
# the transformer on the 2-D mesh (both axes at once), the other four under `pytest -m full`.
IN_THE_TEST_COMMAND = {("mlp", layout) for layout in LAYOUTS} | {("cnn", "fsdp+tensor"),
                                                                 ("transformer", "fsdp+tensor")}


@pytest.mark.parametrize("model, layout", [
    pytest.param(model, layout, marks=() if (model, layout) in IN_THE_TEST_COMMAND
                 else pytest.mark.full) for model in MODELS for layout in LAYOUTS])
def test_sharded_step_equals_one_device(model, layout):
    axes, keywords = LAYOUTS[layout]
    net, data = MODELS[model](), batches(model)
    mesh = parallel.make_mesh(**axes)
    shardings = parallel.param_shardings(net, mesh, **keywords)
    with jax.default_matmul_precision("highest"):  # exact on TF32 accelerators too
        want = one_device(model)
        got, opt_state = train_steps(net, mesh, shardings, data)
    chex.assert_trees_all_close(got, want, rtol=2e-4, atol=2e-5)
    # The params stay split through the steps (XLA may split a norm's scale along with
    # the channels around it, never gather a param), and the optimiser state follows them.
    initial = jax.jit(net.init, out_shardings=shardings)(jax.random.key(0))
    assert held(got) <= held(initial) < total(initial)
    assert laid_out_as(opt_state["trace"], jax.tree.map(lambda a: a.sharding, got))


def laid_out_as(tree, shardings):
    return all(jax.tree.leaves(jax.tree.map(
        lambda a, s: a.sharding.is_equivalent_to(s, a.ndim), tree, shardings)))


def held(tree):
    return max(parallel.bytes_per_device(tree).values())


def total(tree):
    return sum(leaf.nbytes for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_device_holds_about_its_share(layout):
    axes, keywords = LAYOUTS[layout]
    net = transformer(vocab=64, width=64)
    mesh = parallel.make_mesh(**axes)
    shardings = parallel.param_shardings(net, mesh, **keywords)
    params = jax.jit(net.init, out_shardings=shardings)(jax.random.key(0))
    opt_state = optax.adam(1e-3).init(params)
    tree = (params, opt_state)
    share = 1 / np.prod(list(mesh.shape.values())) if "fsdp" in keywords else 1 / mesh.shape[
        "model"]
    # Norm scales and biases split less evenly: within 10% of the ideal share.
    assert held(tree) <= 1.1 * share * total(tree), (held(tree), total(tree))


def test_tensor_axes_split_attention_by_heads_and_mlp_column_then_row():
    net = transformer(vocab=64, width=64)
    mesh = parallel.make_mesh(data=2, model=4)
    spec = jax.tree.map(lambda s: s.spec, parallel.param_shardings(net, mesh, tensor="model"))
    block = spec["blocks"][0]
    assert block["attn"]["q"] == {"W": P(None, "model"), "b": P("model")}
    assert block["attn"]["o"] == {"W": P("model", None), "b": P(None)}
    assert block["mlp"][0] == {"W": P(None, "model"), "b": P("model")}
    assert block["mlp"][2] == {"W": P("model", None), "b": P(None)}
    assert block["norm1"] == {"scale": P(None), "bias": P(None)}
    assert spec["tokens"] == {"W": P("model", None)}


def test_fsdp_splits_the_largest_divisible_axis_and_replicates_the_rest():
    net = nn.Net([nn.Conv2D(3, 16, 3), nn.Linear(5, 24), nn.PReLU(3)])
    mesh = parallel.make_mesh(data=8)
    spec = jax.tree.map(lambda s: s.spec, parallel.param_shardings(net, mesh, fsdp="data"))
    assert spec[0] == {"W": P("data", None, None, None), "b": P("data")}
    assert spec[1] == {"W": P(None, "data"), "b": P("data")}
    assert spec[2] == {"a": P(None)}  # 3 is not divisible by 8
    replicated = parallel.param_shardings(net, mesh)
    assert all(s.is_fully_replicated for s in jax.tree.leaves(replicated))


def test_sharded_layout_survives_a_user_written_step():
    net = MODELS["mlp"]()
    mesh = parallel.make_mesh(data=4, model=2)
    shardings = parallel.param_shardings(net, mesh, fsdp="data", tensor="model")
    params = jax.jit(net.init, out_shardings=shardings)(jax.random.key(1))
    opt = optim.sgd(0.1, momentum=0.9)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        grads = jax.grad(lambda p: losses.softmax_cross_entropy(net.apply(p, x), y))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    x, y = parallel.shard_batch(mesh, batches("mlp")[0])
    new, _ = step(params, opt_state, x, y)
    assert laid_out_as(new, shardings)
    assert isinstance(new[0]["W"].sharding, NamedSharding)
    assert jnp.all(jnp.isfinite(new[0]["W"]))


@pytest.mark.parametrize("axes, message", [
    ({}, "at least one named axis"),
    ({"data": 3}, "multiply to 3, but there are 8 devices"),
    ({"data": 0}, "positive int size"),
    ({"data": 4.0, "model": 2}, "positive int size"),
])
def test_make_mesh_refuses_bad_axes(axes, message):
    with pytest.raises(ArgumentError, match=message):
        parallel.make_mesh(**axes)


def test_param_shardings_names_a_missing_or_repeated_axis():
    mesh = parallel.make_mesh(data=8)
    net = MODELS["mlp"]()
    with pytest.raises(ArgumentError, match=r"tensor='model' is not an axis of the mesh; "
                                            r"its axes are \['data'\]"):
        parallel.param_shardings(net, mesh, tensor="model")
    with pytest.raises(ArgumentError, match="must be different mesh axes"):
        parallel.param_shardings(net, mesh, fsdp="data", tensor="data")


@pytest.mark.parametrize("layer, expected", [
    (nn.Conv1D(4, 16, 3), {"W": P("model", None, None), "b": P("model")}),
    (nn.ConvTranspose2D(4, 16, 3), {"W": P(None, "model", None, None), "b": P("model")}),
    (nn.LSTM(8, 16), {"W_ih": P(None, "model"), "W_hh": P(None, "model"),
                      "b_ih": P("model"), "b_hh": P("model")}),
    (nn.GRU(8, 16, bias=False), {"W_ih": P(None, "model"), "W_hh": P(None, "model")}),
    (nn.MultiHeadAttention(16, 4, bias=False), {name: {"W": P(*axes)} for name, axes in (
        ("q", (None, "model")), ("k", (None, "model")), ("v", (None, "model")),
        ("o", ("model", None)))}),
    (nn.Embedding(32, 8), {"W": P("model", None)}),
    (nn.Linear(16, 4, bias=False), {"W": P("model", None)}),
    (nn.GroupNorm(2, 16), {"scale": P(None), "bias": P(None)}),
    (nn.MixedPrecision(nn.Linear(4, 16)), {"W": P(None, "model"), "b": P("model")}),
])
def test_every_layer_family_declares_its_tensor_axes(layer, expected):
    mesh = parallel.make_mesh(data=2, model=4)
    spec = jax.tree.map(lambda s: s.spec, parallel.param_shardings(layer, mesh, tensor="model"))
    assert spec == expected


def test_a_declared_axis_the_mesh_does_not_divide_stays_whole():
    mesh = parallel.make_mesh(model=8)
    spec = parallel.param_shardings(nn.Linear(4, 12), mesh, tensor="model")
    assert all(s.is_fully_replicated for s in jax.tree.leaves(spec))


def test_optimiser_state_follows_the_params_eagerly_at_once_and_jitted_after_a_step():
    net = MODELS["mlp"]()
    mesh = parallel.make_mesh(data=8)
    shardings = parallel.param_shardings(net, mesh, fsdp="data")
    opt = optax.adam(1e-3)
    step = train.make_step(net, losses.softmax_cross_entropy, opt)
    batch = parallel.shard_batch(mesh, batches("mlp")[0])
    eager = opt.init(jax.jit(net.init, out_shardings=shardings)(jax.random.key(0)))
    assert held(eager) < 0.2 * total(eager)  # never whole on a device
    params = jax.jit(net.init, out_shardings=shardings)(jax.random.key(0))
    jitted = jax.jit(opt.init)(params)
    assert held(jitted) == total(jitted)  # XLA places new zeros whole on every device ...
    _, jitted, _ = step(params, jitted, batch, None)
    assert held(jitted) < 0.2 * total(jitted)  # ... until the first step lays them out


def test_a_users_layer_declares_its_axes_by_name_and_composites_gather_them():
    """A leaf declares axes by param name or path, never a tree mirroring init's: a name
    ends any path (every cell's ``W``), an undeclared param stays whole, and a name the
    instance does not create declares nothing. Composites (and their own nn.Param arrays)
    follow their sub-layers' declarations."""

    class TwoTables(nn.Layer):
        def init(self, key):
            return {"left": {"W": jnp.zeros((8, 4))}, "right": {"W": jnp.zeros((8, 4)),
                                                                "scale": jnp.ones(4)}}

        def tensor_axes(self):
            return {"W": 0, "right.W": 1, "bias": 0}  # "right.W" wins over "W"; no bias

        def apply(self, params, x, *, key=None, train=False):
            return x

    class Model(nn.Composite):
        tables: nn.Layer
        head: nn.Layer
        gate: nn.Layer

        def forward(self, call, x):
            return call("head", call("tables", x)) * call.param("gate")

    mesh = parallel.make_mesh(data=2, model=4)
    model = Model(TwoTables(), nn.Linear(4, 8), nn.Param((8,)))
    spec = jax.tree.map(lambda s: s.spec, parallel.param_shardings(model, mesh, tensor="model"))
    assert spec == {"tables": {"left": {"W": P("model", None)},
                               "right": {"W": P(None, "model"), "scale": P(None)}},
                    "head": {"W": P(None, "model"), "b": P("model")}, "gate": P(None)}
