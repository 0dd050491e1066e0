"""The precision the value comparisons run at. Every layer's dtypes (float32 by default,
float64 and bfloat16 honoured, narrow inputs with float32 params) are tested in
tests/test_every_layer.py, generated from ``nn.__all__``."""

import jax


def test_value_comparisons_run_with_exact_float32_matmuls():
    """tests/conftest.py sets JAX_DEFAULT_MATMUL_PRECISION=highest before jax is imported, so
    the NumPy and PyTorch comparisons hold where float32 matmuls would run in TF32."""

    assert jax.config.jax_default_matmul_precision == "highest"
