"""Classroom exercises: checks that test a student's function against the library.

Each exercise notebook (notebooks/exercises/student/NN_*.ipynb) asks for one or two functions
with an exact signature, then calls a check on them:

    from minifrcnn.classroom import check_iou
    check_iou(iou)

A check runs the student's function on hand-made edge cases and on seeded random inputs,
compares every answer with minifrcnn's own, and prints friendly feedback: PASS or FAIL for each
case, and for a failing case its inputs, the expected answer against the one it got, and a hint
(a specific one when the answers show a known slip, such as a `+1` in a width or `>=` where NMS
wants `>`). It returns a CheckResult, true when every case passes, else false (`passed` is the
bool; Jupyter shows nothing for it under the feedback), and never raises: a stub that still
raises NotImplementedError is reported as "not implemented yet", and any other exception is
shown in one line with the line of your code it came from. The student's function
always receives copies of the inputs: NumPy arrays in float64 (the labels of 06 in int64), and
plain Python numbers and tuples for sizes, ratios, thresholds and the like.

The exercises, the exact signature each function must have, its check, and the library
function it is compared with:

    01 IoU                  iou(a, b) -> (N, M)                                  check_iou
                            a: (N, 4), b: (M, 4) boxes (x1, y1, x2, y2)          boxes.box_iou
    02 anchors              generate_anchors(base_size, ratios, scales) -> (A, 4)  check_anchors
                                                                                 anchors.generate_base_anchors
                            grid_anchors(base, feat_h, feat_w, stride)           check_grid_anchors
                                -> (feat_h * feat_w * A, 4)                      anchors.grid_anchors
    03 box encode / decode  encode(ref, target, weights=(1.0, 1.0, 1.0, 1.0)) -> (N, 4)  check_encode
                            decode(ref, deltas, weights=(1.0, 1.0, 1.0, 1.0)) -> (N, 4)  check_decode
                            both, and decode(encode(.)) round trips              check_encode_decode
                                                                                 boxes.encode, boxes.decode
    04 NMS                  nms(boxes, scores, iou_threshold) -> (K,) integer indices  check_nms
                                                                                 boxes.nms
    05 smooth L1            smooth_l1(pred, target, weights, sigma=1.0, normalizer=1.0)
                                -> (loss, dpred)                                 check_smooth_l1
                                                                                 ops.smooth_l1
    06 softmax cross-       softmax_cross_entropy_backward(logits, labels, normalizer=None)
       entropy backward         -> dlogits (N, C)                                check_softmax_cross_entropy_backward
                                                                                 ops.softmax_cross_entropy
    07 RoI pooling          roi_pool(feat, rois, output_size=(7, 7), spatial_scale=1/16)
       forward                  -> (K, C, PH, PW)                                check_roi_pool
                                                                                 ops.roi_pool_forward
    08 convolution          conv_backward(dout, x, w, stride=1, pad=0) -> (dx, dw, db)  check_conv_backward
       backward                                                                  ops.conv2d_forward / conv2d_backward

Every check takes hidden=False. The grader (grading.py) also calls it with hidden=True, in the
hidden-test block of the teacher's graded cell: the same check on other random inputs, which
prints one line (how many passed) and not the inputs. And while a check runs the student's
function, the library functions it is compared with are out of that function's reach
(hidden_library.py): `def iou(a, b): return box_iou(a, b)` fails every case.

The checks call keyword arguments by the names above (weights=, sigma=, normalizer=,
output_size=, spatial_scale=, stride=, pad=), so keep those names.

Exercises 09-13, the detector's own steps (anchor labels and sampling, the proposal layer, RoI
sampling for the head, the multi-task loss, VOC average precision), are in
detector_exercises.py beside this file, with their table.

Teachers: the `_..._variant` functions below are the known slips the hints recognise; each is
the correct computation with one switch flipped, and tests/test_exercises.py checks that with
every switch in its default position they agree with the library. How a check runs its cases and
prints its feedback is in feedback.py, beside this file; `python -m minifrcnn.classroom` runs
every check on the library's own functions.
"""
import math

import numpy as np

from .. import anchors as _anchors
from .. import boxes as _boxes
from .. import ops as _ops
from ..ops import conv as _conv
from ..ops import losses as _losses
from ..ops import roi_pool as _roi_pool
from .feedback import (Case, CheckResult, calling, compare_array, compare_scalar, compare_tuple, copied,
                       run_check, same_as)
from .hidden_library import library_hidden

__all__ = [
    "check_iou", "check_anchors", "check_grid_anchors", "check_encode", "check_decode",
    "check_encode_decode", "check_nms", "check_smooth_l1", "check_softmax_cross_entropy_backward",
    "check_roi_pool", "check_conv_backward",
]


# ======================================================================================
# inputs several exercises use
# ======================================================================================

def _random_boxes(rng, n, size=100.0, min_side=2.0, max_side=40.0):
    """(n, 4) float64 boxes with corners in [0, size] and sides in [min_side, max_side]."""
    xy = rng.uniform(0, size, (n, 2))                              # (n, 2) top-left corners
    wh = rng.uniform(min_side, max_side, (n, 2))                   # (n, 2) widths and heights
    return np.concatenate([xy, xy + wh], axis=1)                   # (n, 4)


