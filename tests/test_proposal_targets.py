"""proposal_targets.py: RoI sampling, class labels and class-specific normalised targets."""
import numpy as np
import pytest

from minifrcnn.boxes import box_iou, decode
from minifrcnn.config import Config
from minifrcnn.proposal_targets import (JITTER, jittered_gt_boxes, proposal_target_settings,
                                       proposal_targets)

K = 4
STDS = (0.1, 0.1, 0.2, 0.2)
GT = np.array([[10, 10, 50, 60], [70, 20, 120, 90], [20, 100, 60, 140]], dtype=np.float32)
GT_LABELS = np.array([2, 4, 1])


def jittered(rng, boxes, n, scale):
    """n boxes near the given boxes (moved and resized by about `scale` of their size)."""
    src = boxes[rng.integers(0, len(boxes), n)]
    w, h = src[:, 2] - src[:, 0], src[:, 3] - src[:, 1]
    noise = rng.normal(0, scale, (n, 4)) * np.stack([w, h, w, h], axis=1)
    out = src + noise
    out[:, 2:] = np.maximum(out[:, 2:], out[:, :2] + 1)
    return out.astype(np.float32)


def make_proposals(rng, n_near=200, n_mid=200, n_far=50):
    near = jittered(rng, GT, n_near, 0.1)                       # mostly IoU >= 0.5
    mid = jittered(rng, GT, n_mid, 0.4)                         # many with IoU in [0.1, 0.5)
    xy = rng.uniform(0, 150, (n_far, 2))
    far = np.concatenate([xy, xy + rng.uniform(5, 40, (n_far, 2))], axis=1).astype(np.float32)
    return np.concatenate([near, mid, far])


def check_rows(out, gt=GT, gt_labels=GT_LABELS, num_classes=K, stds=STDS):
    """Everything that must hold row by row, whatever was sampled."""
    labels, targets, weights = out["labels"], out["bbox_targets"], out["bbox_weights"]
    S = len(labels)
    assert targets.shape == (S, 4 * (num_classes + 1)) == weights.shape
    fg = labels > 0
    assert (labels[:fg.sum()] > 0).all()                            # fg rows come first
    np.testing.assert_array_equal(labels[fg], gt_labels[out["matched_gt"][fg]])
    np.testing.assert_array_equal(out["matched_gt"][~fg], -1)
    for r in np.nonzero(fg)[0]:
        c = labels[r]
        cols = np.arange(4 * c, 4 * c + 4)
        np.testing.assert_array_equal(weights[r, cols], 1)
        assert weights[r].sum() == 4 and np.count_nonzero(np.delete(targets[r], cols)) == 0
    np.testing.assert_array_equal(targets[~fg], 0)
    np.testing.assert_array_equal(weights[~fg], 0)
    if fg.any():
        # the normalised targets decode back onto the matched gt boxes with weights 1 / stds
        rows = np.nonzero(fg)[0]
        class_deltas = np.stack([targets[r, 4 * labels[r]:4 * labels[r] + 4] for r in rows])
        back = decode(out["rois"][rows], class_deltas, weights=tuple(1 / s for s in stds))
        np.testing.assert_allclose(back, gt[out["matched_gt"][rows]], atol=1e-3)
        # and they are really divided by the stds: unnormalised deltas would decode elsewhere
        if np.abs(class_deltas).max() > 1e-3:                       # (not only gt boxes themselves)
            wrong = decode(out["rois"][rows], class_deltas)
            assert not np.allclose(wrong, gt[out["matched_gt"][rows]], atol=1e-3)


def test_fractions_with_many_candidates():
    rng = np.random.default_rng(0)
    out = proposal_targets(make_proposals(rng), GT, GT_LABELS, K, rng)
    labels, max_iou = out["labels"], out["max_iou"]
    assert len(labels) == 128 and out["rois"].dtype == np.float32
    assert (labels > 0).sum() == 32                               # round(0.25 * 128)
    assert (max_iou[labels > 0] >= 0.5).all()
    assert ((max_iou[labels == 0] >= 0.1) & (max_iou[labels == 0] < 0.5)).all()
    np.testing.assert_allclose(max_iou, box_iou(out["rois"], GT).max(axis=1))
    assert len(np.unique(out["rois"], axis=0)) == 128            # no RoI repeated
    check_rows(out)


def test_few_foreground_takes_all_of_them_and_fills_with_background():
    rng = np.random.default_rng(1)
    proposals = np.concatenate([jittered(rng, GT, 10, 0.05), jittered(rng, GT, 300, 0.6)])   # few fg
    iou = box_iou(np.concatenate([proposals, GT]), GT).max(axis=1)
    n_fg = (iou >= 0.5).sum()
    assert n_fg < 32
    out = proposal_targets(proposals, GT, GT_LABELS, K, rng, fg_fraction=0.25)
    assert (out["labels"] > 0).sum() == n_fg
    assert len(out["labels"]) == 128                              # background fills the rest
    check_rows(out)


