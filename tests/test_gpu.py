"""GPU tests (CuPy): the CUDA kernels against their array versions, and every op, the box
functions, the target layers and a training step on the GPU against NumPy on the CPU.

All of them skip, as one module, where CuPy or a usable GPU is missing.

    MINIFRCNN_DEVICE=cuda python -m pytest tests/test_gpu.py -q
"""
import numpy as np
import pytest

from minifrcnn import ops
from minifrcnn.backend import to_device, to_numpy
from minifrcnn.boxes import batched_nms, batched_nms_reference, nms, nms_reference

cupy = pytest.importorskip("cupy")
try:
    _available = bool(cupy.is_available())
except Exception:                         # a broken CUDA install
    _available = False
if not _available:
    pytest.skip("no usable GPU (cupy.is_available() is False)", allow_module_level=True)

from test_cuda_emulated import CONV_SHAPES, POOL_CASES, _roi_case  # noqa: E402
from test_strict_backend import (  # noqa: E402
    _assert_same_run, _boxes, _op_cases, _train_and_detect, sampling_case, tiny_config)


def G(a):
    """A host array on the GPU."""
    return to_device(np.asarray(a), "cuda")


def _both(fn, monkeypatch):
    """fn() with the CUDA kernels, then with the array versions; both results on the host."""
    with_kernels = fn()
    monkeypatch.setenv("MINIFRCNN_CUDA_KERNELS", "0")
    arrays = fn()
    monkeypatch.delenv("MINIFRCNN_CUDA_KERNELS")
    return with_kernels, arrays


# --------------------------------------------------------------------------- im2col / col2im

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_im2col_and_col2im_kernels_equal_the_array_versions_bit_for_bit(shape, dtype, monkeypatch):
    N, C, H, W, kh, kw, stride, pad = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    cols_host = ops.im2col_reference(x, kh, kw, stride, pad)            # NumPy loop reference
    dcols = rng.standard_normal(cols_host.shape).astype(dtype)

    def run():
        cols = ops.im2col(G(x), kh, kw, stride, pad)
        dx = ops.col2im(G(dcols), x.shape, kh, kw, stride, pad)
        return to_numpy(cols), to_numpy(dx)

    (k_cols, k_dx), (a_cols, a_dx) = _both(run, monkeypatch)
    assert k_cols.dtype == dtype and k_dx.dtype == dtype
    np.testing.assert_array_equal(k_cols, a_cols)
    np.testing.assert_array_equal(k_cols, cols_host)
    np.testing.assert_array_equal(k_dx, a_dx)                           # same order of additions
    np.testing.assert_array_equal(k_dx, ops.col2im(dcols, x.shape, kh, kw, stride, pad))