def _box_array(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


HIDDEN_SEED_OFFSET = 1000     # hidden=True: the random cases come from seed + this


def _rng(seed, hidden):
    """The check's seeded generator; another seed for the grader's hidden cases (hidden=True),
    so a function that only fits the cases shown in the notebook fails them."""
    return np.random.default_rng(seed + HIDDEN_SEED_OFFSET if hidden else seed)


# ======================================================================================
# 01 IoU
# ======================================================================================

def _iou_variant(a, b, plus_one=False, clamp=True, subtract_inter=True, transpose=False):
    """box_iou with one switch flipped (the known slips); all defaults = the library's IoU."""
    extra = 1.0 if plus_one else 0.0
    area_a = (a[:, 2] - a[:, 0] + extra) * (a[:, 3] - a[:, 1] + extra)                 # (N,)
    area_b = (b[:, 2] - b[:, 0] + extra) * (b[:, 3] - b[:, 1] + extra)                 # (M,)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + extra
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + extra
    if clamp:
        iw, ih = np.maximum(iw, 0), np.maximum(ih, 0)
    inter = iw * ih                                                                    # (N, M)
    union = area_a[:, None] + area_b[None, :] - (inter if subtract_inter else 0)       # (N, M)
    iou = inter / np.where(union > 0, union, 1)                                        # (N, M)
    return iou.T if transpose else iou


def check_iou(iou, hidden=False):
    """Check iou(a, b) -> (N, M): IoU[i, j] of box a[i] with box b[j] (compared with boxes.box_iou).

    a: (N, 4), b: (M, 4) boxes (x1, y1, x2, y2), width = x2 - x1 (no +1). A zero-area box has
    IoU 0 with every box (0 / 0 is defined as 0, never NaN). Prints feedback, returns a CheckResult.
    """
    rng = _rng(0, hidden)
    square = _box_array([0, 0, 10, 10])
    specs = [
        ("overlapping boxes", square, _box_array([5, 5, 15, 15]),
         "Work this pair on paper: which square do the two boxes share, and which area do they cover "
         "together, counting the shared part once?"),
        ("identical boxes", square, square.copy(), "A box overlaps itself completely: IoU 1."),
        ("one box inside the other", square, _box_array([2, 2, 4, 4]),
         "The intersection is the small box (area 4); the union is the big one (area 100)."),
        ("disjoint boxes (apart in x and in y)", square, _box_array([20, 20, 30, 30]),
         "Apart in x and in y, both the overlap width and the overlap height come out negative, and two "
         "negatives multiply to a positive area. What should a negative overlap count as?"),
        ("boxes that touch along an edge", square, _box_array([10, 0, 20, 10]),
         "Touching boxes share a line, not an area: overlap width 0, IoU 0."),
        ("zero-area boxes (a line, a point)", _box_array([5, 5, 5, 15], [3, 3, 3, 3], [0, 0, 10, 10]),
         _box_array([5, 5, 5, 15], [0, 0, 10, 10]),
         "A zero-area box has IoU 0 with everything, itself included. For two of them the union is 0 "
         "too, and 0 / 0 is NaN: those pairs need their own answer."),
        ("3 boxes against 2: the (N, M) layout", _box_array([0, 0, 10, 10], [0, 0, 20, 20], [50, 50, 60, 60]),
         _box_array([0, 0, 10, 20], [55, 55, 65, 65]),
         "result[i, j] is the IoU of a[i] with b[j]: one row per box of a, one column per box of b."),
        ("20 x 15 random boxes", _random_boxes(rng, 20), _random_boxes(rng, 15),
         "Compare with your own answer on a few pairs by hand."),
        ("no boxes in b", _random_boxes(rng, 3), np.zeros((0, 4)),
         "With M = 0 the answer is an empty (N, 0) array; vectorised code gives it for free."),
    ]
    cases = [Case(name, (a, b), expected=_boxes.box_iou(a, b), hint=hint, note="seeded random")
             for name, a, b, hint in specs]
    compare = lambda e, g: compare_array(e, g, "IoU")
    mistakes = [
        (same_as(_iou_variant, compare, plus_one=True),
         "Your answer matches widths computed as x2 - x1 + 1. Our boxes are continuous: "
         "width = x2 - x1, no +1 (the +1 belongs to old integer-pixel code)."),
        (same_as(_iou_variant, compare, clamp=False),
         "Your answer matches overlaps that are not clamped at 0: for boxes apart in x and in y, two "
         "negative overlaps multiply to a positive 'intersection'. A negative overlap is no overlap."),
        (same_as(_iou_variant, compare, subtract_inter=False),
         "Your union counts the shared area twice: it is inside area(a) and inside area(b)."),
        (same_as(_iou_variant, compare, transpose=True),
         "Your result is the transpose of the answer, shape (M, N): result[i, j] must be the IoU of "
         "a[i] with b[j], shape (N, M) = (len(a), len(b)): the boxes of a down the rows."),
    ]
    return run_check("iou(a, b)", cases, calling(iou, library=[_boxes.box_iou]),
                     compare,
                     names=("a", "b"), mistakes=mistakes, hidden=hidden)


# ======================================================================================
# 02 anchors
# ======================================================================================

def _anchors_variant(base_size, ratios, scales, swap=False, scale_major=False, centre="half"):
    """generate_base_anchors with one switch flipped; all defaults = the library's anchors."""
    c = {"half": base_size / 2.0, "zero": 0.0, "caffe": (base_size - 1) / 2.0}[centre]
    pairs = [(r, s) for s in scales for r in ratios] if scale_major else [(r, s) for r in ratios for s in scales]
    rows = []
    for r, s in pairs:
        side = base_size * s
        w, h = side / np.sqrt(r), side * np.sqrt(r)
        if swap:
            w, h = h, w
        rows.append([c - w / 2, c - h / 2, c + w / 2, c + h / 2])
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def check_anchors(generate_anchors, hidden=False):
    """Check generate_anchors(base_size, ratios, scales) -> (A, 4), A = len(ratios) * len(scales).

    Compared with anchors.generate_base_anchors: for each ratio r = h / w and, inside it, each
    scale s (ratio-major order), the box of area (base_size * s)^2 and aspect ratio h / w = r
    centred at c = (base_size / 2, base_size / 2), as (x1, y1, x2, y2). No rounding. (Its width
    and height are the exercise's question 1; the solution notebook derives them.)
    """
    specs = [
        ("one square anchor", 16, (1.0,), (1.0,),
         "A square of side base_size * scale = 16, centred on (8, 8): (0, 0, 16, 16)."),
        ("one square anchor, scale 2", 16, (1.0,), (2.0,),
         "side = base_size * scale = 32, still centred on (base_size / 2, base_size / 2) = (8, 8)."),
        ("ratio 2: a tall anchor", 16, (2.0,), (1.0,),
         "ratio = h / w, so ratio 2 is twice as tall as wide, and the area stays side^2: which w and h "
         "satisfy both?"),
        ("ratio 0.5: a wide anchor", 16, (0.5,), (1.0,),
         "ratio = h / w, so ratio 0.5 is twice as wide as tall, with the area side^2 of the square."),
        ("two ratios x three scales: the row order", 10, (0.5, 2.0), (1.0, 2.0, 3.0),
         "Ratio-major order: row ratio_i * len(scales) + scale_j, every scale of the first ratio first."),
        ("the paper's 9 anchors: 16, (0.5, 1, 2), (8, 16, 32)", 16, (0.5, 1.0, 2.0), (8.0, 16.0, 32.0),
         "Areas 128^2, 256^2, 512^2 for each of the 3 ratios."),
        ("the small-image preset: 8, (0.5, 1, 2), (2, 4, 8)", 8, (0.5, 1.0, 2.0), (2.0, 4.0, 8.0),
         "Same formulas with base_size 8: centred on (4, 4)."),
    ]
    if hidden:                                   # the grader's: other sizes, ratios and scales
        rng = _rng(9, hidden)
        specs = [(f"hidden case {k + 1}", int(rng.integers(4, 33)),
                  tuple(float(v) for v in np.round(rng.uniform(0.3, 3.0, rng.integers(1, 4)), 2)),
                  tuple(float(v) for v in np.round(rng.uniform(0.5, 10.0, rng.integers(1, 4)), 2)), "")
                 for k in range(6)]
    cases = [Case(name, (bs, r, s), hint=hint,
                  expected=_anchors.generate_base_anchors(bs, r, s, dtype=np.float64))
             for name, bs, r, s, hint in specs]
    compare = lambda e, g: compare_array(e, g, "anchors", rtol=1e-5, atol=1e-4)
    mistakes = [
        (same_as(_anchors_variant, compare, swap=True),
         "Your w and h are swapped: the ratio is h / w, so a ratio above 1 is a TALL anchor."),
        (same_as(_anchors_variant, compare, scale_major=True),
         "Right anchors, wrong order: the rows go ratio-major (outer loop over ratios, inner over scales)."),
        (same_as(_anchors_variant, compare, centre="zero"),
         "Your anchors are centred on (0, 0); centre them on (base_size / 2, base_size / 2), "
         "the centre of the first feature-map cell."),
        (same_as(_anchors_variant, compare, centre="caffe"),
         "Centred on (base_size - 1) / 2: that is py-faster-rcnn's integer-pixel convention. Here boxes "
         "are continuous: the centre is base_size / 2."),
    ]
    return run_check("generate_anchors(base_size, ratios, scales)", cases, calling(generate_anchors, library=[_anchors.generate_base_anchors]), compare,
                     names=("base_size", "ratios", "scales"), mistakes=mistakes, hidden=hidden)


def check_grid_anchors(grid_anchors, hidden=False):
    """Check grid_anchors(base, feat_h, feat_w, stride) -> (feat_h * feat_w * A, 4).

    Compared with anchors.grid_anchors: anchors[(y * feat_w + x) * A + a] = base[a] +
    (x * stride, y * stride, x * stride, y * stride): row-major over cells, anchors fastest.
    """
    base1 = _box_array([0, 0, 16, 16])
    base2 = _box_array([-4, 0, 12, 8], [0, -4, 8, 12])
    base9 = _anchors.generate_base_anchors(16, (0.5, 1.0, 2.0), (2.0, 4.0, 8.0), dtype=np.float64)
    specs = [
        ("a 1 x 1 map: the base anchors themselves", base1, 1, 1, 16,
         "Cell (0, 0) is not shifted: the output is base."),
        ("a 1 x 2 map: one step right", base1, 1, 2, 16,
         "Cell x = 1 shifts every anchor by (stride, 0, stride, 0)."),
        ("a 2 x 1 map: one step down", base1, 2, 1, 16,
         "Cell y = 1 shifts every anchor by (0, stride, 0, stride)."),
        ("a 2 x 3 map, 2 anchors: the row order", base2, 2, 3, 8,
         "Row (y * feat_w + x) * A + a: y slowest, then x, then the anchor index fastest."),
        ("a 5 x 4 map, 9 anchors, stride 16", base9, 5, 4, 16,
         "Check the first rows by hand: the 9 anchors of cell (x = 0, y = 0), then the 9 of cell "
         "(x = 1, y = 0)."),
    ]
    if hidden:                                   # the grader's: other base anchors and maps
        rng = _rng(10, hidden)
        specs = [(f"hidden case {k + 1}",
                  _anchors.generate_base_anchors(int(rng.integers(4, 33)), (0.5, 1.0, 2.0)[:int(rng.integers(1, 4))],
                                                 (1.0, 2.0), dtype=np.float64),
                  int(rng.integers(1, 7)), int(rng.integers(1, 7)), int(rng.choice([4, 8, 16])), "")
                 for k in range(5)]
    cases = [Case(name, (b, h, w, s), hint=hint, expected=_anchors.grid_anchors(b, h, w, s))
             for name, b, h, w, s, hint in specs]
    compare = lambda e, g: compare_array(e, g, "anchors", rtol=1e-5, atol=1e-4)

    def column_major(base, h, w, s):      # x slowest instead of y
        return _anchors.grid_anchors(base, h, w, s).reshape(h, w, -1, 4).transpose(1, 0, 2, 3).reshape(-1, 4)

    def anchors_slowest(base, h, w, s):   # (A, H, W) order
        return _anchors.grid_anchors(base, h, w, s).reshape(h, w, -1, 4).transpose(2, 0, 1, 3).reshape(-1, 4)

    def no_stride(base, h, w, s):         # shifted by the cell index, not in pixels
        return _anchors.grid_anchors(base, h, w, 1)

    mistakes = [
        (same_as(column_major, compare),
         "Right anchors, wrong order: loop over y (rows) outside and x (columns) inside."),
        (same_as(anchors_slowest, compare),
         "Right anchors, wrong order: the A anchors of one cell come together (anchor index fastest), "
         "so the RPN's outputs (H, W, A) line up with them."),
        (same_as(no_stride, compare),
         "Shift by x * stride and y * stride pixels, not by the cell index."),
    ]
    return run_check("grid_anchors(base, feat_h, feat_w, stride)", cases, calling(grid_anchors, library=[_anchors.grid_anchors, _anchors.grid_anchors_reference]), compare,
                     names=("base", "feat_h", "feat_w", "stride"), mistakes=mistakes, hidden=hidden)


# ======================================================================================
# 03 box encode / decode
# ======================================================================================

HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)     # 1 / stds (0.1, 0.1, 0.2, 0.2): the Fast R-CNN head's


