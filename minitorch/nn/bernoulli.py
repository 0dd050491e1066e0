"""``bernoulli``: ``jax.random.bernoulli``'s values, without the CPU's rolled loop.

JAX lowers its Threefry-2x32 hash on the CPU as a five-iteration ``while`` loop (to keep
compile times short), and XLA:CPU runs every iteration as separate kernels over the whole
array: the dropout mask of the digits CNN (32 x 512) took ~0.26 ms of a ~2 ms training
step. The same hash written out as 20 rounds of ``jnp`` integer ops is one fused
elementwise kernel. It reproduces JAX's bits exactly (JAX's partitionable counter layout:
each element hashes its flat index; the two output words are xor-ed), so a mask from a
key is the same on every backend and either way; ``tests/test_bernoulli.py`` checks that
bit for bit. The unrolled hash is chosen for the CPU only, by the platform the program is
lowered for (``lax.platform_dependent``); GPUs and TPUs run ``jax.random.bernoulli``'s own
kernel. Keys of other PRNG implementations go to ``jax.random.bernoulli`` everywhere.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from minitorch.nn.core import Array, PRNGKey

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)  # Threefry's key-schedule constant


def _rotate_left(x: Array, bits: int) -> Array:
    return (x << np.uint32(bits)) | (x >> np.uint32(32 - bits))


def threefry2x32(k1: Array, k2: Array, x1: Array, x2: Array) -> tuple[Array, Array]:
    """The Threefry-2x32 block cipher (20 rounds) of the counter pair ``(x1, x2)`` under
    the key ``(k1, k2)``; all uint32, ``x1`` and ``x2`` of one shape. Equal to
    ``jax.extend.random.threefry_2x32`` (JAX's reference implementation), unrolled."""
    ks = (k1, k2, k1 ^ k2 ^ _PARITY)
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            x1 = x1 + x2
            x2 = _rotate_left(x2, r) ^ x1
        x1 = x1 + ks[(block + 1) % 3]
        x2 = x2 + ks[(block + 2) % 3] + np.uint32(block + 1)
    return x1, x2


def _reproducible(key: PRNGKey) -> bool:
    """Whether the unrolled hash gives JAX's bits for this key and configuration."""
    return (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
            and str(jax.random.key_impl(key)) == "threefry2x32"
            and jax.config.jax_threefry_partitionable  # type: ignore[attr-defined]
            and not jax.config.jax_enable_x64)  # type: ignore[attr-defined]


def bernoulli(key: PRNGKey, p: float, shape: tuple[int, ...]) -> Array:
    """``jax.random.bernoulli(key, p, shape)``, the same booleans, as one fused kernel for
    a threefry key (JAX's default). ``key``: a scalar typed key (``jax.random.key``);
    ``p``: the probability of True; returns a bool array of ``shape``."""
    size = math.prod(shape)
    if not _reproducible(key) or size >= 2**32:
        return jax.random.bernoulli(key, p, shape)
    return jax.lax.platform_dependent(
        key, cpu=lambda key: _unrolled(key, p, shape),
        default=lambda key: jax.random.bernoulli(key, p, shape))


def _unrolled(key: PRNGKey, p: float, shape: tuple[int, ...]) -> Array:
    """The booleans of ``jax.random.bernoulli`` from the unrolled hash (one fused kernel)."""
    size = math.prod(shape)
    k1, k2 = jax.random.key_data(key)
    counters = jax.lax.iota(np.uint32, size).reshape(shape)
    x1, x2 = threefry2x32(k1, k2, jnp.zeros(shape, np.uint32), counters)
    bits = x1 ^ x2
    # jax.random.uniform's float: 23 random mantissa bits under exponent 0, minus 1.
    floats = jax.lax.bitcast_convert_type((bits >> np.uint32(9)) | np.uint32(0x3F800000),
                                          np.float32) - np.float32(1.0)
    return floats < np.float32(p)
