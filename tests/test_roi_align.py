"""Tests for minifrcnn/ops/roi_align.py: RoIAlign with torchvision's rules.

    .venv/bin/pytest tests/test_roi_align.py -q
"""
import numpy as np
import pytest

from minifrcnn.gradcheck import numeric_gradient_array, rel_error
from minifrcnn.ops.roi_align import (
    roi_align_backward, roi_align_backward_reference, roi_align_forward, roi_align_forward_reference)

# A linear map f(h, w) = 10 h + w + 1 on 6 x 6 cells. Bilinear interpolation of a linear function
# is exact, so a sample at (y, x) inside [0, 5] reads 10 y + x + 1 and a bin reads its mean point.
LINEAR = (10 * np.arange(6.0)[:, None] + np.arange(6.0)[None, :] + 1)[None, None]   # (1, 1, 6, 6)


def align(feat, rois, **kw):
    """Fast forward, checked against the reference on the way."""
    out, _ = roi_align_forward(feat, np.asarray(rois, dtype=np.float64), **kw)
    out_ref, _ = roi_align_forward_reference(feat, np.asarray(rois, dtype=np.float64), **kw)
    np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-12)
    return out


def random_rois(rng, K, N, H, W, scale):
    """K RoIs in image pixels: inside, partly and wholly outside the map, tiny, inverted."""
    img_h, img_w = H / scale, W / scale
    x1 = rng.uniform(-0.3 * img_w, 1.2 * img_w, K)
    y1 = rng.uniform(-0.3 * img_h, 1.2 * img_h, K)
    x2 = x1 + rng.uniform(-0.1 * img_w, 0.9 * img_w, K)
    y2 = y1 + rng.uniform(-0.1 * img_h, 0.9 * img_h, K)
    boxes = np.stack([x1, y1, x2, y2], axis=1)                       # (K, 4)
    tiny = rng.random(K) < 0.15
    boxes[tiny, 2:] = boxes[tiny, :2] + rng.uniform(0, 0.9 / scale, (tiny.sum(), 2))
    batch = rng.integers(0, N, K).astype(np.float64)
    return np.concatenate([batch[:, None], boxes], axis=1)           # (K, 5)


# --------------------------------------------------------------------------- hand-computed cases