def _centre_size(b):
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return b[:, 0] + 0.5 * w, b[:, 1] + 0.5 * h, w, h


def _encode_variant(ref, target, weights=(1.0, 1.0, 1.0, 1.0), corners=False, flip_log=False, divide=False):
    """encode with one switch flipped; all defaults = boxes.encode."""
    wx, wy, ww, wh = (1.0 / w for w in weights) if divide else weights
    xa, ya, wa, ha = _centre_size(ref)
    x, y, w, h = _centre_size(target)
    if corners:
        xa, ya, x, y = ref[:, 0], ref[:, 1], target[:, 0], target[:, 1]
    tw, th = (np.log(wa / w), np.log(ha / h)) if flip_log else (np.log(w / wa), np.log(h / ha))
    return np.stack([wx * (x - xa) / wa, wy * (y - ya) / ha, ww * tw, wh * th], axis=1)


def _decode_variant(ref, deltas, weights=(1.0, 1.0, 1.0, 1.0), clamp=True, multiply=False, corners=False):
    """decode with one switch flipped; all defaults = boxes.decode."""
    wx, wy, ww, wh = (1.0 / w for w in weights) if multiply else weights
    xa, ya, wa, ha = _centre_size(ref)
    dx, dy, dw, dh = deltas[:, 0] / wx, deltas[:, 1] / wy, deltas[:, 2] / ww, deltas[:, 3] / wh
    if clamp:
        dw, dh = np.minimum(dw, _boxes.BBOX_XFORM_CLIP), np.minimum(dh, _boxes.BBOX_XFORM_CLIP)
    w, h = np.exp(dw) * wa, np.exp(dh) * ha
    if corners:   # deltas moved the top-left corner instead of the centre
        x1, y1 = ref[:, 0] + dx * wa, ref[:, 1] + dy * ha
        return np.stack([x1, y1, x1 + w, y1 + h], axis=1)
    x, y = dx * wa + xa, dy * ha + ya
    return np.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], axis=1)


def _encode_cases(hidden=False):
    rng = _rng(3, hidden)
    ref = _box_array([10, 20, 30, 60])                      # centre (20, 40), size 20 x 40
    refs, targets = _random_boxes(rng, 12), _random_boxes(rng, 12)
    return [
        ("target = ref: all deltas 0", ref, ref.copy(), None,
         "Nothing to move: tx = ty = 0 and tw = th = log(1) = 0."),
        ("target moved right by half a width", ref, _box_array([20, 20, 40, 60]), None,
         "tx = (x - xa) / wa with the CENTRES x and xa: (30 - 20) / 20 = 0.5."),
        ("target moved down by a quarter height", ref, _box_array([10, 30, 30, 70]), None,
         "ty = (y - ya) / ha = (50 - 40) / 40 = 0.25."),
        ("target twice as wide, same centre", ref, _box_array([0, 20, 40, 60]), None,
         "tw = log(w / wa) = log(40 / 20) = log 2 = 0.693."),
        ("target half as tall, same centre", ref, _box_array([10, 30, 30, 50]), None,
         "th = log(h / ha) = log(20 / 40) = -0.693."),
        ("12 random pairs", refs, targets, None, "Row i of the result moves ref[i] onto target[i]."),
        ("12 random pairs, the head's weights (10, 10, 5, 5)", refs, targets, HEAD_WEIGHTS,
         "The weights multiply: (wx * tx, wy * ty, ww * tw, wh * th)."),
        ("12 random pairs, weights (1, 2, 3, 4): one weight per coordinate", refs, targets,
         (1.0, 2.0, 3.0, 4.0),
         "weights = (wx, wy, ww, wh) in that order: wx multiplies tx, wy ty, ww tw and wh th."),
    ]


def check_encode(encode, hidden=False):
    """Check encode(ref, target, weights=(1.0, 1.0, 1.0, 1.0)) -> (N, 4) deltas (tx, ty, tw, th).

    Compared with boxes.encode: with centres (x, y), sizes (w, h) of target and (xa, ya), (wa, ha)
    of ref: tx = wx (x - xa) / wa, ty = wy (y - ya) / ha, tw = ww log(w / wa), th = wh log(h / ha).
    """
    cases = []
    for name, ref, target, weights, hint in _encode_cases(hidden):
        kwargs = {} if weights is None else {"weights": weights}
        cases.append(Case(name, (ref, target), kwargs, expected=_boxes.encode(ref, target, **kwargs),
                          hint=hint, note="seeded random"))
    compare = lambda e, g: compare_array(e, g, "deltas")
    mistakes = [
        (same_as(_encode_variant, compare, corners=True),
         "tx and ty measure how far the CENTRE moves (x = x1 + w / 2), not the top-left corner."),
        (same_as(_encode_variant, compare, flip_log=True),
         "The sign of tw, th is flipped: tw = log(w / wa), target size over reference size."),
        (same_as(_encode_variant, compare, divide=True),
         "The weights multiply the deltas (tx = wx * (x - xa) / wa); decode is where they divide."),
    ]
    return run_check("encode(ref, target, weights)", cases, calling(encode, library=[_boxes.encode]), compare,
                     names=("ref", "target"), mistakes=mistakes, hidden=hidden)


