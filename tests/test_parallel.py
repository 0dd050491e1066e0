"""A user-written train step gives the same params on 1 device, under pmap and under sharded jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from minitorch import losses, nn, optim

# 8 virtual CPU devices; slow: 8-device pmap and sharded programs
pytestmark = [pytest.mark.cpu_only, pytest.mark.slow]
DEVICES = 8
STEPS = 5


def nets():
    return {
        "mlp": (nn.Net([nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 4)]), (6,)),
        "cnn": (nn.Net([nn.Conv2D(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2),
                        nn.Flatten(), nn.Linear(4 * 4 * 4, 4)]), (1, 8, 8)),
    }


def make_step(net, opt, axis_name=None):
    """The step a user writes: value_and_grad of a loss, (pmean), an optax update."""

    def loss_fn(params, x, y):
        return losses.softmax_cross_entropy(net.apply(params, x), y)

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        if axis_name is not None:
            grads = jax.lax.pmean(grads, axis_name)
            loss = jax.lax.pmean(loss, axis_name)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


@pytest.fixture(scope="module", autouse=True)
def eight_devices():
    if jax.device_count() < DEVICES:
        pytest.fail(f"needs {DEVICES} devices; conftest sets XLA_FLAGS before jax is imported, "
                    f"found {jax.device_count()}")


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_pmap_and_sharded_jit_match_one_device(name):
    net, in_shape = nets()[name]
    opt = optim.sgd(0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(32, *in_shape)).astype(np.float32),
                rng.integers(0, 4, size=32)) for _ in range(STEPS)]
    params0 = net.init(jax.random.key(0))

    # one device
    step = jax.jit(make_step(net, opt))
    params, state = params0, opt.init(params0)
    single_losses = []
    for x, y in batches:
        params, state, loss = step(params, state, x, y)
        single_losses.append(float(loss))
    single = params

    # pmap: replicate params, split the global batch into 8 shards, pmean the grads
    pstep = jax.pmap(make_step(net, opt, "batch"), axis_name="batch")
    replicate = functools.partial(jax.tree.map, lambda a: jnp.broadcast_to(a, (DEVICES, *a.shape)))
    params, state = replicate(params0), replicate(opt.init(params0))
    pmap_losses = []
    for x, y in batches:
        params, state, loss = pstep(params, state, x.reshape(DEVICES, -1, *in_shape),
                                    y.reshape(DEVICES, -1))
        pmap_losses.append(float(loss[0]))
    pmapped = jax.tree.map(lambda a: a[0], params)
    for leaf in jax.tree.leaves(params):  # every replica holds the same params
        np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape))

    # jit over a Mesh: shard the batch axis, replicate params; XLA inserts the all-reduce
    mesh = jax.make_mesh((DEVICES,), ("data",))
    data, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    sstep = jax.jit(make_step(net, opt))
    params = jax.device_put(params0, replicated)
    state = jax.device_put(opt.init(params0), replicated)
    sharded_losses = []
    for x, y in batches:
        params, state, loss = sstep(params, state, jax.device_put(x, data),
                                    jax.device_put(y, data))
        sharded_losses.append(float(loss))
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(params))

    np.testing.assert_allclose(pmap_losses, single_losses, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5, atol=1e-6)
    for a, b, c in zip(jax.tree.leaves(single), jax.tree.leaves(pmapped),
                       jax.tree.leaves(params)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-5)
    # and training moved the params: the agreement is not the trivial one
    assert not np.allclose(jax.tree.leaves(single)[0], jax.tree.leaves(params0)[0])


def test_library_steps_with_batchnorm_agree_on_one_device_pmap_and_mesh():
    from minitorch import parallel, train

    def net(axis_name=None):
        return nn.Net([nn.Conv2D(1, 4, 3, padding=1), nn.BatchNorm(4, axis_name=axis_name),
                       nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(), nn.Linear(64, 4)])

    opt = optim.sgd(0.1, momentum=0.9)
    rng = np.random.default_rng(1)
    batches = [(rng.normal(size=(32, 1, 8, 8)).astype(np.float32), rng.integers(0, 4, 32))
               for _ in range(STEPS)]
    params0, state0 = net().init(jax.random.key(0)), net().init_state()

    step = train.make_step(net(), losses.softmax_cross_entropy, opt, donate=False)
    single = (params0, state0, opt.init(params0))
    for batch in batches:
        *single, metrics = step(*single, batch, None)

    pstep = jax.pmap(train.make_step(net("batch"), losses.softmax_cross_entropy, opt,
                                     axis_name="batch", jit=False), axis_name="batch")
    replicated = parallel.replicate((params0, state0, opt.init(params0)))
    for batch in batches:
        *replicated, pmetrics = pstep(*replicated, parallel.split(batch), None)
    np.testing.assert_allclose(pmetrics["loss"], np.full(DEVICES, metrics["loss"]), rtol=1e-5)

    mesh = parallel.data_mesh()
    sharded = parallel.replicate_on(mesh, (params0, state0, opt.init(params0)))
    for batch in batches:
        *sharded, smetrics = step(*sharded, parallel.shard_batch(mesh, batch), None)
    np.testing.assert_allclose(smetrics["loss"], metrics["loss"], rtol=1e-5)

    for name, tree in (("pmap", parallel.unreplicate(replicated)), ("mesh", sharded)):
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(tree)):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5, err_msg=name)


def test_split_needs_a_divisible_batch():
    from minitorch import parallel

    with pytest.raises(ValueError, match=r"split: the batch axis \(10\) must be divisible"):
        parallel.split(jnp.ones((10, 2)), 8)