def test_conv_on_the_gpu_equals_the_cpu_reference():
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 3, 10, 9)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    out, cache = ops.conv2d_forward(G(x), G(w), G(b), stride=2, pad=1)
    dout = rng.standard_normal(out.shape)
    grads = ops.conv2d_backward(G(dout), cache)
    want_out, want_cache = ops.conv2d_forward_reference(x, w, b, stride=2, pad=1)
    want = ops.conv2d_backward_reference(dout, want_cache)
    np.testing.assert_allclose(to_numpy(out), want_out, rtol=1e-10)
    for g, w_ in zip(grads, want):
        np.testing.assert_allclose(to_numpy(g), w_, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- RoI pooling

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roi_pool_kernels_equal_the_array_version_and_the_reference(dtype, monkeypatch):
    rng = np.random.default_rng(2)
    feat, rois = _roi_case(rng, dtype)
    dout = rng.standard_normal((rois.shape[0], feat.shape[1], 7, 6)).astype(dtype)

    def run():
        out, cache = ops.roi_pool_forward(G(feat), G(rois), (7, 6), 1 / 8)
        dfeat = ops.roi_pool_backward(G(dout), cache)
        return to_numpy(out), to_numpy(cache["argmax"]), to_numpy(dfeat)

    (k_out, k_arg, k_d), (a_out, a_arg, a_d) = _both(run, monkeypatch)
    ref_out, ref_cache = ops.roi_pool_forward_reference(feat, rois, (7, 6), 1 / 8)
    ref_d = ops.roi_pool_backward_reference(dout, ref_cache)
    assert k_out.dtype == dtype and k_d.dtype == dtype and k_arg.dtype == np.int64
    np.testing.assert_array_equal(k_out, a_out)
    np.testing.assert_array_equal(k_out, ref_out)
    np.testing.assert_array_equal(k_arg, a_arg)
    np.testing.assert_array_equal(k_arg, ref_cache["argmax"])
    assert (k_arg == -1).any(), "the case should contain empty bins"
    # atomicAdd adds shared cells in any order: equal up to rounding
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(k_d, a_d, rtol=tol, atol=tol)
    np.testing.assert_allclose(k_d, ref_d, rtol=tol, atol=tol)


def test_roi_pool_kernel_handles_no_rois_and_a_large_map():
    rng = np.random.default_rng(3)
    feat = rng.standard_normal((1, 64, 38, 50)).astype(np.float32)
    out, cache = ops.roi_pool_forward(G(feat), G(np.zeros((0, 5), np.float32)))
    assert out.shape == (0, 64, 7, 7)
    assert to_numpy(ops.roi_pool_backward(out, cache)).sum() == 0
    _, rois = _roi_case(rng, np.float32, K=300, N=1, H=38, W=50, scale=1 / 16)
    got, _ = ops.roi_pool_forward(G(feat), G(rois))
    want, _ = ops.roi_pool_forward(feat, rois)
    np.testing.assert_array_equal(to_numpy(got), want)


# --------------------------------------------------------------------------- NMS

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, threshold", [(1, 0.5), (63, 0.5), (64, 0.3), (65, 0.7), (700, 0.5),
                                          (2000, 0.7), (500, 0.0), (500, 1.0)])
def test_nms_kernel_equals_the_reference(n, threshold, dtype):
    rng = np.random.default_rng(n)
    boxes = _boxes(rng, n, size=200.0).astype(dtype)
    boxes[::17, 2] = boxes[::17, 0]                                     # zero-area boxes
    scores = rng.random(n).astype(dtype)
    scores[::7] = scores[0]                                             # ties: lower index first
    want = nms_reference(boxes, scores, threshold)
    for method in ("kernel", "matrix", "auto"):
        got = nms(G(boxes), G(scores), threshold, method=method)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(to_numpy(got), want, err_msg=method)
    got = nms(G(boxes), G(scores), threshold, max_output=10, method="kernel")
    np.testing.assert_array_equal(to_numpy(got), want[:10])


def test_batched_nms_and_empty_input_on_the_gpu():
    rng = np.random.default_rng(4)
    boxes, scores, labels = _boxes(rng, 400), rng.random(400).astype(np.float32), rng.integers(1, 5, 400)
    got = batched_nms(G(boxes), G(scores), G(labels), 0.4)
    np.testing.assert_array_equal(to_numpy(got), batched_nms_reference(boxes, scores, labels, 0.4))
    empty = nms(G(np.zeros((0, 4), np.float32)), G(np.zeros(0, np.float32)), 0.5)
    assert empty.shape == (0,) and empty.dtype == np.int64


# --------------------------------------------------------------------------- max pooling, SGD

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_backward_kernel_equals_the_array_version(case, dtype, monkeypatch):
    N, C, H, W, k, s = case
    rng = np.random.default_rng(k * 10 + s)
    x = rng.integers(-3, 4, (N, C, H, W)).astype(dtype)                # ties
    out, cache = ops.max_pool2d_forward(x, k, s)
    dout = rng.standard_normal(out.shape).astype(dtype)

    def run():
        _, gpu_cache = ops.max_pool2d_forward(G(x), k, s)
        return to_numpy(ops.max_pool2d_backward(G(dout), gpu_cache))

    with_kernel, arrays = _both(run, monkeypatch)
    np.testing.assert_array_equal(with_kernel, arrays)
    np.testing.assert_array_equal(with_kernel, ops.max_pool2d_backward(dout, cache))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_kernel_equals_the_array_version(dtype, monkeypatch):
    from minifrcnn.layers import Parameter
    from minifrcnn.optim import SGD

    def run():
        rng = np.random.default_rng(5)
        params = [Parameter(G(rng.standard_normal(s).astype(dtype))) for s in [(8, 3, 3, 3), (8,), (9, 5)]]
        params[1].decay_mult = 0.0
        params[2].lr_mult = 2.0
        opt = SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
        for _ in range(3):
            for p in params:
                p.grad[...] = G(rng.standard_normal(p.shape).astype(dtype))
            opt.step()
        return [to_numpy(p.data) for p in params] + [to_numpy(v) for v in opt.velocity]

    with_kernel, arrays = _both(run, monkeypatch)
    for g, w in zip(with_kernel, arrays):
        np.testing.assert_array_equal(g, w)