def check_decode(decode, hidden=False):
    """Check decode(ref, deltas, weights=(1.0, 1.0, 1.0, 1.0)) -> (N, 4) boxes: encode's inverse.

    Compared with boxes.decode: the inverse of encode (the exercise's question 1; the solution
    notebook derives it); the deltas are divided by the weights first, and tw, th are clamped
    from above at log(1000/16) before the exp. Returns (x1, y1, x2, y2) boxes.
    """
    rng = _rng(4, hidden)
    ref = _box_array([10, 20, 30, 60])
    refs = _random_boxes(rng, 12)
    deltas = rng.normal(0, 0.5, (12, 4))
    targets = _random_boxes(rng, 12)
    specs = [
        ("all deltas 0: the box stays put", ref, np.zeros((1, 4)), None,
         "Zero deltas move nothing and resize nothing: the result is ref itself."),
        ("tx = 0.5: move right by half a width", ref, np.array([[0.5, 0, 0, 0]]), None,
         "tx = 0.5: the centre moves right by half of ref's width (20 px here); the size stays 20 x 40."),
        ("tw = log 2: twice as wide, same centre", ref, np.array([[0, 0, math.log(2), 0]]), None,
         "tw = log 2: the box becomes twice as wide as ref, around the same centre."),
        ("12 random boxes and deltas", refs, deltas, None, "Row i applies deltas[i] to ref[i]."),
        ("the head's weights (10, 10, 5, 5)", refs, deltas * 5, HEAD_WEIGHTS,
         "Decode divides by the weights first: tx / wx, ty / wy, tw / ww, th / wh."),
        ("weights (1, 2, 3, 4): one weight per coordinate", refs, deltas, (1.0, 2.0, 3.0, 4.0),
         "weights = (wx, wy, ww, wh) in that order: tx / wx, ty / wy, tw / ww, th / wh."),
        ("a huge tw = th = 20: clamp before exp", ref, np.array([[0, 0, 20.0, 20.0]]), None,
         "Clamp tw and th from above at log(1000 / 16) = 4.135 before the exp, as the library does: "
         "a box never grows more than 62.5 times."),
        ("a very negative tw = th = -10: only large values are clamped", ref,
         np.array([[0, 0, -10.0, -10.0]]), None,
         "The clamp is one-sided, from above only: a box may shrink as much as the deltas say "
         "(exp(-10) * wa here), it only may not grow more than 62.5 times."),
        ("decode(ref, encode(ref, target)) gives target back", refs, _boxes.encode(refs, targets), None,
         "decode must undo encode exactly."),
    ]
    cases = []
    for name, r, d, weights, hint in specs:
        kwargs = {} if weights is None else {"weights": weights}
        cases.append(Case(name, (r, d), kwargs, expected=_boxes.decode(r, d, **kwargs), hint=hint,
                          note="seeded random"))
    compare = lambda e, g: compare_array(e, g, "boxes", rtol=1e-6, atol=1e-6)
    mistakes = [
        (same_as(_decode_variant, compare, clamp=False),
         "Your boxes match a decode without the clamp: tw and th are clamped from above at "
         "log(1000 / 16) (BBOX_XFORM_CLIP) before the exp."),
        (same_as(_decode_variant, compare, multiply=True),
         "Decode undoes encode, so it DIVIDES the deltas by the weights (encode multiplied)."),
        (same_as(_decode_variant, compare, corners=True),
         "Your boxes match deltas applied to the top-left corner: the deltas move the CENTRE, and the "
         "new box is built around the new centre."),
    ]
    return run_check("decode(ref, deltas, weights)", cases, calling(decode, library=[_boxes.decode]), compare,
                     names=("ref", "deltas"), mistakes=mistakes, hidden=hidden)


def check_encode_decode(encode, decode, hidden=False):
    """check_encode(encode), check_decode(decode), then decode(ref, encode(ref, t)) == t with YOUR pair."""
    ok_encode = check_encode(encode, hidden=hidden)
    print()
    ok_decode = check_decode(decode, hidden=hidden)
    print()
    rng = _rng(5, hidden)
    refs, targets = _random_boxes(rng, 10), _random_boxes(rng, 10)
    cases = [Case("decode(ref, encode(ref, target)) with your two functions", (refs, targets), {},
                  expected=targets, hint="Each function must undo the other.", note="seeded random"),
             Case("... and with the head's weights (10, 10, 5, 5)", (refs, targets), {"weights": HEAD_WEIGHTS},
                  expected=targets, hint="encode multiplies by the weights, decode divides by them.",
                  note="seeded random")]
    compare = lambda e, g: compare_array(e, g, "boxes", rtol=1e-6, atol=1e-6)
    library = [_boxes.encode, _boxes.decode]

    def round_trip(c):                   # both of the student's functions, the library out of reach
        with library_hidden(encode, library) as enc, library_hidden(decode, library) as dec:
            return dec(c.args[0].copy(), enc(*copied(c.args), **copied(c.kwargs)), **copied(c.kwargs))

    ok_round = run_check("the round trip", cases, round_trip, compare, names=("ref", "target"), signature="encode or decode", hidden=hidden)
    results = (ok_encode, ok_decode, ok_round)
    return CheckResult(all(results), sum(r.n_passed for r in results), sum(r.n_cases for r in results))


# ======================================================================================
# 04 NMS
# ======================================================================================

def _nms_variant(boxes, scores, iou_threshold, strict=True, order="stable", only_kept=True, sort_output=False,
                 best_only=False):
    """Greedy NMS with one switch flipped; all defaults = boxes.nms."""
    if order == "stable":
        idx = np.argsort(-scores, kind="stable")
    else:                                                   # argsort ascending, then reversed
        idx = np.argsort(scores, kind="stable")[::-1]
    if best_only:                                           # stops after the first kept box
        return idx[:1].astype(np.int64)
    iou = _boxes.box_iou(boxes, boxes)
    keep, visited = [], []
    for i in idx:
        judges = keep if only_kept else visited
        over = [iou[i, k] > iou_threshold if strict else iou[i, k] >= iou_threshold for k in judges]
        if not any(over):
            keep.append(int(i))
        visited.append(int(i))
    keep = sorted(keep) if sort_output else keep
    return np.array(keep, dtype=np.int64)


def _compare_indices(expected, got):
    if got is None:
        return ["the result is None: did you forget to `return keep`?"]
    try:
        arr = np.asarray(got)
    except Exception:
        return [f"return the kept indices as an array, got a {type(got).__name__}"]
    exp = np.asarray(expected)
    if arr.ndim != 1:
        return [f"expected a 1-D array of indices, got shape {arr.shape}"]
    if arr.size and arr.dtype.kind not in "iu":
        return [f"the indices should be integers, got dtype {arr.dtype} "
                "(np.array(keep, dtype=np.int64) makes them integers)"]
    if arr.shape != exp.shape or not np.array_equal(arr, exp):
        return [f"expected keep = {exp.tolist()}", f"got       keep = {arr.tolist()}"]
    return None


# 20 scores with ties (two values): NumPy's default (unstable) argsort of these puts index 6
# before index 5, the stable one does not
TIED_SCORES = [0.5, 0.5, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9, 0.5, 0.9,
               0.9, 0.5, 0.5, 0.9, 0.9, 0.9, 0.5, 0.9, 0.9, 0.9]


