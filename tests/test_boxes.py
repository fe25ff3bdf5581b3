"""boxes.py: IoU, encode/decode, clipping, small boxes, NMS and batched NMS."""
import math

import numpy as np
import pytest

from minifrcnn.backend import to_device
from minifrcnn.boxes import (BBOX_XFORM_CLIP, batched_nms, batched_nms_reference, box_area, box_iou,
                             clip_boxes, decode, encode, nms, nms_reference, remove_small_boxes)


def random_boxes(rng, n, size=100.0, min_side=1.0, max_side=40.0, dtype=np.float64):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(min_side, max_side, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(dtype)


# ---------------------------------------------------------------------------------- IoU

def test_box_iou_hand_computed():
    a = np.array([[0, 0, 10, 10]], dtype=np.float32)
    b = np.array([[5, 5, 15, 15],      # inter 25, union 175
                  [0, 0, 10, 10],      # identical
                  [10, 0, 20, 10],     # touching edge: inter 0
                  [20, 20, 30, 30],    # far away
                  [0, 0, 5, 10],       # half inside: 50 / 100
                  [2, 2, 4, 4]],       # inside: 4 / 100
                 dtype=np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (1, 6) and iou.dtype == np.float32
    np.testing.assert_allclose(iou[0], [25 / 175, 1, 0, 0, 0.5, 0.04], rtol=1e-6)
    np.testing.assert_allclose(box_iou(b, a)[:, 0], iou[0], rtol=1e-6)   # symmetric


def test_box_iou_matches_a_scalar_loop():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 7), random_boxes(rng, 5)
    iou = box_iou(a, b)
    for i in range(7):
        for j in range(5):
            iw = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            ih = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            area_a = (a[i, 2] - a[i, 0]) * (a[i, 3] - a[i, 1])
            area_b = (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1])
            assert iou[i, j] == pytest.approx(iw * ih / (area_a + area_b - iw * ih), rel=1e-12)
    assert (iou > 0).any() and (iou == 0).any()          # the data exercise both cases


def test_zero_area_boxes_have_iou_zero_and_no_nan():
    boxes = np.array([[5, 5, 5, 15],     # zero width
                      [0, 3, 10, 3],     # zero height
                      [5, 5, 5, 5],      # a point
                      [0, 0, 10, 10]], dtype=np.float64)
    with np.errstate(all="raise"):       # a 0 / 0 would raise here
        iou = box_iou(boxes, boxes)
    assert not np.isnan(iou).any()
    np.testing.assert_array_equal(iou[:3], 0)             # even with themselves
    np.testing.assert_array_equal(iou[:, :3], 0)
    assert iou[3, 3] == 1
    np.testing.assert_array_equal(box_area(boxes), [0, 0, 0, 100])


