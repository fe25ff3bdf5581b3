"""Tests for minifrcnn/ops/roi_pool.py: RoI max pooling with torchvision's rules.

    .venv/bin/pytest tests/test_roi_pool.py -q
"""
import numpy as np
import pytest

from minifrcnn.gradcheck import numeric_gradient_array, rel_error
from minifrcnn.ops.roi_pool import (
    round_half_away, roi_pool_backward, roi_pool_backward_reference, roi_pool_forward,
    roi_pool_forward_reference)

# A 6 x 6 map whose bin maxima are written out by hand below. Cell (h, w) has index h*6 + w.
M = np.array([[0, 0, 0, 0, 0, 0],
              [0, 5, 1, 2, 8, 0],
              [0, 3, 9, 4, 1, 0],
              [0, 7, 2, 20, 3, 0],
              [0, 1, 4, 2, 9, 0],
              [0, 2, 8, 5, 1, 7]], dtype=np.float64)


def as_feat(*maps):
    """(N, 1, H, W) from N maps (H, W)."""
    return np.stack([np.asarray(m, dtype=np.float64)[None] for m in maps])


def random_rois(rng, K, N, H, W, scale):
    """K RoIs in image pixels for a map H x W at `scale`: inside, partly and wholly outside,
    tiny (under one cell), inverted (x2 < x1), and corners on exact half cells (rounding ties)."""
    img_h, img_w = H / scale, W / scale
    x1 = rng.uniform(-0.3 * img_w, 1.2 * img_w, K)
    y1 = rng.uniform(-0.3 * img_h, 1.2 * img_h, K)
    x2 = x1 + rng.uniform(-0.1 * img_w, 0.9 * img_w, K)
    y2 = y1 + rng.uniform(-0.1 * img_h, 0.9 * img_h, K)
    boxes = np.stack([x1, y1, x2, y2], axis=1)                       # (K, 4)
    tiny = rng.random(K) < 0.15                                      # a fraction of a cell
    boxes[tiny, 2:] = boxes[tiny, :2] + rng.uniform(0, 0.9 / scale, (tiny.sum(), 2))
    half = rng.random(K) < 0.3                                       # corners at (n + 0.5) cells
    boxes[half] = (np.floor(boxes[half] * scale) + 0.5) / scale
    batch = rng.integers(0, N, K).astype(np.float64)
    return np.concatenate([batch[:, None], boxes], axis=1)           # (K, 5)


# --------------------------------------------------------------------------- hand-computed cases

def test_hand_computed_bins_overlap_and_shared_argmax():
    # RoI x 0.5..3.5, y 1.4..4.6 at scale 1: corners round to x 1..4, y 1..5 (0.5 -> 1: half away
    # from zero), so roi_w = 4, roi_h = 5; 2 x 2 bins: bin_w = 2, bin_h = 2.5.
    # rows: ph 0 -> [floor(0), ceil(2.5)) + 1 = [1, 4);  ph 1 -> [floor(2.5), ceil(5)) + 1 = [3, 6)
    # cols: pw 0 -> [0, 2) + 1 = [1, 3);  pw 1 -> [2, 4) + 1 = [3, 5).  Row 3 is in both row bins.
    feat = as_feat(M)
    rois = np.array([[0, 0.5, 1.4, 3.5, 4.6]])
    out, cache = roi_pool_forward(feat, rois, output_size=(2, 2), spatial_scale=1.0)
    # bin (0,0): rows 1-3 x cols 1-2 = [5 1; 3 9; 7 2]  -> 9 at (2, 2)
    # bin (0,1): rows 1-3 x cols 3-4 = [2 8; 4 1; 20 3] -> 20 at (3, 3)
    # bin (1,0): rows 3-5 x cols 1-2 = [7 2; 1 4; 2 8]  -> 8 at (5, 2)
    # bin (1,1): rows 3-5 x cols 3-4 = [20 3; 2 9; 5 1] -> 20 at (3, 3) again (the shared row)
    np.testing.assert_array_equal(out[0, 0], [[9, 20], [8, 20]])
    np.testing.assert_array_equal(cache["argmax"][0, 0], [[2 * 6 + 2, 3 * 6 + 3], [5 * 6 + 2, 3 * 6 + 3]])
    dfeat = roi_pool_backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), cache)
    expected = np.zeros((1, 1, 6, 6))
    expected[0, 0, 2, 2] = 1
    expected[0, 0, 3, 3] = 2 + 4                     # two bins share the argmax: gradients add
    expected[0, 0, 5, 2] = 3
    np.testing.assert_array_equal(dfeat, expected)