# every library function that does greedy NMS: a pass-through to any of them must fail
NMS_FUNCTIONS = [_boxes.nms, _boxes.nms_reference, _boxes.batched_nms, _boxes.batched_nms_reference,
                 _boxes._nms_loop, _boxes._nms_matrix]


def check_nms(nms, hidden=False):
    """Check nms(boxes, scores, iou_threshold) -> (K,) integer indices of the kept boxes.

    Compared with boxes.nms: visit the boxes by decreasing score (equal scores: lower index first);
    keep a box unless its IoU with a box KEPT before it is > iou_threshold (strictly). Return the
    kept indices in the order they were kept (decreasing score).
    """
    rng = _rng(1, hidden)
    square = [0, 0, 10, 10]
    rb = _random_boxes(rng, 40, size=60.0, min_side=10.0, max_side=30.0)
    rs = rng.uniform(0, 1, 40)
    specs = [
        ("two heavily overlapping boxes", _box_array(square, [1, 1, 11, 11]), [0.6, 0.9], 0.5,
         "Box 1 has the higher score, so it is kept first; box 0 overlaps it with IoU 0.68 > 0.5."),
        ("two boxes far apart: both kept, best first", _box_array(square, [50, 50, 60, 60]), [0.3, 0.9], 0.5,
         "Nothing overlaps, so both stay; return them in decreasing score order: [1, 0]."),
        ("IoU exactly equal to the threshold", _box_array(square, [0, 0, 10, 5]), [0.9, 0.8], 0.5,
         "These boxes have IoU exactly 0.5: a box is suppressed only when IoU > threshold (strictly)."),
        ("equal scores: lower index first", _box_array(square, [50, 50, 60, 60], square), [0.5, 0.5, 0.5], 0.5,
         "With equal scores visit the lower index first: a stable sort, in decreasing order of score."),
        ("20 identical boxes, many equal scores: the lowest index of the best wins",
         _box_array(*[square] * 20), TIED_SCORES, 0.5,
         "Boxes 5, 6, 7, 9, ... share the top score; visited lower index first, box 5 is kept and "
         "suppresses the rest. NumPy's default argsort is not stable for 17 or more elements "
         "(equal scores may come out in any order): ask for a stable sort."),
        ("a chain: only kept boxes suppress", _box_array(square, [5, 0, 15, 10], [10, 0, 20, 10]),
         [0.9, 0.8, 0.7], 0.3,
         "Box 1 is suppressed by box 0; box 2 overlaps only box 1, which was removed, so box 2 stays. "
         "Compare each box only with the boxes you KEPT."),
        ("a zero-area box is never suppressed", _box_array(square, [5, 5, 5, 5]), [0.9, 0.8], 0.1,
         "A zero-area box has IoU 0 with every box (see exercise 01)."),
        ("threshold 1.0 keeps even identical boxes", _box_array(square, square, [2, 2, 12, 12]),
         [0.7, 0.8, 0.9], 1.0, "IoU is never > 1, so nothing is suppressed: all boxes, by score."),
        ("threshold 0.0: any overlap suppresses", _box_array(square, [9, 9, 20, 20], [10, 0, 20, 9]),
         [0.9, 0.8, 0.7], 0.0, "Box 1 overlaps box 0 a little (IoU > 0); box 2 only touches box 0 (IoU 0)."),
        ("no boxes at all", np.zeros((0, 4)), [], 0.5,
         "With no boxes, return an empty integer array."),
        ("40 random boxes, threshold 0.5", rb, rs, 0.5, "Compare with boxes.nms on a small example."),
        ("40 random boxes, threshold 0.7", rb, rs, 0.7, "Compare with boxes.nms on a small example."),
    ]
    cases = []
    for name, b, s, thr, hint in specs:
        s = np.asarray(s, dtype=np.float64)
        cases.append(Case(name, (b, s, thr), expected=_boxes.nms(b, s, thr), hint=hint, note="seeded random"))
    mistakes = [
        (same_as(_nms_variant, _compare_indices, strict=False),
         "Your result is what NMS gives with IoU >= iou_threshold (or with an IoU a little too "
         "large, such as +1 in the widths): suppress only when IoU > iou_threshold, strictly, with "
         "the IoU of exercise 01."),
        (same_as(_nms_variant, _compare_indices, order="reversed"),
         "Equal scores are visited in reverse index order: argsort(scores)[::-1] reverses ties. "
         "Sort stably in decreasing order, without reversing, so that the lower index comes first."),
        (same_as(_nms_variant, _compare_indices, only_kept=False),
         "A suppressed box suppresses nothing: compare each box only with the boxes you kept."),
        (same_as(_nms_variant, _compare_indices, sort_output=True),
         "Right boxes, wrong order: return them in the order you kept them (decreasing score), "
         "not sorted by index."),
        (same_as(_nms_variant, _compare_indices, best_only=True),
         "You keep only the best box. NMS goes on down the list: every box whose IoU with each box "
         "kept so far is <= iou_threshold is kept too (boxes far from the best one all stay)."),
    ]
    return run_check("nms(boxes, scores, iou_threshold)", cases, calling(nms, library=NMS_FUNCTIONS), _compare_indices,
                     names=("boxes", "scores", "iou_threshold"), mistakes=mistakes, hidden=hidden)


# ======================================================================================
# 05 smooth L1
# ======================================================================================

def _smooth_l1_variant(pred, target, weights, sigma=1.0, normalizer=1.0, threshold="inv_s2",
                       grad_weights=True, grad_norm=True, grad_sign=1.0):
    """smooth_l1 with one switch flipped; all defaults = ops.smooth_l1."""
    s2 = float(sigma) ** 2
    cut = {"inv_s2": 1.0 / s2, "inv_s": 1.0 / float(sigma), "one": 1.0}[threshold]
    d = weights * (pred - target)
    small = np.abs(d) < cut
    f = np.where(small, 0.5 * s2 * d * d, np.abs(d) - 0.5 / s2)
    df = np.where(small, s2 * d, np.sign(d))
    grad = (weights * df if grad_weights else df) / (normalizer if grad_norm else 1.0)
    return f.sum() / normalizer, grad_sign * grad


