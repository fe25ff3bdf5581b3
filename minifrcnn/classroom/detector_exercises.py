"""Classroom exercises 09-13: the steps that make Faster R-CNN what it is.

Exercises 01-08 (exercises.py) are pieces every CNN course has (IoU, a loss, a backward pass);
these five are the detector's own steps, the ones UMich EECS 498's detection assignment also has
students write. Each notebook (notebooks/exercises/student/NN_*.ipynb) asks for one or two
functions with an exact signature, then calls a check on them, as in exercises.py:

    from minifrcnn.classroom import check_label_anchors
    check_label_anchors(label_anchors)

The exercises, the exact signature each function must have, its check, and the library
function it is compared with:

    09 anchor labels        label_anchors(anchors, gt_boxes, image_size, positive_iou=0.7,
       and sampling             negative_iou=0.3, allowed_border=0)
                                -> (labels (A,) int, matched_gt (A,) int)        check_label_anchors
                                                                                 anchor_targets.anchor_targets
                                                                                 (sampling switched off)
                            sample_anchors(labels, rng, batch_size=256, positive_fraction=0.5)
                                -> labels (A,) int                               check_sample_anchors
                                                                                 anchor_targets.anchor_targets
    10 proposal layer       proposal_layer(anchors, objectness, deltas, image_size, pre_nms_top_n=6000,
                                post_nms_top_n=300, nms_threshold=0.7, min_size=16.0)
                                -> (proposals (R, 4), scores (R,))               check_proposal_layer
                                                                                 proposals.proposal_layer
    11 RoI sampling         roi_targets(proposals, gt_boxes, gt_labels, num_classes, rng, batch_size=128,
       for the head             fg_fraction=0.25, fg_iou=0.5, bg_iou_hi=0.5, bg_iou_lo=0.1,
                                stds=(0.1, 0.1, 0.2, 0.2))
                                -> (rois (S, 4), labels (S,) int, bbox_targets (S, 4(K+1)),
                                    bbox_weights (S, 4(K+1)))                    check_roi_targets
                                                                                 proposal_targets.proposal_targets
    12 multi-task loss      rpn_loss(logits, deltas, labels, bbox_targets, feat_size, batch_size=256,
                                lam=10.0, sigma=3.0)
                                -> (cls_loss, reg_loss, dlogits, ddeltas)        check_rpn_loss
                                                                                 rpn.rpn_loss
                            head_loss(scores, deltas, labels, bbox_targets, bbox_weights, lam=1.0,
                                sigma=1.0)
                                -> (cls_loss, reg_loss, dscores, ddeltas)        check_head_loss
                                                                                 fast_rcnn.fast_rcnn_loss
    13 VOC average          voc_ap(det_image, det_scores, det_boxes, gt_boxes, gt_difficult,
       precision                iou_threshold=0.5, method="area") -> AP (a float)  check_voc_ap
                                                                                 evaluate.evaluate_detections
    14 the capstone         the seven functions above in the detector (capstone.py: students_detector),
                                trained side by side with the library's steps    check_capstone
                                                                                 the library's detector

Where the library draws at random (09's sample, 11's), the exercise states the library's draw
exactly, so the check can compare with it: from a list of candidates c (in increasing index
order) of which at most k may stay, keep all of them and draw nothing when len(c) <= k, else
keep c[rng.choice(len(c), size=k, replace=False)] (anchor_targets.random_subset; in increasing
order). The check hands the student's function a numpy Generator in the state the library's got
(feedback.copied gives every call its own copy), so a right function draws the same sample.

The functions the student may call: the earlier exercises' library versions (box_iou, encode,
decode, nms, ops.softmax_cross_entropy, ops.smooth_l1). The ones that compute the exercise's
own step are hidden while the check runs (hidden_library.py), as in exercises.py. Every check
takes hidden=False; hidden=True is the grader's: the same hand-made cases and other random ones.

Teachers: the `_..._variant` functions below are the known slips the hints recognise; each is
the correct computation with one switch flipped, and tests/test_exercises.py checks that with
every switch in its default position they agree with the library.
"""
import dataclasses
import math

import numpy as np

from .. import anchor_targets as _at_module
from .. import anchors as _anchors
from .. import boxes as _boxes
from .. import evaluate as _evaluate
from .. import fast_rcnn as _fast_rcnn
from .. import ops as _ops
from .. import proposal_targets as _pt_module
from .. import proposals as _proposals
from .. import rpn as _rpn
from ..config import Config
from .exercises import _box_array, _random_boxes, _rng
from .feedback import Case, _fmt, calling, compare_array, compare_scalar, compare_tuple, run_check, same_as

__all__ = [
    "check_label_anchors", "check_sample_anchors", "check_proposal_layer", "check_roi_targets",
    "check_rpn_loss", "check_head_loss", "check_voc_ap",
]


# ======================================================================================
# helpers
# ======================================================================================

def _compare_ints(expected, got, what, counts=False):
    """None if got equals expected exactly (an integer array), else lines saying how they differ.

    counts=True (labels 1 / 0 / -1): a line with how many of each both have.
    """
    if got is None:
        return [f"{what} is None: did you forget to `return` it?"]
    try:
        arr = np.asarray(got)
    except Exception:
        return [f"{what} should be an array of integers, got a {type(got).__name__}"]
    exp = np.asarray(expected)
    if arr.shape != exp.shape:
        return [f"{what}: expected shape {exp.shape}, got shape {arr.shape}"]
    if arr.size and arr.dtype.kind not in "iu":
        return [f"{what} should be integers, got dtype {arr.dtype} (np.full(n, -1, dtype=np.int64) "
                "makes an integer array)"]
    bad = arr != exp
    if not bad.any():
        return None
    lines = []
    if exp.size <= 40:
        lines += [f"expected {what}:", _fmt(exp), "got:", _fmt(arr)]
    if counts:
        tally = lambda x: ", ".join(f"{int((x == v).sum())} x {v}" for v in (1, 0, -1))   # noqa: E731
        lines.append(f"expected {tally(exp)}; got {tally(arr)}")
    i = int(np.flatnonzero(bad.reshape(-1))[0])
    at = np.unravel_index(i, exp.shape)
    where = f"index {list(map(int, at))}" if exp.ndim > 1 else f"index {i}"
    lines.append(f"{int(bad.sum())} of {exp.size} values differ; the first at {where}: "
                 f"expected {exp[at]}, got {arr[at]}")
    return lines


def _draw(candidates, k, rng, always=False, sort=True):
    """The library's random draw (anchor_targets.random_subset): at most k of candidates.

    always=True, sort=False: known slips (drawing even when nothing needs dropping; not sorting).
    """
    k = max(int(k), 0)
    if len(candidates) <= k and not always:
        return candidates
    chosen = candidates[rng.choice(len(candidates), size=min(k, len(candidates)), replace=False)]
    return np.sort(chosen) if sort else chosen


# ======================================================================================
# 09 anchor labels and the anchor sample
# ======================================================================================

def _library_label_anchors(anchors, gt_boxes, image_size, positive_iou=0.7, negative_iou=0.3,
                           allowed_border=0):
    """anchor_targets with the sampling switched off: (labels, matched_gt) before the sample.

    A batch as large as the anchors with every place open to positives keeps every candidate and
    draws nothing (random_subset returns all of them), so the rng is never used.
    """
    labels, _, matched_gt = _at_module.anchor_targets(
        anchors, gt_boxes, image_size, np.random.default_rng(0), positive_iou=positive_iou,
        negative_iou=negative_iou, batch_size=max(len(anchors), 1), positive_fraction=1.0,
        allowed_border=allowed_border)
    return labels, matched_gt


def _library_sample_anchors(labels, rng, batch_size=256, positive_fraction=0.5):
    """The sampling step of anchor_targets, on labels: the same two random_subset calls."""
    labels = labels.copy()
    positives = np.flatnonzero(labels == 1)
    keep_pos = _at_module.random_subset(positives, int(batch_size * positive_fraction), rng)
    labels[positives] = -1
    labels[keep_pos] = 1
    negatives = np.flatnonzero(labels == 0)
    keep_neg = _at_module.random_subset(negatives, batch_size - len(keep_pos), rng)
    labels[negatives] = -1
    labels[keep_neg] = 0
    return labels


def _label_anchors_variant(anchors, gt_boxes, image_size, positive_iou=0.7, negative_iou=0.3,
                           allowed_border=0, best_rule=True, best_ties=True, best_needs_overlap=True,
                           best_inside_only=True, ignore_border=True, pos_strict=False,
                           neg_inclusive=False, clobber=False, hw_swapped=False, matched="argmax"):
    """The labelling of anchor_targets with one switch flipped; all defaults = the library's."""
    A = anchors.shape[0]
    H, W = image_size[::-1] if hw_swapped else image_size
    b = allowed_border
    inside = ((anchors[:, 0] >= -b) & (anchors[:, 1] >= -b) & (anchors[:, 2] <= W + b)
              & (anchors[:, 3] <= H + b)) if ignore_border else np.ones(A, dtype=bool)
    idx = np.flatnonzero(inside)                                          # (A_in,)
    labels = np.full(A, -1, dtype=np.int64)
    matched_gt = np.full(A, -1, dtype=np.int64)
    G = gt_boxes.shape[0]
    if G == 0 or idx.size == 0:
        labels[idx] = 0
        return labels, matched_gt
    iou_all = _boxes.box_iou(anchors, gt_boxes)                           # (A, G)
    iou = iou_all[idx]                                                    # (A_in, G)
    max_iou, argmax = iou.max(axis=1), iou.argmax(axis=1)                 # (A_in,)
    gt_max = (iou if best_inside_only else iou_all).max(axis=0)           # (G,)
    if best_ties:
        is_best = iou == gt_max[None, :]                                  # (A_in, G)
    else:
        is_best = np.zeros_like(iou, dtype=bool)
        is_best[iou.argmax(axis=0), np.arange(G)] = iou.max(axis=0) == gt_max
    if best_needs_overlap:
        is_best &= gt_max[None, :] > 0
    best = is_best.any(axis=1) if best_rule else np.zeros(idx.size, dtype=bool)
    neg = max_iou <= negative_iou if neg_inclusive else max_iou < negative_iou
    pos = max_iou > positive_iou if pos_strict else max_iou >= positive_iou
    lab = np.full(idx.size, -1, dtype=np.int64)
    if clobber:                             # the negative rule written last: it overwrites
        lab[best], lab[pos], lab[neg] = 1, 1, 0
    else:
        lab[neg], lab[best], lab[pos] = 0, 1, 1
    labels[idx] = lab
    if matched == "everywhere":             # argmax for every inside anchor, not only positives
        matched_gt[idx] = argmax
    else:
        matched_gt[idx[lab == 1]] = argmax[lab == 1]
        if matched == "best_of":            # a best-anchor positive points at the gt it is best for
            only_best = (lab == 1) & ~pos
            matched_gt[idx[only_best]] = is_best[only_best].argmax(axis=1)
    return labels, matched_gt


