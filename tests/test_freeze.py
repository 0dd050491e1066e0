"""Freezing by path: frozen params stay bit-unchanged under any optimiser, the others train,
and the compiled step does no weight-gradient work for frozen layers."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from minitorch import freeze, losses, nn, optim, train
from minitorch.errors import ArgumentError
from minitorch.fit import fit

LOSS = losses.softmax_cross_entropy


def block_net():
    return nn.Net([nn.Linear(4, 8), nn.ReLU(),
                   nn.Residual(nn.Net([nn.LayerNorm(8), nn.Linear(8, 8)])), nn.Linear(8, 3)])


def batch(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray((x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1))


@pytest.mark.parametrize("opt", [optim.sgd(0.1, momentum=0.9, weight_decay=1e-2),
                                 optax.adamw(1e-2, weight_decay=0.1)],
                         ids=["sgd+momentum+wd", "adamw"])
@pytest.mark.parametrize("frozen", [["0"], ["2.1"], ["0", "3.b"]])
def test_frozen_params_stay_bit_unchanged_and_the_rest_train(opt, frozen):
    net = block_net()
    params = net.init(jax.random.key(0))
    before = jax.tree.map(np.asarray, params)
    step = train.make_step(net, LOSS, opt, frozen=frozen, donate=False)
    opt_state = opt.init(params)               # the plain optimiser's state fits
    for i in range(5):
        params, opt_state, _ = step(params, opt_state, batch(seed=i), None)
    is_frozen = freeze.mask(params, frozen)
    for f, a, b in zip(jax.tree.leaves(is_frozen), jax.tree.leaves(before),
                       jax.tree.leaves(params)):
        if f:
            assert np.asarray(b).tobytes() == a.tobytes()      # bit-unchanged
        else:
            assert not np.array_equal(a, b)


def test_optax_masked_is_not_freezing_but_this_is():
    """What a new user reached for: optax.masked passes masked gradients through."""
    net = block_net()
    params = net.init(jax.random.key(0))
    x, y = batch()
    grads = jax.grad(lambda p: LOSS(net.apply(p, x), y))(params)
    labels = jax.tree.map(lambda f: not f, freeze.mask(params, ["0"]))
    masked = optax.masked(optax.sgd(0.1), labels)
    updates, _ = masked.update(grads, masked.init(params), params)
    assert np.any(np.asarray(updates[0]["W"]) != 0)           # the "frozen" layer moves
    frozen = freeze.optimizer(optax.sgd(0.1), ["0"])
    updates, _ = frozen.update(grads, frozen.init(params), params)
    assert not np.any(np.asarray(updates[0]["W"]))


def test_frozen_layers_cost_no_weight_gradient_products():
    net = nn.Net([nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3)])
    params = net.init(jax.random.key(0))
    x, y = jax.random.normal(jax.random.key(1), (16, 64)), jnp.zeros(16, jnp.int32)
    opt = optim.sgd(0.1)

    def dots(frozen):
        update = train.make_update(net, LOSS, opt, frozen=frozen)
        hlo = jax.jit(update).lower(params, None, opt.init(params), (x, y), None).compile()
        return hlo.as_text().count(" dot(")

    # 3 forward products; backward: 3 weight gradients and 2 input gradients
    assert dots([]) == 8
    assert dots(["4"]) == 7          # the last layer's weight gradient is gone
    # only layer 4's weight gradient: with 0 and 2 frozen nothing needs an input gradient
    assert dots(["0", "2"]) == 4


def fit_frozen(net, frozen):
    """The net's initial params and those after 2 epochs of fit with ``frozen``."""
    params = net.init(jax.random.key(0))
    trained, _, _ = fit(net, LOSS, optim.sgd(0.1, momentum=0.9), batch(64), epochs=2,
                        batch_size=16, progress=False, params=jax.tree.map(jnp.copy, params),
                        frozen=frozen)
    return params, trained


def test_fit_freezes_by_path_and_a_bad_path_is_named():
    net = block_net()
    params, trained = fit_frozen(net, ["2"])
    x, y = batch(64)
    chex.assert_trees_all_equal(trained[2], params[2])
    assert not np.array_equal(trained[0]["W"], params[0]["W"])
    with pytest.raises(ArgumentError, match=r"freeze: no params under path '5'; the params' "
                                            r"paths start with \['0', '2', '3'\]"):
        train.make_step(net, LOSS, optim.sgd(0.1), frozen=["5"])(
            params, optim.sgd(0.1).init(params), (x, y), None)
    with pytest.raises(ArgumentError, match="write \\['0'\\]"):
        freeze.mask(params, "0")


