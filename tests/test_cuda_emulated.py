"""The CUDA kernels of ops/cuda_kernels.py, run on the CPU (tests/cuda_emulator.py), against
their array versions; and their sources compiled by nvcc where it is installed.

tests/test_gpu.py runs the same kernels on a real GPU but skips where there is none, which is
most sessions and CI. Here the kernel code, the launch arguments of cuda_kernels.py (their C
types checked against each kernel's signature) and the ops' dispatch to the kernels run on any
machine with g++. What only a GPU can tell (CUDA's own arithmetic, races, speed) stays with
tests/test_gpu.py.

    python -m pytest tests/test_cuda_emulated.py -q
"""
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cuda_emulator
from minifrcnn import ops
from minifrcnn.boxes import nms_reference, score_order
from minifrcnn.data import shapes
from minifrcnn.ops import cuda_kernels
from test_strict_backend import _assert_same_run, _boxes, _train_and_detect, tiny_config

CONV_SHAPES = [  # (N, C, H, W, kh, kw, stride, pad)
    (2, 3, 9, 11, 3, 3, 1, 1), (1, 4, 10, 7, 3, 3, 2, 1), (2, 2, 8, 8, 2, 2, 2, 0),
    (1, 3, 13, 12, 7, 7, 2, 3), (3, 5, 6, 6, 1, 1, 1, 0), (1, 2, 9, 10, 3, 5, 3, 2)]


def _roi_case(rng, dtype, K=60, N=2, C=6, H=19, W=23, scale=1 / 8):
    """Feature map and (K, 5) RoIs with halves, RoIs outside the map, the whole map, ties."""
    feat = rng.standard_normal((N, C, H, W)).astype(dtype)
    xy = rng.uniform(-30, W / scale, (K, 2))
    wh = rng.uniform(-10, 0.8 * W / scale, (K, 2))                     # some RoIs malformed (x2 < x1)
    rois = np.concatenate([rng.integers(0, N, (K, 1)), xy, xy + wh], axis=1)
    rois[:4, 1:] = [[4.0, 4.0, 12.0, 12.0],                             # halves: round away from 0
                    [-60, -60, -20, -20],                               # wholly outside: empty bins
                    [500, 500, 900, 900],
                    [0, 0, W / scale - 1, H / scale - 1]]               # the whole map
    feat[-1, :, 5:9, 5:9] = feat[-1, :, 5, 5][:, None, None]            # ties: first max wins
    return feat, rois.astype(dtype)


@pytest.fixture
def emulated(monkeypatch):
    """cuda_kernels.py with `cupy` replaced by NumPy + the CPU emulator of RawKernel."""
    if not cuda_emulator.compiler_available():
        pytest.skip("no g++ with C++20 to build the CUDA emulator")
    cuda_kernels._kernel.cache_clear()                  # no real CuPy kernels from before
    monkeypatch.setitem(sys.modules, "cupy", cuda_emulator.fake_cupy())
    yield
    cuda_kernels._kernel.cache_clear()                  # and no emulated ones after