def _label_cases(hidden):
    """(name, anchors, gt_boxes, image_size, kwargs, hint) of check_label_anchors."""
    rng = _rng(11, hidden)
    A = _box_array
    square = (100, 100)
    base = _anchors.generate_base_anchors(8, (0.5, 1.0, 2.0), (2.0, 4.0, 8.0), dtype=np.float64)
    grid = _anchors.grid_anchors(base, 12, 16, 8)                         # (1728, 4) a 96 x 128 image
    gts = _random_boxes(rng, 3, size=90.0, min_side=16.0, max_side=40.0)  # (3, 4)
    gts[:, 0::2] = np.minimum(gts[:, 0::2], 128.0)
    gts[:, 1::2] = np.minimum(gts[:, 1::2], 96.0)
    rand_anchors = _random_boxes(rng, 200, size=60.0, min_side=4.0, max_side=30.0)
    rand_gts = _random_boxes(rng, 4, size=50.0, min_side=8.0, max_side=30.0)
    return [
        ("IoU >= 0.7: positive; < 0.3: negative; in between: ignored",
         A([10, 10, 50, 50], [10, 10, 50, 46], [10, 10, 50, 26], [60, 60, 90, 90]),
         A([10, 10, 50, 50]), square, {},
         "Take each anchor's best IoU over the gt boxes: 1.0 and 0.9 are positive, 0.4 is neither "
         "(-1), 0 is negative."),
        ("an IoU of exactly 0.7 is positive",
         A([0, 0, 10, 7], [50, 50, 60, 60], [0, 0, 10, 10.5]), A([0, 0, 10, 10], [50, 50, 60, 60]),
         square, {},
         "Anchor 0 has IoU 70 / 100 = 0.7 with gt 0: 'IoU >= 0.7' makes it positive."),
        ("an IoU of exactly 0.3 is not negative",
         A([0, 0, 10, 3], [0, 0, 10, 10], [50, 50, 60, 60]), A([0, 0, 10, 10]), square, {},
         "Anchor 0 has IoU 30 / 100 = 0.3: negative means IoU < 0.3 (strictly), so it is ignored (-1)."),
        ("the best anchor of a gt is positive, even below 0.7",
         A([0, 0, 20, 10], [0, 0, 10, 10], [40, 40, 60, 60]), A([0, 0, 20, 20]), square, {},
         "No anchor reaches 0.7 with this gt, so its best anchor (IoU 0.5) is made positive: "
         "otherwise the gt would have no positive anchor at all."),
        ("the best anchor is positive even below 0.3",
         A([0, 0, 10, 10], [25, 25, 30, 30], [50, 50, 60, 60]), A([0, 0, 30, 30]), square, {},
         "Anchor 0's IoU is 100 / 900 = 0.11 < 0.3, but it is the gt's best anchor: the positive "
         "rule is applied after the negative one and wins."),
        ("a tie: every anchor that reaches the gt's best IoU is positive",
         A([10, 10, 30, 20], [10, 20, 30, 30], [0, 0, 5, 5]), A([10, 10, 30, 30]), square, {},
         "Anchors 0 and 1 both have IoU 0.5, the best this gt gets: both are its best anchors "
         "(compare with the maximum, not one argmax)."),
        ("a gt that no anchor overlaps makes no positive",
         A([0, 0, 10, 10], [20, 20, 30, 30], [40, 0, 50, 10]), A([80, 80, 100, 100]), square, {},
         "This gt's best IoU is 0: 'the best anchor' must overlap it at all (IoU > 0), or every "
         "anchor would tie for best."),
        ("anchors crossing the border are ignored (-1); H = 40, W = 60",
         A([-5, 0, 10, 10], [50, 0, 65, 10], [0, 0, 60, 40], [10, 30, 20, 45], [0, 0, 10, 10]),
         A([0, 0, 10, 10]), (40, 60), {},
         "image_size is (H, W): x is checked against W = 60, y against H = 40. An anchor touching "
         "the border (x2 == W) is inside; one sticking out (x1 < 0, x2 > W, y2 > H) is -1."),
        ("the best anchor is looked for among the anchors inside the image",
         A([-2, 0, 20, 20], [0, 0, 20, 12], [50, 50, 60, 60]), A([0, 0, 20, 20]), square, {},
         "Anchor 0 crosses the border: it takes no part, so anchor 1 (IoU 0.6) is this gt's best "
         "anchor and positive."),
        ("a positive anchor regresses to the gt it overlaps most",
         A([6, 0, 26, 20], [10, 0, 30, 20], [50, 50, 60, 60]), A([0, 0, 20, 20], [10, 0, 30, 20]),
         square, {},
         "Anchor 0 is gt 0's best anchor (IoU 0.54), so it is positive; but it overlaps gt 1 more "
         "(0.67): matched_gt is the argmax over the gts, 1."),
        ("no gt boxes: every anchor inside is negative",
         A([0, 0, 10, 10], [-5, 0, 10, 10], [20, 20, 40, 40]), np.zeros((0, 4)), square, {},
         "Nothing to find: the anchors inside are all background (0), the others -1, matched_gt "
         "all -1. (The max over an empty axis raises: treat G = 0 first.)"),
        ("allowed_border = 8: anchors may stick out by up to 8 pixels",
         A([-8, 0, 10, 10], [-9, 0, 10, 10], [0, 0, 68, 10], [0, 0, 69, 10]), A([0, 0, 10, 10]),
         (40, 60), {"allowed_border": 8},
         "inside means x1 >= -b, y1 >= -b, x2 <= W + b, y2 <= H + b."),
        ("thresholds 0.6 / 0.4 given as arguments",
         A([0, 0, 10, 6.5], [0, 0, 10, 4.5], [0, 0, 10, 3.5], [0, 0, 10, 10.5]), A([0, 0, 10, 10]),
         square, {"positive_iou": 0.6, "negative_iou": 0.4},
         "Use positive_iou and negative_iou, not 0.7 and 0.3."),
        ("1728 anchors of a 96 x 128 image (stride 8), 3 gt boxes", grid, gts, (96, 128), {},
         "Compare the counts of 1, 0 and -1 first, then one anchor by hand."),
        ("200 random anchors, 4 gt boxes, a 64 x 64 image", rand_anchors, rand_gts, (64, 64), {},
         "Compare the counts of 1, 0 and -1 first, then one anchor by hand."),
    ]


def _compare_labelling(expected, got):
    return compare_tuple(expected, got, ("labels", "matched_gt"),
                         [lambda e, g, n: _compare_ints(e, g, n, counts=True),
                          lambda e, g, n: _compare_ints(e, g, n)])


def check_label_anchors(label_anchors, hidden=False):
    """Check label_anchors(anchors, gt_boxes, image_size, positive_iou=0.7, negative_iou=0.3,
    allowed_border=0) -> (labels, matched_gt), both (A,) integers.

    Compared with anchor_targets.anchor_targets before its sampling (paper 3.1.2): anchors
    crossing the border (by more than allowed_border) get -1; among the others, with IoU[a, g]:
    max_g IoU < negative_iou: 0; the anchors reaching a gt's highest IoU (ties: all of them; a gt
    whose highest IoU is 0 makes none): 1; max_g IoU >= positive_iou: 1; the rest -1. A positive
    anchor's matched_gt is argmax_g IoU[a, g] (first on ties), -1 on every other anchor.
    G = 0: every anchor inside is 0. image_size is (H, W).
    """
    cases = []
    for name, anchors, gt, size, kwargs, hint in _label_cases(hidden):
        cases.append(Case(name, (anchors, gt, size), kwargs, hint=hint, note="seeded random",
                          expected=_library_label_anchors(anchors, gt, size, **kwargs)))
    compare = _compare_labelling
    mistakes = [
        (same_as(_label_anchors_variant, compare, best_rule=False),
         "Each gt's best anchor must be positive too, whatever its IoU (paper 3.1.2, condition (i)): "
         "otherwise a gt that no anchor covers with IoU >= 0.7 gets no positive anchor."),
        (same_as(_label_anchors_variant, compare, pos_strict=True),
         "An IoU of exactly positive_iou is positive: IoU >= 0.7, not > 0.7."),
        (same_as(_label_anchors_variant, compare, neg_inclusive=True),
         "An IoU of exactly negative_iou is not negative: negative means IoU < 0.3, strictly."),
        (same_as(_label_anchors_variant, compare, ignore_border=False),
         "Anchors that cross the image border take no part in training: label -1 (paper 3.3), "
         "and they are left out before the IoU rules are applied."),
        (same_as(_label_anchors_variant, compare, best_inside_only=False),
         "A gt's best anchor is looked for among the anchors INSIDE the image only: an ignored "
         "anchor outside cannot be its best one."),
        (same_as(_label_anchors_variant, compare, clobber=True),
         "A gt's best anchor stays positive even when its IoU is below negative_iou: apply the "
         "negative rule first and the positive rules after it, so positives win."),
        (same_as(_label_anchors_variant, compare, best_ties=False),
         "When several anchors tie for a gt's best IoU, all of them are positive: compare each "
         "anchor's IoU with the gt's maximum, rather than taking one argmax per gt."),
        (same_as(_label_anchors_variant, compare, best_needs_overlap=False),
         "A gt that overlaps no anchor (its best IoU is 0) has no best anchor: without the "
         "condition IoU > 0 every anchor 'ties' at 0 and becomes positive."),
        (same_as(_label_anchors_variant, compare, hw_swapped=True),
         "image_size is (H, W), rows first: x1, x2 are compared with W and y1, y2 with H."),
        (same_as(_label_anchors_variant, compare, matched="best_of"),
         "matched_gt is the gt each positive anchor overlaps MOST (argmax over the gts), also for "
         "an anchor that is positive because it is another gt's best anchor."),
        (same_as(_label_anchors_variant, compare, matched="everywhere"),
         "matched_gt is -1 for every anchor that is not positive: only positives have a box to "
         "regress to."),
    ]
    library = [_at_module.anchor_targets, _at_module._label_inside_anchors, _at_module.inside_image]
    return run_check("label_anchors(anchors, gt_boxes, image_size)", cases, calling(label_anchors, library=library),
                     compare, names=("anchors", "gt_boxes", "image_size"), mistakes=mistakes, hidden=hidden)