def test_trainable_is_the_inverse_of_frozen():
    net = block_net()
    params = net.init(jax.random.key(0))
    opt = optim.sgd(0.1, momentum=0.9)
    x, y = batch()
    by_trainable = train.make_step(net, LOSS, opt, trainable=["3"], donate=False)
    by_frozen = train.make_step(net, LOSS, opt, frozen=["0", "2"], donate=False)
    a, _, _ = by_trainable(params, opt.init(params), (x, y), None)
    b, _, _ = by_frozen(params, opt.init(params), (x, y), None)
    chex.assert_trees_all_equal(a, b)
    assert np.asarray(a[0]["W"]).tobytes() == np.asarray(params[0]["W"]).tobytes()
    assert not np.array_equal(a[3]["W"], params[3]["W"])
    tuned, _, _ = fit(net, LOSS, opt, (np.asarray(x), np.asarray(y)), epochs=2, batch_size=8,
                      params=params, trainable=["3"], progress=False)
    chex.assert_trees_all_equal(tuned[:3], params[:3])
    with pytest.raises(ArgumentError, match="make_step: give frozen= or trainable="):
        train.make_step(net, LOSS, opt, frozen=["0"], trainable=["3"])
    with pytest.raises(ArgumentError, match=r"fit: trainable must be a list of paths"):
        fit(net, LOSS, opt, (x, y), epochs=1, batch_size=8, trainable="3", progress=False)
    with pytest.raises(ArgumentError, match="no params under path '9'"):
        train.make_step(net, LOSS, opt, trainable=["9"])(params, opt.init(params), (x, y),
                                                         None)


def repeat_net(stacked=True):
    """A Net around three residual copies: stacked in an nn.Repeat, or a Net of copies."""
    block = nn.Residual(nn.Net([nn.LayerNorm(8), nn.Linear(8, 8)]))
    middle = nn.Repeat(block, 3) if stacked else nn.Net([block] * 3)
    return nn.Net([nn.Linear(4, 8), middle, nn.Linear(8, 3)])


def test_a_repeat_copy_is_frozen_by_its_path_alone():
    net = repeat_net()  # copies' params: [LayerNorm's, Linear's], stacked on a leading 3
    params = net.init(jax.random.key(0))
    is_frozen = freeze.mask(params, ["1.1"], net)  # copy 1 (with the model: layer paths)
    np.testing.assert_array_equal(is_frozen[1][1]["W"], [False, True, False])
    np.testing.assert_array_equal(is_frozen[1][0]["scale"], [False, True, False])
    assert is_frozen[0]["W"] is False
    assert freeze.mask(params, ["1"], net)[1][1]["W"] is True      # every copy: one bool
    nested = freeze.mask(params, freeze.AllBut(("1.2.0",)), net)    # copy 2's LayerNorm
    np.testing.assert_array_equal(nested[1][0]["scale"], [True, True, False])
    assert nested[1][1]["W"] is True
    # Without the model, paths are the params tree's: "1.1" is every copy's Linear.
    assert freeze.mask(params, ["1.1"])[1][1]["W"] is True
    with pytest.raises(ArgumentError, match=r"no params under path '1.2'.*a copy of an "
                                            r"nn.Repeat is found only with the model"):
        freeze.mask(params, ["1.2"])
    with pytest.raises(ArgumentError, match=r"no params under path '1.3'"):
        freeze.mask(params, ["1.3"], net)


@pytest.mark.parametrize("frozen, trainable", [(["1.1", "2.b"], None), ((), ["1.2", "0"])])
def test_freezing_repeat_copies_trains_as_the_same_net_of_copies(frozen, trainable):
    """make_step with copies frozen: the frozen rows stay bit-unchanged, and every param
    equals what the same freezing of a Net of copies gives."""
    opt = optim.sgd(0.1, momentum=0.9, weight_decay=1e-2)
    stacked, chain = repeat_net(), repeat_net(stacked=False)
    params = stacked.init(jax.random.key(0))
    rows = [params[0], [jax.tree.map(lambda a, i=i: a[i], params[1]) for i in range(3)],
            params[2]]
    results = []
    for net, p in ((stacked, params), (chain, rows)):
        step = train.make_step(net, LOSS, opt, frozen=frozen, trainable=trainable,
                               donate=False)
        opt_state = opt.init(p)
        for i in range(3):
            p, opt_state, _ = step(p, opt_state, batch(seed=i), None)
        results.append(p)
    got, want = results
    unstacked = [got[0], [jax.tree.map(lambda a, i=i: a[i], got[1]) for i in range(3)], got[2]]
    chex.assert_trees_all_close(unstacked, want, rtol=1e-5, atol=1e-6)
    kept = 1 if frozen else 0  # a copy whose rows must not move; copy 2 trains in both
    for before, after in zip(jax.tree.leaves(params[1]), jax.tree.leaves(got[1])):
        assert np.asarray(after[kept]).tobytes() == np.asarray(before[kept]).tobytes()
        assert not np.array_equal(after[2], before[2])


def test_fit_freezes_a_repeat_copy():
    params, trained = fit_frozen(repeat_net(), ["1.0"])
    for before, after in zip(jax.tree.leaves(params[1]), jax.tree.leaves(trained[1])):
        np.testing.assert_array_equal(after[0], before[0])          # copy 0 frozen
        assert not np.array_equal(after[1:], before[1:])             # copies 1, 2 train