def test_hand_computed_empty_bins_output_zero():
    # RoI 3..9 at scale 1 on a 6 x 6 map: roi_w = roi_h = 7, bin 3.5; bin 0 -> [0, 4) + 3 = [3, 7)
    # clipped to [3, 6); bin 1 -> [3, 7) + 3 = [6, 10) clipped to [6, 6): empty.
    feat = as_feat(M - 30)                           # every value negative: the max of bin (0,0) is < 0
    out, cache = roi_pool_forward(feat, np.array([[0, 3.0, 3.0, 9.0, 9.0]]), output_size=2, spatial_scale=1.0)
    # bin (0,0): rows 3-5 x cols 3-5 = [20 3 0; 2 9 0; 5 1 7] - 30 -> -10 at (3, 3)
    np.testing.assert_array_equal(out[0, 0], [[-10, 0], [0, 0]])      # empty bins give 0, not the max
    np.testing.assert_array_equal(cache["argmax"][0, 0], [[21, -1], [-1, -1]])
    dfeat = roi_pool_backward(np.ones_like(out), cache)
    assert dfeat.sum() == 1 and dfeat[0, 0, 3, 3] == 1   # empty bins send no gradient


def test_hand_computed_inverted_tiny_roi_is_one_cell():
    # x 4.2 -> 4, x2 = 2 -> roi_w = max(2 - 4 + 1, 1) = 1; y 4.4 -> 4, y2 = 1 -> roi_h = 1.
    # bin 1/2 cell: ph 0 -> [0, ceil(0.5)) = [0, 1), ph 1 -> [floor(0.5), 1) = [0, 1): all on (4, 4).
    feat = as_feat(M)
    out, cache = roi_pool_forward(feat, np.array([[0, 4.2, 4.4, 2.0, 1.0]]), output_size=2, spatial_scale=1.0)
    np.testing.assert_array_equal(out[0, 0], [[9, 9], [9, 9]])
    np.testing.assert_array_equal(cache["argmax"][0, 0], [[28, 28], [28, 28]])
    dfeat = roi_pool_backward(np.ones_like(out), cache)
    assert dfeat[0, 0, 4, 4] == 4 and dfeat.sum() == 4


def test_rounding_is_half_away_from_zero():
    np.testing.assert_array_equal(round_half_away(np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.4999, 0.0])),
                                  [-3, -2, -1, 1, 2, 3, 2, 0])
    # floor(v + 0.5) would give 1 here: 0.49999997 + 0.5 rounds to 1.0 in float32.
    assert round_half_away(np.array([0.49999997], dtype=np.float32))[0] == 0
    # In the op, at scale 1/16: x = 40 px -> 2.5 cells -> 3 (np.round would say 2).
    # On a map whose value grows with w, a 1 x 1 output's argmax is the RoI's last column.
    ramp = np.tile(np.arange(8.0), (4, 1))                            # (4, 8) value = w
    _, cache = roi_pool_forward(as_feat(ramp), np.array([[0, 0, 0, 40, 0]]), output_size=1, spatial_scale=1 / 16)
    assert cache["argmax"][0, 0, 0, 0] == 3                           # round(2.5) = 3
    # ... and with decreasing values, its first column: x1 = 24 px -> 1.5 -> 2 (np.round: 2), 8 px -> 1.
    _, cache = roi_pool_forward(as_feat(-ramp), np.array([[0, 24, 0, 100, 0], [0, 8, 0, 100, 0]]),
                                output_size=1, spatial_scale=1 / 16)
    np.testing.assert_array_equal(cache["argmax"][:, 0, 0, 0], [2, 1])