def check_smooth_l1(smooth_l1, hidden=False):
    """Check smooth_l1(pred, target, weights, sigma=1.0, normalizer=1.0) -> (loss, dpred).

    Compared with ops.smooth_l1: d = weights * (pred - target);
    f(d) = 0.5 sigma^2 d^2 if |d| < 1 / sigma^2, else |d| - 0.5 / sigma^2;
    loss = sum f(d) / normalizer (one number); dpred = d loss / d pred, same shape as pred (the
    exercise's question 1; the solution notebook derives it).
    """
    rng = _rng(2, hidden)
    ones = np.ones((1, 4))
    pred = rng.normal(0, 1, (16, 4))
    target = rng.normal(0, 1, (16, 4))
    mask = (rng.uniform(size=(16, 1)) < 0.5) * np.ones((1, 4))      # positive rows get weight 1
    specs = [
        ("pred = target: zero loss, zero gradient", np.array([[0.5, -1.0, 2.0, 0.0]]),
         np.array([[0.5, -1.0, 2.0, 0.0]]), ones, {},
         "d = 0 everywhere: the loss is 0, at its minimum, and so is its slope."),
        ("sigma 1, quadratic zone (|d| < 1)", np.array([[0.5, -0.5, 0.2, 0.0]]), np.zeros((1, 4)), ones, {},
         "In the quadratic zone, |d| < 1 / sigma^2, f = 0.5 sigma^2 d^2: what is its slope?"),
        ("sigma 1, linear zone (|d| >= 1)", np.array([[3.0, -3.0, 1.5, -2.0]]), np.zeros((1, 4)), ones, {},
         "In the linear zone, |d| >= 1 / sigma^2, f = |d| - 0.5 / sigma^2: what is its slope for "
         "d > 0, and for d < 0?"),
        ("sigma 3 (the RPN's): the zone shrinks to |d| < 1/9", np.array([[0.05, -0.1, 0.2, -0.5]]),
         np.zeros((1, 4)), ones, {"sigma": 3.0},
         "The quadratic zone is |d| < 1 / sigma^2 = 1/9 (not 1 / sigma); there f = 0.5 * 9 * d^2."),
        ("weights 0: rows without a target add nothing", np.array([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]]),
         np.zeros((2, 4)), np.array([[0.0] * 4, [1.0] * 4]), {},
         "d = weights * (pred - target): where the weight is 0, both f and its gradient are 0."),
        ("weights 0.5: the chain rule", np.array([[0.4, -3.0, 1.0, -0.2]]), np.zeros((1, 4)),
         np.full((1, 4), 0.5), {},
         "d = w * (pred - target) depends on pred through w: what does the chain rule add to f'(d)?"),
        ("normalizer 256 (the paper's N_cls)", np.array([[0.5, -3.0, 1.0, 0.1]]), np.zeros((1, 4)), ones,
         {"normalizer": 256.0}, "The normalizer divides the loss: what does it do to the gradient?"),
        ("16 x 4 random, sigma 3, normalizer 8", pred, target, mask, {"sigma": 3.0, "normalizer": 8.0},
         "Check one element by hand: d, which zone, f(d), f'(d)."),
    ]
    cases = [Case(name, (p, t, w), kw, expected=_ops.smooth_l1(p, t, w, **kw), hint=hint, note="seeded random")
             for name, p, t, w, kw, hint in specs]

    def compare(e, g):
        return compare_tuple(e, g, ("loss", "dpred"),
                              (lambda a, b, n: compare_scalar(a, b, n),
                               lambda a, b, n: compare_array(a, b, n)))

    mistakes = [
        (same_as(_smooth_l1_variant, compare, threshold="inv_s"),
         "The quadratic zone ends at |d| = 1 / sigma^2, not 1 / sigma (that is where both pieces meet "
         "with equal value and slope)."),
        (same_as(_smooth_l1_variant, compare, threshold="one"),
         "With sigma the quadratic zone ends at |d| = 1 / sigma^2, not at 1."),
        (same_as(_smooth_l1_variant, compare, grad_weights=False),
         "Your dpred matches f'(d) / normalizer without the weights: d = w * (pred - target) depends on "
         "pred through w, and the chain rule says to multiply by the weights."),
        (same_as(_smooth_l1_variant, compare, grad_norm=False),
         "The loss is divided by the normalizer, so its gradient is too."),
        (same_as(_smooth_l1_variant, compare, grad_sign=-1.0),
         "Your loss is right but dpred has the opposite sign: d = target - pred gives the same loss "
         "(f is even) but flips the sign of its derivative. Here d = weights * (pred - target)."),
    ]
    return run_check("smooth_l1(pred, target, weights, sigma, normalizer)", cases, calling(smooth_l1, library=[_ops.smooth_l1, _losses.smooth_l1_reference]), compare,
                     names=("pred", "target", "weights"), mistakes=mistakes, hidden=hidden)


# ======================================================================================
# 06 softmax cross-entropy backward
# ======================================================================================

def _sce_backward_variant(logits, labels, normalizer=None, norm="kept", ignore=True, sign=1.0):
    """d loss / d logits of softmax cross-entropy with one switch flipped; defaults = the library's."""
    N, C = logits.shape
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    onehot = np.zeros((N, C))
    onehot[np.arange(N), labels] = 1.0            # label -1 marks column C-1 (Python indexing)
    grad = sign * (p - onehot)
    keep = labels >= 0
    if ignore:
        grad[~keep] = 0.0
    if normalizer is not None:
        return grad / normalizer
    n = {"kept": max(int(keep.sum()), 1), "all": N, "none": 1}[norm]
    return grad / n


def check_softmax_cross_entropy_backward(softmax_cross_entropy_backward, hidden=False):
    """Check softmax_cross_entropy_backward(logits, labels, normalizer=None) -> dlogits (N, C).

    Compared with the gradient of ops.softmax_cross_entropy: loss = sum over the rows with
    labels[i] >= 0 of -log softmax(logits[i])[labels[i]], / normalizer (rows with label -1 are
    ignored; normalizer None means the number of kept rows, at least 1); dlogits = d loss /
    d logits (the exercise's question 1; the solution notebook derives it).
    """
    rng = _rng(6, hidden)
    big_logits = rng.normal(0, 3, (32, 21))
    big_labels = rng.integers(-1, 21, 32)
    specs = [
        ("one row, two equal logits", np.array([[0.0, 0.0]]), [1], None,
         "Equal logits give p = (0.5, 0.5), and the label is class 1: work out d(-log p_1) / dz_0 and "
         "d(-log p_1) / dz_1 for this row by hand."),
        ("three rows, four classes: the mean over rows", rng.normal(0, 1, (3, 4)), [0, 3, 1], None,
         "normalizer None: divide by the number of (kept) rows, 3 here."),
        ("rows with label -1 are ignored", rng.normal(0, 1, (4, 3)), [2, -1, 0, -1], None,
         "An ignored row has zero gradient, and the mean is over the 2 kept rows only."),
        ("every row ignored: zero gradient, no NaN", rng.normal(0, 1, (3, 3)), [-1, -1, -1], None,
         "With no kept rows, divide by max(kept, 1) = 1: the gradient is all zeros."),
        ("normalizer = 256 (the paper's N_cls)", rng.normal(0, 1, (4, 2)), [1, 0, -1, 1], 256.0,
         "A given normalizer replaces the row count: divide by 256."),
        ("large logits (1000): no overflow", np.array([[1000.0, 0.0, -1000.0], [1000.0, 1000.0, 0.0]]),
         [0, 2], None, "np.exp(1000) overflows to inf, and inf / inf is NaN. Which number can you "
                       "subtract from a row's logits without changing its softmax?"),
        ("rows far apart (+1000 and -1000): each row's own max", np.array([[1000.0, 999.0],
                                                                         [-1000.0, -1001.0]]),
         [0, 1], None, "Shifted by the largest logit of the whole array (1000), the second row becomes "
                       "exp(-2000) and exp(-2001): 0 in floating point, and 0 / 0 is NaN. Each row "
                       "needs its own shift."),
        ("32 random rows, 21 classes, some ignored", big_logits, big_labels, None,
         "Check one row by hand against your derivation (question 1), divided by the kept count."),
    ]
    cases = []
    for name, z, y, norm, hint in specs:
        y = np.asarray(y, dtype=np.int64)
        kwargs = {} if norm is None else {"normalizer": norm}
        cases.append(Case(name, (z, y), kwargs, expected=_ops.softmax_cross_entropy(z, y, **kwargs)[1],
                          hint=hint, note="seeded random"))
    compare = lambda e, g: compare_array(e, g, "dlogits")
    mistakes = [
        (same_as(_sce_backward_variant, compare, norm="none"),
         "Your gradient is not normalised: the loss is a mean over the kept rows, so divide by their number."),
        (same_as(_sce_backward_variant, compare, norm="all"),
         "Divide by the number of KEPT rows (labels >= 0), not by all N rows."),
        (same_as(_sce_backward_variant, compare, ignore=False),
         "Rows with label -1 must get zero gradient: in Python, onehot[i, -1] marks the LAST class."),
        (same_as(_sce_backward_variant, compare, sign=-1.0),
         "The sign is flipped: the loss is MINUS log p, so raising the true class's logit must lower "
         "the loss (a negative gradient there)."),
    ]
    return run_check("softmax_cross_entropy_backward(logits, labels, normalizer)", cases,
                     calling(softmax_cross_entropy_backward, library=[_ops.softmax_cross_entropy, _losses.softmax_cross_entropy_reference]), compare, names=("logits", "labels"), mistakes=mistakes, hidden=hidden)