# the sample ------------------------------------------------------------------------------

def _sample_variant(labels, rng, batch_size=256, positive_fraction=0.5, cap=True, neg_quota="rest",
                    always_draw=False, neg_first=False, dropped_pos_to_negative=False):
    """The anchor sample with one switch flipped; all defaults = anchor_targets' sampling."""
    out = labels.copy()
    positives = np.flatnonzero(labels == 1)
    max_pos = int(batch_size * positive_fraction) if cap else batch_size
    if neg_first:                           # negatives drawn first, with the quota they end up with
        negatives = np.flatnonzero(labels == 0)
        keep_neg = _draw(negatives, batch_size - min(len(positives), max_pos), rng, always_draw)
        keep_pos = _draw(positives, max_pos, rng, always_draw)
    else:
        keep_pos = _draw(positives, max_pos, rng, always_draw)
        out[positives] = 0 if dropped_pos_to_negative else -1
        out[keep_pos] = 1
        negatives = np.flatnonzero(out == 0)
        quota = {"rest": batch_size - len(keep_pos), "half": batch_size - max_pos,
                 "all": batch_size}[neg_quota]
        keep_neg = _draw(negatives, quota, rng, always_draw)
    out[positives] = -1
    out[negatives] = -1
    out[keep_pos] = 1
    out[keep_neg] = 0
    return out


def _synthetic_anchors(labels):
    """Anchors, one gt box and an image size for which anchor_targets' labels (before the sample)
    are exactly `labels`: 1 -> the gt box itself, 0 -> a box far from it, -1 -> outside the image."""
    rows = {1: [0.0, 0.0, 10.0, 10.0], 0: [50.0, 50.0, 60.0, 60.0], -1: [-5.0, -5.0, 5.0, 5.0]}
    anchors = np.array([rows[int(v)] for v in labels], dtype=np.float64).reshape(-1, 4)
    return anchors, _box_array([0, 0, 10, 10]), (100, 100)


def _sampled_by_the_library(labels, seed, batch_size, positive_fraction):
    """anchor_targets' own sample of `labels` with default_rng(seed)."""
    anchors, gt, size = _synthetic_anchors(labels)
    unsampled, _ = _library_label_anchors(anchors, gt, size)
    assert np.array_equal(unsampled, labels), "the synthetic anchors did not give the labels"
    return _at_module.anchor_targets(anchors, gt, size, np.random.default_rng(seed), batch_size=batch_size,
                                     positive_fraction=positive_fraction)[0]


def _sample_cases(hidden):
    rng = _rng(12, hidden)
    L = lambda *parts: np.concatenate([np.full(n, v, dtype=np.int64) for v, n in parts])   # noqa: E731
    mixed = rng.permutation(L((1, 7), (0, 15), (-1, 10)))
    (grid_case,) = [c for c in _label_cases(hidden) if c[0].startswith("1728 anchors")]
    real, _ = _library_label_anchors(*grid_case[1:4])                     # check_label_anchors' grid
    specs = [
        ("fewer candidates than places: nothing is drawn", L((1, 2), (0, 3), (-1, 1)), 8, 0.5,
         "2 positives fit in the 4 positive places and 3 negatives in the 6 left: every label stays "
         "as it is, and the generator is not used."),
        ("more positives than half the batch", L((1, 6), (0, 6)), 4, 0.5,
         "At most int(4 * 0.5) = 2 positives: draw 2 of the 6, the other 4 become -1 (ignored, not "
         "negative). Then 4 - 2 = 2 negatives of the 6."),
        ("few positives: the negatives fill the rest", L((1, 2), (0, 10)), 8, 0.5,
         "Both positives stay (no draw: 2 <= 4), and the negatives fill the 8 - 2 = 6 places left."),
        ("no positives at all: the batch is all negative", L((0, 10), (-1, 3)), 6, 0.5,
         "0 positives, so 6 - 0 = 6 negatives are drawn from the 10."),
        ("positive_fraction 0.25", L((1, 8), (0, 20)), 12, 0.25,
         "int(12 * 0.25) = 3 positives, then 12 - 3 = 9 negatives."),
        ("ignored anchors stay ignored; the labels are shuffled", mixed, 10, 0.5,
         "An anchor labelled -1 never enters the sample. Draw from the candidates in increasing "
         "index order (np.flatnonzero(labels == 1))."),
        ("300 positives, 700 negatives: the paper's 256, 128 positive", L((1, 300), (0, 700)), 256, 0.5,
         "128 positives of the 300, then 256 - 128 = 128 negatives of the 700."),
        ("1728 labelled anchors of a 96 x 128 image, the paper's batch of 256", real, 256, 0.5,
         "Few positives: all stay, and the negatives fill 256 minus their number."),
    ]
    for k in range(3):                                                   # seeded random labels
        n = int(rng.integers(50, 400))
        labels = rng.choice(np.array([1, 0, -1]), size=n, p=rng.dirichlet([1, 3, 1]))
        bs = int(rng.integers(8, 64))
        specs.append((f"random labels {k + 1}: {n} anchors, batch {bs}", labels.astype(np.int64), bs,
                      float(rng.choice([0.25, 0.5, 0.75])), "Count what each step keeps by hand."))
    return [(name, labels, int(rng.integers(0, 10_000)), bs, pf, hint) for name, labels, bs, pf, hint in specs]


def check_sample_anchors(sample_anchors, hidden=False):
    """Check sample_anchors(labels, rng, batch_size=256, positive_fraction=0.5) -> labels (A,).

    Compared with anchor_targets.anchor_targets' sampling: positives p = np.flatnonzero(labels == 1);
    if there are more than int(batch_size * positive_fraction), keep p[rng.choice(len(p), size=k,
    replace=False)] (k the limit) and make the others -1; then the negatives fill batch_size minus
    the positives kept, drawn the same way; a group that fits is kept whole and draws nothing.
    """
    cases = []
    for name, labels, seed, bs, pf, hint in _sample_cases(hidden):
        cases.append(Case(f"{name} (rng: default_rng({seed}))", (labels, np.random.default_rng(seed)),
                          {"batch_size": bs, "positive_fraction": pf}, hint=hint, note="seeded random",
                          expected=_sampled_by_the_library(labels, seed, bs, pf)))
    compare = lambda e, g: _compare_ints(e, g, "labels", counts=True)   # noqa: E731

    def with_got(test):
        def predicate(case, got):
            got = np.asarray(got)
            return got.shape == case.expected.shape and test(case.args[0], got, case.kwargs, case.expected)
        return predicate

    def too_many_positives(labels, got, kw, exp):
        return (got == 1).sum() > int(kw["batch_size"] * kw["positive_fraction"])

    def a_positive_made_negative(labels, got, kw, exp):
        return bool(((labels == 1) & (got == 0)).any())

    def new_labels(labels, got, kw, exp):            # an ignored anchor sampled, or a label invented
        return bool(((got == 1) & (labels != 1)).any() or ((got == 0) & (labels != 0)).any())

    def valid_but_other_draw(labels, got, kw, exp):
        return (not np.array_equal(got, exp) and not new_labels(labels, got, kw, exp)
                and (got == 1).sum() == (exp == 1).sum() and (got == 0).sum() == (exp == 0).sum())

    mistakes = [
        (same_as(_sample_variant, compare, cap=False),
         "At most int(batch_size * positive_fraction) positives (128 of 256): with more, draw that "
         "many and make the others -1."),
        (same_as(_sample_variant, compare, neg_quota="half"),
         "The negatives fill batch_size minus the positives you KEPT, not minus the positive limit: "
         "with few positives the batch is filled up with negatives."),
        (same_as(_sample_variant, compare, neg_quota="all"),
         "The negatives fill what the positives left: batch_size - (positives kept), not batch_size."),
        (same_as(_sample_variant, compare, dropped_pos_to_negative=True),
         "A positive left out of the sample becomes -1 (ignored), never 0: it overlaps an object, "
         "and it must not be drawn as a negative."),
        (same_as(_sample_variant, compare, always_draw=True),
         "Right counts, other anchors: when a group fits in its places, keep it whole and do NOT "
         "call the generator (a draw moves it on, and the next draw picks other anchors)."),
        (same_as(_sample_variant, compare, neg_first=True),
         "Right counts, other anchors: draw the positives first, then the negatives (the generator "
         "gives other numbers in the other order)."),
        (with_got(too_many_positives),
         "More positives than int(batch_size * positive_fraction) in your sample."),
        (with_got(a_positive_made_negative),
         "A positive anchor became a negative (0) in your sample: one left out must become -1."),
        (with_got(new_labels),
         "Your sample has a 1 or a 0 where the input did not: the sample only turns labels into -1."),
        (with_got(valid_but_other_draw),
         "A valid sample with the right counts, but not the anchors the library's draw picks: from "
         "the candidates c = np.flatnonzero(labels == 1) (then == 0) keep c[rng.choice(len(c), "
         "size=k, replace=False)], positives first, and draw nothing for a group that fits."),
    ]
    library = [_at_module.anchor_targets, _at_module.random_subset]
    return run_check("sample_anchors(labels, rng, batch_size, positive_fraction)", cases,
                     calling(sample_anchors, library=library), compare, names=("labels", "rng"),
                     mistakes=mistakes, hidden=hidden)


# ======================================================================================
# 10 the proposal layer
# ======================================================================================