def test_hand_computed_linear_map():
    # RoI 1..4 at scale 1, 2 x 2 bins of 1.5 cells, 2 x 2 samples per bin:
    # bin 0 samples 1 + 0.375 = 1.375 and 1 + 1.125 = 2.125 (mean 1.75); bin 1: 2.875, 3.625 (mean 3.25)
    out = align(LINEAR, [[0, 1, 1, 4, 4]], output_size=2, spatial_scale=1.0, sampling_ratio=2)
    np.testing.assert_allclose(out[0, 0], [[20.25, 21.75], [35.25, 36.75]], rtol=1e-12)
    # aligned=True shifts the RoI by -0.5 cell: 0.5..3.5, bin means 1.25 and 2.75
    out = align(LINEAR, [[0, 1, 1, 4, 4]], output_size=2, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    np.testing.assert_allclose(out[0, 0], [[14.75, 16.25], [29.75, 31.25]], rtol=1e-12)
    # the same RoI in image pixels at scale 1/16
    out = align(LINEAR, [[0, 16, 16, 64, 64]], output_size=2, spatial_scale=1 / 16, sampling_ratio=2)
    np.testing.assert_allclose(out[0, 0], [[20.25, 21.75], [35.25, 36.75]], rtol=1e-12)


def test_hand_computed_map_edges():
    kw = dict(output_size=1, spatial_scale=1.0, sampling_ratio=2)
    # RoI 3..7: samples at 4 and 6; 6 <= H = 6 counts but is clamped to the last cell 5 -> mean 4.5
    assert align(LINEAR, [[0, 3, 3, 7, 7]], **kw)[0, 0, 0, 0] == pytest.approx(10 * 4.5 + 4.5 + 1)
    # RoI 3..8: samples at 4.25 and 6.75; 6.75 > H is off the map and adds 0 (but still counts)
    assert align(LINEAR, [[0, 3, 3, 8, 8]], **kw)[0, 0, 0, 0] == pytest.approx((10 * 4.25 + 4.25 + 1) / 4)
    # RoI -1.5..0.5: samples at -1 (the edge y = -1 still counts, clamped to 0) and 0
    assert align(LINEAR, [[0, -1.5, -1.5, 0.5, 0.5]], **kw)[0, 0, 0, 0] == pytest.approx(1.0)
    # RoI -2.5..0.5: samples at -1.75 (off) and -0.25 (clamped to 0): one of four points counts
    assert align(LINEAR, [[0, -2.5, -2.5, 0.5, 0.5]], **kw)[0, 0, 0, 0] == pytest.approx(0.25)


def test_hand_computed_inverted_roi():
    kw = dict(output_size=1, spatial_scale=1.0, sampling_ratio=2)
    # aligned=False: size max(-1, 1) = 1 from x1 = 3: samples 3.25, 3.75 (mean 3.5)
    assert align(LINEAR, [[0, 3, 3, 2, 2]], **kw)[0, 0, 0, 0] == pytest.approx(10 * 3.5 + 3.5 + 1)
    # aligned=True keeps the negative size: start 2.5, bin -1, samples 2.25, 1.75 (mean 2)
    assert align(LINEAR, [[0, 3, 3, 2, 2]], aligned=True, **kw)[0, 0, 0, 0] == pytest.approx(23.0)


def test_hand_computed_sampling_ratio():
    # A single spike at cell (0, 0); RoI 0..2, one bin. Along each axis the spike's weight is the
    # mean over the samples t of max(1 - t, 0):
    #   S = 1: t = 1            -> 0
    #   S = 2: t = 0.5, 1.5     -> (0.5 + 0) / 2 = 1/4
    #   S = 3: t = 1/3, 1, 5/3  -> (2/3) / 3 = 2/9
    # and the output is that weight squared (x and y alike). Adaptive (<= 0): ceil(2 / 1) = 2.
    spike = np.zeros((1, 1, 4, 4))
    spike[0, 0, 0, 0] = 1.0
    for ratio, weight in [(1, 0.0), (2, 0.25), (3, 2 / 9), (0, 0.25), (-1, 0.25)]:
        out = align(spike, [[0, 0, 0, 2, 2]], output_size=1, spatial_scale=1.0, sampling_ratio=ratio)
        assert out[0, 0, 0, 0] == pytest.approx(weight ** 2, abs=1e-15), ratio


def test_batch_index_picks_the_image():
    feat = np.concatenate([np.zeros_like(LINEAR), LINEAR])           # (2, 1, 6, 6): image 1 is LINEAR
    rois = np.array([[1, 1, 1, 4, 4], [0, 1, 1, 4, 4]])
    out, cache = roi_align_forward(feat, rois, output_size=2, spatial_scale=1.0)
    np.testing.assert_allclose(out[0, 0], [[20.25, 21.75], [35.25, 36.75]], rtol=1e-12)
    np.testing.assert_array_equal(out[1], 0)
    dfeat = roi_align_backward(np.ones_like(out), cache)
    # every in-map bin's weights sum to 1: each image gets 4 bins' worth of gradient
    assert dfeat[0].sum() == pytest.approx(4) and dfeat[1].sum() == pytest.approx(4)


# --------------------------------------------------------------------------- fast == reference

@pytest.mark.parametrize("scale", [1 / 16, 1 / 8, 1.0])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_fast_equals_reference_random(scale, aligned, sampling_ratio):
    rng = np.random.default_rng(int(1 / scale) + 2 * aligned + sampling_ratio)
    N, C, H, W = 2, 3, 7, 9
    feat = rng.standard_normal((N, C, H, W))
    rois = random_rois(rng, 25, N, H, W, scale)
    kw = dict(output_size=(3, 4), spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned)
    out, cache = roi_align_forward(feat, rois, **kw)
    out_ref, cache_ref = roi_align_forward_reference(feat, rois, **kw)
    assert out.shape == (25, C, 3, 4)
    np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-12)
    assert (out == 0).all(axis=(1, 2, 3)).any() and (out != 0).any()  # some RoIs wholly off the map
    dout = rng.standard_normal(out.shape)
    dfeat = roi_align_backward(dout, cache)
    np.testing.assert_allclose(dfeat, roi_align_backward_reference(dout, cache_ref), rtol=1e-12, atol=1e-12)
    # out is linear in feat and the backward pass is its adjoint: <out, dout> = <feat, dfeat>
    assert np.sum(out * dout) == pytest.approx(np.sum(feat * dfeat), rel=1e-12)