def test_first_maximum_in_scan_order_wins_ties():
    # torchvision compares with `>`: of equal maxima the first in scan order (h outer, w inner) wins.
    roi = np.array([[0, 0, 0, 1, 1]])
    for plane, first in [([[5, 7], [7, 1]], 1), ([[7, 5], [7, 7]], 0), ([[1, 2], [7, 7]], 2)]:
        _, cache = roi_pool_forward(as_feat(plane), roi, output_size=1, spatial_scale=1.0)
        _, cache_ref = roi_pool_forward_reference(as_feat(plane), roi, output_size=1, spatial_scale=1.0)
        assert cache["argmax"][0, 0, 0, 0] == first
        assert cache_ref["argmax"][0, 0, 0, 0] == first


def test_batch_index_picks_the_image():
    feat = as_feat(np.zeros((6, 6)), M)              # image 1 is M, image 0 is zeros
    rois = np.array([[1, 0.5, 1.4, 3.5, 4.6], [0, 0.5, 1.4, 3.5, 4.6]])
    out, cache = roi_pool_forward(feat, rois, output_size=(2, 2), spatial_scale=1.0)
    np.testing.assert_array_equal(out[0, 0], [[9, 20], [8, 20]])
    np.testing.assert_array_equal(out[1, 0], np.zeros((2, 2)))
    dfeat = roi_pool_backward(np.ones_like(out), cache)
    assert dfeat[1, 0, 3, 3] == 2 and dfeat[1].sum() == 4           # image 1 gets RoI 0's gradient
    assert dfeat[0].sum() == 4                                       # image 0 gets RoI 1's (argmax of zeros)


def test_backward_accumulates_when_two_rois_share_an_argmax():
    feat = as_feat(M)
    rois = np.array([[0, 0.5, 1.4, 3.5, 4.6],        # its bins (0,1) and (1,1) pick (3, 3)
                     [0, 3.0, 3.0, 3.0, 3.0]])       # a single cell: (3, 3) for all 4 bins
    out, cache = roi_pool_forward(feat, rois, output_size=2, spatial_scale=1.0)
    dout = np.arange(1.0, 9.0).reshape(2, 1, 2, 2)                   # 1..4 for RoI 0, 5..8 for RoI 1
    dfeat = roi_pool_backward(dout, cache)
    assert dfeat[0, 0, 3, 3] == (2 + 4) + (5 + 6 + 7 + 8)
    np.testing.assert_array_equal(dfeat, roi_pool_backward_reference(dout, cache))


# --------------------------------------------------------------------------- fast == reference

@pytest.mark.parametrize("scale", [1 / 16, 1 / 8, 1.0])
@pytest.mark.parametrize("output_size", [(7, 7), (3, 5)])
def test_fast_equals_reference_random(scale, output_size):
    rng = np.random.default_rng(int(1 / scale) + output_size[1])
    N, C, H, W = 2, 3, 9, 13
    feat = rng.standard_normal((N, C, H, W))
    feat[0, 1, :4, :4] = 1.0                          # a flat patch: many ties
    rois = random_rois(rng, 40, N, H, W, scale)
    out, cache = roi_pool_forward(feat, rois, output_size, scale)
    out_ref, cache_ref = roi_pool_forward_reference(feat, rois, output_size, scale)
    np.testing.assert_array_equal(out, out_ref)
    np.testing.assert_array_equal(cache["argmax"], cache_ref["argmax"])
    assert (cache["argmax"] == -1).any() and (cache["argmax"] >= 0).any()   # empty and full bins seen
    dout = rng.standard_normal(out.shape)
    dfeat = roi_pool_backward(dout, cache)
    # Both add the gradients of one cell in the same (k, ph, pw) order: identical in float64.
    np.testing.assert_array_equal(dfeat, roi_pool_backward_reference(dout, cache_ref))
    np.testing.assert_array_equal(dfeat, roi_pool_backward(dout, cache_ref))   # either cache works