# --------------------------------------------------------------------------- each kernel

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_im2col_and_col2im_kernels_equal_the_array_versions_bit_for_bit(shape, dtype, emulated):
    N, C, H, W, kh, kw, stride, pad = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    OH, OW = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    want_cols = ops.im2col(x, kh, kw, stride, pad)                     # the array version
    got_cols = cuda_kernels.im2col(x, kh, kw, stride, pad, OH, OW)
    assert got_cols.dtype == dtype
    np.testing.assert_array_equal(got_cols, want_cols)
    dcols = rng.standard_normal(want_cols.shape).astype(dtype)
    got_dx = cuda_kernels.col2im(dcols, x.shape, kh, kw, stride, pad, OH, OW)
    np.testing.assert_array_equal(got_dx, ops.col2im(dcols, x.shape, kh, kw, stride, pad))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roi_pool_kernels_equal_the_array_version(dtype, emulated):
    rng = np.random.default_rng(2)
    feat, rois = _roi_case(rng, dtype)
    dout = rng.standard_normal((rois.shape[0], feat.shape[1], 7, 6)).astype(dtype)
    want_out, want_cache = ops.roi_pool_forward(feat, rois, (7, 6), 1 / 8)
    want_dfeat = ops.roi_pool_backward(dout, want_cache)
    got_out, got_argmax = cuda_kernels.roi_pool_forward(feat, rois, 7, 6, 1 / 8)
    np.testing.assert_array_equal(got_out, want_out)
    np.testing.assert_array_equal(got_argmax, want_cache["argmax"])
    assert (got_argmax == -1).any(), "the case should contain empty bins"
    batch = rois[:, 0].astype(np.int64)
    got_dfeat = cuda_kernels.roi_pool_backward(dout, got_argmax, batch, feat.shape)
    assert got_dfeat.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12                       # another order of sums
    np.testing.assert_allclose(got_dfeat, want_dfeat, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, threshold, max_output", [
    (1, 0.5, None), (63, 0.5, None), (64, 0.3, None), (65, 0.7, None), (300, 0.5, None),
    (300, 0.0, None), (300, 1.0, None), (300, 0.5, 10), (0, 0.5, None)])
def test_nms_kernels_equal_the_reference(n, threshold, max_output, dtype, emulated):
    rng = np.random.default_rng(n)
    boxes = _boxes(rng, n, size=200.0).astype(dtype)
    boxes[::17, 2] = boxes[::17, 0]                                     # zero-area boxes
    scores = rng.random(n).astype(dtype)
    scores[::7] = scores[0] if n else scores[::7]                       # ties: lower index first
    want = nms_reference(boxes, scores, threshold)
    order = score_order(scores)
    kept = cuda_kernels.nms_sorted(boxes[order], threshold, max_output)
    assert kept.dtype == np.int64
    np.testing.assert_array_equal(order[kept], want[:max_output])