def test_gt_boxes_are_candidates_and_short_samples_are_not_padded():
    rng = np.random.default_rng(2)
    out = proposal_targets(np.zeros((0, 4), dtype=np.float32), GT, GT_LABELS, K, rng)
    # no proposals at all: the gt boxes themselves are the only RoIs, all foreground, targets 0
    assert len(out["labels"]) == 3
    np.testing.assert_array_equal(np.sort(out["labels"]), np.sort(GT_LABELS))
    np.testing.assert_allclose(out["bbox_targets"][out["bbox_weights"] == 1], 0, atol=1e-6)
    check_rows(out)


def test_no_background_candidates_in_the_window():
    # proposals that overlap nothing (IoU 0 < bg_iou_lo = 0.1): only the gt boxes remain, as fg
    far = np.array([[200, 200, 220, 220], [300, 300, 330, 310]], dtype=np.float32)
    out = proposal_targets(far, GT, GT_LABELS, K, np.random.default_rng(3))
    assert len(out["labels"]) == 3 and (out["labels"] > 0).all()
    # with bg_iou_lo = 0 (py-faster-rcnn's Faster R-CNN setting) they become background
    out = proposal_targets(far, GT, GT_LABELS, K, np.random.default_rng(3), bg_iou_lo=0.0)
    assert len(out["labels"]) == 5 and (out["labels"] == 0).sum() == 2
    check_rows(out)


def test_no_gt_boxes_every_proposal_is_background():
    rng = np.random.default_rng(4)
    proposals = make_proposals(rng)
    none = np.zeros((0, 4), dtype=np.float32)
    out = proposal_targets(proposals, none, np.zeros(0, dtype=np.int64), K, rng, batch_size=64)
    assert len(out["labels"]) == 64 and (out["labels"] == 0).all()
    assert (out["bbox_targets"] == 0).all() and not np.isnan(out["bbox_targets"]).any()
    assert (out["max_iou"] == 0).all()
    few = proposal_targets(proposals[:10], none, np.zeros(0, dtype=np.int64), K, rng, batch_size=64)
    assert len(few["labels"]) == 10                               # fewer rows, no repeats
    check_rows(out, gt=none, gt_labels=np.zeros(0, dtype=np.int64))


def test_sampling_is_seeded_and_checks_its_arguments():
    proposals = make_proposals(np.random.default_rng(5))
    a = proposal_targets(proposals, GT, GT_LABELS, K, np.random.default_rng(9))
    b = proposal_targets(proposals, GT, GT_LABELS, K, np.random.default_rng(9))
    c = proposal_targets(proposals, GT, GT_LABELS, K, np.random.default_rng(10))
    np.testing.assert_array_equal(a["rois"], b["rois"])
    assert not np.array_equal(a["rois"], c["rois"])
    with pytest.raises(ValueError, match="gt_labels: expected classes in 1..4"):
        proposal_targets(proposals, GT, np.array([0, 1, 2]), K, np.random.default_rng(0))
    with pytest.raises(ValueError, match="gt_labels: expected an integer dtype"):
        proposal_targets(proposals, GT, GT_LABELS.astype(np.float32), K, np.random.default_rng(0))
    with pytest.raises(ValueError, match="bg_iou_lo"):
        proposal_targets(proposals, GT, GT_LABELS, K, np.random.default_rng(0), bg_iou_hi=0.6)
    kw = proposal_target_settings(Config())
    assert kw == dict(batch_size=128, fg_fraction=0.25, fg_iou=0.5, bg_iou_hi=0.5, bg_iou_lo=0.1,
                      stds=(0.1, 0.1, 0.2, 0.2), gt_jitter=0)


def test_jittered_gt_boxes_stay_near_their_box_and_join_the_candidates():
    rng = np.random.default_rng(5)
    boxes = jittered_gt_boxes(GT, 50, rng)                      # (150, 4), box by box
    assert boxes.shape == (150, 4)
    src = np.repeat(GT, 50, axis=0)
    w, h = src[:, 2] - src[:, 0], src[:, 3] - src[:, 1]
    moved = (boxes - src) / np.stack([w, h, w, h], axis=1)
    assert np.abs(moved).max() <= JITTER + 1e-6 and np.abs(moved).max() > 0.9 * JITTER
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    iou = box_iou(boxes, GT)[np.arange(150), np.repeat(np.arange(3), 50)]
    assert iou.min() > 0.3 and (iou >= 0.5).mean() > 0.9        # almost all foreground
    # in the sampler: with no proposals, the gt boxes and their copies are the candidates
    out = proposal_targets(np.zeros((0, 4), dtype=np.float32), GT, GT_LABELS, K,
                           np.random.default_rng(2), gt_jitter=4)
    assert 3 < len(out["labels"]) <= 15 and (out["labels"] > 0).sum() > 3
    check_rows(out)
    # 0 copies is the paper's sampling, draw for draw
    a = proposal_targets(make_proposals(np.random.default_rng(0)), GT, GT_LABELS, K,
                         np.random.default_rng(1))
    b = proposal_targets(make_proposals(np.random.default_rng(0)), GT, GT_LABELS, K,
                         np.random.default_rng(1), gt_jitter=0)
    np.testing.assert_array_equal(a["rois"], b["rois"])
    assert proposal_target_settings(Config.small(num_classes=2, roi_gt_jitter=3))["gt_jitter"] == 3
