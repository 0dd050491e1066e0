"""Every layer `minitorch.nn` exports, generated from ``nn.__all__``: dtypes (float32 by
default, float64 and bfloat16 honoured, bfloat16 and float16 inputs with float32 params),
jit equal to eager in values and gradients, ``repr`` a call that rebuilds the layer, and
bad constructor arguments raising the library's own error classes.

A new layer in ``nn.__all__`` without an entry in ``EXAMPLES`` fails
``test_every_exported_layer_has_an_example``: none can be left out.
"""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minitorch import nn
from minitorch.errors import ArgumentError, LayerError

# Bases a user subclasses, not layers with an example of their own (each is exercised
# through its subclasses below: Composite in tests/test_composite.py).
BASES = {"Layer", "Container", "Composite", "Wrapper"}


def floats(*shape):
    return ("floats", shape)


def ids(*shape, high):
    return ("ids", shape, high)


# name -> (make(dtype) -> layer, input)
EXAMPLES = {
    "Linear": (lambda dt: nn.Linear(4, 3, dtype=dt), floats(2, 4)),
    "Conv1D": (lambda dt: nn.Conv1D(2, 4, 3, padding=1, groups=2, dtype=dt), floats(2, 2, 6)),
    "Conv2D": (lambda dt: nn.Conv2D(2, 3, 3, padding=1, dtype=dt), floats(2, 2, 5, 5)),
    "Conv3D": (lambda dt: nn.Conv3D(2, 3, 2, dtype=dt), floats(2, 2, 3, 4, 3)),
    "ConvTranspose1D": (lambda dt: nn.ConvTranspose1D(2, 3, 3, stride=2, dtype=dt),
                        floats(2, 2, 4)),
    "ConvTranspose2D": (lambda dt: nn.ConvTranspose2D(2, 4, 3, stride=2, groups=2, dtype=dt),
                        floats(2, 2, 3, 3)),
    "ConvTranspose3D": (lambda dt: nn.ConvTranspose3D(2, 3, 2, stride=2, dtype=dt),
                        floats(1, 2, 2, 2, 3)),
    "MaxPool1D": (lambda dt: nn.MaxPool1D(3, 2, 1), floats(2, 3, 8)),
    "MaxPool2D": (lambda dt: nn.MaxPool2D(2), floats(1, 2, 4, 4)),
    "MaxPool3D": (lambda dt: nn.MaxPool3D(2), floats(1, 2, 4, 4, 2)),
    "AvgPool1D": (lambda dt: nn.AvgPool1D(2), floats(2, 3, 8)),
    "AvgPool2D": (lambda dt: nn.AvgPool2D(3, 1, 1), floats(1, 2, 4, 4)),
    "AvgPool3D": (lambda dt: nn.AvgPool3D(3, 1, 1), floats(1, 2, 3, 3, 3)),
    "Embedding": (lambda dt: nn.Embedding(7, 4, dtype=dt), ids(3, 5, high=7)),
    "LayerNorm": (lambda dt: nn.LayerNorm(4, dtype=dt), floats(2, 3, 4)),
    "RMSNorm": (lambda dt: nn.RMSNorm(4, dtype=dt), floats(2, 3, 4)),
    "GroupNorm": (lambda dt: nn.GroupNorm(2, 4, dtype=dt), floats(2, 4, 3)),
    "BatchNorm": (lambda dt: nn.BatchNorm(2, dtype=dt), floats(3, 2, 4)),
    "MultiHeadAttention": (lambda dt: nn.MultiHeadAttention(8, 2, causal=True, dtype=dt),
                           floats(2, 5, 8)),
    "RNN": (lambda dt: nn.RNN(3, 4, dtype=dt), floats(2, 5, 3)),
    "LSTM": (lambda dt: nn.LSTM(3, 4, bidirectional=True, dtype=dt), floats(2, 5, 3)),
    "GRU": (lambda dt: nn.GRU(3, 4, num_layers=2, dtype=dt), floats(2, 5, 3)),
    "PReLU": (lambda dt: nn.PReLU(2, dtype=dt), floats(3, 2, 4)),
    "ReLU": (lambda dt: nn.ReLU(), floats(3, 4)),
    "LeakyReLU": (lambda dt: nn.LeakyReLU(0.1), floats(3, 4)),
    "Tanh": (lambda dt: nn.Tanh(), floats(3, 4)),
    "Sigmoid": (lambda dt: nn.Sigmoid(), floats(3, 4)),
    "GELU": (lambda dt: nn.GELU(), floats(3, 4)),
    "Softmax": (lambda dt: nn.Softmax(), floats(3, 4)),
    "LogSoftmax": (lambda dt: nn.LogSoftmax(axis=1), floats(3, 4)),
    "Dropout": (lambda dt: nn.Dropout(0.5), floats(3, 4)),
    "Flatten": (lambda dt: nn.Flatten(), floats(3, 2, 2)),
    "Reshape": (lambda dt: nn.Reshape(2, 2), floats(3, 4)),
    "Param": (lambda dt: nn.Param((2, 3), init="normal", dtype=dt), floats(3, 4)),
    "Net": (lambda dt: nn.Net([nn.Linear(4, 5, dtype=dt), nn.ReLU(),
                               nn.Linear(5, 2, dtype=dt)]), floats(3, 4)),
    "Residual": (lambda dt: nn.Residual(nn.Linear(4, 4, dtype=dt)), floats(3, 4)),
    "Parallel": (lambda dt: nn.Parallel([nn.Linear(4, 2, dtype=dt), nn.Tanh()]),
                 floats(3, 4)),
    "MixedPrecision": (lambda dt: nn.MixedPrecision(nn.Linear(4, 3, dtype=dt)),
                       floats(3, 4)),
    "Repeat": (lambda dt: nn.Repeat(nn.Residual(nn.Net([nn.Linear(4, 4, dtype=dt),
                                                        nn.Tanh(), nn.Dropout(0.2)])), 3),
               floats(3, 4)),
    "Remat": (lambda dt: nn.Remat(nn.Net([nn.Linear(4, 5, dtype=dt), nn.GELU(),
                                          nn.Dropout(0.2)]), "dots"), floats(3, 4)),
}
# Its output dtype is its own argument (float32), whatever the params' dtype.
OWN_OUTPUT_DTYPE = {"MixedPrecision"}
# Layers of sub-layers: their dtype is their sub-layers'.
CONTAINERS = {"Net", "Residual", "Parallel", "MixedPrecision", "Remat", "Repeat"}


