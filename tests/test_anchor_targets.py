"""anchor_targets.py: RPN labels (1 / 0 / -1), sampling and regression targets."""
import numpy as np
import pytest

from minifrcnn.anchor_targets import anchor_target_settings, anchor_targets, inside_image, random_subset
from minifrcnn.anchors import generate_base_anchors, grid_anchors
from minifrcnn.boxes import box_iou, decode
from minifrcnn.config import Config

H, W = 64, 96
ANCHORS = grid_anchors(generate_base_anchors(8, (0.5, 1, 2), (2, 4, 8)), H // 8, W // 8, 8)   # (864, 4)
GT = np.array([[10, 12, 40, 44],      # medium object
               [50, 8, 90, 60],       # large object
               [30, 50, 36, 56],      # tiny object: its best anchor has IoU < 0.3
               [70, 0, 70, 10]],      # zero-area gt: IoU 0 with everything, makes no positive
              dtype=np.float32)


def reference_labels(anchors, gt, image_size, pos=0.7, neg=0.3, border=0):
    """The labelling rules before sampling, one anchor and one gt at a time."""
    h, w = image_size
    iou = box_iou(anchors, gt)
    labels = np.full(len(anchors), -1)
    inside = [a for a in range(len(anchors))
              if anchors[a, 0] >= -border and anchors[a, 1] >= -border
              and anchors[a, 2] <= w + border and anchors[a, 3] <= h + border]
    for a in inside:                                   # rule 1: negatives
        if len(gt) == 0 or max(iou[a]) < neg:
            labels[a] = 0
    for g in range(len(gt)):                           # rule 2: best anchor(s) of each gt
        best = max(iou[a, g] for a in inside)
        if best > 0:
            for a in inside:
                if iou[a, g] == best:
                    labels[a] = 1
    for a in inside:                                   # rule 3: high IoU
        if len(gt) > 0 and max(iou[a]) >= pos:
            labels[a] = 1
    return labels


def no_sampling(n):
    """Arguments under which sampling drops nothing."""
    return dict(batch_size=2 * n, positive_fraction=1.0)


def test_labels_follow_the_rules_before_sampling():
    rng = np.random.default_rng(0)
    labels, _, _ = anchor_targets(ANCHORS, GT, (H, W), rng, **no_sampling(len(ANCHORS)))
    want = reference_labels(ANCHORS, GT, (H, W))
    np.testing.assert_array_equal(labels, want)
    assert labels.dtype == np.int64
    assert (want == 1).sum() >= 3 and (want == 0).sum() > 100 and (want == -1).sum() > 100
    # the tiny gt's best anchor is positive although its IoU is below 0.3
    iou = box_iou(ANCHORS, GT)
    inside = inside_image(ANCHORS, (H, W))
    best_for_tiny = np.nonzero(inside & (iou[:, 2] == iou[inside, 2].max()))[0]
    assert iou[best_for_tiny, 2].max() < 0.3
    assert (labels[best_for_tiny] == 1).all()
    # the zero-area gt changes nothing
    without, _, _ = anchor_targets(ANCHORS, GT[:3], (H, W), np.random.default_rng(0), **no_sampling(len(ANCHORS)))
    np.testing.assert_array_equal(without, labels)


def test_best_anchor_ties_are_all_positive_and_zero_overlap_gts_are_skipped():
    anchors = np.array([[30, 40, 45, 50],      # IoU 0.25 with gt 0 (inter 50, union 200)
                        [45, 40, 60, 50],      # IoU 0.25 with gt 0: a tie for gt 0's best
                        [40, 40, 44, 45],      # IoU 0.2 (inter 20, union 100): not a best anchor
                        [0, 0, 20, 20]],       # IoU 0 with both gts
                       dtype=np.float64)
    gt = np.array([[40, 40, 50, 50],
                   [90, 90, 95, 95]],          # touches no anchor: its best IoU is 0
                  dtype=np.float64)
    iou = box_iou(anchors, gt)
    assert iou[0, 0] == iou[1, 0] == 0.25 and iou[2, 0] == pytest.approx(0.2)
    labels, _, matched_gt = anchor_targets(anchors, gt, (100, 100), np.random.default_rng(0))
    np.testing.assert_array_equal(labels, [1, 1, 0, 0])
    np.testing.assert_array_equal(matched_gt, [0, 0, -1, -1])


@pytest.mark.parametrize("gt_boxes,expect_pos", [
    (np.array([[0, 0, 64, 64], [32, 0, 96, 64], [8, 8, 40, 40], [40, 16, 72, 48], [60, 30, 92, 62],
               [0, 30, 32, 62], [20, 20, 52, 52], [64, 0, 96, 32], [0, 0, 32, 32], [16, 32, 48, 64]],
              dtype=np.float32), "many"),
    (GT[:2], "few"),
    (np.zeros((0, 4), dtype=np.float32), "none")])
def test_sample_sizes_and_fractions(gt_boxes, expect_pos):
    n_pos_before = (reference_labels(ANCHORS, gt_boxes, (H, W)) == 1).sum()
    labels, _, _ = anchor_targets(ANCHORS, gt_boxes, (H, W), np.random.default_rng(1), batch_size=64,
                                  positive_fraction=0.25)
    n_pos, n_neg = (labels == 1).sum(), (labels == 0).sum()
    if expect_pos == "many":
        assert n_pos_before > 16 and n_pos == 16               # capped at 64 * 0.25
    elif expect_pos == "few":
        assert 0 < n_pos_before < 16 and n_pos == n_pos_before  # all kept
    else:
        assert n_pos == 0
    assert n_neg == 64 - n_pos                                 # negatives fill the batch
    # sampled anchors are a subset of the unsampled labelling
    full, _, _ = anchor_targets(ANCHORS, gt_boxes, (H, W), np.random.default_rng(1), **no_sampling(len(ANCHORS)))
    assert (full[labels == 1] == 1).all() and (full[labels == 0] == 0).all()


def test_bbox_targets_point_at_the_matched_gt():
    labels, targets, matched_gt = anchor_targets(ANCHORS, GT, (H, W), np.random.default_rng(2))
    pos = labels == 1
    assert pos.sum() > 0 and targets.dtype == np.float32
    iou = box_iou(ANCHORS, GT)
    np.testing.assert_array_equal(matched_gt[pos], iou[pos].argmax(axis=1))
    np.testing.assert_array_equal(matched_gt[~pos], -1)
    back = decode(ANCHORS[pos], targets[pos])
    np.testing.assert_allclose(back, GT[matched_gt[pos]], atol=1e-3)
    np.testing.assert_array_equal(targets[~pos], 0)


def test_no_gt_boxes_all_negatives_no_nan():
    labels, targets, matched_gt = anchor_targets(ANCHORS, np.zeros((0, 4), dtype=np.float32), (H, W),
                                                 np.random.default_rng(3))
    assert set(np.unique(labels)) == {-1, 0} and (labels == 0).sum() == 256
    assert not np.isnan(targets).any() and (targets == 0).all()
    assert (matched_gt == -1).all()


def test_border_anchors_are_ignored_and_touching_is_inside():
    anchors = np.array([[0, 0, 16, 16],        # touching the top-left corner: inside
                        [80, 48, 96, 64],      # touching the bottom-right corner: inside
                        [-1, 0, 15, 16],       # 1 px outside
                        [90, 10, 100, 20]],    # 4 px outside on the right
                       dtype=np.float32)
    gt = np.array([[0, 0, 16, 16], [80, 48, 96, 64], [-1, 0, 15, 16], [90, 10, 100, 20]], dtype=np.float32)
    labels = anchor_targets(anchors, gt, (H, W), np.random.default_rng(0))[0]
    np.testing.assert_array_equal(labels, [1, 1, -1, -1])     # perfect matches, but outside is ignored
    labels = anchor_targets(anchors, gt, (H, W), np.random.default_rng(0), allowed_border=2)[0]
    np.testing.assert_array_equal(labels, [1, 1, 1, -1])
    # on the grid: every anchor crossing the border is -1
    labels, _, _ = anchor_targets(ANCHORS, GT, (H, W), np.random.default_rng(0))
    crossing = ~inside_image(ANCHORS, (H, W))
    assert crossing.sum() > 0 and (labels[crossing] == -1).all()


def test_sampling_is_reproducible_and_seeded():
    a = anchor_targets(ANCHORS, GT, (H, W), np.random.default_rng(7), batch_size=32)[0]
    b = anchor_targets(ANCHORS, GT, (H, W), np.random.default_rng(7), batch_size=32)[0]
    c = anchor_targets(ANCHORS, GT, (H, W), np.random.default_rng(8), batch_size=32)[0]
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_random_subset_and_settings():
    idx = np.arange(10, 30)
    sub = random_subset(idx, 5, np.random.default_rng(0))
    assert sub.dtype == np.int64 and len(sub) == 5 and len(set(sub)) == 5
    assert np.isin(sub, idx).all() and (np.diff(sub) > 0).all()
    np.testing.assert_array_equal(random_subset(idx, 50, np.random.default_rng(0)), idx)
    assert len(random_subset(idx, -3, np.random.default_rng(0))) == 0
    kw = anchor_target_settings(Config())
    assert kw == dict(positive_iou=0.7, negative_iou=0.3, batch_size=256, positive_fraction=0.5, allowed_border=0)
    with pytest.raises(ValueError, match="negative_iou"):
        anchor_targets(ANCHORS, GT, (H, W), np.random.default_rng(0), positive_iou=0.2, negative_iou=0.3)


def test_threshold_edges_positive_inclusive_negative_exclusive():
    gt = np.array([[0, 0, 10, 10]], dtype=np.float64)
    anchors = np.array([[0, 0, 10, 10],       # IoU 1: the gt's best anchor
                        [0, 0, 10, 7],        # IoU exactly 0.7 -> positive (>= 0.7)
                        [0, 0, 10, 3],        # IoU exactly 0.3 -> ignored (negative needs < 0.3)
                        [0, 0, 10, 2.9]],     # IoU 0.29 -> negative
                       dtype=np.float64)
    assert box_iou(anchors, gt)[1, 0] == 0.7 and box_iou(anchors, gt)[2, 0] == 0.3
    labels = anchor_targets(anchors, gt, (20, 20), np.random.default_rng(0))[0]
    np.testing.assert_array_equal(labels, [1, 1, -1, 0])
