import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from minitorch import nn
from minitorch.errors import KeyArgError


class DropoutTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(0.1, 0.5, 0.9)
    def test_drops_with_probability_rate_and_rescales(self, rate):
        x = jnp.ones((200, 500))
        y = self.variant(lambda x, k: nn.Dropout(rate).apply({}, x, key=k, train=True))(
            x, jax.random.key(0))
        y = np.asarray(y)
        dropped = np.mean(y == 0)
        # 100k Bernoulli draws: the fraction is within 5 standard deviations of rate.
        self.assertLess(abs(dropped - rate), 5 * np.sqrt(rate * (1 - rate) / y.size))
        np.testing.assert_allclose(y[y != 0], 1 / (1 - rate), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_is_identity_in_eval_mode(self):
        x = jnp.arange(12.0).reshape(3, 4)
        np.testing.assert_array_equal(self.variant(lambda x: nn.Dropout(0.5).apply({}, x))(x), x)

    def test_same_key_same_mask_other_key_other_mask(self):
        layer, x = nn.Dropout(0.5), jnp.ones((64, 64))
        a = layer.apply({}, x, key=jax.random.key(1), train=True)
        b = layer.apply({}, x, key=jax.random.key(1), train=True)
        c = layer.apply({}, x, key=jax.random.key(2), train=True)
        np.testing.assert_array_equal(a, b)
        self.assertFalse(np.array_equal(a, c))

    @chex.variants(with_jit=True, without_jit=True)
    def test_mask_is_jax_random_bernoulli_of_the_key(self):
        x, key = jnp.arange(1.0, 65.0).reshape(8, 8), jax.random.key(4)
        y = self.variant(lambda x, k: nn.Dropout(0.25).apply({}, x, key=k, train=True))(x, key)
        keep = np.asarray(jax.random.bernoulli(key, 0.75, (8, 8)))
        np.testing.assert_allclose(y, np.where(keep, np.asarray(x) / 0.75, 0.0), rtol=1e-6)

    def test_raw_uint32_keys_work(self):
        y = nn.Dropout(0.5).apply({}, jnp.ones(100), key=jax.random.PRNGKey(0), train=True)
        self.assertTrue(0 < np.mean(np.asarray(y) == 0) < 1)

    def test_gradient_is_the_mask_times_scale(self):
        key = jax.random.key(3)
        x = jnp.linspace(-1, 1, 50)
        y = nn.Dropout(0.3).apply({}, x, key=key, train=True)
        grad = jax.grad(lambda v: nn.Dropout(0.3).apply({}, v, key=key, train=True).sum())(x)
        np.testing.assert_allclose(grad, np.where(np.asarray(y) != 0, 1 / 0.7, 0), rtol=1e-6)

    def test_training_without_key_raises(self):
        with self.assertRaisesRegex(KeyArgError, "Dropout: expected a PRNG key with train=True"):
            nn.Dropout(0.5).apply({}, jnp.ones(3), train=True)

    def test_bad_rate_raises(self):
        for rate in (-0.1, 1.0, 2, float("nan"), "0.5", True, jnp.array(0.5)):
            with self.assertRaisesRegex(ValueError, r"Dropout: rate must be a finite number "
                                                    r"in \[0, 1\), received"):
                nn.Dropout(rate)


def test_finite_difference_gradients_with_a_fixed_key():
    from tests.helpers import check_layer_grads

    x = np.random.default_rng(0).normal(size=(4, 6))
    check_layer_grads(nn.Dropout(0.4), {}, x, key=jax.random.key(1), train=True, order=2)
