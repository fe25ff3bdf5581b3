"""Tests for ops/losses.py: softmax cross-entropy and smooth L1.

    .venv/bin/pytest tests/test_losses.py -q
"""
import math

import numpy as np
import pytest

from minifrcnn import ops
from minifrcnn.gradcheck import numeric_gradient, rel_error
from minifrcnn.ops.losses import (smooth_l1, smooth_l1_reference, softmax_cross_entropy,
                                  softmax_cross_entropy_reference)


def test_exported_from_ops():
    assert ops.softmax_cross_entropy is softmax_cross_entropy
    assert ops.smooth_l1 is smooth_l1


# ----------------------------------------------------------------------------------------
# softmax cross-entropy
# ----------------------------------------------------------------------------------------

def _logits_labels(rng, n=7, c=4, dtype=np.float64):
    logits = rng.standard_normal((n, c)).astype(dtype) * 2.0     # (N, C)
    labels = rng.integers(0, c, size=n)                          # (N,)
    labels[[1, 4]] = -1                                          # two ignored rows
    return logits, labels


@pytest.mark.parametrize("normalizer", [None, 10.0])
def test_softmax_ce_gradcheck(normalizer):
    rng = np.random.default_rng(0)
    logits, labels = _logits_labels(rng)
    loss, dlogits = softmax_cross_entropy(logits, labels, normalizer=normalizer)
    num = numeric_gradient(lambda: softmax_cross_entropy(logits, labels, normalizer)[0], logits)
    assert rel_error(dlogits, num) < 1e-6
    # ignored rows get exactly zero gradient; kept rows sum to zero (softmax minus one-hot)
    assert np.all(dlogits[[1, 4]] == 0)
    assert np.abs(dlogits.sum(axis=1)).max() < 1e-12


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("normalizer", [None, 3.0])
def test_softmax_ce_matches_reference(dtype, normalizer):
    rng = np.random.default_rng(1)
    logits, labels = _logits_labels(rng, n=9, c=5, dtype=dtype)
    loss, dlogits = softmax_cross_entropy(logits, labels, normalizer)
    ref_loss, ref_dlogits = softmax_cross_entropy_reference(logits, labels, normalizer)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert abs(float(loss) - float(ref_loss)) <= tol * max(1.0, abs(float(ref_loss)))
    assert np.abs(dlogits - ref_dlogits).max() < tol


def test_softmax_ce_known_value():
    # uniform logits over C classes: loss = log C for every row
    logits = np.zeros((3, 4))
    loss, _ = softmax_cross_entropy(logits, np.array([0, 3, 2]))
    assert abs(float(loss) - math.log(4)) < 1e-12


def test_softmax_ce_dtype_and_type():
    rng = np.random.default_rng(2)
    logits, labels = _logits_labels(rng, dtype=np.float32)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    assert isinstance(loss, np.ndarray) and loss.ndim == 0 and loss.dtype == np.float32
    assert dlogits.dtype == np.float32 and dlogits.shape == logits.shape
    # a numpy-integer normalizer must not promote float32 to float64 either
    loss, dlogits = softmax_cross_entropy(logits, labels, normalizer=np.int64(4))
    assert loss.dtype == np.float32 and dlogits.dtype == np.float32


def test_softmax_ce_normalizer_given():
    rng = np.random.default_rng(3)
    logits, labels = _logits_labels(rng)
    kept = int((labels >= 0).sum())
    mean_loss, mean_grad = softmax_cross_entropy(logits, labels)
    loss, grad = softmax_cross_entropy(logits, labels, normalizer=256)
    assert abs(float(loss) - float(mean_loss) * kept / 256) < 1e-12
    assert np.abs(grad - mean_grad * kept / 256).max() < 1e-12


def test_softmax_ce_ignored_rows_do_not_matter():
    rng = np.random.default_rng(4)
    logits, labels = _logits_labels(rng)
    loss1, _ = softmax_cross_entropy(logits, labels)
    logits[1] += 100.0                                    # row 1 is ignored
    loss2, _ = softmax_cross_entropy(logits, labels)
    assert float(loss1) == float(loss2)


@pytest.mark.parametrize("n", [5, 0])
def test_softmax_ce_all_ignored(n):
    logits = np.random.default_rng(5).standard_normal((n, 3))
    labels = np.full(n, -1)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    assert float(loss) == 0.0 and not np.signbit(loss)
    assert dlogits.shape == (n, 3) and np.all(dlogits == 0)


def test_softmax_ce_large_logits_no_overflow():
    logits = np.array([[1000.0, 0.0, -1000.0],
                       [1000.0, 0.0, -1000.0]], dtype=np.float32)
    labels = np.array([0, 1])
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # underflow to 0 is fine
        loss, dlogits = softmax_cross_entropy(logits, labels)
    # row 0: -log p = 0; row 1: -log p = 1000; mean 500
    assert np.isfinite(loss) and abs(float(loss) - 500.0) < 1e-3
    assert np.all(np.isfinite(dlogits))
    assert np.allclose(dlogits, [[0, 0, 0], [0.5, -0.5, 0]], atol=1e-6)