def _proposal_variant(anchors, objectness, deltas, image_size, pre_nms_top_n=6000, post_nms_top_n=300,
                      nms_threshold=0.7, min_size=16.0, order="paper", clip=True, hw_swapped=False,
                      strict_small=False, ties="stable", post_cut=True):
    """proposal_layer with one switch flipped; all defaults = the library's.

    order: "paper" (decode, clip, drop small, top-N, NMS, top-N), "small_before_clip",
    "topn_before_small", "nms_first" (NMS on every box, then the post-NMS top-N),
    "post_before_nms" (both top-N cuts, then NMS).
    """
    H, W = image_size[::-1] if hw_swapped else image_size
    boxes = _boxes.decode(anchors, deltas)                                # (A, 4)
    scores = objectness

    def do_clip(b):
        return np.clip(b, 0, np.array([W, H, W, H], dtype=b.dtype)) if clip else b

    def small_filter(b, s):
        size = b[:, 2:4] - b[:, 0:2]
        keep = ((size > min_size) if strict_small else (size >= min_size)).all(axis=1)
        return b[keep], s[keep]

    def top(b, s, n):
        o = {"stable": np.argsort(-s, kind="stable"), "reversed": np.argsort(s, kind="stable")[::-1]}[ties]
        if n is not None and n > 0:
            o = o[:n]
        return b[o], s[o]

    post = post_nms_top_n if post_cut and post_nms_top_n is not None and post_nms_top_n > 0 else None
    if order == "small_before_clip":
        boxes, scores = small_filter(boxes, scores)
        boxes = do_clip(boxes)
    elif order == "topn_before_small":
        boxes = do_clip(boxes)
        boxes, scores = top(boxes, scores, pre_nms_top_n)
        boxes, scores = small_filter(boxes, scores)
    else:
        boxes = do_clip(boxes)
        boxes, scores = small_filter(boxes, scores)
    if order == "nms_first":
        boxes, scores = top(boxes, scores, None)
    elif order != "topn_before_small":
        boxes, scores = top(boxes, scores, pre_nms_top_n)
    if order == "post_before_nms":
        boxes, scores = boxes[:post], scores[:post]
    keep = _boxes.nms(boxes, scores, nms_threshold)[:post]      # NMS keeps ties in the order given
    return boxes[keep], scores[keep]


