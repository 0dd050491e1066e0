import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads

from minitorch import losses
from minitorch.errors import DTypeError, IdError, ShapeError
from tests.helpers import assert_jit_grads_match_eager, assert_matches_torch, log_softmax_ref

REDUCE = {"mean": np.mean, "sum": np.sum, "none": lambda a: a}


def bce_ref(p, t):
    p, t = np.float64(p), np.float64(t)
    with np.errstate(divide="ignore"):
        return -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log(1 - p), -100))


def bce_logits_ref(x, t):
    x = np.float64(x)
    return -(t * -np.logaddexp(0, -x) + (1 - t) * -np.logaddexp(0, x))


class LossValueTest(chex.TestCase):

    def setUp(self):
        super().setUp()
        self.rng = np.random.default_rng(0)  # each test draws its own data

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("mean", "sum", "none")
    def test_mse(self, reduction):
        pred, target = self.rng.normal(size=(4, 3)), self.rng.normal(size=(4, 3))
        got = self.variant(lambda a, b: losses.mse(a, b, reduction=reduction))(
            pred.astype(np.float32), target.astype(np.float32))
        np.testing.assert_allclose(got, REDUCE[reduction]((pred - target) ** 2), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("mean", "sum", "none")
    def test_binary_cross_entropy(self, reduction):
        probs = np.array([0.0, 1.0, 0.3, 0.9, 1e-30, 0.5], np.float32)
        targets = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.25], np.float32)
        got = self.variant(lambda a, b: losses.binary_cross_entropy(a, b, reduction=reduction))(
            probs, targets)
        np.testing.assert_allclose(got, REDUCE[reduction](bce_ref(probs, targets)), rtol=1e-5)
        self.assertTrue(np.isfinite(got).all())

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("mean", "sum", "none")
    def test_binary_cross_entropy_with_logits(self, reduction):
        logits = np.array([-30.0, -2.0, 0.0, 0.5, 4.0, 30.0], np.float32)
        targets = np.array([1.0, 0.0, 0.5, 1.0, 0.0, 0.0], np.float32)
        got = self.variant(lambda a, b: losses.binary_cross_entropy_with_logits(
            a, b, reduction=reduction))(logits, targets)
        np.testing.assert_allclose(got, REDUCE[reduction](bce_logits_ref(logits, targets)),
                                   rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("mean", "sum", "none")
    def test_softmax_cross_entropy_integer_labels(self, reduction):
        logits, labels = self.rng.normal(size=(6, 5)) * 3, self.rng.integers(0, 5, size=6)
        got = self.variant(lambda a, b: losses.softmax_cross_entropy(a, b, reduction=reduction))(
            logits.astype(np.float32), labels)
        expected = -log_softmax_ref(logits)[np.arange(6), labels]
        np.testing.assert_allclose(got, REDUCE[reduction](expected), rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_softmax_cross_entropy_probability_labels_and_leading_axes(self):
        logits = self.rng.normal(size=(2, 3, 4))
        probs = self.rng.dirichlet(np.ones(4), size=(2, 3))
        got = self.variant(lambda a, b: losses.softmax_cross_entropy(a, b, reduction="none"))(
            logits.astype(np.float32), probs.astype(np.float32))
        np.testing.assert_allclose(got, -(probs * log_softmax_ref(logits)).sum(-1), rtol=1e-5)

    def test_float32_extremes_stay_finite_and_correct(self):
        logits = jnp.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], jnp.float32)
        labels = jnp.array([1, 2])
        loss, grad = jax.value_and_grad(losses.softmax_cross_entropy)(logits, labels)
        np.testing.assert_allclose(loss, (2e4 + 0) / 2)
        np.testing.assert_allclose(grad, np.array([[1, -1, 0], [0, 0, 0]]) / 2, atol=1e-6)
        x, t = jnp.array([1e4, -1e4, 1e4, -1e4]), jnp.array([1.0, 0.0, 0.0, 1.0])
        loss, grad = jax.value_and_grad(losses.binary_cross_entropy_with_logits)(x, t)
        np.testing.assert_allclose(loss, 2e4 / 4)
        np.testing.assert_allclose(grad, np.array([0, 0, 1, -1]) / 4)
        p = jnp.array([0.0, 1.0, 0.0, 1.0])
        loss, grad = jax.value_and_grad(losses.binary_cross_entropy)(p, t)
        np.testing.assert_allclose(loss, 200 / 4)  # two confident misses at the -100 clamp
        self.assertTrue(np.isfinite(grad).all())
        np.testing.assert_array_equal(grad[2:], [0, 0])  # confident hits: zero gradient
        # confident misses: PyTorch's (p - t) / max(p (1 - p), 1e-12), finite
        np.testing.assert_allclose(grad[:2], np.array([-1e12, 1e12]) / 4, rtol=1e-6)

    def test_out_of_range_class_ids_give_nan_under_jit_and_raise_eagerly(self):
        xent = functools.partial(losses.softmax_cross_entropy, reduction="none")
        loss = jax.jit(xent)(jnp.zeros((3, 4)), jnp.array([0, 4, -1]))
        self.assertTrue(np.isfinite(loss[0]) and np.isnan(loss[1]) and np.isnan(loss[2]))
        with self.assertRaisesRegex(IdError, r"softmax_cross_entropy: expected class ids in "
                                             r"\[0, 4\), received 2 outside it"):
            xent(jnp.zeros((3, 4)), jnp.array([0, 4, -1]))
        with self.assertRaisesRegex(IdError, "max 4294967297"):   # would wrap to 1
            xent(jnp.zeros((3, 4)), np.array([0, 2**32 + 1, 1]))
        kept = xent(jnp.zeros((3, 4)), jnp.array([0, 4, -1]), where=jnp.array([1, 0, 0], bool))
        np.testing.assert_allclose(kept, [np.log(4), 0, 0], rtol=1e-6)

    def test_masked_logits_with_zero_target_stay_finite(self):
        logits = jnp.array([[0.0, -jnp.inf, 1.0]])
        loss = losses.softmax_cross_entropy(logits, jnp.array([2]))
        np.testing.assert_allclose(loss, -log_softmax_ref([[0.0, -1e30, 1.0]])[0, 2], rtol=1e-6)

    def test_bfloat16_and_float64(self):
        logits = self.rng.normal(size=(4, 3))
        labels = self.rng.integers(0, 3, size=4)
        expected = -log_softmax_ref(logits)[np.arange(4), labels].mean()
        # bfloat16 logits (mixed precision) are computed in float32: only their rounding errs.
        low_logits = jnp.asarray(logits, jnp.bfloat16)
        low = losses.softmax_cross_entropy(low_logits, labels)
        self.assertEqual(low.dtype, jnp.float32)
        rounded = np.asarray(low_logits, np.float64)
        np.testing.assert_allclose(
            float(low), -log_softmax_ref(rounded)[np.arange(4), labels].mean(), rtol=1e-6)
        grad = jax.grad(losses.softmax_cross_entropy)(low_logits, labels)
        self.assertEqual(grad.dtype, jnp.bfloat16)
        with jax.enable_x64(True):
            high = losses.softmax_cross_entropy(jnp.asarray(logits, jnp.float64), labels)
            self.assertEqual(high.dtype, jnp.float64)
            np.testing.assert_allclose(high, expected, rtol=1e-12)