# ======================================================================================
# 07 RoI pooling forward
# ======================================================================================

def _roi_pool_variant(feat, rois, output_size=(7, 7), spatial_scale=1 / 16, rounding="half_away",
                      plus_one=True, start=-np.inf, use_batch=True):
    """RoI max pooling as plain loops, with one switch flipped; all defaults = ops.roi_pool_forward."""
    N, C, H, W = feat.shape
    PH, PW = output_size
    rnd = {"half_away": lambda v: math.copysign(math.floor(abs(v) + 0.5), v),
           "np_round": lambda v: float(np.round(v)), "trunc": lambda v: float(int(v))}[rounding]
    out = np.zeros((rois.shape[0], C, PH, PW))
    for k, (b, x1, y1, x2, y2) in enumerate(rois):
        b = int(b) if use_batch else 0
        xs, ys, xe, ye = (int(rnd(v * spatial_scale)) for v in (x1, y1, x2, y2))
        extra = 1 if plus_one else 0
        roi_w, roi_h = max(xe - xs + extra, 1), max(ye - ys + extra, 1)
        bin_h, bin_w = roi_h / PH, roi_w / PW
        for ph in range(PH):
            for pw in range(PW):
                h0 = min(max(math.floor(ph * bin_h) + ys, 0), H)
                h1 = min(max(math.ceil((ph + 1) * bin_h) + ys, 0), H)
                w0 = min(max(math.floor(pw * bin_w) + xs, 0), W)
                w1 = min(max(math.ceil((pw + 1) * bin_w) + xs, 0), W)
                if h1 <= h0 or w1 <= w0:
                    continue
                window = feat[b, :, h0:h1, w0:w1].reshape(C, -1)
                out[k, :, ph, pw] = np.maximum(window.max(axis=1), start)
    return out


def check_roi_pool(roi_pool, hidden=False):
    """Check roi_pool(feat, rois, output_size=(7, 7), spatial_scale=1/16) -> (K, C, PH, PW).

    Compared with ops.roi_pool_forward (the Caffe / torchvision rule): corners x1 * scale, ... are
    rounded half away from zero; roi_w = max(x_end - x_start + 1, 1); with bin_h = roi_h / PH,
    bin (ph, pw) covers rows [floor(ph * bin_h), ceil((ph + 1) * bin_h)) + y_start and the same
    for columns,
    clipped to the map; the output is the bin's max, or 0 for an empty bin. feat: (N, C, H, W),
    rois: (K, 5) = (batch index, x1, y1, x2, y2) in image pixels; output_size is a pair (PH, PW).
    """
    rng = _rng(7, hidden)
    f4 = rng.permutation(16).reshape(1, 1, 4, 4).astype(np.float64)        # distinct values
    f6 = rng.permutation(36).reshape(1, 1, 6, 6).astype(np.float64)
    f8 = rng.permutation(64).reshape(1, 1, 8, 8).astype(np.float64)
    fneg = -rng.uniform(1, 2, (1, 2, 4, 4))
    fbatch = rng.normal(0, 1, (2, 2, 5, 5))
    f69 = rng.permutation(54).reshape(1, 1, 6, 9).astype(np.float64)    # not square: H != W
    f32 = np.arange(32 * 32, dtype=np.float64).reshape(1, 1, 32, 32)    # grows with row and column
    frand = rng.normal(0, 1, (2, 3, 16, 16))
    xy = rng.uniform(-16, 120, (6, 2))
    wh = rng.uniform(4, 80, (6, 2))
    rand_rois = np.concatenate([rng.integers(0, 2, (6, 1)), xy, xy + wh], axis=1)
    R = lambda *rows: np.array(rows, dtype=np.float64).reshape(-1, 5)
    specs = [
        ("RoI = the whole 4 x 4 map, 2 x 2 output, scale 1", f4, R([0, 0, 0, 3, 3]), (2, 2), 1.0,
         "Corners are inclusive cells: x1 = 0 .. x2 = 3 is roi_w = 3 - 0 + 1 = 4 cells, so each bin is 2 x 2."),
        ("scale 1/2: the RoI is in image pixels", f4, R([0, 0, 0, 6, 6]), (2, 2), 0.5,
         "Multiply the corners by spatial_scale first: (0, 0, 6, 6) * 0.5 = cells 0 .. 3."),
        ("bins that are not whole cells: 5 x 5 RoI, 2 x 2 output", f6, R([0, 0, 0, 4, 4]), (2, 2), 1.0,
         "bin_h = 5 / 2 = 2.5: bin 0 covers rows floor(0) .. ceil(2.5) = [0, 3), bin 1 rows [2, 5) "
         "(neighbouring bins overlap by one row)."),
        ("RoI smaller than the output: 2 x 2 RoI, 3 x 3 output", f6, R([0, 1, 1, 2, 2]), (3, 3), 1.0,
         "bin_h = 2 / 3: bins are less than a cell, so a cell can be the max of several bins."),
        ("rounding half away from zero", f8, R([0, 5, 5, 9, 9]), (3, 3), 0.5,
         "5 * 0.5 = 2.5 rounds to 3 and 4.5 rounds to 5 (half AWAY from zero, as C's round). "
         "np.round rounds halves to even (2.5 -> 2), which is not this rule."),
        ("negative features: start the max at -inf", fneg, R([0, 0, 0, 3, 3]), (2, 2), 1.0,
         "Every value here is negative, so a running max that starts at 0 returns 0: the max of a bin "
         "is the largest of its values, whatever their sign."),
        ("RoI partly outside the map: empty bins give 0", f4, R([0, -8, 0, 3, 3]), (2, 2), 1.0,
         "x_start = -8, roi_w = 12, so bin 0 covers columns [-8, -2): clipped to the map it is empty and "
         "outputs 0. Clip to the map AFTER adding x_start."),
        ("RoI wholly outside the map", f4, R([0, 20, 20, 30, 30]), (2, 2), 1.0,
         "Every bin is empty after clipping: the output is all zeros."),
        ("a RoI on the second image of the batch", fbatch, R([1, 0, 0, 4, 4], [0, 1, 1, 3, 3]), (2, 2), 1.0,
         "Column 0 of a RoI is its image in the batch: pool from that image's map."),
        ("a malformed RoI (x2 < x1) becomes one cell", f6, R([0, 3, 3, 1, 1]), (2, 2), 1.0,
         "roi_w = max(x_end - x_start + 1, 1): a RoI whose corners cross is 1 x 1 cell."),
        ("a 2 x 3 output (PH = 2 rows, PW = 3 columns)", f6, R([0, 0, 0, 5, 5]), (2, 3), 1.0,
         "output_size = (PH, PW): PH bins down the rows, PW across the columns; the result is (K, C, PH, PW)."),
        ("a 6 x 9 map (H = 6 rows, W = 9 columns)", f69, R([0, 2, 1, 12, 7]), (2, 2), 1.0,
         "Rows are clipped to H and columns to W: feat.shape is (N, C, H, W)."),
        ("x1 = -8 at scale 1/16: -0.5 rounds to -1", f4, R([0, -8, -8, 40, 40]), (2, 2), 1 / 16,
         "Half away from zero works on negative values too: -0.5 -> -1 (floor(v + 0.5) gives 0)."),
        ("bin edges in floating point: 29 cells in 7 bins", f32, R([0, 0, 0, 28, 28]), (7, 7), 1.0,
         "Compute bin_h = roi_h / PH first, then ceil((ph + 1) * bin_h), as the library does: "
         "29 / 7 * 7 is 29.000000000000004 in floating point, so the last bin ends at row 30, "
         "while (ph + 1) * 29 / 7 would give exactly 29."),
        ("6 random RoIs, 7 x 7 output, scale 1/8", frand, rand_rois, (7, 7), 1 / 8,
         "Compare one bin by hand: corners, bin edges, clipping, max."),
    ]
    cases = [Case(name, (f, r), {"output_size": size, "spatial_scale": scale},
                  expected=_ops.roi_pool_forward(f, r, output_size=size, spatial_scale=scale)[0],
                  hint=hint, note="seeded random")
             for name, f, r, size, scale, hint in specs]
    compare = lambda e, g: compare_array(e, g, "pooled output")
    mistakes = [
        (same_as(_roi_pool_variant, compare, rounding="np_round"),
         "np.round rounds halves to even (2.5 -> 2); RoI pooling rounds half AWAY from zero "
         "(2.5 -> 3, -0.5 -> -1)."),
        (same_as(_roi_pool_variant, compare, rounding="trunc"),
         "int(v) truncates (2.7 -> 2); the corners are ROUNDED, half away from zero."),
        (same_as(_roi_pool_variant, compare, plus_one=False),
         "The RoI's corner cells are both inside it: roi_w = x_end - x_start + 1 (here the +1 is right)."),
        (same_as(_roi_pool_variant, compare, start=0.0),
         "Your maxima never go below 0, as if the running max started at 0 instead of -inf: only an "
         "EMPTY bin outputs 0."),
        (same_as(_roi_pool_variant, compare, use_batch=False),
         "Every RoI was pooled from image 0: pool each RoI from its own image, column 0 of the RoI."),
    ]
    return run_check("roi_pool(feat, rois, output_size, spatial_scale)", cases, calling(roi_pool, library=[_ops.roi_pool_forward, _roi_pool.roi_pool_forward_reference]), compare,
                     names=("feat", "rois"), mistakes=mistakes, hidden=hidden)