def _proposal_cases(hidden):
    rng = _rng(13, hidden)
    A = _box_array
    z = lambda n: np.zeros((n, 4))            # noqa: E731  deltas that leave the anchors as they are
    s = lambda *v: np.array(v, dtype=np.float64)   # noqa: E731
    b0, b1, b2 = [10, 10, 40, 40], [11, 10, 41, 40], [60, 60, 90, 90]       # b1 overlaps b0 (IoU 0.94)
    base = _anchors.generate_base_anchors(8, (0.5, 1.0, 2.0), (2.0, 4.0, 8.0), dtype=np.float64)
    grid = _anchors.grid_anchors(base, 8, 8, 8)                              # (576, 4) a 64 x 64 image
    grid2 = _anchors.grid_anchors(base, 12, 16, 8)                           # (1728, 4) 96 x 128
    tied = A(*[[20 * (k % 5), 20 * (k // 5), 20 * (k % 5) + 15, 20 * (k // 5) + 15] for k in range(20)])
    tied_scores = s(*[0.9 if k % 3 else 0.5 for k in range(20)])
    specs = [
        ("one anchor, zero deltas: the anchor itself", A([10, 10, 40, 40]), s(0.9), z(1), (64, 64),
         {"min_size": 4.0}, "Zero deltas leave the anchor where it is (decode, exercise 03)."),
        ("the deltas move and resize the anchor", A([10, 10, 30, 50]), s(0.9),
         np.array([[0.5, -0.25, math.log(2), 0.0]]), (100, 100), {"min_size": 4.0},
         "decode(anchors, deltas): centre (20, 30) moves to (30, 20), the width doubles to 40."),
        ("clip into the image: x into [0, W], y into [0, H]; H = 50, W = 80",
         A([-10, -5, 30, 20], [60, 30, 100, 70]), s(0.9, 0.8), z(2), (50, 80), {"min_size": 4.0},
         "image_size is (H, W): x1, x2 go into [0, W = 80], y1, y2 into [0, H = 50]."),
        ("boxes smaller than min_size are dropped after clipping",
         A([-20, 0, 3, 30], [10, 10, 40, 40]), s(0.9, 0.8), z(2), (64, 64), {"min_size": 4.0},
         "Box 0 is 23 wide, but clipped to the image only 3: measure the size after clipping."),
        ("a box exactly min_size wide is kept", A([0, 0, 4, 10], [20, 20, 23.5, 40]), s(0.9, 0.8), z(2),
         (64, 64), {"min_size": 4.0}, "Keep w >= min_size and h >= min_size: 4 >= 4."),
        ("the pre-NMS top-N comes before NMS", A(b0, b1, b2), s(0.9, 0.8, 0.7), z(3), (100, 100),
         {"pre_nms_top_n": 2, "min_size": 4.0},
         "Only the 2 best boxes go into NMS: box 1 is suppressed by box 0, and box 2 never "
         "entered. One proposal."),
        ("the post-NMS top-N comes after NMS", A(b0, b1, b2), s(0.9, 0.8, 0.7), z(3), (100, 100),
         {"post_nms_top_n": 2, "min_size": 4.0},
         "NMS keeps boxes 0 and 2; then the first 2 of those: both."),
        ("the top-N counts the boxes left after the size filter",
         A([5, 5, 7, 7], b0, b2), s(0.9, 0.8, 0.7), z(3), (100, 100), {"pre_nms_top_n": 2, "min_size": 4.0},
         "Box 0 is 2 x 2 and dropped first; the top 2 of what is left are boxes 1 and 2."),
        ("post_nms_top_n = 1: only the best proposal", A(b0, b2, [0, 60, 30, 90]), s(0.5, 0.9, 0.7), z(3),
         (100, 100), {"post_nms_top_n": 1, "min_size": 4.0},
         "Nothing overlaps, NMS keeps all 3, and post_nms_top_n = 1 keeps the best (score 0.9)."),
        ("equal scores: the lower index first", A(b0, b1), s(0.5, 0.5), z(2), (100, 100), {"min_size": 4.0},
         "Sort by decreasing score with ties in index order (np.argsort(-scores, kind='stable')); "
         "NMS then keeps box 0."),
        ("20 boxes, two scores, pre_nms_top_n = 5: which 5", tied, tied_scores, z(20), (100, 100),
         {"pre_nms_top_n": 5, "min_size": 4.0},
         "The 5 best are the first five boxes scored 0.9 in index order: a stable sort "
         "(np.argsort is not stable on 17 or more values by default)."),
        ("every box too small: no proposals", A([0, 0, 2, 2], [10, 10, 13, 11]), s(0.9, 0.8), z(2),
         (64, 64), {"min_size": 4.0},
         "Return empty arrays of shapes (0, 4) and (0,)."),
        ("pre_nms_top_n and post_nms_top_n None: no limit", A(b0, b2, [0, 60, 30, 90]), s(0.5, 0.9, 0.7),
         z(3), (100, 100), {"pre_nms_top_n": None, "post_nms_top_n": None, "min_size": 4.0},
         "None (or a number <= 0) means no limit: every box goes into NMS and every survivor out."),
        ("576 anchors of a 64 x 64 image, random scores and deltas", grid, rng.uniform(0, 1, len(grid)),
         rng.normal(0, 0.2, (len(grid), 4)), (64, 64),
         {"pre_nms_top_n": 200, "post_nms_top_n": 50, "min_size": 4.0},
         "Print how many boxes are left after each step and compare with the library's proposals."),
        ("1728 anchors of a 96 x 128 image, logits as scores", grid2, rng.normal(0, 2, len(grid2)),
         rng.normal(0, 0.3, (len(grid2), 4)), (96, 128),
         {"pre_nms_top_n": 500, "post_nms_top_n": 100, "nms_threshold": 0.6, "min_size": 8.0},
         "Only the order of the scores matters: logits work as well as probabilities."),
    ]
    return specs


def check_proposal_layer(proposal_layer, hidden=False):
    """Check proposal_layer(anchors, objectness, deltas, image_size, pre_nms_top_n=6000,
    post_nms_top_n=300, nms_threshold=0.7, min_size=16.0) -> (proposals (R, 4), scores (R,)).

    Compared with proposals.proposal_layer (paper 3.1, 3.3): decode every anchor's deltas; clip
    to the image (x into [0, W], y into [0, H], image_size = (H, W)); keep w >= min_size and
    h >= min_size; sort by decreasing score (stable: ties in index order) and keep the first
    pre_nms_top_n; NMS at nms_threshold; keep the first post_nms_top_n. A top-N of None (or <= 0)
    is no limit. Returns the boxes and their scores, best first.
    """
    cases = []
    for name, anchors, obj, deltas, size, kwargs, hint in _proposal_cases(hidden):
        cases.append(Case(name, (anchors, obj, deltas, size), kwargs, hint=hint, note="seeded random",
                          expected=_proposals.proposal_layer(anchors, obj, deltas, size, **kwargs)))

    def compare(e, g):
        return compare_tuple(e, g, ("proposals", "scores"),
                             [lambda a, b, n: compare_array(a, b, n)] * 2)

    mistakes = [
        (same_as(_proposal_variant, compare, order="nms_first"),
         "Take the pre_nms_top_n best boxes BEFORE NMS (NMS on 12000 boxes, not on all ~20000, is "
         "what keeps it fast), and the post_nms_top_n after it."),
        (same_as(_proposal_variant, compare, order="post_before_nms"),
         "The post_nms_top_n cut comes after NMS: cut first, and suppressed boxes take places that "
         "boxes further down would have filled."),
        (same_as(_proposal_variant, compare, order="topn_before_small"),
         "Drop the small boxes before the top-N: the pre_nms_top_n places go to boxes that survive "
         "the size filter."),
        (same_as(_proposal_variant, compare, order="small_before_clip"),
         "Clip first, then measure: a box that sticks out of the image can be big before clipping "
         "and tiny after."),
        (same_as(_proposal_variant, compare, clip=False),
         "Clip the decoded boxes to the image: x into [0, W], y into [0, H]."),
        (same_as(_proposal_variant, compare, hw_swapped=True),
         "image_size is (H, W), rows first: x is clipped to [0, W] and y to [0, H]."),
        (same_as(_proposal_variant, compare, strict_small=True),
         "A box exactly min_size wide or high is kept: w >= min_size and h >= min_size."),
        (same_as(_proposal_variant, compare, ties="reversed"),
         "Equal scores in reverse index order: argsort(scores)[::-1] reverses ties. Use "
         "np.argsort(-scores, kind='stable')."),
        (same_as(_proposal_variant, compare, post_cut=False),
         "Keep only the first post_nms_top_n boxes that NMS returns."),
    ]
    library = [_proposals.proposal_layer, _boxes.clip_boxes, _boxes.remove_small_boxes]
    return run_check("proposal_layer(anchors, objectness, deltas, image_size, ...)", cases,
                     calling(proposal_layer, library=library), compare,
                     names=("anchors", "objectness", "deltas", "image_size"), mistakes=mistakes, hidden=hidden)


# ======================================================================================
# 11 RoI sampling for the head
# ======================================================================================

def _library_roi_targets(proposals, gt_boxes, gt_labels, num_classes, rng, batch_size=128, fg_fraction=0.25,
                         fg_iou=0.5, bg_iou_hi=0.5, bg_iou_lo=0.1, stds=(0.1, 0.1, 0.2, 0.2)):
    """proposal_targets (the paper's sampling: no jittered gt copies) as the exercise's tuple."""
    t = _pt_module.proposal_targets(proposals, gt_boxes, gt_labels, num_classes, rng, batch_size=batch_size,
                                    fg_fraction=fg_fraction, fg_iou=fg_iou, bg_iou_hi=bg_iou_hi,
                                    bg_iou_lo=bg_iou_lo, stds=stds, gt_jitter=0)
    return t["rois"], t["labels"], t["bbox_targets"], t["bbox_weights"]


def _roi_targets_variant(proposals, gt_boxes, gt_labels, num_classes, rng, batch_size=128, fg_fraction=0.25,
                         fg_iou=0.5, bg_iou_hi=0.5, bg_iou_lo=0.1, stds=(0.1, 0.1, 0.2, 0.2), add_gt=True,
                         fg_strict=False, bg_lo=True, cap=True, bg_quota="rest", norm="divide",
                         columns="class", label_from="gt_labels", bg_first=False, no_gt_all_bg=True,
                         sort=True):
    """proposal_targets with one switch flipped; all defaults = the library's (gt_jitter 0)."""
    G = gt_boxes.shape[0]
    rois_all = np.concatenate([proposals, gt_boxes]) if add_gt else proposals       # (n, 4)
    n = rois_all.shape[0]
    if G > 0:
        iou = _boxes.box_iou(rois_all, gt_boxes)                          # (n, G)
        max_iou, best_gt = iou.max(axis=1), iou.argmax(axis=1)
        lo_ok = max_iou >= bg_iou_lo if bg_lo else np.ones(n, dtype=bool)
        bg_mask = lo_ok & (max_iou < bg_iou_hi)
    else:
        max_iou, best_gt = np.zeros(n), np.zeros(n, dtype=np.int64)
        bg_mask = np.ones(n, dtype=bool) if no_gt_all_bg else np.zeros(n, dtype=bool)
    fg_mask = max_iou > fg_iou if fg_strict else max_iou >= fg_iou
    fg_wanted = int(round(fg_fraction * batch_size)) if cap else batch_size
    fg = _draw(np.flatnonzero(fg_mask), fg_wanted, rng, sort=sort)
    quota = {"rest": batch_size - len(fg), "all": batch_size}[bg_quota]
    bg = _draw(np.flatnonzero(bg_mask), quota, rng, sort=sort)
    keep = np.concatenate([bg, fg] if bg_first else [fg, bg]).astype(np.int64)
    F, S = len(fg), len(keep)
    fg_rows = np.arange(S - F, S) if bg_first else np.arange(F)
    rois = rois_all[keep]
    labels = np.zeros(S, dtype=np.int64)
    K1 = 4 * (num_classes + 1)
    bbox_targets, bbox_weights = np.zeros((S, K1)), np.zeros((S, K1))
    if F > 0:
        g = best_gt[fg]
        labels[fg_rows] = gt_labels[g] if label_from == "gt_labels" else g + 1
        deltas = _boxes.encode(rois[fg_rows], gt_boxes[g])
        deltas = {"divide": deltas / np.array(stds), "none": deltas, "multiply": deltas * np.array(stds)}[norm]
        first = {"class": 4 * labels[fg_rows], "first": np.zeros(F, dtype=np.int64),
                 "minus_one": 4 * (labels[fg_rows] - 1)}[columns]
        cols = first[:, None] + np.arange(4)[None, :]
        bbox_targets[fg_rows[:, None], cols] = deltas
        bbox_weights[fg_rows[:, None], cols] = 1
    return rois, labels, bbox_targets, bbox_weights


def _roi_cases(hidden):
    rng = _rng(14, hidden)
    A = _box_array
    lab = lambda *v: np.array(v, dtype=np.int64)   # noqa: E731
    g3 = A([10, 10, 50, 50], [60, 20, 90, 80], [20, 60, 45, 95])
    near = [[12, 8, 52, 48], [60, 25, 92, 75], [20, 62, 46, 90]]            # fg around each gt
    far = [[0, 0, 30, 20], [55, 0, 95, 30], [40, 40, 70, 70], [0, 70, 30, 100], [70, 80, 100, 100],
           [30, 20, 60, 50], [5, 40, 25, 70], [80, 40, 100, 60], [50, 60, 70, 90], [10, 0, 40, 15]]
    pick = lambda n: A(*far[:n])                   # noqa: E731

    def around(k, std, extra):            # k jittered copies of each gt box, then `extra` random boxes
        boxes = np.concatenate([np.concatenate([g + rng.normal(0, std, (k, 4)) for g in g3]),
                                _random_boxes(rng, extra, size=90.0, min_side=6.0, max_side=45.0)])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 2)          # at least 2 x 2
        return boxes

    rand_props, big_props = around(8, 6.0, 48), around(30, 5.0, 210)
    big = {"batch_size": 64}
    return [
        ("IoU >= 0.5: foreground with its gt's class; [0.1, 0.5): background",
         A([10, 10, 50, 46], [60, 60, 90, 90], [10, 10, 50, 22]), A([10, 10, 50, 50]), lab(2), 3, big,
         "Proposal 0 (IoU 0.9) is class 2; proposal 2 (IoU 0.3) is background (0); proposal 1 (IoU 0) "
         "is neither and left out. Rows: foreground first, then background."),
        ("the gt boxes are candidates too", A([0, 0, 30, 20], [55, 0, 95, 30]), A([10, 10, 50, 50]),
         lab(1), 2, big,
         "No proposal is near the gt, yet the head needs foreground: the candidates are the "
         "proposals followed by the gt boxes, and a gt box has IoU 1 with itself."),
        ("an IoU of exactly 0.5 is foreground", A([0, 0, 10, 5]), A([0, 0, 10, 10]), lab(1), 1, big,
         "IoU 50 / 100 = 0.5: foreground means IoU >= 0.5."),
        ("background needs IoU >= 0.1", A([0, 0, 10, 0.5], [0, 0, 10, 1], [0, 0, 10, 3]), A([0, 0, 10, 10]),
         lab(1), 1, big,
         "IoUs 0.05, 0.1 and 0.3: background is 0.1 <= IoU < 0.5, so the first is left out."),
        ("class-specific targets: class 3 in columns 12:16", A(near[0], near[1]), g3[:2], lab(3, 1), 3, big,
         "Row r's 4 deltas go in columns 4c:4c+4 of its class c = gt_labels[best gt]; bbox_weights "
         "is 1 there and 0 elsewhere. The gt's class, not its index: gt 0 is class 3."),
        ("targets are divided by the stds", A([14, 12, 54, 52]), A([10, 10, 50, 50]), lab(1), 1, big,
         "t = encode(roi, gt) / stds: (tx / 0.1, ty / 0.1, tw / 0.2, th / 0.2)."),
        ("at most 25% foreground: 2 of a batch of 8", A(*near, *far[:10]), g3, lab(1, 2, 3), 3,
         {"batch_size": 8},
         "round(0.25 * 8) = 2 of the 6 foreground candidates (3 proposals + 3 gt boxes), drawn as in "
         "exercise 09; the background fills the 6 places left."),
        ("few foreground: the background fills the rest", pick(10), A([10, 10, 50, 50]), lab(2), 2,
         {"batch_size": 8, "fg_fraction": 0.5},
         "Only the gt box itself is foreground (1 of the 4 places): the background fills 8 - 1 = 7."),
        ("no gt boxes: every proposal is background", pick(3), np.zeros((0, 4)), lab(), 2, big,
         "With no object in the image every proposal is background (label 0, no targets), whatever "
         "bg_iou_lo says: otherwise such an image gives the head nothing to learn from."),
        ("no proposals: the gt boxes alone", np.zeros((0, 4)), g3[:2], lab(2, 1), 2, big,
         "The candidates are the gt boxes alone: both foreground."),
        ("72 proposals around 3 gts, batch 32", rand_props, g3, lab(2, 1, 3), 3, {"batch_size": 32},
         "Count foreground and background candidates first, then which rows were drawn."),
        ("300 proposals, the paper's batch of 128 (25% foreground)", big_props, g3, lab(1, 3, 2), 3, {},
         "Count foreground and background candidates first, then which rows were drawn."),
    ]


def check_roi_targets(roi_targets, hidden=False):
    """Check roi_targets(proposals, gt_boxes, gt_labels, num_classes, rng, batch_size=128,
    fg_fraction=0.25, fg_iou=0.5, bg_iou_hi=0.5, bg_iou_lo=0.1, stds=(0.1, 0.1, 0.2, 0.2))
    -> (rois (S, 4), labels (S,) int, bbox_targets (S, 4(K+1)), bbox_weights (S, 4(K+1))).

    Compared with proposal_targets.proposal_targets (Fast R-CNN 2.3; gt_jitter 0): candidates =
    the proposals, then the gt boxes; with m the best IoU of a candidate and g* its argmax gt:
    foreground m >= fg_iou, background bg_iou_lo <= m < bg_iou_hi (every candidate when there is
    no gt); at most round(fg_fraction * batch_size) foreground, then background up to
    batch_size, each drawn as in exercise 09 (kept in increasing candidate order); foreground rows
    first. A foreground row's label is gt_labels[g*], its targets encode(roi, gt g*) / stds in
    columns 4c:4c+4 of its class c, bbox_weights 1 there; everything else 0.
    """
    cases = []
    for k, (name, props, gt, gl, K, kwargs, hint) in enumerate(_roi_cases(hidden)):
        seed = int(_rng(15 + k, hidden).integers(0, 10_000))
        cases.append(Case(f"{name} (rng: default_rng({seed}))", (props, gt, gl, K, np.random.default_rng(seed)),
                          kwargs, hint=hint, note="seeded random",
                          expected=_library_roi_targets(props, gt, gl, K, np.random.default_rng(seed), **kwargs)))

    def compare(e, g):
        return compare_tuple(e, g, ("rois", "labels", "bbox_targets", "bbox_weights"),
                             [lambda a, b, n: compare_array(a, b, n),
                              lambda a, b, n: _compare_ints(a, b, n),
                              lambda a, b, n: compare_array(a, b, n),
                              lambda a, b, n: compare_array(a, b, n)])

    mistakes = [
        (same_as(_roi_targets_variant, compare, add_gt=False),
         "Add the gt boxes to the candidates (after the proposals): early in training the RPN "
         "proposes nothing near the objects, and the head would get no foreground at all."),
        (same_as(_roi_targets_variant, compare, fg_strict=True),
         "An IoU of exactly fg_iou is foreground: IoU >= 0.5."),
        (same_as(_roi_targets_variant, compare, bg_lo=False),
         "Background is bg_iou_lo <= IoU < bg_iou_hi: RoIs with IoU below 0.1 are left out (Fast "
         "R-CNN's heuristic: the hard examples are the ones that overlap an object somewhat)."),
        (same_as(_roi_targets_variant, compare, cap=False),
         "At most round(fg_fraction * batch_size) foreground rows (32 of 128): draw that many when "
         "there are more."),
        (same_as(_roi_targets_variant, compare, bg_quota="all"),
         "The background fills batch_size minus the foreground rows kept, not the whole batch_size."),
        (same_as(_roi_targets_variant, compare, norm="none"),
         "Divide the deltas by the stds (0.1, 0.1, 0.2, 0.2): t = encode(roi, gt) / stds."),
        (same_as(_roi_targets_variant, compare, norm="multiply"),
         "Divide the deltas by the stds (t = encode(roi, gt) / stds), don't multiply."),
        (same_as(_roi_targets_variant, compare, columns="first"),
         "The targets are class-specific: class c's 4 deltas go in columns 4c:4c+4 (columns 0:4 "
         "belong to the background class 0), and bbox_weights is 1 on exactly those columns."),
        (same_as(_roi_targets_variant, compare, columns="minus_one"),
         "Column block c belongs to class c, with block 0 for the background: columns 4c:4c+4, "
         "not 4(c-1):4c."),
        (same_as(_roi_targets_variant, compare, label_from="index"),
         "A foreground row's label is the CLASS of its best gt, gt_labels[g*], not g* + 1."),
        (same_as(_roi_targets_variant, compare, bg_first=True),
         "Foreground rows first, then background."),
        (same_as(_roi_targets_variant, compare, no_gt_all_bg=False),
         "An image without gt boxes: every candidate is background (label 0), whatever bg_iou_lo."),
        (same_as(_roi_targets_variant, compare, sort=False),
         "Right rows, other order: keep the drawn candidates in increasing index order (np.sort)."),
    ]
    library = [_pt_module.proposal_targets, _at_module.random_subset]
    return run_check("roi_targets(proposals, gt_boxes, gt_labels, num_classes, rng, ...)", cases,
                     calling(roi_targets, library=library), compare,
                     names=("proposals", "gt_boxes", "gt_labels", "num_classes", "rng"),
                     mistakes=mistakes, hidden=hidden)


# ======================================================================================
# 12 the multi-task loss
# ======================================================================================

def _library_rpn_loss(logits, deltas, labels, bbox_targets, feat_size, batch_size=256, lam=10.0, sigma=3.0):
    """rpn.rpn_loss with the paper's normalisation, as the exercise's tuple."""
    cfg = dataclasses.replace(Config(), rpn_batch_size=batch_size, rpn_lambda=lam, rpn_sigma=sigma,
                              loss_normalization="paper")
    terms, dlogits, ddeltas = _rpn.rpn_loss(logits, deltas, labels, bbox_targets, feat_size, cfg)
    return float(terms["rpn_cls"]), float(terms["rpn_reg"]), dlogits, ddeltas


def _library_head_loss(scores, deltas, labels, bbox_targets, bbox_weights, lam=1.0, sigma=1.0):
    """fast_rcnn.fast_rcnn_loss as the exercise's tuple."""
    cfg = dataclasses.replace(Config(), head_lambda=lam, head_sigma=sigma)
    terms, dscores, ddeltas = _fast_rcnn.fast_rcnn_loss(scores, deltas, labels, bbox_targets, bbox_weights, cfg)
    return float(terms["head_cls"]), float(terms["head_reg"]), dscores, ddeltas


def _rpn_loss_variant(logits, deltas, labels, bbox_targets, feat_size, batch_size=256, lam=10.0, sigma=3.0,
                      n_cls="batch", n_reg="locations", per_image=True, lam_on="both", mask="positives",
                      use_sigma=True, ignored_as_negative=False):
    """The RPN loss with one switch flipped; all defaults = rpn.rpn_loss (paper normalisation)."""
    n, r, _ = logits.shape
    images = n if per_image else 1
    y = labels.reshape(-1)
    y_cls = np.where(y < 0, 0, y) if ignored_as_negative else y
    p_star = {"positives": y == 1, "sampled": y >= 0, "all": np.ones_like(y, dtype=bool)}[mask]
    N_cls = {"batch": images * batch_size, "sampled": max(int((y >= 0).sum()), 1)}[n_cls]
    H, W = feat_size
    N_reg = {"locations": images * H * W, "batch": images * batch_size, "anchors": images * r,
             "positives": max(int((y == 1).sum()), 1)}[n_reg]
    cls_loss, dlogits = _ops.softmax_cross_entropy(logits.reshape(-1, 2), y_cls, normalizer=N_cls)
    weights = np.repeat(p_star.astype(deltas.dtype)[:, None], 4, axis=1)
    reg_loss, ddeltas = _ops.smooth_l1(deltas.reshape(-1, 4), bbox_targets.reshape(-1, 4), weights,
                                       sigma=sigma if use_sigma else 1.0, normalizer=N_reg)
    l_loss = lam if lam_on in ("both", "loss") else 1.0
    l_grad = lam if lam_on == "both" else 1.0
    return (float(cls_loss), l_loss * float(reg_loss), dlogits.reshape(n, r, 2),
            (l_grad * ddeltas).reshape(n, r, 4))


def _head_loss_variant(scores, deltas, labels, bbox_targets, bbox_weights, lam=1.0, sigma=1.0, reg_norm="rois",
                       cls_norm="rois", lam_on="both", use_sigma=True, weights="given"):
    """The head's loss with one switch flipped; all defaults = fast_rcnn.fast_rcnn_loss."""
    S = max(len(labels), 1)
    F = max(int((labels >= 1).sum()), 1)
    cls_loss, dscores = _ops.softmax_cross_entropy(scores, labels, normalizer={"rois": S, "fg": F, "128": 128}[cls_norm])
    w = bbox_weights if weights == "given" else np.ones_like(bbox_weights)
    reg_loss, ddeltas = _ops.smooth_l1(deltas, bbox_targets, w, sigma=sigma if use_sigma else 3.0,
                                       normalizer={"rois": S, "fg": F, "128": 128}[reg_norm])
    l_loss = lam if lam_on in ("both", "loss") else 1.0
    l_grad = lam if lam_on == "both" else 1.0
    return float(cls_loss), l_loss * float(reg_loss), dscores, l_grad * ddeltas


def _rpn_inputs(rng, n, h, w, a, n_pos, n_neg):
    """Random RPN outputs and targets: per image n_pos positives and n_neg negatives among the
    h * w * a anchors, the rest -1; targets on every row (the loss must use only the positives')."""
    r = h * w * a
    logits = rng.normal(0, 1.5, (n, r, 2))
    deltas = rng.normal(0, 0.3, (n, r, 4))
    targets = rng.normal(0, 0.3, (n, r, 4))
    labels = np.full((n, r), -1, dtype=np.int64)
    for i in range(n):
        idx = rng.permutation(r)
        labels[i, idx[:n_pos]] = 1
        labels[i, idx[n_pos:n_pos + n_neg]] = 0
    return logits, deltas, labels, targets, (h, w)


def check_rpn_loss(rpn_loss, hidden=False):
    """Check rpn_loss(logits, deltas, labels, bbox_targets, feat_size, batch_size=256, lam=10.0,
    sigma=3.0) -> (cls_loss, reg_loss, dlogits, ddeltas).

    Compared with rpn.rpn_loss, the paper's normalisation (eq. 1): logits (N, R, 2), deltas and
    bbox_targets (N, R, 4), labels (N, R) in {1, 0, -1}, feat_size (H, W), R = H * W * A.
    cls_loss = sum over sampled anchors of -log p / N_cls, N_cls = N * batch_size;
    reg_loss = lam * sum over positives of smooth_l1(sigma) / N_reg, N_reg = N * H * W (the anchor
    locations); the gradients of cls_loss and reg_loss, shaped like logits and deltas.
    """
    rng = _rng(16, hidden)
    specs = [
        ("one image, 3 x 4 locations, 3 anchors each, 10 sampled", _rpn_inputs(rng, 1, 3, 4, 3, 3, 7), {},
         "N_cls = batch_size = 256 (not the 10 sampled), N_reg = H * W = 12 locations (not 36 anchors)."),
        ("two images: every normaliser counts both", _rpn_inputs(rng, 2, 3, 4, 3, 2, 6), {},
         "With N images, N_cls = N * 256 and N_reg = N * H * W: the loss is a mean over images."),
        ("no positive anchor: the regression term is 0", _rpn_inputs(rng, 1, 2, 2, 3, 0, 5), {},
         "p* = 0 everywhere: only positive anchors (label 1) are regressed."),
        ("lambda 1, sigma 1, batch_size 16", _rpn_inputs(rng, 1, 4, 4, 2, 4, 8),
         {"batch_size": 16, "lam": 1.0, "sigma": 1.0},
         "Use the arguments: N_cls = N * batch_size, lambda = lam, the smooth L1's sigma = sigma."),
        ("lambda 10 scales the gradient too", _rpn_inputs(rng, 1, 2, 3, 3, 4, 4), {"lam": 10.0},
         "reg_loss = lam * (...), so d reg_loss / d deltas = lam * (...)."),
        ("the paper's sizes: 2 images, 16 x 20 locations, 9 anchors, 256 sampled",
         _rpn_inputs(rng, 2, 16, 20, 9, 40, 216), {},
         "N_cls = 2 * 256, N_reg = 2 * 320."),
    ]
    cases = [Case(name, args, kwargs, hint=hint, note="seeded random",
                  expected=_library_rpn_loss(*args, **kwargs)) for name, args, kwargs, hint in specs]
    compare = _compare_loss_tuple(("cls_loss", "reg_loss", "dlogits", "ddeltas"))
    mistakes = [
        (same_as(_rpn_loss_variant, compare, n_reg="batch"),
         "N_reg is the number of anchor LOCATIONS, N * H * W (~2400 at 600 px), not the sample size "
         "256: the paper divides the regression term by N_reg and balances it with lambda = 10."),
        (same_as(_rpn_loss_variant, compare, n_reg="anchors"),
         "N_reg counts anchor locations (cells of the feature map), H * W per image, not the "
         "H * W * A anchors."),
        (same_as(_rpn_loss_variant, compare, n_reg="positives"),
         "N_reg is the number of anchor locations, N * H * W, not the number of positives."),
        (same_as(_rpn_loss_variant, compare, n_cls="sampled"),
         "N_cls is the mini-batch size, N * batch_size (256 per image), even when fewer anchors were "
         "sampled (that is py-faster-rcnn's normalisation, not the paper's)."),
        (same_as(_rpn_loss_variant, compare, per_image=False),
         "With N images in the batch, both normalisers are multiplied by N: N_cls = N * batch_size, "
         "N_reg = N * H * W."),
        (same_as(_rpn_loss_variant, compare, lam_on="none"),
         "Multiply the regression term by lambda (lam): L = L_cls / N_cls + lambda L_reg / N_reg."),
        (same_as(_rpn_loss_variant, compare, lam_on="loss"),
         "reg_loss is multiplied by lambda, so its gradient ddeltas is too."),
        (same_as(_rpn_loss_variant, compare, mask="sampled"),
         "p* is 1 for POSITIVE anchors only: negatives (label 0) have no box to regress to."),
        (same_as(_rpn_loss_variant, compare, mask="all"),
         "Only positive anchors (p* = 1) enter the regression term: weights = (labels == 1), "
         "repeated over the 4 coordinates."),
        (same_as(_rpn_loss_variant, compare, use_sigma=False),
         "Pass sigma (3 for the RPN) to the smooth L1."),
        (same_as(_rpn_loss_variant, compare, ignored_as_negative=True),
         "Anchors labelled -1 are not in the sample: they are left out of the classification term "
         "(softmax_cross_entropy ignores label -1), not counted as background."),
    ]
    return run_check("rpn_loss(logits, deltas, labels, bbox_targets, feat_size, ...)", cases,
                     calling(rpn_loss, library=[_rpn.rpn_loss, _fast_rcnn.fast_rcnn_loss]), compare,
                     names=("logits", "deltas", "labels", "bbox_targets", "feat_size"), mistakes=mistakes,
                     hidden=hidden)


def _compare_loss_tuple(names):
    def compare(e, g):
        return compare_tuple(e, g, names, [lambda a, b, n: compare_scalar(a, b, n),
                                           lambda a, b, n: compare_scalar(a, b, n),
                                           lambda a, b, n: compare_array(a, b, n),
                                           lambda a, b, n: compare_array(a, b, n)])
    return compare


def _head_inputs(rng, s, k, n_fg):
    """Random head outputs and proposal_targets-like targets: S RoIs, n_fg foreground first."""
    scores = rng.normal(0, 1.5, (s, k + 1))
    deltas = rng.normal(0, 0.5, (s, 4 * (k + 1)))
    labels = np.zeros(s, dtype=np.int64)
    labels[:n_fg] = rng.integers(1, k + 1, n_fg)
    targets = np.zeros((s, 4 * (k + 1)))
    weights = np.zeros((s, 4 * (k + 1)))
    for i in range(n_fg):
        cols = slice(4 * labels[i], 4 * labels[i] + 4)
        targets[i, cols] = rng.normal(0, 1, 4)
        weights[i, cols] = 1
    return scores, deltas, labels, targets, weights


def check_head_loss(head_loss, hidden=False):
    """Check head_loss(scores, deltas, labels, bbox_targets, bbox_weights, lam=1.0, sigma=1.0)
    -> (cls_loss, reg_loss, dscores, ddeltas).

    Compared with fast_rcnn.fast_rcnn_loss (Fast R-CNN eq. 1): scores (S, K+1), deltas,
    bbox_targets, bbox_weights (S, 4(K+1)), labels (S,) in 0..K. cls_loss = mean over the S RoIs
    of -log p; reg_loss = lam * sum smooth_l1(sigma) with bbox_weights / S; and their gradients.
    """
    rng = _rng(17, hidden)
    specs = [
        ("8 RoIs, 2 classes, 2 foreground", _head_inputs(rng, 8, 2, 2), {},
         "Both terms are divided by S = 8, the number of RoIs, not by the 2 foreground ones."),
        ("all background: the regression term is 0", _head_inputs(rng, 4, 3, 0), {},
         "bbox_weights is 0 on every background row: [u >= 1] L_reg."),
        ("lambda 2, sigma 3", _head_inputs(rng, 6, 2, 3), {"lam": 2.0, "sigma": 3.0},
         "Use the arguments lam and sigma."),
        ("64 RoIs, 20 classes, 16 foreground", _head_inputs(rng, 64, 20, 16), {"lam": 1.0},
         "Divide by S = 64."),
    ]
    cases = [Case(name, args, kwargs, hint=hint, note="seeded random",
                  expected=_library_head_loss(*args, **kwargs)) for name, args, kwargs, hint in specs]
    compare = _compare_loss_tuple(("cls_loss", "reg_loss", "dscores", "ddeltas"))
    mistakes = [
        (same_as(_head_loss_variant, compare, reg_norm="fg"),
         "Divide the regression term by S, the number of RoIs (Fast R-CNN: [u >= 1] inside the sum "
         "over all S RoIs), not by the foreground count."),
        (same_as(_head_loss_variant, compare, cls_norm="128"),
         "Divide by S, the number of RoIs actually given (proposal_targets may return fewer than 128)."),
        (same_as(_head_loss_variant, compare, lam_on="none"),
         "Multiply the regression term by lambda (lam)."),
        (same_as(_head_loss_variant, compare, lam_on="loss"),
         "reg_loss is multiplied by lambda, so its gradient ddeltas is too."),
        (same_as(_head_loss_variant, compare, use_sigma=False),
         "Pass sigma to the smooth L1 (the head's is 1)."),
        (same_as(_head_loss_variant, compare, weights="ones"),
         "Weight the smooth L1 by bbox_weights: only the 4 columns of a foreground RoI's own class "
         "are regressed."),
    ]
    return run_check("head_loss(scores, deltas, labels, bbox_targets, bbox_weights, ...)", cases,
                     calling(head_loss, library=[_rpn.rpn_loss, _fast_rcnn.fast_rcnn_loss]), compare,
                     names=("scores", "deltas", "labels", "bbox_targets", "bbox_weights"), mistakes=mistakes,
                     hidden=hidden)


# ======================================================================================
# 13 VOC average precision
# ======================================================================================

def _library_voc_ap(det_image, det_scores, det_boxes, gt_boxes, gt_difficult, iou_threshold=0.5, method="area"):
    """evaluate.evaluate_detections on one class ("object", label 1): its AP."""
    dets = [{"boxes": det_boxes[det_image == i], "scores": det_scores[det_image == i],
             "labels": np.ones(int((det_image == i).sum()), dtype=np.int64)} for i in range(len(gt_boxes))]
    gts = [{"boxes": g, "labels": np.ones(len(g), dtype=np.int64), "difficult": d}
           for g, d in zip(gt_boxes, gt_difficult)]
    return _evaluate.evaluate_detections(dets, gts, ("object",), iou_threshold=iou_threshold,
                                         method=method)["ap"]["object"]


def _voc_ap_variant(det_image, det_scores, det_boxes, gt_boxes, gt_difficult, iou_threshold=0.5, method="area",
                    force_method=None, npos_difficult=False, difficult="ignore", once=True, best="any",
                    strict=False, sort=True, envelope=True, points="arange", interp="max"):
    """VOC AP of one class as a plain loop, with one switch flipped; defaults = evaluate's."""
    method = force_method or method
    order = np.argsort(-det_scores, kind="stable") if sort else np.arange(len(det_scores))
    taken = [np.zeros(len(g), dtype=bool) for g in gt_boxes]
    tp, fp = [], []

    def count(is_tp):
        tp.append(1 if is_tp else 0)
        fp.append(0 if is_tp else 1)

    for j in order:
        i = int(det_image[j])
        ious = _evaluate.iou_matrix(det_boxes[j:j + 1], gt_boxes[i])[0]          # (G_i,)
        if best == "free":
            ious = np.where(taken[i], -1.0, ious)
        g = int(ious.argmax()) if len(ious) else -1
        hit = g >= 0 and (ious[g] > iou_threshold if strict else ious[g] >= iou_threshold)
        if not hit:
            count(False)
        elif gt_difficult[i][g] and difficult != "tp":
            if difficult == "fp":
                count(False)                # else ignored: neither
        elif taken[i][g] and once:
            count(False)
        else:
            taken[i][g] = True
            count(True)
    npos = sum(len(d) if npos_difficult else int((~np.asarray(d, dtype=bool)).sum()) for d in gt_difficult)
    tp_cum, fp_cum = np.cumsum(tp, dtype=np.float64), np.cumsum(fp, dtype=np.float64)
    recall = tp_cum / npos
    precision = tp_cum / np.maximum(tp_cum + fp_cum, 1.0)
    if method == "voc07":
        ts = np.arange(0.0, 1.1, 0.1) if points == "arange" else np.array([k / 10 for k in range(11)])
        total = 0.0
        for t in ts:
            above = recall >= t
            if above.any():
                total += precision[above].max() if interp == "max" else precision[np.argmax(above)]
        return float(total / 11)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    if envelope:
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _voc_case(dets, gts, n_images=None):
    """(det_image, det_scores, det_boxes, gt_boxes, gt_difficult) from short lists:
    dets = [(image, score, box)], gts = [(image, box, difficult)]."""
    n = n_images or 1 + max([d[0] for d in dets] + [g[0] for g in gts] + [0])
    det_image = np.array([d[0] for d in dets], dtype=np.int64)
    det_scores = np.array([d[1] for d in dets], dtype=np.float64)
    det_boxes = np.array([d[2] for d in dets], dtype=np.float64).reshape(-1, 4)
    gt_boxes = [np.array([g[1] for g in gts if g[0] == i], dtype=np.float64).reshape(-1, 4) for i in range(n)]
    gt_difficult = [np.array([g[2] for g in gts if g[0] == i], dtype=bool) for i in range(n)]
    return det_image, det_scores, det_boxes, gt_boxes, gt_difficult


def _random_voc_case(rng, n_images=6):
    """Detections around the gts of a few images (some good, some duplicates, some off) and
    random false positives; about 15% of the gts difficult."""
    dets, gts = [], []
    for i in range(n_images):
        for box in _random_boxes(rng, int(rng.integers(1, 5)), size=80.0, min_side=10.0, max_side=40.0):
            gts.append((i, box, bool(rng.uniform() < 0.15)))
            for _ in range(int(rng.choice([0, 1, 1, 2]))):
                dets.append((i, float(rng.uniform(0.2, 1.0)), box + rng.normal(0, 3, 4)))
        for box in _random_boxes(rng, int(rng.integers(0, 3)), size=80.0, min_side=10.0, max_side=40.0):
            dets.append((i, float(rng.uniform(0.0, 0.8)), box))
    return _voc_case(dets, gts, n_images)


def check_voc_ap(voc_ap, hidden=False):
    """Check voc_ap(det_image, det_scores, det_boxes, gt_boxes, gt_difficult, iou_threshold=0.5,
    method="area") -> AP, one number.

    Compared with evaluate.evaluate_detections on one class (the VOC devkit's rules): detections
    by decreasing score (stable); each takes the gt of its image with the highest IoU (taken or
    not, difficult or not; first on ties); IoU >= iou_threshold: a difficult gt -> neither TP nor
    FP, a free gt -> TP and taken, a taken gt -> FP; below (or no gt in the image) -> FP.
    recall = TP / (non-difficult gts), precision = TP / (TP + FP), after each counted detection.
    "area": add (0, 0) and (1, 0), the envelope p(r) = max_{r' >= r} p(r'), the area under it.
    "voc07": the mean over t in np.arange(0, 1.1, 0.1) of max precision at recall >= t (0 if none).
    det_image (D,) int, det_scores (D,), det_boxes (D, 4); gt_boxes and gt_difficult: a list over
    the images of (G_i, 4) boxes and (G_i,) bools. At least one gt is not difficult.
    """
    rng = _rng(18, hidden)
    g0, g1 = [0, 0, 10, 10], [20, 0, 30, 10]
    zig_gts = [(0, [0, 0, 10, 10], False), (0, [20, 0, 30, 10], False), (0, [40, 0, 50, 10], False),
               (0, [60, 0, 70, 10], False)]
    zig_dets = [(0, 0.9, [0, 0, 10, 10]), (0, 0.8, [80, 80, 90, 90]), (0, 0.7, [80, 60, 90, 70]),
                (0, 0.6, [20, 0, 30, 10]), (0, 0.5, [40, 0, 50, 10]), (0, 0.4, [80, 40, 90, 50])]
    ten_gts = [(0, [20 * k, 0, 20 * k + 10, 10], False) for k in range(10)]
    three_hits = [(0, 0.9 - 0.1 * k, [20 * k, 0, 20 * k + 10, 10]) for k in range(3)]
    specs = [
        ("one detection on one gt: AP 1", _voc_case([(0, 0.9, g0)], [(0, g0, False)]), {},
         "A true positive with recall 1 at precision 1: the area is 1."),
        ("a duplicate detection is a false positive",
         _voc_case([(0, 0.9, g0), (0, 0.8, [0, 0, 10, 9.5]), (0, 0.7, g1)], [(0, g0, False), (0, g1, False)]), {},
         "The second detection's best gt (gt 0) is taken already: FP. TP, FP, TP: precision 1, 0.5, "
         "0.67 at recall 0.5, 0.5, 1."),
        ("a missed gt: recall stops at 0.5", _voc_case([(0, 0.9, g0)], [(0, g0, False), (0, g1, False)]), {},
         "recall = TP / (number of gts) = 1 / 2; the area under the curve stops there."),
        ("a false positive with a higher score comes first",
         _voc_case([(0, 0.6, g0), (0, 0.9, [50, 50, 60, 60])], [(0, g0, False)]), {},
         "Sort by decreasing score: the FP (0.9) comes before the TP (0.6), whatever the input order."),
        ("an IoU of exactly 0.5 is a match", _voc_case([(0, 0.9, [0, 0, 10, 5])], [(0, g0, False)]), {},
         "IoU 50 / 100 = 0.5: a match means IoU >= iou_threshold."),
        ("the best gt is taken: a false positive, even if another gt overlaps enough",
         _voc_case([(0, 0.9, g0), (0, 0.8, [0.5, 0, 10.5, 10])], [(0, g0, False), (0, [2, 0, 12, 10], False)]), {},
         "Detection 1's best gt is gt 0 (IoU 0.90), taken by detection 0: FP. It does not fall back to "
         "gt 1 (IoU 0.74): the devkit matches each detection to its best gt only."),
        ("detecting a difficult gt is neither TP nor FP",
         _voc_case([(0, 0.9, g1), (0, 0.8, g0)], [(0, g0, False), (0, g1, True)]), {},
         "Detection 0 matches the difficult gt: ignore it (leave it out of the curve). Detection 1 is "
         "a TP: AP 1."),
        ("missing a difficult gt costs nothing",
         _voc_case([(0, 0.9, g0)], [(0, g0, False), (0, g1, True)]), {},
         "Recall counts the non-difficult gts only: 1 / 1."),
        ("a detection in an image without gt is a false positive",
         _voc_case([(1, 0.9, g0), (0, 0.8, g0)], [(0, g0, False)], n_images=2), {},
         "Image 1 has no gt: its detection is a FP; then the TP in image 0. AP 0.5."),
        ("the precision envelope", _voc_case(zig_dets, zig_gts), {},
         "Precision goes up and down; the all-point AP uses its envelope p(r) = max over r' >= r."),
        ("11-point AP (method='voc07')", _voc_case(zig_dets, zig_gts), {"method": "voc07"},
         "The mean over t = 0, 0.1, ..., 1 of the highest precision at recall >= t (0 if never)."),
        ("11-point AP: a recall of exactly 3/10 does not reach the point 0.3",
         _voc_case(three_hits, ten_gts), {"method": "voc07"},
         "The points are np.arange(0, 1.1, 0.1) exactly; its 0.3 is 0.30000000000000004, just above "
         "3 / 10 (py-faster-rcnn's voc_eval does the same), so recall 0.3 counts for 0, 0.1, 0.2 only."),
        ("no detections at all: AP 0", _voc_case([], [(0, g0, False)]), {},
         "Nothing found: the curve is empty and the area 0."),
        ("iou_threshold 0.7", _voc_case([(0, 0.9, [0, 0, 10, 6.5]), (0, 0.8, [20, 0, 30, 7.5])],
                                        [(0, g0, False), (0, g1, False)]), {"iou_threshold": 0.7},
         "Use iou_threshold: IoU 0.65 is a FP at 0.7, 0.75 a TP."),
        ("6 random images, all-point", _random_voc_case(rng), {},
         "Print your tp / fp flags in score order and check a few by hand."),
        ("6 random images, 11-point", _random_voc_case(rng), {"method": "voc07"},
         "Print your tp / fp flags in score order and check a few by hand."),
    ]
    cases = [Case(name, args, kwargs, hint=hint, note="seeded random",
                  expected=_library_voc_ap(*args, **kwargs)) for name, args, kwargs, hint in specs]
    compare = lambda e, g: compare_scalar(e, g, "AP", rtol=1e-9, atol=1e-12)   # noqa: E731
    mistakes = [
        (same_as(_voc_ap_variant, compare, force_method="voc07"),
         "That is the 11-point AP (VOC2007's); method='area' asks for the all-point one: the area "
         "under the precision envelope, summed where the recall changes."),
        (same_as(_voc_ap_variant, compare, force_method="area"),
         "method='voc07' asks for the 11-point AP: the mean over t in np.arange(0, 1.1, 0.1) of "
         "the highest precision at recall >= t."),
        (same_as(_voc_ap_variant, compare, npos_difficult=True),
         "Difficult gts are not counted in the recall's denominator: missing one is no false "
         "negative (number of gts = the non-difficult ones)."),
        (same_as(_voc_ap_variant, compare, difficult="fp"),
         "A detection whose best gt is difficult (IoU >= threshold) is neither TP nor FP: leave it "
         "out of the precision-recall curve."),
        (same_as(_voc_ap_variant, compare, difficult="tp"),
         "A detection that matches a difficult gt is ignored, not a true positive."),
        (same_as(_voc_ap_variant, compare, once=False),
         "Each gt is matched once: the first detection (highest score) takes it, later ones on "
         "the same gt are false positives (duplicates)."),
        (same_as(_voc_ap_variant, compare, best="free"),
         "Each detection is matched to its best gt, taken or not (the devkit); if that gt is taken, "
         "it is a FP. It does not fall back to the best FREE gt (that is COCO's rule)."),
        (same_as(_voc_ap_variant, compare, strict=True),
         "An IoU of exactly iou_threshold is a match: IoU >= 0.5."),
        (same_as(_voc_ap_variant, compare, sort=False),
         "Walk the detections by decreasing score (np.argsort(-scores, kind='stable')), not in the "
         "order given."),
        (same_as(_voc_ap_variant, compare, envelope=False),
         "Use the precision envelope: p(r) = max precision at any recall >= r (a running max from "
         "the right), before taking the area."),
        (same_as(_voc_ap_variant, compare, points="k10"),
         "The 11 points are np.arange(0, 1.1, 0.1) to the last bit, as the devkit's Python ports "
         "make them (0.30000000000000004, not 3 / 10)."),
        (same_as(_voc_ap_variant, compare, interp="first"),
         "At each of the 11 points take the HIGHEST precision at any recall >= t, not the precision "
         "where the recall first reaches t."),
    ]
    library = [_evaluate.evaluate_detections, _evaluate.voc_tp_fp, _evaluate.voc_tp_fp_reference,
               _evaluate.voc_ap]
    return run_check("voc_ap(det_image, det_scores, det_boxes, gt_boxes, gt_difficult, ...)", cases,
                     calling(voc_ap, library=library), compare,
                     names=("det_image", "det_scores", "det_boxes", "gt_boxes", "gt_difficult"),
                     mistakes=mistakes, hidden=hidden)