def test_float32_in_float32_out_and_matches_reference():
    rng = np.random.default_rng(5)
    feat = rng.standard_normal((2, 4, 8, 10)).astype(np.float32)
    rois = random_rois(rng, 20, 2, 8, 10, 1 / 16).astype(np.float32)
    out, cache = roi_align_forward(feat, rois)
    out_ref, cache_ref = roi_align_forward_reference(feat, rois)
    assert out.dtype == np.float32 and out.shape == (20, 4, 7, 7)
    np.testing.assert_allclose(out, out_ref, rtol=1e-5, atol=1e-6)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dfeat = roi_align_backward(dout, cache)
    assert dfeat.dtype == np.float32
    np.testing.assert_allclose(dfeat, roi_align_backward_reference(dout, cache_ref), rtol=1e-5, atol=1e-5)


def test_no_rois():
    out, cache = roi_align_forward(np.ones((1, 2, 5, 5)), np.zeros((0, 5)), output_size=3)
    assert out.shape == (0, 2, 3, 3)
    np.testing.assert_array_equal(roi_align_backward(out, cache), np.zeros((1, 2, 5, 5)))


# --------------------------------------------------------------------------- gradient check

@pytest.mark.parametrize("aligned", [False, True])
def test_gradient_check_float64(aligned):
    rng = np.random.default_rng(11)
    feat = rng.standard_normal((2, 2, 6, 7))
    # coordinates off the integer grid (the op is linear in feat, so any RoI works; these also
    # cover a RoI partly off the map and two overlapping RoIs)
    rois = np.array([[0, 3.3, 2.7, 21.9, 17.1],
                     [1, -5.2, 6.6, 13.7, 30.3],
                     [1, 8.1, 4.9, 26.6, 19.4],
                     [0, 10.3, 10.7, 11.9, 12.2]])
    kw = dict(output_size=(3, 2), spatial_scale=1 / 4, sampling_ratio=2, aligned=aligned)
    out, cache = roi_align_forward(feat, rois, **kw)
    dout = rng.standard_normal(out.shape)
    dfeat = roi_align_backward(dout, cache)
    dfeat_num = numeric_gradient_array(lambda: roi_align_forward(feat, rois, **kw)[0], feat, dout)
    assert np.abs(dfeat).sum() > 0
    assert rel_error(dfeat, dfeat_num) < 1e-6


# --------------------------------------------------------------------------- bad input

def test_bad_input_raises_value_error_naming_the_argument():
    feat = np.zeros((2, 1, 6, 6))
    with pytest.raises(ValueError, match="rois"):
        roi_align_forward(feat, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="rois"):
        roi_align_forward(feat, np.array([[2, 0, 0, 3, 3]]))       # batch index 2, N = 2
    with pytest.raises(ValueError, match="rois"):
        roi_align_forward_reference(feat, np.array([[-1, 0, 0, 3, 3]]))
    with pytest.raises(ValueError, match="feat"):
        roi_align_forward(np.zeros((6, 6)), np.zeros((1, 5)))
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align_forward(feat, np.zeros((1, 5)), sampling_ratio=1.5)
    with pytest.raises(ValueError, match="aligned"):
        roi_align_forward(feat, np.zeros((1, 5)), aligned="yes")
    with pytest.raises(ValueError, match="output_size"):
        roi_align_forward(feat, np.zeros((1, 5)), output_size=(7,))
    out, cache = roi_align_forward(feat, np.zeros((1, 5)), output_size=2)
    with pytest.raises(ValueError, match="dout"):
        roi_align_backward(np.zeros((1, 1, 2, 3)), cache)
    with pytest.raises(ValueError, match="dout"):
        roi_align_backward(out.astype(np.float32), cache)


# --------------------------------------------------------------------------- GPU (skipped without one)

def test_cupy_matches_numpy():
    cupy = pytest.importorskip("cupy")
    if not cupy.is_available():
        pytest.skip("CuPy finds no usable GPU")
    rng = np.random.default_rng(9)
    feat = rng.standard_normal((2, 3, 9, 13))
    rois = random_rois(rng, 30, 2, 9, 13, 1 / 8)
    for ratio in (2, 0):
        out, cache = roi_align_forward(feat, rois, 7, 1 / 8, ratio)
        out_gpu, cache_gpu = roi_align_forward(cupy.asarray(feat), cupy.asarray(rois), 7, 1 / 8, ratio)
        np.testing.assert_allclose(cupy.asnumpy(out_gpu), out, rtol=1e-10, atol=1e-12)
        dout = rng.standard_normal(out.shape)
        dfeat_gpu = roi_align_backward(cupy.asarray(dout), cache_gpu)
        np.testing.assert_allclose(cupy.asnumpy(dfeat_gpu), roi_align_backward(dout, cache), rtol=1e-10, atol=1e-12)
