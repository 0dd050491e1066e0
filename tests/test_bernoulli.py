import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.extend.random import threefry_2x32

from minitorch.nn.bernoulli import bernoulli, threefry2x32


class BernoulliTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(((32, 512), 0.75), ((3, 5, 4, 2), 0.5), ((7,), 0.1), ((), 0.9))
    def test_equals_jax_random_bernoulli_bit_for_bit(self, shape, p):
        for seed in (0, 1, 12345):
            key = jax.random.key(seed)
            mask = self.variant(lambda k: bernoulli(k, p, shape))(key)
            chex.assert_shape(mask, shape)
            self.assertEqual(mask.dtype, jnp.bool_)
            np.testing.assert_array_equal(mask, jax.random.bernoulli(key, p, shape))

    def test_hash_equals_jax_reference_threefry(self):
        key = jax.random.key_data(jax.random.key(7))
        counters = jnp.arange(1000, dtype=jnp.uint32)
        high = jnp.full_like(counters, 3)
        ours = jnp.concatenate(threefry2x32(key[0], key[1], high, counters))
        np.testing.assert_array_equal(ours, threefry_2x32(key, jnp.concatenate([high, counters])))

    def test_folded_and_vmapped_keys(self):
        keys = jax.random.split(jax.random.key(0), 4)
        masks = jax.vmap(lambda k: bernoulli(k, 0.3, (16, 8)))(keys)
        np.testing.assert_array_equal(
            masks, jax.vmap(lambda k: jax.random.bernoulli(k, 0.3, (16, 8)))(keys))

    def test_other_key_kinds_fall_back_to_jax(self):
        for key in (jax.random.key(3, impl="rbg"), jax.random.PRNGKey(3)):
            np.testing.assert_array_equal(bernoulli(key, 0.5, (8, 8)),
                                          jax.random.bernoulli(key, 0.5, (8, 8)))


@settings(max_examples=12, deadline=None)  # each new shape compiles the reference: ~0.5 s
@given(seed=st.integers(0, 2**31 - 1), p=st.floats(0.0, 1.0),
       shape=st.lists(st.integers(1, 6), max_size=3).map(tuple))
def test_any_seed_probability_and_shape_match_jax(seed, p, shape):
    key = jax.random.key(seed)
    np.testing.assert_array_equal(bernoulli(key, p, shape), jax.random.bernoulli(key, p, shape))