def test_float32_in_float32_out_and_matches_reference():
    rng = np.random.default_rng(3)
    feat = rng.standard_normal((2, 4, 10, 12)).astype(np.float32)
    rois = random_rois(rng, 30, 2, 10, 12, 1 / 16).astype(np.float32)
    out, cache = roi_pool_forward(feat, rois)
    out_ref, cache_ref = roi_pool_forward_reference(feat, rois)
    assert out.dtype == np.float32 and out.shape == (30, 4, 7, 7)
    np.testing.assert_array_equal(out, out_ref)
    np.testing.assert_array_equal(cache["argmax"], cache_ref["argmax"])
    dout = rng.integers(-3, 4, out.shape).astype(np.float32)        # whole numbers: sums are exact
    dfeat = roi_pool_backward(dout, cache)
    assert dfeat.dtype == np.float32
    np.testing.assert_array_equal(dfeat, roi_pool_backward_reference(dout, cache_ref))
    # float64 RoIs with a float32 map are read in float32, like torchvision's kernel type
    out64rois, _ = roi_pool_forward(feat, rois.astype(np.float64))
    np.testing.assert_array_equal(out64rois, out)


def test_nan_and_minus_inf_follow_torchvision():
    # `value > best` is False for NaN, and -inf never beats the start value -FLT_MAX.
    feat = as_feat(M)
    feat[0, 0, 2, 2] = np.nan                         # bin (0,0)'s max now 7 at (3, 1)
    feat[0, 0, 3:6, 3:5] = -np.inf                    # bin (1,1) has nothing above -FLT_MAX
    rois = np.array([[0, 0.5, 1.4, 3.5, 4.6]])
    out, cache = roi_pool_forward(feat, rois, output_size=2, spatial_scale=1.0)
    out_ref, cache_ref = roi_pool_forward_reference(feat, rois, output_size=2, spatial_scale=1.0)
    np.testing.assert_array_equal(out, out_ref)
    np.testing.assert_array_equal(cache["argmax"], cache_ref["argmax"])
    assert out[0, 0, 0, 0] == 7 and cache["argmax"][0, 0, 1, 1] == -1
    assert out[0, 0, 1, 1] == -np.finfo(np.float32).max


def test_no_rois():
    feat = np.ones((1, 2, 5, 5))
    out, cache = roi_pool_forward(feat, np.zeros((0, 5)), output_size=3)
    assert out.shape == (0, 2, 3, 3)
    np.testing.assert_array_equal(roi_pool_backward(out, cache), np.zeros((1, 2, 5, 5)))


# --------------------------------------------------------------------------- gradient check

def test_gradient_check_float64():
    rng = np.random.default_rng(7)
    N, C, H, W = 2, 2, 6, 7
    # Distinct values 0.01 apart: a perturbation of 1e-6 never changes which cell is a bin's max.
    feat = (rng.permutation(N * C * H * W) * 0.01).reshape(N, C, H, W)
    rois = np.array([[0, 0, 0, 27, 23],               # scale 1/4: 0..7 x 0..6 cells, past the edge
                     [1, 4, 5, 17, 14],
                     [1, 6, 2, 12, 19],               # overlaps the previous one
                     [0, 10, 10, 10, 10],              # one cell
                     [1, -9, -9, 30, 3]])              # partly outside
    dout = rng.standard_normal((5, C, 3, 3))
    out, cache = roi_pool_forward(feat, rois, output_size=3, spatial_scale=1 / 4)
    dfeat = roi_pool_backward(dout, cache)
    dfeat_num = numeric_gradient_array(lambda: roi_pool_forward(feat, rois, 3, 1 / 4)[0], feat, dout)
    assert np.abs(dfeat).sum() > 0
    assert rel_error(dfeat, dfeat_num) < 1e-6


