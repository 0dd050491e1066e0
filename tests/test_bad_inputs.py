"""A catalogue of user mistakes: each raises an error of a fitting type, at trace time, whose
message names the place (layer index and type, or function and argument), and what was
expected and received."""

import jax
import jax.numpy as jnp
import pytest

from minitorch import losses, nn, optim
from minitorch.errors import DTypeError, KeyArgError, ParamsError, ShapeError

KEY = jax.random.key(0)


def mlp():
    return nn.Net([nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)])


def cnn():
    return nn.Net([nn.Conv2D(1, 4, 3), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
                   nn.Linear(4 * 3 * 3, 2)])


def apply(net, x, **kwargs):
    """Run under jit: every check must fire at trace time."""
    params = net.init(KEY)
    return jax.jit(lambda p, v: net.apply(p, v, **kwargs))(params, x)


CASES = {
    # --- shapes and ranks into layers -----------------------------------------------------
    "linear wrong features": (lambda: apply(mlp(), jnp.ones((2, 5))), ShapeError,
                              r"layer 0 \(Linear\): expected input of shape \(\.\.\., 4\), "
                              r"received \(2, 5\)"),
    "linear scalar input": (lambda: apply(mlp(), jnp.ones(())), ShapeError,
                            r"layer 0 \(Linear\).*received \(\)"),
    "conv wrong channels": (lambda: apply(cnn(), jnp.ones((2, 3, 8, 8))), ShapeError,
                            r"layer 0 \(Conv2D\): expected input of shape \(N, 1, H, W\), "
                            r"received \(2, 3, 8, 8\)"),
    "conv missing batch axis": (lambda: apply(cnn(), jnp.ones((1, 8, 8))), ShapeError,
                                r"layer 0 \(Conv2D\).*received \(1, 8, 8\)"),
    "conv image smaller than kernel": (lambda: apply(cnn(), jnp.ones((2, 1, 2, 2))), ShapeError,
                                       r"layer 0 \(Conv2D\): expected input of spatial size"),
    "flatten size mismatch downstream": (lambda: apply(cnn(), jnp.ones((2, 1, 10, 10))),
                                         ShapeError, r"layer 4 \(Linear\): expected input of "
                                         r"shape \(\.\.\., 36\), received \(2, 64\)"),
    "pool on a 2-D input": (lambda: apply(nn.Net([nn.MaxPool2D(2)]), jnp.ones((4, 4))),
                            ShapeError, r"layer 0 \(MaxPool2D\): expected input of shape "
                            r"\(N, C, H, W\), received \(4, 4\)"),
    "pool window larger than image": (lambda: apply(nn.AvgPool2D(5), jnp.ones((1, 1, 3, 3))),
                                      ShapeError, "AvgPool2D: expected input of spatial size"),
    "layernorm wrong trailing shape": (lambda: apply(nn.LayerNorm((3, 4)), jnp.ones((2, 4, 3))),
                                       ShapeError, r"LayerNorm: expected input of shape "
                                       r"\(\.\.\., 3, 4\), received \(2, 4, 3\)"),
    "prelu channels mismatch": (lambda: apply(nn.PReLU(3), jnp.ones((2, 4))), ShapeError,
                                r"PReLU: expected input of shape \(N, 3, \.\.\.\)"),
    "softmax axis out of range": (lambda: apply(nn.Softmax(axis=2), jnp.ones((2, 3))),
                                  ShapeError, "Softmax: expected input with axis 2"),
    "reshape wrong size": (lambda: apply(nn.Reshape(3, 3), jnp.ones((2, 8))), ShapeError,
                           r"Reshape: expected .* 9 elements"),
    "nested net path": (lambda: apply(nn.Net([mlp(), nn.Net([nn.Linear(2, 1)])]),
                                      jnp.ones((1, 4))),
                        ShapeError, r"layer 1 \(Net\) > layer 0 \(Linear\): expected input of "
                        r"shape \(\.\.\., 2\), received \(1, 3\)"),
    # --- dtypes ---------------------------------------------------------------------------
    "ints into linear": (lambda: apply(mlp(), jnp.ones((2, 4), jnp.int32)), DTypeError,
                         r"layer 0 \(Linear\): expected a floating-point input, received int32"),
    "bools into conv": (lambda: apply(cnn(), jnp.ones((2, 1, 8, 8), bool)), DTypeError,
                        r"layer 0 \(Conv2D\): expected a floating-point input, received bool"),
    "floats into embedding": (lambda: apply(nn.Embedding(5, 2), jnp.ones(3)), DTypeError,
                              "Embedding: expected integer ids"),
    # --- params ---------------------------------------------------------------------------
    "params of another net": (lambda: jax.jit(mlp().apply)(
        nn.Net([nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)]).init(KEY), jnp.ones((1, 4))),
        ParamsError, r"layer 0 \(Linear\): params\['W'\] expected shape \(4, 8\), "
                     r"received \(4, 6\)"),
    "params of a shorter net": (lambda: mlp().apply(mlp().init(KEY)[:2], jnp.ones((1, 4))),
                                ParamsError, "Net: expected params as a list of 3 entries"),
    "params as a dict": (lambda: mlp().apply({"W": 1}, jnp.ones((1, 4))), ParamsError,
                         "received dict"),
    "missing bias": (lambda: nn.Linear(4, 2).apply({"W": jnp.ones((4, 2))}, jnp.ones((1, 4))),
                     ParamsError, "Linear: params structure mismatch"),
    "params for a parameterless layer": (lambda: nn.ReLU().apply({"a": 1.0}, jnp.ones(2)),
                                         ParamsError, "ReLU: params structure mismatch"),
    # --- keys -----------------------------------------------------------------------------
    "int seed as key": (lambda: mlp().init(42), KeyArgError, "Net: init expected a PRNG key"),
    "float array as key": (lambda: nn.Linear(2, 2).init(jnp.ones(2)), KeyArgError,
                           r"Linear: init expected a PRNG key .* received float32\[2\]"),
    "batch of keys": (lambda: mlp().init(jax.random.split(KEY, 3)), KeyArgError,
                      r"a batch of keys of shape \(3,\)"),
    "dropout training without key": (
        lambda: apply(nn.Net([nn.Linear(4, 4), nn.Dropout(0.1)]), jnp.ones((1, 4)), train=True),
        KeyArgError, r"layer 1 \(Dropout\): expected a PRNG key with train=True"),
    # --- constructor arguments ------------------------------------------------------------
    "negative features": (lambda: nn.Linear(-1, 2), ValueError,
                          "Linear: in_features must be a positive int, received -1"),
    "float channels": (lambda: nn.Conv2D(1.5, 2, 3), ValueError,
                       "Conv2D: in_channels must be a positive int"),
    "groups not dividing": (lambda: nn.Conv2D(3, 4, 3, groups=2), ValueError,
                            "Conv2D: groups=2 must divide in_channels=3"),
    "bad padding string": (lambda: nn.Conv2D(1, 1, 3, padding="full"), ValueError,
                           "Conv2D: padding must be an int, a pair, 'same' or 'valid'"),
    "zero kernel": (lambda: nn.MaxPool2D(0), ValueError,
                    "MaxPool2D: kernel_size must be a positive int or a pair"),
    "pool padding over half kernel": (lambda: nn.MaxPool2D(2, padding=2), ValueError,
                                      "MaxPool2D: padding 2 must be at most half"),
    "dropout rate 1": (lambda: nn.Dropout(1.0), ValueError, r"Dropout: rate must be in \[0, 1\)"),
    "negative dropout rate": (lambda: nn.Dropout(-0.2), ValueError, "Dropout: rate must be in"),
    "unknown init": (lambda: nn.Linear(2, 2, init="kaiming"), ValueError,
                     "Linear: unknown initialiser 'kaiming'"),
    "function in a net": (lambda: nn.Net([nn.Linear(2, 2), jax.nn.relu]), TypeError,
                          "Net: layer 1 must be a minitorch layer"),
    # --- losses ---------------------------------------------------------------------------
    "mse broadcasting trap": (lambda: losses.mse(jnp.ones((4, 1)), jnp.ones(4)), ShapeError,
                              r"mse: expected target of the same shape as pred \(4, 1\)"),
    "float class ids": (lambda: losses.softmax_cross_entropy(jnp.ones((4, 3)), jnp.ones(4)),
                        ShapeError, "integer class ids need an integer dtype"),
    "labels of the wrong length": (lambda: losses.softmax_cross_entropy(
        jnp.ones((4, 3)), jnp.ones(5, jnp.int32)), ShapeError,
        r"softmax_cross_entropy: expected integer labels of shape \(4,\)"),
    "int logits": (lambda: losses.binary_cross_entropy_with_logits(
        jnp.ones(3, jnp.int32), jnp.ones(3)), DTypeError,
        "binary_cross_entropy_with_logits: expected floating-point logits"),
    "bool targets": (lambda: losses.binary_cross_entropy(jnp.ones(3) / 2, jnp.ones(3, bool)),
                     DTypeError, "binary_cross_entropy: expected floating-point targets"),
    "unknown reduction": (lambda: losses.softmax_cross_entropy(
        jnp.ones((2, 3)), jnp.zeros(2, jnp.int32), reduction="avg"), ValueError,
        "softmax_cross_entropy: reduction must be 'mean', 'sum' or 'none'"),
    # --- optimiser ------------------------------------------------------------------------
    "negative learning rate": (lambda: optim.sgd(-0.1), ValueError, "sgd: learning_rate must be"),
    "momentum above one": (lambda: optim.sgd(0.1, momentum=1.2), ValueError,
                           r"sgd: momentum must be in \[0, 1\)"),
    "nesterov without momentum": (lambda: optim.sgd(0.1, nesterov=True), ValueError,
                                  "sgd: nesterov=True needs momentum > 0"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_mistake_is_explained(name):
    action, error, message = CASES[name]
    with pytest.raises(error, match=message):
        action()


def test_catalogue_is_large():
    assert len(CASES) >= 40