def test_empty_inputs_and_bad_shapes():
    assert box_iou(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    assert box_iou(np.zeros((3, 4)), np.zeros((0, 4))).shape == (3, 0)
    with pytest.raises(ValueError, match="b: expected shape"):
        box_iou(np.zeros((2, 4)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match="a: expected dtype float32 or float64"):
        box_iou(np.zeros((2, 4), dtype=np.int64), np.zeros((2, 4)))


# ---------------------------------------------------------------------- encode / decode

def test_encode_hand_computed():
    ref = np.array([[0, 0, 10, 20]], dtype=np.float64)       # centre (5, 10), size 10 x 20
    target = np.array([[5, 0, 25, 40]], dtype=np.float64)    # centre (15, 20), size 20 x 40
    np.testing.assert_allclose(encode(ref, target), [[1.0, 0.5, math.log(2), math.log(2)]])
    np.testing.assert_allclose(encode(ref, target, weights=(10, 10, 5, 5)),
                               [[10.0, 5.0, 5 * math.log(2), 5 * math.log(2)]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_encode_then_decode_gives_the_boxes_back(dtype):
    rng = np.random.default_rng(1)
    ref, target = random_boxes(rng, 50, dtype=dtype), random_boxes(rng, 50, dtype=dtype)
    for weights in [(1, 1, 1, 1), (10, 10, 5, 5)]:
        deltas = encode(ref, target, weights)
        assert deltas.dtype == dtype and deltas.shape == (50, 4)
        back = decode(ref, deltas, weights)
        assert back.dtype == dtype
        tol = dict(rtol=1e-5, atol=1e-3) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(back, target, **tol)


def test_weights_equal_dividing_by_stds():
    rng = np.random.default_rng(2)
    ref, target = random_boxes(rng, 20), random_boxes(rng, 20)
    stds = np.array([0.1, 0.1, 0.2, 0.2])
    np.testing.assert_allclose(encode(ref, target, weights=tuple(1 / stds)), encode(ref, target) / stds,
                               rtol=1e-12)


def test_decode_class_specific_deltas():
    rng = np.random.default_rng(3)
    ref = random_boxes(rng, 6)
    deltas = rng.normal(0, 0.5, (6, 4 * 3))                  # K = 3 classes
    boxes = decode(ref, deltas, weights=(10, 10, 5, 5))
    assert boxes.shape == (6, 12)
    for k in range(3):
        np.testing.assert_allclose(boxes[:, 4 * k:4 * k + 4],
                                   decode(ref, deltas[:, 4 * k:4 * k + 4], weights=(10, 10, 5, 5)))
    assert not np.allclose(boxes[:, 0:4], boxes[:, 4:8])    # the classes really differ
    with pytest.raises(ValueError, match="deltas"):
        decode(ref, deltas[:, :6])


def test_decode_clamps_huge_log_sizes():
    ref = np.array([[0, 0, 16, 16]], dtype=np.float64)
    boxes = decode(ref, np.array([[0, 0, 50.0, 1000.0]]))      # exp(1000) would overflow
    assert np.isfinite(boxes).all()
    np.testing.assert_allclose(boxes[0, 2] - boxes[0, 0], 16 * math.exp(BBOX_XFORM_CLIP))
    np.testing.assert_allclose(boxes[0, 2] - boxes[0, 0], 1000.0)
    np.testing.assert_allclose(boxes[0, 3] - boxes[0, 1], 1000.0)


def test_encode_refuses_zero_size_boxes():
    good = np.array([[0, 0, 10, 10], [0, 0, 5, 5]], dtype=np.float64)
    flat = np.array([[0, 0, 10, 10], [3, 0, 3, 5]], dtype=np.float64)    # second box has width 0
    with pytest.raises(ValueError, match="ref: every box needs x2 > x1"):
        encode(flat, good)
    with pytest.raises(ValueError, match="target: every box needs x2 > x1"):
        encode(good, flat)
    # decode of a zero-size reference is harmless: a zero-size box, no NaN
    assert np.isfinite(decode(flat, np.ones((2, 4)))).all()


# --------------------------------------------------------------- clip / small boxes

def test_clip_boxes_to_the_image():
    boxes = np.array([[-5, -3, 20, 50], [2, 3, 4, 5], [70, 40, 90, 45]], dtype=np.float32)
    out = clip_boxes(boxes, (40, 80))                          # H = 40, W = 80
    np.testing.assert_array_equal(out, [[0, 0, 20, 40], [2, 3, 4, 5], [70, 40, 80, 40]])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(boxes[0], [-5, -3, 20, 50])  # input untouched
    cls = clip_boxes(np.tile(boxes, (1, 3)), (40, 80))         # class-specific (N, 12)
    np.testing.assert_array_equal(cls, np.tile(out, (1, 3)))


def test_remove_small_boxes_keeps_equal_sizes():
    boxes = np.array([[0, 0, 16, 16], [0, 0, 15.9, 30], [0, 0, 30, 15.9], [0, 0, 40, 20]])
    keep = remove_small_boxes(boxes, 16)
    assert keep.dtype == np.int64
    np.testing.assert_array_equal(keep, [0, 3])


# ---------------------------------------------------------------------------------- NMS

def nms_test_cases():
    """(boxes, scores) sets that stress the tie and duplicate rules."""
    rng = np.random.default_rng(4)
    cases = []
    for dtype in (np.float32, np.float64):
        boxes = random_boxes(rng, 150, size=80, dtype=dtype)
        scores = rng.random(150).astype(dtype)
        cases.append((boxes, scores))
        # equal scores everywhere (quantised) and exact duplicate boxes
        boxes2 = boxes.copy()
        boxes2[100:130] = boxes2[0:30]                    # 30 duplicates
        scores2 = np.round(scores * 5).astype(dtype) / 5  # only 6 distinct values
        cases.append((boxes2, scores2))
    # zero-area boxes mixed in
    boxes3 = random_boxes(rng, 60, size=20)
    boxes3[::7, 2] = boxes3[::7, 0]
    cases.append((boxes3, rng.random(60)))
    return cases


@pytest.mark.parametrize("method", ["loop", "matrix"])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7, 1.0])
def test_nms_matches_the_plain_loop(method, threshold):
    for boxes, scores in nms_test_cases():
        keep = nms(boxes, scores, threshold, method=method)
        ref = nms_reference(boxes, scores, threshold)
        assert keep.dtype == np.int64
        np.testing.assert_array_equal(keep, ref)
        assert (np.diff(scores[keep]) <= 0).all()             # decreasing score
        if 0 < threshold < 1:
            assert 1 < len(keep) < len(boxes)                  # the case is not trivial
        zero_area = np.nonzero(box_area(boxes) == 0)[0]
        assert np.isin(zero_area, keep).all()                  # never suppressed (IoU 0)


def test_nms_ties_duplicates_and_the_threshold_itself():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10],   # three identical
                      [0, 0, 10, 5],                                      # IoU exactly 0.5 with them
                      [50, 50, 60, 60]], dtype=np.float64)
    scores = np.array([0.5, 0.9, 0.9, 0.95, 0.1])
    # identical boxes with equal scores: the lower index (1) wins; IoU == threshold is kept
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [3, 1, 4])
    np.testing.assert_array_equal(nms(boxes, scores, 0.49), [3, 4])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, method="matrix"), [3, 1, 4])