# ======================================================================================
# 08 convolution backward
# ======================================================================================

def _conv_backward_variant(dout, x, w, stride=1, pad=0, overwrite=False):
    """Convolution gradients as a loop over output positions; overwrite=True uses = instead of +=."""
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    OH, OW = dout.shape[2], dout.shape[3]
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxpad = np.zeros_like(xpad)
    dw = np.zeros_like(w)
    for i in range(OH):
        for j in range(OW):
            rows, cols = slice(i * stride, i * stride + kh), slice(j * stride, j * stride + kw)
            g = dout[:, :, i, j]                                              # (N, F)
            contribution = np.tensordot(g, w, axes=([1], [0]))                # (N, C, kh, kw)
            if overwrite:
                dxpad[:, :, rows, cols] = contribution
            else:
                dxpad[:, :, rows, cols] += contribution
            dw += np.tensordot(g, xpad[:, :, rows, cols], axes=([0], [0]))    # (F, C, kh, kw)
    return dxpad[:, :, pad:pad + H, pad:pad + W], dw, dout.sum(axis=(0, 2, 3))


def check_conv_backward(conv_backward, hidden=False):
    """Check conv_backward(dout, x, w, stride=1, pad=0) -> (dx, dw, db).

    Compared with ops.conv2d_backward after ops.conv2d_forward(x, w, b, stride, pad), where
    out[n, f, i, j] = b[f] + sum_{c, a, e} w[f, c, a, e] * xpad[n, c, i*stride + a, j*stride + e].
    x: (N, C, H, W), w: (F, C, kh, kw), dout: (N, F, OH, OW). Returns dx shaped like x, dw like w,
    db of shape (F,).
    """
    rng = _rng(8, hidden)
    specs = [
        ("1 x 1 kernel, one image, one channel", (1, 1, 3, 3), (1, 1, 1, 1), 1, 0,
         "With a 1 x 1 kernel and one channel, out = w * x + b, one product per output: differentiate "
         "it by hand."),
        ("3 x 3 kernel, pad 1, stride 1 (same size)", (1, 2, 5, 5), (3, 2, 3, 3), 1, 1,
         "The padded zeros are not inputs: which entries of the padded input are x's own? dx has x's "
         "shape."),
        ("2 x 2 kernel, stride 2: windows do not overlap", (1, 2, 6, 6), (2, 2, 2, 2), 2, 0,
         "Output (i, j) reads the window starting at row i * stride, column j * stride."),
        ("3 x 3 kernel, stride 2, pad 1: windows overlap", (2, 2, 7, 7), (2, 2, 3, 3), 2, 1,
         "Where windows overlap, a pixel is read by several outputs: how do their gradients combine?"),
        ("non-square 3 x 2 kernel, pad 2", (1, 1, 4, 5), (2, 1, 3, 2), 1, 2,
         "kh and kw can differ: use w.shape[2] for the rows and w.shape[3] for the columns."),
        ("a batch of 3, 4 channels, 5 filters", (3, 4, 6, 6), (5, 4, 3, 3), 1, 1,
         "Every image of the batch uses the same w and b, while x[n] belongs to image n alone: which "
         "gradients add up over the batch?"),
        ("stride 2 skips the last column (W = 6, kernel 3)", (1, 1, 6, 6), (1, 1, 3, 3), 2, 0,
         "OW = (6 - 3) // 2 + 1 = 2: column 5 is never read, so its gradient is 0."),
    ]
    cases = []
    for name, xs, ws, stride, pad, hint in specs:
        x, w = rng.normal(0, 1, xs), rng.normal(0, 1, ws)
        out, cache = _ops.conv2d_forward(x, w, np.zeros(ws[0]), stride=stride, pad=pad)
        dout = rng.normal(0, 1, out.shape)
        cases.append(Case(name, (dout, x, w), {"stride": stride, "pad": pad},
                          expected=_ops.conv2d_backward(dout, cache), hint=hint, note="seeded random"))

    def compare(e, g):
        return compare_tuple(e, g, ("dx", "dw", "db"), [lambda a, b, n: compare_array(a, b, n)] * 3)

    # The slips below are each about one of dx, dw, db: a hint is given only when that one is the
    # first of the three that is wrong (the comparison reports the first wrong one).
    def first_wrong(case, got):
        for i in range(3):
            if compare_array(case.expected[i], got[i], "") is not None:
                return i
        return None

    def padded_dx(case, got):
        dout, x, w = case.args
        p = case.kwargs["pad"]
        return p > 0 and np.shape(got[0]) == (x.shape[0], x.shape[1], x.shape[2] + 2 * p, x.shape[3] + 2 * p)

    def dw_per_image(case, got):
        dout, x, w = case.args
        return first_wrong(case, got) == 1 and np.shape(got[1]) == (x.shape[0],) + w.shape

    def db_not_summed(case, got):
        return first_wrong(case, got) == 2 and np.shape(got[2]) != (case.args[2].shape[0],)

    def db_mean(case, got):
        dout = case.args[0]
        return (first_wrong(case, got) == 2 and np.shape(got[2]) == (dout.shape[1],)
                and np.allclose(got[2], dout.mean(axis=(0, 2, 3))))

    mistakes = [
        (padded_dx, "dx has the padded shape: crop the padding off (the padded zeros are not inputs; dx "
                    "has x's shape)."),
        (dw_per_image, "dw has one gradient per image: sum over the batch, dw has w's shape (F, C, kh, kw)."),
        (db_not_summed, "db has one number per filter, shape (F,): every output of filter f, in every image "
                        "and position, added b[f] once."),
        (db_mean, "db is a SUM of dout over n, i, j (every output adds b once), not a mean."),
        (same_as(_conv_backward_variant, compare, overwrite=True),
         "Overlapping windows overwrite each other in your dx: a pixel read by several outputs gets the "
         "sum of their gradients (+=, not =)."),
    ]
    return run_check("conv_backward(dout, x, w, stride, pad)", cases, calling(conv_backward, library=[_ops.conv2d_backward, _conv.conv2d_backward_reference, _conv.col2im]), compare,
                     names=("dout", "x", "w"), mistakes=mistakes, hidden=hidden)