# --------------------------------------------------------------------------- every op, GPU vs CPU

@pytest.mark.parametrize("kernels", ["kernels", "array versions"])
@pytest.mark.parametrize("index", range(9))
def test_every_op_on_the_gpu_equals_numpy(index, kernels, monkeypatch):
    """The chainercv-style consistency check, op by op (float64 inputs: sums may run in another
    order on the GPU, so equal to 1e-10 rather than bit for bit)."""
    if kernels != "kernels":
        monkeypatch.setenv("MINIFRCNN_CUDA_KERNELS", "0")
    name, run = _op_cases(np.random.default_rng(index))[index]
    want = run(np.asarray)
    got = run(G)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert type(g).__module__.startswith("cupy"), name
        g = to_numpy(g)
        assert g.dtype == np.asarray(w).dtype, name
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=name)


def test_anchor_targets_proposals_and_proposal_targets_on_the_gpu_equal_numpy():
    from minifrcnn.anchor_targets import anchor_targets
    from minifrcnn.proposal_targets import proposal_targets
    from minifrcnn.proposals import proposal_layer
    anchors, gt, gt_labels, fg, deltas = sampling_case()
    want = anchor_targets(anchors, gt, (64, 64), np.random.default_rng(2), batch_size=64)
    got = anchor_targets(G(anchors), G(gt), (64, 64), np.random.default_rng(2), batch_size=64)
    labels, targets, matched = (to_numpy(g) for g in got)
    np.testing.assert_array_equal(labels, want[0])                      # the same sample of anchors
    np.testing.assert_array_equal(matched, want[2])
    np.testing.assert_allclose(targets, want[1], rtol=1e-6, atol=1e-7)  # CuPy's log may differ by 1 ulp
    want_p = proposal_layer(anchors, fg, deltas, (64, 64), 300, 50, 0.7, 2.0)
    got_p = proposal_layer(G(anchors), G(fg), G(deltas), (64, 64), 300, 50, 0.7, 2.0)
    for g, w in zip(got_p, want_p):          # boxes decoded with CuPy's exp: float32 rounding
        np.testing.assert_allclose(to_numpy(g), w, rtol=1e-5, atol=1e-4)
    want_t = proposal_targets(want_p[0], gt, gt_labels, 3, np.random.default_rng(3), batch_size=32)
    # the same proposals on both sides (the CPU's), so only proposal_targets itself is compared
    got_t = proposal_targets(G(want_p[0]), G(gt), G(gt_labels), 3, np.random.default_rng(3), batch_size=32)
    for key in want_t:
        got_key = to_numpy(got_t[key])
        if got_key.dtype.kind in "iu":                                  # labels, indices: the same sample
            np.testing.assert_array_equal(got_key, want_t[key], err_msg=key)
        else:                                                           # targets: CuPy's log, 1 ulp
            np.testing.assert_allclose(got_key, want_t[key], rtol=1e-5, atol=1e-6, err_msg=key)


# --------------------------------------------------------------------------- the whole detector

@pytest.mark.parametrize("roi_op", ["pool", "align"])
def test_training_steps_and_predict_on_the_gpu_equal_numpy(roi_op):
    from minifrcnn.data import shapes
    data = shapes.make_split("train", 4, size=48)
    cfg = tiny_config(roi_op=roi_op)
    want = _train_and_detect(cfg, data, "cpu")
    got = _train_and_detect(cfg, data, "cuda")
    _assert_same_run(got, want, rtol=1e-3)