def exported_layers():
    return {name for name in nn.__all__
            if inspect.isclass(getattr(nn, name)) and issubclass(getattr(nn, name), nn.Layer)}


def make_input(spec, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    if spec[0] == "ids":
        return jnp.asarray(rng.integers(0, spec[2], spec[1]), jnp.int32)
    return jnp.asarray(rng.normal(size=spec[1]), dtype)


def run(layer, params, x):
    """Training mode with a key (dropout draws), state threaded for BatchNorm."""
    if layer.stateful:
        return layer.apply(params, x, state=layer.init_state(), train=True)[0]
    return layer.apply(params, x, key=jax.random.key(1), train=True)


# The dtype tests run the layer compiled: one program per call instead of one per op
# eagerly (dtypes are decided at trace time; test_jit_equals_eager_in_values_and_gradients
# checks that jit and eager agree).
run_jit = jax.jit(run, static_argnums=0)


def test_every_exported_layer_has_an_example():
    assert exported_layers() - BASES == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_float32_by_default(name):
    make, spec = EXAMPLES[name]
    # The layer as built without a dtype (a container's sub-layers given float32).
    arguments = constructor_arguments(make(jnp.float32 if name in CONTAINERS else jnp.float64))
    arguments.pop("dtype", None)
    layer = type(make(jnp.float32))(**arguments)
    with jax.enable_x64(True):  # float32 by choice, not because float64 is off
        params = layer.init(jax.random.key(0))
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
        assert run_jit(layer, params, make_input(spec)).dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(EXAMPLES))
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.bfloat16])
def test_float64_and_bfloat16_params_and_inputs_are_honoured(name, dtype):
    """The layer built with ``dtype`` creates ``dtype`` params and, on ``dtype`` inputs,
    returns ``dtype`` outputs equal to float32's on the same (rounded) values."""
    make, spec = EXAMPLES[name]
    with jax.enable_x64(dtype == jnp.float64):
        layer = make(dtype)
        params = layer.init(jax.random.key(0))
        assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(params))
        x = make_input(spec, dtype)
        y = run_jit(layer, params, x)
        wide = jax.tree.map(lambda a: a.astype(jnp.float32), params)
        x32 = x.astype(jnp.float32) if spec[0] == "floats" else x
        reference = run_jit(make(jnp.float32), wide, x32)
        expected_dtype = jnp.float32 if name in OWN_OUTPUT_DTYPE else dtype
        assert y.dtype == expected_dtype
        tolerance = 5e-2 if dtype == jnp.bfloat16 else 1e-5
        np.testing.assert_allclose(np.asarray(y, np.float32), reference, rtol=tolerance,
                                   atol=tolerance)