class LossGradientTest(parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.rng = np.random.default_rng(0)  # each test draws its own data

    def _check(self, fn, *args):
        with jax.enable_x64(True):
            args = [jnp.asarray(a, jnp.float64) for a in args]
            check_grads(fn, args, order=2, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)
            assert_jit_grads_match_eager(fn, *args, rtol=1e-9, atol=1e-12)

    def test_mse(self):
        self._check(losses.mse, self.rng.normal(size=(3, 2)), self.rng.normal(size=(3, 2)))

    def test_binary_cross_entropy(self):
        self._check(losses.binary_cross_entropy, self.rng.uniform(0.1, 0.9, size=5),
                    self.rng.uniform(size=5))

    def test_binary_cross_entropy_with_logits(self):
        self._check(losses.binary_cross_entropy_with_logits, self.rng.normal(size=5) * 3,
                    self.rng.uniform(size=5))

    def test_softmax_cross_entropy_probability_labels(self):
        self._check(losses.softmax_cross_entropy, self.rng.normal(size=(3, 4)),
                    self.rng.dirichlet(np.ones(4), size=3))

    def test_softmax_cross_entropy_integer_labels(self):
        labels = jnp.array([0, 3, 1])
        with jax.enable_x64(True):
            check_grads(lambda z: losses.softmax_cross_entropy(z, labels),
                        (jnp.asarray(self.rng.normal(size=(3, 4))),), order=2, modes=("fwd", "rev"))

    def test_fused_gradient_is_softmax_minus_target(self):
        logits = jnp.asarray(self.rng.normal(size=(5, 4)), jnp.float32)
        labels = jnp.array([0, 1, 2, 3, 0])
        grad = jax.grad(losses.softmax_cross_entropy)(logits, labels)
        expected = (np.exp(log_softmax_ref(logits)) - np.eye(4)[labels]) / 5
        np.testing.assert_allclose(grad, expected, atol=1e-7)


def _torch_grad(name, *args):
    """The gradient of ``torch.nn.functional.<name>`` w.r.t. its first argument (float64)."""
    torch = pytest.importorskip("torch")
    fn = getattr(torch.nn.functional, name)
    first = torch.tensor(np.asarray(args[0], np.float64), requires_grad=True)
    rest = [torch.tensor(a if np.issubdtype(np.asarray(a).dtype, np.integer)
                         else np.asarray(a, np.float64)) for a in args[1:]]
    fn(first, *rest).backward()
    return first.grad.numpy()


# Points where a loss's formula has a kink or a tie: autodiff of a piecewise form can pick a
# one-sided derivative there. Each case: (minitorch loss, torch.nn.functional
# name, first arg, second arg).
KINKS = {
    "bce_with_logits_at_zero_logits": (
        losses.binary_cross_entropy_with_logits,
        "binary_cross_entropy_with_logits",
        np.zeros(4), np.array([0.0, 1.0, 0.5, 0.3])),
    "bce_at_probabilities_0_and_1": (
        losses.binary_cross_entropy, "binary_cross_entropy",
        np.array([0.0, 1.0, 0.0, 1.0, 0.5]), np.array([0.0, 1.0, 1.0, 0.0, 0.5])),
    "softmax_xent_at_equal_logits": (
        losses.softmax_cross_entropy, "cross_entropy",
        np.zeros((3, 4)), np.array([0, 3, 1])),
    "softmax_xent_at_tied_maxima": (
        losses.softmax_cross_entropy, "cross_entropy",
        np.array([[2.0, 2.0, -1.0], [5.0, 5.0, 5.0]]), np.array([0, 2])),
    "mse_at_pred_equal_target": (
        losses.mse, "mse_loss", np.ones(3), np.ones(3)),
}


@pytest.mark.parametrize("name", sorted(KINKS))
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_gradient_at_kinks_and_ties_equals_pytorch(name, jit):
    ours, theirs, first, second = KINKS[name]
    expected = _torch_grad(theirs, first, second)
    grad = jax.grad(lambda a: ours(a, jnp.asarray(second)))
    got = (jax.jit(grad) if jit else grad)(jnp.asarray(first, jnp.float32))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


class LossErrorTest(parameterized.TestCase):

    def test_mismatched_shapes_are_not_broadcast(self):
        with self.assertRaisesRegex(ShapeError, r"mse: expected target of the same shape as "
                                    r"pred \(4, 1\), received \(4,\)"):
            losses.mse(jnp.ones((4, 1)), jnp.ones(4))

    def test_float_labels_of_class_id_shape(self):
        with self.assertRaisesRegex(ShapeError, r"expected probability labels of shape \(4, 3\).*"
                                    r"integer class ids need an integer dtype"):
            losses.softmax_cross_entropy(jnp.ones((4, 3)), jnp.ones(4))

    def test_integer_labels_of_the_wrong_shape(self):
        with self.assertRaisesRegex(ShapeError, r"expected integer labels of shape \(4,\)"):
            losses.softmax_cross_entropy(jnp.ones((4, 3)), jnp.ones((4, 1), jnp.int32))

    def test_integer_logits(self):
        with self.assertRaisesRegex(DTypeError, "expected floating-point logits, received int32"):
            losses.softmax_cross_entropy(jnp.ones((4, 3), jnp.int32), jnp.ones(4, jnp.int32))

    def test_bad_reduction(self):
        with self.assertRaisesRegex(ValueError, "mse: reduction must be"):
            losses.mse(jnp.ones(2), jnp.ones(2), reduction="avg")


finite = st.floats(-50, 50, allow_nan=False, width=32)
# A few shapes only: every new shape costs a compilation, not a new kind of input.
logit_rows = hnp.arrays(np.float32, st.sampled_from([(1, 1), (1, 3), (4, 2), (5, 6)]),
                        elements=finite)


@given(logit_rows, st.data())
def test_softmax_cross_entropy_properties(logits, data):
    n, c = logits.shape
    labels = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    shift = data.draw(st.floats(-100, 100, width=32))
    loss = losses.softmax_cross_entropy(logits, labels, reduction="none")
    assert (np.asarray(loss) >= -1e-6).all()
    # invariant to adding a constant to every logit of a row
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits + shift, labels,
                                                            reduction="none"), loss, atol=2e-3)
    # integer labels and their one-hot probabilities agree
    onehot = np.eye(c, dtype=np.float32)[labels]
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, onehot, reduction="none"),
                               loss, rtol=1e-5, atol=1e-5)
    # each row of the gradient sums to zero (softmax and the target both sum to one)
    grad = jax.grad(losses.softmax_cross_entropy)(jnp.asarray(logits), labels)
    np.testing.assert_allclose(np.asarray(grad).sum(-1), 0, atol=1e-6)