def test_softmax_ce_bad_labels():
    logits = np.zeros((3, 4))
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(logits, np.array([0, 4, 1]))       # 4 >= C
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(logits, np.array([0, -2, 1]))      # below -1
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(logits, np.array([0.0, 1.0, 1.0]))  # float labels
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(logits, np.array([0, 1]))          # wrong length
    with pytest.raises(ValueError, match="logits"):
        softmax_cross_entropy(np.zeros(4), np.array([0]))        # 1-D logits
    with pytest.raises(ValueError, match="normalizer"):
        softmax_cross_entropy(logits, np.array([0, 1, 1]), normalizer=0)


# ----------------------------------------------------------------------------------------
# smooth L1
# ----------------------------------------------------------------------------------------

def _smooth_l1_inputs(rng, shape, sigma, dtype=np.float64):
    """pred, target, weights whose d = w (pred - target) stays >= 0.05 away from the kink 1/sigma^2."""
    kink = 1.0 / sigma ** 2
    d = rng.uniform(-3 * kink, 3 * kink, size=shape)
    near = np.abs(np.abs(d) - kink) < 0.05 * kink
    d[near] = np.sign(d[near]) * kink * rng.choice([0.5, 1.5], size=int(near.sum()))
    weights = rng.choice([0.0, 0.5, 1.0, 2.0], size=shape)
    target = rng.standard_normal(shape)
    safe_w = np.where(weights == 0, 1.0, weights)
    pred = np.where(weights == 0, rng.standard_normal(shape), target + d / safe_w)
    return pred.astype(dtype), target.astype(dtype), weights.astype(dtype)


@pytest.mark.parametrize("sigma", [1.0, 3.0])
def test_smooth_l1_gradcheck(sigma):
    rng = np.random.default_rng(10)
    pred, target, weights = _smooth_l1_inputs(rng, (6, 4), sigma)
    loss, dpred = smooth_l1(pred, target, weights, sigma=sigma, normalizer=7.0)
    num = numeric_gradient(lambda: smooth_l1(pred, target, weights, sigma, 7.0)[0], pred)
    assert rel_error(dpred, num) < 1e-6
    assert np.all(dpred[weights == 0] == 0)
    # both zones are exercised
    d = np.abs(weights * (pred - target))
    assert (d < 1 / sigma ** 2).any() and (d > 1 / sigma ** 2).any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,sigma,normalizer", [((8, 4), 1.0, 1.0), ((2, 3, 4), 3.0, 5.0)])
def test_smooth_l1_matches_reference(dtype, shape, sigma, normalizer):
    rng = np.random.default_rng(11)
    pred, target, weights = _smooth_l1_inputs(rng, shape, sigma, dtype)
    loss, dpred = smooth_l1(pred, target, weights, sigma, normalizer)
    ref_loss, ref_dpred = smooth_l1_reference(pred, target, weights, sigma, normalizer)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert abs(float(loss) - float(ref_loss)) <= tol * max(1.0, abs(float(ref_loss)))
    assert np.abs(dpred - ref_dpred).max() < tol
    assert loss.dtype == dtype and dpred.dtype == dtype and loss.ndim == 0
    assert dpred.shape == shape


def test_smooth_l1_known_values():
    target = np.zeros(4)
    weights = np.ones(4)
    # sigma 1: |d| < 1 -> 0.5 d^2; else |d| - 0.5
    pred = np.array([0.5, -2.0, 0.0, 1.5])
    loss, dpred = smooth_l1(pred, target, weights, sigma=1.0)
    assert abs(float(loss) - (0.125 + 1.5 + 0.0 + 1.0)) < 1e-12
    assert np.allclose(dpred, [0.5, -1.0, 0.0, 1.0])
    # sigma 3: |d| < 1/9 -> 4.5 d^2; else |d| - 1/18
    pred = np.array([0.1, -1.0, 0.0, 0.0])
    loss, dpred = smooth_l1(pred, target, weights, sigma=3.0, normalizer=2.0)
    assert abs(float(loss) - (4.5 * 0.01 + (1.0 - 1.0 / 18)) / 2.0) < 1e-12
    assert np.allclose(dpred, [9 * 0.1 / 2, -1.0 / 2, 0.0, 0.0])


def test_smooth_l1_continuous_at_kink():
    for sigma in (1.0, 3.0):
        kink = 1.0 / sigma ** 2
        pred = np.array([kink - 1e-9, kink + 1e-9])
        loss_parts = [float(smooth_l1(pred[i:i + 1], np.zeros(1), np.ones(1), sigma)[0]) for i in range(2)]
        assert abs(loss_parts[0] - loss_parts[1]) < 1e-8
        assert abs(loss_parts[0] - 0.5 * kink) < 1e-8            # value 0.5/sigma^2 at the kink


def test_smooth_l1_bad_args():
    a = np.zeros((3, 4))
    with pytest.raises(ValueError, match="target"):
        smooth_l1(a, np.zeros((3, 5)), a)
    with pytest.raises(ValueError, match="weights"):
        smooth_l1(a, a, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="float32"):
        smooth_l1(a, a, a.astype(np.float32))                    # mixed dtypes
    with pytest.raises(ValueError, match="sigma"):
        smooth_l1(a, a, a, sigma=0.0)
    with pytest.raises(ValueError, match="normalizer"):
        smooth_l1(a, a, a, normalizer=-1.0)
