"""rpn_loss and fast_rcnn_loss: the normalisers and lambdas of the multi-task loss, by value.

A wrong normaliser or a lambda left out of one place scales a loss and its gradient together,
so a gradient check cannot see it; here every term and gradient is rebuilt from the loop
references of ops/losses.py with the normalisers written out (paper eq. 1 and py-faster-rcnn).
"""
import numpy as np
import pytest

from minifrcnn.config import Config
from minifrcnn.fast_rcnn import fast_rcnn_loss
from minifrcnn.ops.losses import smooth_l1_reference, softmax_cross_entropy_reference
from minifrcnn.rpn import rpn_loss


def rpn_inputs(rng, n=2, h=3, w=4, a=3):
    r = h * w * a
    logits = rng.normal(0, 1, (n, r, 2))
    deltas = rng.normal(0, 1, (n, r, 4))
    labels = rng.choice([-1, 0, 1], size=(n, r), p=[0.5, 0.3, 0.2])
    targets = rng.normal(0, 1, (n, r, 4))
    return logits, deltas, labels, targets, (h, w)


@pytest.mark.parametrize("mode", ["paper", "py-faster-rcnn"])
def test_rpn_loss_normalisers_and_lambda(mode):
    cfg = Config(loss_normalization=mode, rpn_lambda=10.0, rpn_batch_size=256, rpn_sigma=3.0)
    logits, deltas, labels, targets, (h, w) = rpn_inputs(np.random.default_rng(0))
    n, r = labels.shape
    if mode == "paper":                     # N_cls = N x 256 sampled, N_reg = N x H x W, lambda
        n_cls, n_reg, lam = n * 256, n * h * w, 10.0
    else:                                   # both over the sampled anchors, lambda 1
        n_cls = n_reg = int((labels >= 0).sum())
        lam = 1.0
    terms, dlogits, ddeltas = rpn_loss(logits, deltas, labels, targets, (h, w), cfg)
    flat = labels.reshape(-1)
    want_cls, want_dlogits = softmax_cross_entropy_reference(logits.reshape(-1, 2), flat, n_cls)
    weights = np.repeat((flat == 1).astype(float)[:, None], 4, axis=1)
    want_reg, want_ddeltas = smooth_l1_reference(deltas.reshape(-1, 4), targets.reshape(-1, 4),
                                                 weights, sigma=3.0, normalizer=n_reg)
    np.testing.assert_allclose(float(terms["rpn_cls"]), want_cls, rtol=1e-12)
    np.testing.assert_allclose(float(terms["rpn_reg"]), lam * want_reg, rtol=1e-12)
    np.testing.assert_allclose(dlogits.reshape(-1, 2), want_dlogits, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ddeltas.reshape(-1, 4), lam * want_ddeltas, rtol=1e-12, atol=1e-15)


def test_fast_rcnn_loss_divides_by_s_and_applies_lambda_to_loss_and_gradient():
    rng = np.random.default_rng(1)
    s, k = 10, 3
    scores = rng.normal(0, 1, (s, k + 1))
    deltas = rng.normal(0, 1, (s, 4 * (k + 1)))
    labels = np.array([0, 1, 2, 3, 0, 0, 1, 0, 3, 0])        # 5 foreground RoIs of 10
    targets = rng.normal(0, 1, (s, 4 * (k + 1)))
    weights = np.zeros_like(targets)
    for i, c in enumerate(labels):
        if c > 0:
            weights[i, 4 * c:4 * c + 4] = 1
    cfg = Config(head_lambda=2.5, head_sigma=1.0)
    terms, dscores, ddeltas = fast_rcnn_loss(scores, deltas, labels, targets, weights, cfg)
    want_cls, want_dscores = softmax_cross_entropy_reference(scores, labels, s)   # over all S
    want_reg, want_ddeltas = smooth_l1_reference(deltas, targets, weights, sigma=1.0, normalizer=s)
    np.testing.assert_allclose(float(terms["head_cls"]), want_cls, rtol=1e-12)
    np.testing.assert_allclose(float(terms["head_reg"]), 2.5 * want_reg, rtol=1e-12)
    np.testing.assert_allclose(dscores, want_dscores, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ddeltas, 2.5 * want_ddeltas, rtol=1e-12, atol=1e-15)