@given(hnp.arrays(np.float32, st.sampled_from([1, 7, 20]), elements=finite), st.data())
def test_binary_losses_properties(logits, data):
    targets = data.draw(hnp.arrays(np.float32, logits.shape, elements=st.floats(0, 1, width=32)))
    with_logits = losses.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    # symmetric under flipping the sign of the logits and the targets
    np.testing.assert_allclose(losses.binary_cross_entropy_with_logits(
        -logits, 1 - targets, reduction="none"), with_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(with_logits, bce_logits_ref(logits, targets), rtol=1e-4, atol=1e-4)
    # agrees with the probability form wherever the sigmoid is not saturated in float32
    moderate = np.abs(logits) < 8
    probs = jax.nn.sigmoid(logits)
    np.testing.assert_allclose(
        np.asarray(losses.binary_cross_entropy(probs, targets, reduction="none"))[moderate],
        np.asarray(with_logits)[moderate], rtol=1e-3, atol=1e-3)
    # the reductions are the mean and the sum of the unreduced loss
    np.testing.assert_allclose(losses.binary_cross_entropy_with_logits(logits, targets),
                               np.mean(with_logits), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses.binary_cross_entropy_with_logits(
        logits, targets, reduction="sum"), np.sum(with_logits), rtol=1e-5, atol=1e-5)


@given(hnp.arrays(np.float32, st.sampled_from([(), (3,), (2, 5), (2, 1, 3)]), elements=finite))
def test_mse_properties(pred):
    np.testing.assert_array_equal(losses.mse(pred, pred), 0)
    target = pred[::-1] if pred.ndim else pred
    np.testing.assert_allclose(losses.mse(pred, target), losses.mse(target, pred))
    assert losses.mse(pred, target + 1) > 0


def _torch_xent(t, labels, **kwargs):
    import torch
    return torch.nn.functional.cross_entropy(t["logits"].transpose(1, -1), labels, **kwargs)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_where_and_smoothing_equal_pytorch(reduction, smoothing):
    """where= is PyTorch's ignore_index (the ignored entries hold an invalid id, -100)."""
    import torch

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(3, 4))
    labels[0, 2:] = -100
    labels[2, 0] = -100
    arrays = {"logits": rng.normal(size=(3, 4, 5)).astype(np.float32)}

    def ours(a):
        return losses.softmax_cross_entropy(a["logits"], jnp.asarray(labels),
                                            where=jnp.asarray(labels != -100),
                                            label_smoothing=smoothing, reduction=reduction)

    assert_matches_torch(ours, lambda t: _torch_xent(
        t, torch.as_tensor(labels), ignore_index=-100, label_smoothing=smoothing,
        reduction=reduction), arrays, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_label_smoothing_of_probability_labels_equals_pytorch(reduction):
    import torch

    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=5).astype(np.float32)
    arrays = {"logits": rng.normal(size=(5, 4)).astype(np.float32)}
    assert_matches_torch(
        lambda a: losses.softmax_cross_entropy(a["logits"], jnp.asarray(probs),
                                               label_smoothing=0.2, reduction=reduction),
        lambda t: torch.nn.functional.cross_entropy(t["logits"], torch.as_tensor(probs),
                                                    label_smoothing=0.2, reduction=reduction),
        arrays)


