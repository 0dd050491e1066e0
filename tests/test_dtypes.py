"""float32 by default; float64 and bfloat16 params and inputs are honoured by every layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minitorch import nn

LAYERS = {
    "Linear": (lambda dt: nn.Linear(4, 3, dtype=dt), (2, 4)),
    "Conv2D": (lambda dt: nn.Conv2D(2, 3, 3, padding=1, dtype=dt), (2, 2, 5, 5)),
    "LayerNorm": (lambda dt: nn.LayerNorm(4, dtype=dt), (2, 4)),
    "BatchNorm": (lambda dt: nn.BatchNorm(2, dtype=dt), (3, 2, 4)),
    "PReLU": (lambda dt: nn.PReLU(2, dtype=dt), (3, 2, 4)),
    "MaxPool2D": (lambda dt: nn.MaxPool2D(2), (1, 2, 4, 4)),
    "AvgPool2D": (lambda dt: nn.AvgPool2D(3, 1, 1), (1, 2, 4, 4)),
    "GELU": (lambda dt: nn.GELU(), (3, 4)),
    "Softmax": (lambda dt: nn.Softmax(), (3, 4)),
    "Dropout": (lambda dt: nn.Dropout(0.5), (3, 4)),
    "Flatten": (lambda dt: nn.Flatten(), (3, 2, 2)),
}


def run(layer, x, params=None):
    params = layer.init(jax.random.key(0)) if params is None else params
    if layer.stateful:
        return layer.apply(params, x, state=layer.init_state(), train=True)[0]
    return layer.apply(params, x, key=jax.random.key(1), train=True)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_default_is_float32(name):
    make, shape = LAYERS[name]
    layer = make(jnp.float32)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(layer.init(jax.random.key(0))))
    assert run(layer, jnp.ones(shape)).dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.bfloat16])
def test_other_float_dtypes_are_honoured(name, dtype):
    make, shape = LAYERS[name]
    x = np.random.default_rng(0).normal(size=shape)
    with jax.enable_x64(dtype == jnp.float64):
        layer = make(dtype)
        assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(layer.init(jax.random.key(0))))
        # the same values in both dtypes: float32 params, cast
        params32 = make(jnp.float32).init(jax.random.key(0))
        params = jax.tree.map(lambda a: a.astype(dtype), params32)
        y = run(layer, jnp.asarray(x, dtype), params)
        reference = run(make(jnp.float32), jnp.asarray(x, jnp.float32), params32)
        assert y.dtype == dtype
        tolerance = 5e-2 if dtype == jnp.bfloat16 else 1e-5
        np.testing.assert_allclose(np.asarray(y, np.float32), reference, rtol=tolerance,
                                   atol=tolerance)


def test_value_comparisons_run_with_exact_float32_matmuls():
    """tests/conftest.py sets JAX_DEFAULT_MATMUL_PRECISION=highest before jax is imported, so
    the NumPy and PyTorch comparisons hold where float32 matmuls would run in TF32."""
    import jax

    assert jax.config.jax_default_matmul_precision == "highest"