POOL_CASES = [  # (N, C, H, W, kernel, stride)
    (2, 3, 8, 8, 2, 2), (1, 2, 7, 9, 2, 2), (2, 2, 9, 9, 3, 2), (1, 3, 10, 7, 3, 1),
    (1, 1, 6, 6, 1, 1), (2, 4, 11, 13, 2, 3)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_backward_kernel_equals_the_array_version_bit_for_bit(case, dtype, emulated):
    """Windows that overlap (stride < kernel) and ones that skip pixels (stride > kernel),
    odd sizes, and ties (the first maximum in row-major order takes the gradient)."""
    N, C, H, W, k, s = case
    rng = np.random.default_rng(k * 10 + s)
    x = rng.integers(-3, 4, (N, C, H, W)).astype(dtype)                # few values: many ties
    x[0, 0] = rng.standard_normal((H, W))
    out, cache = ops.max_pool2d_forward(x, k, s)
    dout = rng.standard_normal(out.shape).astype(dtype)
    want = ops.max_pool2d_backward(dout, cache)                         # the array version
    got = cuda_kernels.max_pool2d_backward(x, out, dout, k, s)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    # the loop reference adds overlapping windows' terms in another order: equal to rounding
    np.testing.assert_allclose(got, ops.max_pool2d_backward_reference(dout, cache), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_kernel_equals_the_array_version_bit_for_bit(dtype, emulated, monkeypatch):
    """Three steps of optim.SGD with the kernel and with the array lines: weights with and
    without decay, an lr_mult of 2, a momentum buffer carried between steps."""
    from minifrcnn.layers import Parameter
    from minifrcnn.optim import SGD
    shapes = [(4, 3, 3, 3), (4,), (7, 5)]

    def run(kernels):
        monkeypatch.setattr(cuda_kernels, "kernels_enabled", lambda x: kernels)
        rng = np.random.default_rng(5)                                  # the same numbers twice
        params = [Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]
        params[1].decay_mult = 0.0                                      # a bias: no decay
        params[2].lr_mult = 2.0
        opt = SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
        for _ in range(3):
            for p in params:
                p.grad[...] = rng.standard_normal(p.shape).astype(dtype)
            opt.step()
        return [p.data.copy() for p in params] + [v.copy() for v in opt.velocity]

    want, got = run(False), run(True)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, w)
    assert not np.array_equal(want[0], np.random.default_rng(5).standard_normal(shapes[0]))


# --------------------------------------------------------------------------- through the ops

def test_a_training_step_through_the_emulated_kernels_equals_numpy(emulated, monkeypatch):
    """The ops' dispatch (conv.py's im2col/col2im, roi_pool.py's forward, its cache and its
    backward, pool.py's backward, optim.py's step) with the kernels switched on for NumPy
    arrays: two training steps and predict give what the plain NumPy run gives."""
    data = shapes.make_split("train", 4, size=48)
    cfg = tiny_config()
    want = _train_and_detect(cfg, data, "cpu")
    calls = []

    def enabled(x):
        calls.append(type(x).__name__)
        return isinstance(x, np.ndarray)
    monkeypatch.setattr(cuda_kernels, "kernels_enabled", enabled)
    got = _train_and_detect(cfg, data, "cpu")
    assert calls, "the ops did not ask for the kernels"
    _assert_same_run(got, want, rtol=1e-5)      # RoI-pool backward adds in another order


# --------------------------------------------------------------------------- the emulator itself

def test_the_emulator_refuses_arguments_of_the_wrong_c_type(emulated):
    x = np.zeros((1, 1, 4, 4), np.float32)
    cols = np.empty((1, 9, 16), np.float32)
    kernel = cuda_kernels._kernel(cuda_kernels.IM2COL_SOURCE, "im2col_kernel", "float")
    ints = cuda_kernels._ints(1, 4, 4, 3, 3, 4, 4, 1, 1)
    kernel((1,), (256,), (x, cols, np.int64(cols.size)) + ints)          # the right types: runs
    with pytest.raises(TypeError, match="total .*int64 scalar, got int"):
        kernel((1,), (256,), (x, cols, int(cols.size)) + ints)           # a Python int
    with pytest.raises(TypeError, match="C .*int32 scalar, got int64"):
        kernel((1,), (256,), (x, cols, np.int64(cols.size), np.int64(1)) + ints[1:])
    with pytest.raises(TypeError, match="x .*float32 array, got float64"):
        kernel((1,), (256,), (x.astype(np.float64), cols, np.int64(cols.size)) + ints)
    with pytest.raises(TypeError, match="expected 12 arguments, got 11"):
        kernel((1,), (256,), (x, cols, np.int64(cols.size)) + ints[:-1])


# --------------------------------------------------------------------------- nvcc

KERNELS = [(cuda_kernels.IM2COL_SOURCE, "im2col_kernel"), (cuda_kernels.COL2IM_SOURCE, "col2im_kernel"),
           (cuda_kernels.ROI_POOL_FORWARD_SOURCE, "roi_pool_forward_kernel"),
           (cuda_kernels.ROI_POOL_BACKWARD_SOURCE, "roi_pool_backward_kernel"),
           (cuda_kernels.NMS_MASK_SOURCE, "nms_mask_kernel"),
           (cuda_kernels.NMS_GREEDY_SOURCE, "nms_greedy_kernel"),
           (cuda_kernels.MAX_POOL_BACKWARD_SOURCE, "max_pool_backward_kernel"),
           (cuda_kernels.SGD_SOURCE, "sgd_kernel")]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (the CUDA toolkit) is not installed")
@pytest.mark.parametrize("ctype", ["float", "double"])
def test_every_kernel_source_compiles_with_nvcc(ctype, tmp_path):
    """Each source as CuPy compiles it (typedef first, --fmad=false), one file per kernel."""
    for source, name in KERNELS:
        path = tmp_path / f"{name}_{ctype}.cu"
        path.write_text(f"typedef {ctype} T;\n" + source)
        done = subprocess.run(["nvcc", "--fmad=false", "--ptx", "-o",
                               str(path.with_suffix(".ptx")), str(path)],
                              capture_output=True, text=True)
        assert done.returncode == 0, f"{name} ({ctype}):\n{done.stderr}"
