"""A catalogue of user mistakes: each raises an error of a fitting type, at trace time, whose
message names the place (layer index and type, or function and argument), and what was
expected and received."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minitorch import checkpoint, losses, nn, optim, parallel, train
from minitorch.checkpoint import CheckpointError, CheckpointManager
from minitorch.data import ArrayDataset, DataLoader
from minitorch.errors import DTypeError, IdError, KeyArgError, ParamsError, ShapeError
from minitorch.fit import EarlyStopping, fit
from tests.test_checkpoint import crafted, f32

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
    "dropout rate 1": (lambda: nn.Dropout(1.0), ValueError,
                       r"Dropout: rate must be a finite number in \[0, 1\)"),
    "negative dropout rate": (lambda: nn.Dropout(-0.2), ValueError,
                              r"Dropout: rate must be a finite number in \[0, 1\)"),
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


def step_on(batch, **kwargs):
    net, opt = mlp(), optim.sgd(0.1)
    params = net.init(KEY)
    return train.make_step(net, losses.softmax_cross_entropy, opt, **kwargs)(
        params, opt.init(params), batch, None)


X, Y = jnp.ones((4, 4)), jnp.array([0, 1, 2, 0])


def garbage_checkpoint(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"not a checkpoint")
    return checkpoint.load(path, {"W": jnp.ones(2)})


def mismatched_checkpoint(tmp_path):
    path = checkpoint.save(tmp_path / "c.safetensors", mlp().init(KEY))
    return checkpoint.load(path, nn.Net([nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)]).init(KEY))


CASES.update({
    # --- training steps -------------------------------------------------------------------
    "batch not a pair": (lambda: step_on(X), TypeError,
                         r"make_step: expected batch as a pair \(inputs, targets\), received "
                         r"an array of shape \(4, 4\)"),
    "labels of the wrong length in a step": (lambda: step_on((X, Y[:3])), ShapeError,
                                             r"softmax_cross_entropy: expected integer labels "
                                             r"of shape \(4,\)"),
    "float labels in a step": (lambda: step_on((X, Y.astype(jnp.float32))), ShapeError,
                               "integer class ids need an integer dtype"),
    "NaN inputs, checked step": (lambda: step_on((X.at[1, 2].set(jnp.nan), Y), checked=True),
                                 ValueError, "checked step: the inputs hold 1 NaN or inf"),
    "inf inputs, checked step": (lambda: step_on((X.at[0].set(jnp.inf), Y), checked=True),
                                 ValueError, "checked step: the inputs hold 4 NaN or inf"),
    "class id out of range, checked step": (
        lambda: step_on((X, jnp.array([0, 3, 1, -2])), checked=True), ValueError,
        r"checked step: 2 labels are class ids outside \[0, 3\)"),
    "a function as the net": (lambda: train.make_step(jnp.tanh, losses.mse, optim.sgd(0.1)),
                              TypeError, "make_step: net must be a minitorch layer or None"),
    "checked step under pmap": (lambda: train.make_step(mlp(), losses.mse, optim.sgd(0.1),
                                                        axis_name="b", jit=False, checked=True),
                                ValueError, "checked=True works with jit=True"),
    "pmap batch not divisible": (lambda: parallel.split(jnp.ones((10, 2)), 4), ValueError,
                                 r"split: the batch axis \(10\) must be divisible"),
    # --- data and fit ---------------------------------------------------------------------
    "empty dataset": (lambda: ArrayDataset(np.zeros((0, 3))), ValueError,
                      "ArrayDataset: expected at least one example, received 0"),
    "dataset arrays of different lengths": (lambda: ArrayDataset(np.zeros(3), np.zeros(4)),
                                            ValueError, r"received lengths \[3, 4\]"),
    "loader batch size 0": (lambda: DataLoader(ArrayDataset(np.zeros(5)), 0), ValueError,
                            "DataLoader: batch_size must be a positive int, received 0"),
    "loader batch larger than the data": (
        lambda: DataLoader(ArrayDataset(np.zeros(5)), 8, drop_last=True), ValueError,
        r"DataLoader: batch_size 8 is larger than the dataset \(5 examples\)"),
    "fit batch size 0": (lambda: fit(mlp(), losses.softmax_cross_entropy, optim.sgd(0.1),
                                     (X, Y), epochs=1, batch_size=0), ValueError,
                         r"fit: batch_size must be an int in \[1, 4\]"),
    "fit batch larger than the data": (lambda: fit(mlp(), losses.softmax_cross_entropy,
                                                   optim.sgd(0.1), (X, Y), epochs=1,
                                                   batch_size=5), ValueError,
                                       r"fit: batch_size must be an int in \[1, 4\]"),
    "fit inputs and targets of different lengths": (
        lambda: fit(mlp(), losses.softmax_cross_entropy, optim.sgd(0.1), (X, Y[:3]),
                    epochs=1, batch_size=2), ValueError,
        r"fit: train_data: every array needs the same number of examples \(first axis\); "
        r"fit: train_data\['inputs'\] has 4, fit: train_data\['targets'\] has 3"),
    "early stopping on an unknown metric": (
        lambda: EarlyStopping("val_acc")(0, {"loss": 1.0}, {}), KeyError,
        "EarlyStopping: monitored metric 'val_acc' is not in the logs"),
    "early stopping bad mode": (lambda: EarlyStopping(mode="lowest"), ValueError,
                                "EarlyStopping: mode must be 'min' or 'max'"),
})


class Masked(nn.Composite):
    """A block that declares mask=, inside a net of composites."""

    attn: nn.Layer

    def forward(self, call, x, *, mask=None):
        return call("attn", x, mask=mask)


class Outer(nn.Composite):
    inner: nn.Layer
    blocks: tuple

    def forward(self, call, x):
        return call("blocks.0", call("inner", x, mask=None, lengths=3))


class Arithmetic(nn.Composite):
    f: nn.Layer

    def forward(self, call, x):
        return call("f", x) @ jnp.ones((5, 5))


def decoding_model():
    return nn.Net([nn.Embedding(10, 8), nn.MultiHeadAttention(8, 2, causal=True)])


def past_max_length():
    net = decoding_model()
    params = net.init(KEY)
    _, cache = net.apply(params, jnp.zeros((1, 3), jnp.int32), cache=net.init_cache(1, 4))
    net.apply(params, jnp.zeros((1, 2), jnp.int32), cache=cache)


CASES.update({
    # --- composites as people write them and decoding ------------------------------------
    "keyword a forward does not declare": (
        lambda: apply(nn.Net([Outer(Masked(nn.MultiHeadAttention(4, 1)), (nn.ReLU(),))]),
                      jnp.ones((1, 2, 4))), nn.KeywordError,
        r"layer 0 \(Outer\) > inner \(Masked\): forward\(\) got lengths=, which it does "
        r"not declare; it accepts \['mask'\]"),
    "keyword into a Net": (lambda: apply(mlp(), jnp.ones((2, 4)), mask=None), nn.KeywordError,
                           r"Net: apply\(\) got mask=.*write a Composite"),
    "arithmetic error in forward": (lambda: apply(nn.Net([Arithmetic(nn.ReLU())]),
                                                  jnp.ones((2, 3))), TypeError,
                                    r"layer 0 \(Arithmetic\): TypeError: dot_general"),
    "keywords into a leaf that has none": (
        lambda: apply(nn.Net([Outer(nn.ReLU(), (nn.ReLU(),))]), jnp.ones((1, 2))),
        nn.KeywordError, r"inner \(ReLU\): apply\(\) got lengths=, mask=, which it does not "
        r"declare; it accepts no extra keywords"),
    "call names no sub-layer": (
        lambda: apply(nn.Net([type("Typo", (nn.Composite,), {
            "__annotations__": {"f": nn.Layer},
            "forward": lambda self, call, x: call("g", x)})(nn.ReLU())]), jnp.ones(2)),
        nn.PathError, r"layer 0 \(Typo\): call\('g', \.\.\.\) names no sub-layer; its "
        r"sub-layers are \['f'\]"),
    "mixed sequence field": (lambda: Outer(nn.ReLU(), (nn.ReLU(), 2)), TypeError,
                             r"Outer: field 'blocks' mixes layers and other values"),
    "call.key without a key": (
        lambda: apply(nn.Net([type("Draws", (nn.Composite,), {
            "__annotations__": {"f": nn.Layer},
            "forward": lambda self, call, x: call("f", x) + jax.random.normal(call.key())})(
                nn.ReLU())]), jnp.ones(2)), KeyArgError, r"layer 0 \(Draws\): call.key\(\) "
        r"needs a key"),
    "decoding past max_length": (past_max_length, nn.CacheError,
                                 r"layer 1 \(MultiHeadAttention\): the cache holds 3 of "
                                 r"max_length=4 positions, received 2 more"),
    "cache of another batch size": (
        lambda: decoding_model().apply(decoding_model().init(KEY), jnp.zeros((2, 3), jnp.int32),
                                       cache=decoding_model().init_cache(1, 8)), nn.CacheError,
        r"layer 1 \(MultiHeadAttention\): the cache was built for batch size 1, received a "
        r"batch of 2"),
    "generate from float prompt": (
        lambda: nn.generate(decoding_model(), decoding_model().init(KEY), jnp.ones((1, 2)), 3),
        TypeError, "generate: expected integer prompt ids, received float32"),
    "stacked LSTM initial of one layer": (
        lambda: apply(nn.LSTM(2, 3, num_layers=2), jnp.ones((1, 4, 2)),
                      initial=(jnp.zeros((1, 3)), jnp.zeros((1, 3)))), ShapeError,
        r"LSTM: expected initial h0 of shape \(D \* num_layers, N, H\) = \(2, 1, 3\)"),
    "F1 with (N, 1) labels": (
        lambda: __import__("minitorch.metrics").metrics.F1(3).counts(
            jnp.zeros((4, 3)), jnp.zeros((4, 1), jnp.int32)), ShapeError,
        r"F1: expected targets of shape \(4,\)"),
})



def fit_mlp(data=None, **kwargs):
    kwargs = {"epochs": 1, "batch_size": 2, "progress": False, **kwargs}
    return fit(mlp(), losses.softmax_cross_entropy, optim.sgd(0.1),
               (X, Y) if data is None else data, **kwargs)


class ItemsAsDicts:
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return {"x": np.zeros(3)}


def reused_donated_params():
    net, opt = mlp(), optim.sgd(0.1)
    params = net.init(KEY)
    step = train.make_step(net, losses.softmax_cross_entropy, opt)
    step(params, opt.init(params), (X, Y), None)
    return step(params, opt.init(params), (X, Y), None)


CASES.update({
    # --- fit, evaluate, predict arguments ------------------------------------------------
    "fit epochs 0": (lambda: fit_mlp(epochs=0), ValueError,
                     "fit: epochs must be a positive int, received 0"),
    "fit epochs float": (lambda: fit_mlp(epochs=2.0), TypeError,
                         r"fit: epochs must be a positive int, received 2\.0"),
    "fit seed not an int": (lambda: fit_mlp(seed="0"), TypeError,
                            "fit: seed must be an int, received '0'"),
    "fit telemetry_every 0": (lambda: fit_mlp(telemetry=True, telemetry_every=0), ValueError,
                              "fit: telemetry_every must be a positive int, received 0"),
    "fit net not a layer": (lambda: fit(jnp.tanh, losses.mse, optim.sgd(0.1), (X, Y), epochs=1,
                                        batch_size=2), TypeError,
                            "fit: net must be a minitorch layer, received PjitFunction"),
    "fit empty validation data": (lambda: fit_mlp(val_data=(X[:0], Y[:0])), ValueError,
                                  r"fit: val_data is empty \(0 examples\)"),
    "fit validation data as a loader": (
        lambda: fit_mlp(val_data=DataLoader(ArrayDataset(X, Y), 2)), TypeError,
        "fit: val_data must be .* received a DataLoader"),
    "fit a generator for several epochs": (
        lambda: fit_mlp((b for b in [(X, Y)]), epochs=2), TypeError,
        r"fit: train_data is a single-use iterator \(generator\), which cannot give 2 epochs"),
    "fit data of three arrays": (lambda: fit_mlp((X, Y, Y)), TypeError,
                                 "fit: train_data must be .* received a tuple of 3 items"),
    "fit labels that would wrap": (lambda: fit_mlp((X, np.array([0, 1, 2**32 + 1, 0]))),
                                   ValueError, "fit: train_data targets: int64 values"),
    "evaluate empty data": (lambda: train.evaluate(mlp(), losses.softmax_cross_entropy,
                                                   mlp().init(KEY), (X[:0], Y[:0])), ValueError,
                            "evaluate: data must hold at least one example"),
    "evaluate batch size 0": (lambda: train.evaluate(mlp(), losses.softmax_cross_entropy,
                                                     mlp().init(KEY), (X, Y), batch_size=0),
                              ValueError, "evaluate: batch_size must be a positive int"),
    "predict batch size -1": (lambda: train.predict(mlp(), mlp().init(KEY), X, batch_size=-1),
                              ValueError, "predict: batch_size must be a positive int"),
    "predict empty data": (lambda: train.predict(mlp(), mlp().init(KEY), X[:0]), ValueError,
                           r"predict: x must hold at least one example \(axis 0\), received "
                           r"shape \(0, 4\)"),
    "predict net not a layer": (lambda: train.predict(jnp.tanh, {}, X), TypeError,
                                "predict: net must be a minitorch layer"),
    "step reusing donated params": (reused_donated_params, ValueError,
                                    "step: params holds arrays that were donated to an "
                                    "earlier call"),
    # --- data loader arguments ---------------------------------------------------------
    "loader seed float": (lambda: DataLoader(ArrayDataset(np.zeros(5)), 2, seed=1.5), TypeError,
                          "DataLoader: seed must be an int, received 1.5"),
    "loader prefetch string": (lambda: DataLoader(ArrayDataset(np.zeros(5)), 2, prefetch="2"),
                               TypeError, "DataLoader: prefetch must be a non-negative int"),
    "loader batch size float": (lambda: DataLoader(ArrayDataset(np.zeros(5)), 2.0), TypeError,
                                r"DataLoader: batch_size must be a positive int, received 2\.0"),
    "loader items that are dicts": (lambda: next(iter(DataLoader(ItemsAsDicts(), 2))),
                                    TypeError, r"DataLoader: dataset\[indices\] must return a "
                                               r"tuple of arrays.*returned a dict"),
    # --- hyperparameters -----------------------------------------------------------------
    "padding True": (lambda: nn.Conv2D(1, 2, 3, padding=True), ValueError,
                     "Conv2D: padding must be .* received True"),
    "layernorm eps NaN": (lambda: nn.LayerNorm(4, eps=float("nan")), ValueError,
                          "LayerNorm: eps must be a finite number > 0, received nan"),
    "dropout rate as an array": (lambda: nn.Dropout(jnp.array(0.5)), TypeError,
                                 r"Dropout: rate must be a finite number in \[0, 1\)"),
    "leaky slope as a string": (lambda: nn.LeakyReLU("0.1"), TypeError,
                                "LeakyReLU: negative_slope must be a finite number"),
    "integer params dtype": (lambda: nn.Linear(2, 3, dtype=jnp.int32), TypeError,
                             "Linear: dtype must be a floating-point dtype"),
    "bias as a string": (lambda: nn.Linear(2, 3, bias="False"), TypeError,
                         "Linear: bias must be True or False, received 'False'"),
    "attention dropout NaN": (lambda: nn.MultiHeadAttention(8, 2, dropout=float("nan")),
                              ValueError, "MultiHeadAttention: dropout must be a finite number"),
    # --- values, eagerly -----------------------------------------------------------------
    "class id out of range, eager loss": (
        lambda: losses.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.array([0, 3])), IdError,
        r"softmax_cross_entropy: expected class ids in \[0, 3\), received 1 outside it"),
    "embedding id out of range, eager": (
        lambda: nn.Net([nn.Embedding(3, 2)]).apply(nn.Net([nn.Embedding(3, 2)]).init(KEY),
                                                   jnp.array([5])), IdError,
        r"layer 0 \(Embedding\): expected ids in \[0, 3\)"),
    "embedding id that would wrap": (
        lambda: nn.Embedding(3, 2).apply(nn.Embedding(3, 2).init(KEY), np.array([2**32 + 1])),
        IdError, "Embedding: expected ids in .* max 4294967297"),
    "batchnorm empty training batch": (
        lambda: nn.BatchNorm(3).apply(nn.BatchNorm(3).init(KEY), jnp.zeros((0, 3)),
                                      state=nn.BatchNorm(3).init_state(), train=True),
        ShapeError, "BatchNorm: training needs at least one value per channel"),
})


def hostile_checkpoint(tmp_path):
    path = crafted(tmp_path / "hostile.safetensors", {"W": f32((10**9, 10**6), 0, 8)}, b"\0" * 8)
    return checkpoint.load(path, {"W": jnp.ones(2)})


def unloadable_leaf(tmp_path):
    return checkpoint.save(tmp_path / "c.safetensors", {"names": np.array(["a", "b"])})


def float_step(tmp_path):
    return CheckpointManager(tmp_path / "run").save(1.5, {"w": jnp.ones(2)})


def second_writer(tmp_path):
    first = CheckpointManager(tmp_path / "run")
    first.save(1, {"w": jnp.ones(2)})
    return CheckpointManager(tmp_path / "run").save(2, {"w": jnp.ones(2)})


def resume_with_another_seed(tmp_path):
    manager = CheckpointManager(tmp_path / "run")
    fit_mlp(checkpoint=manager)
    return fit_mlp(epochs=2, seed=1, checkpoint=manager)


# checkpoint cases need a temporary directory
FILE_CASES = {
    "hostile checkpoint header": (hostile_checkpoint, CheckpointError,
                                  r"hostile\.safetensors: .*needs 4000000000000000 bytes"),
    "unloadable leaf": (unloadable_leaf, CheckpointError,
                        r"checkpoint\.save: names has dtype <U1"),
    "manager float step": (float_step, TypeError,
                           r"CheckpointManager: step must be a non-negative int, received 1\.5"),
    "two writers in one directory": (second_writer, CheckpointError,
                                     "run: another CheckpointManager .* is writing"),
    "resume with another seed": (resume_with_another_seed, CheckpointError,
                                 "differs from the one that wrote the checkpoint "
                                 r"\(seed: 0 in the checkpoint, 1 now\)"),
    "garbage checkpoint": (garbage_checkpoint, CheckpointError,
                           r"garbage\.safetensors: unreadable checkpoint"),
    "checkpoint of another net": (mismatched_checkpoint, CheckpointError,
                                  r"0\.W expected float32\[4, 6\], found "
                                  r"float32\[4, 8\]"),
}


@pytest.mark.parametrize("name", sorted(FILE_CASES))
def test_file_mistake_is_explained(name, tmp_path):
    action, error, message = FILE_CASES[name]
    with pytest.raises(error, match=message):
        action(tmp_path)


@pytest.mark.parametrize("name", sorted(CASES))
def test_mistake_is_explained(name):
    action, error, message = CASES[name]
    with pytest.raises(error, match=message):
        action()


def test_catalogue_is_large():
    assert len(CASES) + len(FILE_CASES) >= 40


def test_documented_value_behaviours_without_checks():
    """What jit cannot check, unchecked: NaN marks the bad value instead of a wrong number."""
    assert np.isnan(jax.jit(losses.softmax_cross_entropy)(jnp.zeros((1, 3)), jnp.array([3])))
    emb = nn.Embedding(3, 2)
    assert np.isnan(jax.jit(emb.apply)(emb.init(KEY), jnp.array([5]))).all()
    _, _, metrics = step_on((X.at[0, 0].set(jnp.nan), Y))
    assert np.isnan(metrics["loss"])