# --------------------------------------------------------------------------- bad input

def test_bad_input_raises_value_error_naming_the_argument():
    feat = np.zeros((2, 1, 6, 6))
    with pytest.raises(ValueError, match="rois"):
        roi_pool_forward(feat, np.zeros((3, 4)))                    # (K, 4): batch index missing
    with pytest.raises(ValueError, match="rois"):
        roi_pool_forward(feat, np.zeros(5))                         # 1-D
    with pytest.raises(ValueError, match="rois"):
        roi_pool_forward(feat, np.array([[2, 0, 0, 3, 3]]))        # batch index 2, N = 2
    with pytest.raises(ValueError, match="rois"):
        roi_pool_forward(feat, np.array([[-1, 0, 0, 3, 3]]))
    with pytest.raises(ValueError, match="rois"):
        roi_pool_forward(feat, np.array([[0.5, 0, 0, 3, 3]]))      # not a whole number
    with pytest.raises(ValueError, match="rois"):
        roi_pool_forward(feat, np.array([[0, np.nan, 0, 3, 3]]))
    with pytest.raises(ValueError, match="rois"):
        roi_pool_forward_reference(feat, np.array([[2, 0, 0, 3, 3]]))
    with pytest.raises(ValueError, match="feat"):
        roi_pool_forward(np.zeros((1, 6, 6)), np.zeros((1, 5)))
    with pytest.raises(ValueError, match="feat"):
        roi_pool_forward(np.zeros((1, 1, 6, 6), dtype=np.int64), np.zeros((1, 5)))
    with pytest.raises(ValueError, match="output_size"):
        roi_pool_forward(feat, np.zeros((1, 5)), output_size=(0, 7))
    with pytest.raises(ValueError, match="spatial_scale"):
        roi_pool_forward(feat, np.zeros((1, 5)), spatial_scale=0)
    out, cache = roi_pool_forward(feat, np.zeros((1, 5)), output_size=2)
    with pytest.raises(ValueError, match="dout"):
        roi_pool_backward(np.zeros((1, 1, 3, 3)), cache)
    with pytest.raises(ValueError, match="dout"):
        roi_pool_backward(out.astype(np.float32), cache)
    # integer RoIs are fine (read in feat's dtype)
    out_int, _ = roi_pool_forward(feat, np.array([[1, 0, 0, 3, 3]]), output_size=2, spatial_scale=1.0)
    assert out_int.shape == (1, 1, 2, 2)


# --------------------------------------------------------------------------- GPU (skipped without one)

def test_cupy_matches_numpy():
    cupy = pytest.importorskip("cupy")
    if not cupy.is_available():
        pytest.skip("CuPy finds no usable GPU")
    rng = np.random.default_rng(9)
    feat = rng.standard_normal((2, 3, 9, 13)).astype(np.float32)
    rois = random_rois(rng, 40, 2, 9, 13, 1 / 8).astype(np.float32)
    out, cache = roi_pool_forward(feat, rois, 7, 1 / 8)
    out_gpu, cache_gpu = roi_pool_forward(cupy.asarray(feat), cupy.asarray(rois), 7, 1 / 8)
    np.testing.assert_array_equal(cupy.asnumpy(out_gpu), out)
    np.testing.assert_array_equal(cupy.asnumpy(cache_gpu["argmax"]), cache["argmax"])
    dout = rng.integers(-3, 4, out.shape).astype(np.float32)        # whole numbers: any order is exact
    dfeat_gpu = roi_pool_backward(cupy.asarray(dout), cache_gpu)
    np.testing.assert_array_equal(cupy.asnumpy(dfeat_gpu), roi_pool_backward(dout, cache))