@pytest.mark.parametrize("name", ["mse", "binary_cross_entropy",
                                  "binary_cross_entropy_with_logits"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_elementwise_losses_where_counts_only_kept_elements(name, reduction):
    rng = np.random.default_rng(2)
    first = rng.uniform(0.05, 0.95, size=(4, 3)).astype(np.float32)
    second = rng.uniform(size=(4, 3)).astype(np.float32)
    keep = rng.uniform(size=(4, 3)) > 0.4
    loss = getattr(losses, name)
    full = np.asarray(loss(first, second, reduction="none"))
    got = jax.jit(lambda a, b, k: loss(a, b, where=k, reduction=reduction))(first, second, keep)
    expected = {"mean": full[keep].mean(), "sum": full[keep].sum(),
                "none": np.where(keep, full, 0)}[reduction]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    grad = jax.jit(jax.grad(lambda a: loss(a, second, where=keep)))(first)
    np.testing.assert_array_equal(np.asarray(grad)[~keep], 0)  # left out: no gradient


def test_where_leaves_out_invalid_ids_without_nan():
    logits = jnp.zeros((3, 4))
    labels = jnp.array([1, 99, -7])
    keep = jnp.array([True, False, False])
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels, where=keep),
                               np.log(4), rtol=1e-6)
    per = losses.softmax_cross_entropy(logits, labels, where=keep, reduction="none")
    np.testing.assert_allclose(per, [np.log(4), 0, 0], rtol=1e-6)
    grad = jax.grad(lambda z: losses.softmax_cross_entropy(z, labels, where=keep))(logits)
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[1:] == 0)
    # nothing kept: the mean of nothing is NaN, as PyTorch's ignore_index
    assert np.isnan(losses.softmax_cross_entropy(logits, labels, where=jnp.zeros(3, bool)))


def test_where_and_smoothing_bad_arguments():
    logits, labels = jnp.zeros((3, 4)), jnp.array([0, 1, 2])
    with pytest.raises(ShapeError, match=r"softmax_cross_entropy: expected where= of shape "
                                         r"\(3,\) \(the labels' batch shape\), received \(3, 4\)"):
        losses.softmax_cross_entropy(logits, labels, where=jnp.ones((3, 4), bool))
    with pytest.raises(DTypeError, match="mse: expected a boolean where="):
        losses.mse(logits, logits, where=jnp.ones((3, 4)))
    for bad in (-0.1, 1.0, "0.1", True):
        with pytest.raises(ValueError, match=r"label_smoothing must be a finite .* in \[0, 1\)"):
            losses.softmax_cross_entropy(logits, labels, label_smoothing=bad)