def test_nms_max_output_is_a_prefix():
    boxes, scores = nms_test_cases()[0]
    full = nms(boxes, scores, 0.5)
    for method in ("loop", "matrix"):
        np.testing.assert_array_equal(nms(boxes, scores, 0.5, max_output=7, method=method), full[:7])
    assert len(nms(boxes, scores, 0.5, max_output=10_000)) == len(full)


def test_nms_empty_and_argument_errors():
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), 0.5).shape == (0,)
    with pytest.raises(ValueError, match="scores: expected shape"):
        nms(np.zeros((3, 4)), np.zeros(2), 0.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(np.zeros((3, 4)), np.zeros(3), 1.5)
    with pytest.raises(ValueError, match="method"):
        nms(np.zeros((3, 4)), np.zeros(3), 0.5, method="fast")


def test_batched_nms_matches_per_class_reference():
    rng = np.random.default_rng(5)
    boxes = random_boxes(rng, 200, size=60)
    scores = np.round(rng.random(200), 1)                      # ties across and within classes
    labels = rng.integers(1, 5, 200)
    for method in ("loop", "matrix"):
        keep = batched_nms(boxes, scores, labels, 0.4, method=method)
        np.testing.assert_array_equal(keep, batched_nms_reference(boxes, scores, labels, 0.4))
    assert len(keep) > len(nms(boxes, scores, 0.4))           # classes do not suppress each other


def test_batched_nms_keeps_identical_boxes_of_different_classes():
    boxes = np.array([[0, 0, 10, 10]] * 3, dtype=np.float32)
    scores = np.array([0.3, 0.9, 0.5], dtype=np.float32)
    np.testing.assert_array_equal(batched_nms(boxes, scores, np.array([1, 2, 1]), 0.5), [1, 2])


def test_the_nms_cuda_kernel_is_for_cupy_arrays_only():
    from minifrcnn.ops.cuda_kernels import kernels_enabled
    boxes, scores = np.zeros((2, 4), np.float32), np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="method='kernel'"):
        nms(boxes, scores, 0.5, method="kernel")
    assert not kernels_enabled(boxes)                                 # NumPy: the array versions
    assert not kernels_enabled(to_device(boxes, "strict"))