@pytest.mark.parametrize("name", sorted(n for n in EXAMPLES if EXAMPLES[n][1][0] == "floats"))
@pytest.mark.parametrize("x_dtype", [jnp.bfloat16, jnp.float16])
def test_narrow_inputs_with_float32_params(name, x_dtype):
    """bfloat16 and float16 inputs with float32 params compute in the promoted dtype: the
    float32 result on the rounded inputs, finite, in the dtype of inputs and params."""
    make, spec = EXAMPLES[name]
    layer = make(jnp.float32)
    params = layer.init(jax.random.key(0))
    x = make_input(spec, x_dtype)
    y = run_jit(layer, params, x)
    reference = run_jit(layer, params, x.astype(jnp.float32))
    leaves = jax.tree.leaves(params)
    promoted = jnp.result_type(x, *leaves) if leaves else jnp.dtype(x_dtype)
    assert y.dtype == (jnp.float32 if name in OWN_OUTPUT_DTYPE else promoted)
    assert np.all(np.isfinite(np.asarray(y, np.float32)))
    np.testing.assert_allclose(np.asarray(y, np.float32), reference, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_jit_equals_eager_in_values_and_gradients(name):
    make, spec = EXAMPLES[name]
    layer = make(jnp.float32)
    params = layer.init(jax.random.key(0))
    x = make_input(spec)

    def loss(params, x):
        return jnp.sum(jnp.sin(run(layer, params, x)))

    differentiable = (0, 1) if spec[0] == "floats" else 0
    grad = jax.grad(loss, argnums=differentiable)
    # bfloat16 compute: under jit XLA may keep a fused intermediate in float32 where eager
    # rounds it to bfloat16 (allowed excess precision), a difference of bfloat16's epsilon.
    tolerance = 2e-2 if name == "MixedPrecision" else 1e-5
    np.testing.assert_allclose(jax.jit(run, static_argnums=0)(layer, params, x),
                               run(layer, params, x), rtol=tolerance, atol=tolerance / 10)
    for eager, jitted in zip(jax.tree.leaves(grad(params, x)),
                             jax.tree.leaves(jax.jit(grad)(params, x)), strict=True):
        np.testing.assert_allclose(jitted, eager, rtol=tolerance, atol=tolerance / 10)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_repr_is_a_call_that_rebuilds_the_layer(name):
    layer = EXAMPLES[name][0](jnp.float32)
    assert eval(repr(layer), vars(nn)) == layer
    assert dataclasses.replace(layer) == layer


BAD_VALUES = (-3, 0, 2.5, True, "nonsense", None, float("nan"), (1, 2, 3, 4), object())


def constructor_arguments(layer):
    """The arguments that rebuild ``layer``: its fields by the constructor's names."""
    signature = inspect.signature(type(layer))
    fields = {f.name: getattr(layer, f.name) for f in dataclasses.fields(layer)}
    given = {}
    for name, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in fields:
            given[name] = fields[name]
    return given


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_bad_arguments_raise_library_errors_naming_the_layer(name):
    """Every constructor argument, given each of a set of wrong values: whatever is refused
    is refused with ArgumentError (or a LayerError) naming the layer's class, never a bare
    TypeError or ValueError from deeper down; and something is refused."""
    layer = EXAMPLES[name][0](jnp.float32)
    given = constructor_arguments(layer)
    refused = 0
    for argument in given:
        for bad in BAD_VALUES:
            try:
                type(layer)(**{**given, argument: bad})
            except (ArgumentError, LayerError) as err:
                assert type(layer).__name__ in str(err), (argument, bad, err)
                refused += 1
            except Exception as err:
                pytest.fail(f"{name}({argument}={bad!r}) raised {type(err).__name__}: {err}")
    assert refused or not given
