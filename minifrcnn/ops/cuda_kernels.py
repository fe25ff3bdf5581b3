"""CUDA kernels for the hot spots where array code is slow on a GPU (CuPy RawKernel).

Every other line of minifrcnn runs on CuPy unchanged. These operations do not map well onto
whole-array operations on a GPU, because their array versions either launch many small kernels
or copy data back to the host:

    im2col         the array version: 9 strided slice copies (one kernel each) for a 3x3 conv
    col2im         9 strided slice additions, in order
    RoI pooling    the array version groups bins by shape and reads the unique shapes back to
                   the host; its backward is a float64 bincount
    NMS            the array version copies the N x N overlap matrix to the host for the greedy pass
    max pooling    backward: 7 small array operations per window offset, 30 for a 2x2 window
    SGD step       4 to 6 array operations per parameter (optim.py), 110 per default train step

Here each one is written as ONE CUDA kernel in which each GPU thread computes one output
element (the approach of Caffe's and torchvision's CUDA code). The readable array version in
conv.py, roi_pool.py, boxes.py, pool.py and optim.py stays the reference: tests/test_gpu.py
checks every kernel against it (bit for bit where the arithmetic is the same, to float
rounding where atomic additions change the order of a sum). The ops use these kernels
automatically for CuPy arrays; MINIFRCNN_CUDA_KERNELS=0 switches back to the array versions
(the benchmark compares both). Without a GPU, tests/test_cuda_emulated.py runs these same
sources on the CPU.

How a kernel is called, in three lines:

    kernel = cupy.RawKernel(source, "im2col_kernel")          # compiled by NVRTC on first use
    threads = 256; blocks = (total + threads - 1) // threads   # one thread per output element
    kernel((blocks,), (threads,), (x, cols, total, ...))       # arguments: arrays and scalars

Each source starts with `typedef float T;` or `typedef double T;`, so one source serves both
dtypes. Scalars passed to a kernel must have the C type the kernel declares: numpy.int64 for
`long long`, numpy.int32 for `int`, numpy.float32/float64 for T.

Compiled with --fmad=false: without it the compiler may fuse `a * b + c` into one fused
multiply-add, which rounds once instead of twice and would make the IoU (and so NMS) differ
from NumPy's in the last bit.
"""
import functools
import os

import numpy as np

from ..backend import is_cupy_array

# The array versions ("module.function") that these kernels stand in for on CuPy; on the strict
# device and on NumPy they run themselves (tests/test_strict_backend.py leaves their syncs out
# of the syncs it allows a training step).
REPLACED_ARRAY_VERSIONS = ("conv.im2col", "conv._pad", "conv.col2im",
                           "roi_pool.roi_pool_forward", "roi_pool.roi_pool_bin_edges",
                           "roi_pool.roi_pool_backward", "boxes._nms_matrix",
                           "pool.max_pool2d_backward", "optim.step")

THREADS = 256                    # threads per block for the one-thread-per-element kernels
NMS_BLOCK = 64                   # boxes per block in the NMS mask kernel: one bit each in a uint64


def kernels_enabled(x):
    """True if x is a CuPy array and MINIFRCNN_CUDA_KERNELS is not "0": then the ops use this file."""
    return is_cupy_array(x) and os.environ.get("MINIFRCNN_CUDA_KERNELS", "1") != "0"


def _ctype(dtype):
    """The C type for a float dtype: float32 -> "float", float64 -> "double"."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return "float"
    if dtype == np.float64:
        return "double"
    raise ValueError(f"CUDA kernels: expected float32 or float64, got {dtype}")


@functools.lru_cache(maxsize=None)
def _kernel(source, name, ctype):
    """The kernel `name` of `source` compiled for element type `ctype` (cached; NVRTC caches on disk too)."""
    import cupy
    return cupy.RawKernel(f"typedef {ctype} T;\n" + source, name, options=("--fmad=false",))


def _launch(source, name, dtype, total, args):
    """Run a one-thread-per-element kernel over `total` elements (nothing to do when 0).

    args: the kernel's arguments in order, `total` among them as numpy.int64 (C `long long`).
    """
    if total:
        blocks = (int(total) + THREADS - 1) // THREADS
        _kernel(source, name, _ctype(dtype))((blocks,), (THREADS,), args)


def _ints(*values):
    """Python ints as the C `int` (numpy.int32) arguments a kernel declares."""
    return tuple(np.int32(v) for v in values)


# --------------------------------------------------------------------------- im2col / col2im

IM2COL_SOURCE = r"""
// cols[n, c, a, e, i, j] = xpad[n, c, i*stride + a, j*stride + e]   (0 outside the image)
// One thread per element of cols (N, C, kh, kw, OH, OW); x is (N, C, H, W), contiguous.
extern "C" __global__ void im2col_kernel(const T* x, T* cols, long long total,
        int C, int H, int W, int kh, int kw, int OH, int OW, int stride, int pad) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    long long rest = idx;
    int j = rest % OW;  rest /= OW;        // unravel idx into (n, c, a, e, i, j), j fastest
    int i = rest % OH;  rest /= OH;
    int e = rest % kw;  rest /= kw;
    int a = rest % kh;  rest /= kh;
    int c = rest % C;
    long long n = rest / C;
    int h = i * stride + a - pad;          // the pixel in the unpadded image
    int w = j * stride + e - pad;
    cols[idx] = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w] : (T)0;
}
"""

COL2IM_SOURCE = r"""
// dx[n, c, h, w] = sum over the (a, e, i, j) with i*stride + a = h + pad and j*stride + e = w + pad
//                  of cols[n, c, a, e, i, j]
// One thread per element of dx (N, C, H, W): it GATHERS its terms, so no two threads write
// the same place and no atomics are needed. The terms are added in the order a, then e, as the
// array version adds its slices, so float results are identical.
extern "C" __global__ void col2im_kernel(const T* cols, T* dx, long long total,
        int C, int H, int W, int kh, int kw, int OH, int OW, int stride, int pad) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    long long rest = idx;
    int w = rest % W;  rest /= W;
    int h = rest % H;  rest /= H;
    int c = rest % C;
    long long n = rest / C;
    T sum = 0;
    for (int a = 0; a < kh; a++) {
        int ti = h + pad - a;              // = i * stride for the window row i that covers h
        if (ti < 0 || ti % stride != 0 || ti / stride >= OH) continue;
        int i = ti / stride;
        for (int e = 0; e < kw; e++) {
            int tj = w + pad - e;
            if (tj < 0 || tj % stride != 0 || tj / stride >= OW) continue;
            int j = tj / stride;
            sum += cols[((((n * C + c) * kh + a) * kw + e) * OH + i) * OW + j];
        }
    }
    dx[idx] = sum;
}
"""


def im2col(x, kh, kw, stride, pad, OH, OW):
    """im2col on the GPU: x (N, C, H, W) cupy -> cols (N, C*kh*kw, OH*OW), one thread per element."""
    import cupy
    N, C, H, W = x.shape
    x = cupy.ascontiguousarray(x)
    cols = cupy.empty((N, C * kh * kw, OH * OW), dtype=x.dtype)        # (N, C*kh*kw, OH*OW)
    _launch(IM2COL_SOURCE, "im2col_kernel", x.dtype, cols.size,
            (x, cols, np.int64(cols.size)) + _ints(C, H, W, kh, kw, OH, OW, stride, pad))
    return cols


def col2im(cols, x_shape, kh, kw, stride, pad, OH, OW):
    """col2im on the GPU: cols (N, C*kh*kw, OH*OW) cupy -> dx (N, C, H, W), one thread per pixel."""
    import cupy
    N, C, H, W = x_shape
    cols = cupy.ascontiguousarray(cols)
    dx = cupy.empty((N, C, H, W), dtype=cols.dtype)                     # (N, C, H, W)
    _launch(COL2IM_SOURCE, "col2im_kernel", cols.dtype, dx.size,
            (cols, dx, np.int64(dx.size)) + _ints(C, H, W, kh, kw, OH, OW, stride, pad))
    return dx


# --------------------------------------------------------------------------- RoI max pooling

ROI_POOL_FORWARD_SOURCE = r"""
// torchvision's roi_pool CUDA kernel (Caffe's rules; see roi_pool.py for the formulas):
// one thread per output element (k, c, ph, pw) of out (K, C, PH, PW).
// round() is C's: halves away from zero. Bin edges are computed in T, as in roi_pool.py.
extern "C" __global__ void roi_pool_forward_kernel(const T* feat, const T* rois, T* out,
        long long* argmax, long long total, int C, int H, int W, int PH, int PW, T scale) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    long long rest = idx;
    int pw = rest % PW;  rest /= PW;
    int ph = rest % PH;  rest /= PH;
    int c = rest % C;
    long long k = rest / C;
    const T* roi = rois + k * 5;                    // (batch index, x1, y1, x2, y2)
    long long b = (long long)roi[0];
    int x_start = (int)round(roi[1] * scale);
    int y_start = (int)round(roi[2] * scale);
    int x_end = (int)round(roi[3] * scale);
    int y_end = (int)round(roi[4] * scale);
    int roi_w = max(x_end - x_start + 1, 1);        // malformed RoIs become 1 x 1 cell
    int roi_h = max(y_end - y_start + 1, 1);
    T bin_h = (T)roi_h / (T)PH;
    T bin_w = (T)roi_w / (T)PW;
    int h0 = min(max((int)floor((T)ph * bin_h) + y_start, 0), H);
    int h1 = min(max((int)ceil((T)(ph + 1) * bin_h) + y_start, 0), H);
    int w0 = min(max((int)floor((T)pw * bin_w) + x_start, 0), W);
    int w1 = min(max((int)ceil((T)(pw + 1) * bin_w) + x_start, 0), W);
    bool empty = (h1 <= h0) || (w1 <= w0);
    T best = empty ? (T)0 : (T)(-3.402823466e+38f); // -FLT_MAX, as torchvision
    long long best_at = -1;                         // -1: empty bin (or nothing beat -FLT_MAX)
    const T* plane = feat + (b * C + c) * H * W;
    for (int h = h0; h < h1; h++) {
        for (int w = w0; w < w1; w++) {
            T value = plane[h * W + w];
            if (value > best) {                     // strict: the first maximum wins
                best = value;
                best_at = h * W + w;
            }
        }
    }
    out[idx] = best;
    argmax[idx] = best_at;
}
"""

ROI_POOL_BACKWARD_SOURCE = r"""
// dfeat[b_k, c, h, w] += dout[k, c, ph, pw] where argmax[k, c, ph, pw] = h * W + w.
// One thread per element of dout; several bins can share a cell, hence atomicAdd.
extern "C" __global__ void roi_pool_backward_kernel(const T* dout, const long long* argmax,
        const long long* batch, T* dfeat, long long total, int C, int H, int W, int PH, int PW) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    long long at = argmax[idx];
    if (at < 0) return;                             // empty bin: no gradient
    long long k = idx / ((long long)C * PH * PW);
    int c = (idx / (PH * PW)) % C;
    atomicAdd(dfeat + (batch[k] * C + c) * H * W + at, dout[idx]);
}
"""


def roi_pool_forward(feat, rois, PH, PW, spatial_scale):
    """RoI max pooling on the GPU. feat (N, C, H, W), rois (K, 5) cupy, already checked.

    Returns out (K, C, PH, PW) and argmax (K, C, PH, PW) int64, as roi_pool.roi_pool_forward.
    """
    import cupy
    N, C, H, W = feat.shape
    K = rois.shape[0]
    feat = cupy.ascontiguousarray(feat)
    rois = cupy.ascontiguousarray(rois, dtype=feat.dtype)                # (K, 5) read in T
    out = cupy.empty((K, C, PH, PW), dtype=feat.dtype)                  # (K, C, PH, PW)
    argmax = cupy.empty((K, C, PH, PW), dtype=cupy.int64)               # (K, C, PH, PW)
    _launch(ROI_POOL_FORWARD_SOURCE, "roi_pool_forward_kernel", feat.dtype, out.size,
            (feat, rois, out, argmax, np.int64(out.size)) + _ints(C, H, W, PH, PW)
            + (feat.dtype.type(spatial_scale),))
    return out, argmax


def roi_pool_backward(dout, argmax, batch, feat_shape):
    """Gradient of RoI max pooling on the GPU: dout, argmax (K, C, PH, PW) -> dfeat (N, C, H, W)."""
    import cupy
    N, C, H, W = feat_shape
    K, _, PH, PW = dout.shape
    dout = cupy.ascontiguousarray(dout)
    argmax = cupy.ascontiguousarray(argmax)
    batch = cupy.ascontiguousarray(batch, dtype=cupy.int64)
    dfeat = cupy.zeros((N, C, H, W), dtype=dout.dtype)                  # (N, C, H, W)
    _launch(ROI_POOL_BACKWARD_SOURCE, "roi_pool_backward_kernel", dout.dtype, dout.size,
            (dout, argmax, batch, dfeat, np.int64(dout.size)) + _ints(C, H, W, PH, PW))
    return dfeat


# --------------------------------------------------------------------------- NMS

NMS_MASK_SOURCE = r"""
// mask[i, block] bit t is set when IoU(box i, box block*64 + t) > threshold and block*64 + t > i.
// Boxes are sorted by score. Block (bx, by) compares the 64 boxes of row block by with the 64
// boxes of column block bx; blocks left of the diagonal are never read, so they return at once.
// The IoU is box_iou's arithmetic, operation for operation (with --fmad=false).
extern "C" __global__ void nms_mask_kernel(const T* boxes, unsigned long long* mask, int n,
        int col_blocks, T threshold) {
    int row_block = blockIdx.y, col_block = blockIdx.x;
    if (col_block < row_block) return;
    int row_size = min(n - row_block * 64, 64);
    int col_size = min(n - col_block * 64, 64);
    __shared__ T col_boxes[64 * 4];
    if (threadIdx.x < col_size)
        for (int d = 0; d < 4; d++)
            col_boxes[threadIdx.x * 4 + d] = boxes[(col_block * 64 + threadIdx.x) * 4 + d];
    __syncthreads();
    if (threadIdx.x >= row_size) return;
    int i = row_block * 64 + threadIdx.x;
    const T* a = boxes + i * 4;
    T area_a = max(a[2] - a[0], (T)0) * max(a[3] - a[1], (T)0);
    unsigned long long bits = 0;
    int start = (row_block == col_block) ? threadIdx.x + 1 : 0;    // only boxes after i
    for (int t = start; t < col_size; t++) {
        const T* b = col_boxes + t * 4;
        T area_b = max(b[2] - b[0], (T)0) * max(b[3] - b[1], (T)0);
        T inter_w = min(a[2], b[2]) - max(a[0], b[0]);
        T inter_h = min(a[3], b[3]) - max(a[1], b[1]);
        T inter = max(inter_w, (T)0) * max(inter_h, (T)0);
        T uni = area_a + area_b - inter;
        T iou = inter / (uni > 0 ? uni : (T)1);
        if (iou > threshold) bits |= 1ULL << t;
    }
    mask[(long long)i * col_blocks + col_block] = bits;
}
"""

NMS_GREEDY_SOURCE = r"""
// The greedy pass of NMS, on the GPU, in ONE block (so the result never goes to the host):
//   for i in score order: keep i unless a kept box removed it; then remove what i overlaps.
// `removed` is a bit set of n bits in shared memory; for a kept box every thread ORs a share
// of its mask row into it. All threads walk i together and agree on every decision.
extern "C" __global__ void nms_greedy_kernel(const unsigned long long* mask, int n,
        int col_blocks, int max_output, long long* keep, int* num_kept) {
    extern __shared__ unsigned long long removed[];
    for (int word = threadIdx.x; word < col_blocks; word += blockDim.x) removed[word] = 0;
    __syncthreads();
    int count = 0;
    for (int i = 0; i < n && count < max_output; i++) {
        // bit i is final here: the ORs of earlier kept boxes were followed by __syncthreads,
        // and the ORs of this iteration only touch bits after i
        if ((removed[i / 64] >> (i % 64)) & 1ULL) continue;
        if (threadIdx.x == 0) keep[count] = i;
        count++;
        const unsigned long long* row = mask + (long long)i * col_blocks;
        for (int word = i / 64 + threadIdx.x; word < col_blocks; word += blockDim.x)
            removed[word] |= row[word];
        __syncthreads();
    }
    if (threadIdx.x == 0) *num_kept = count;
}
"""


def nms_sorted(sorted_boxes, iou_threshold, max_output=None):
    """Greedy NMS of boxes sorted by score, wholly on the GPU: two kernels, no host copy.

    1. nms_mask_kernel: the "IoU > threshold" bit matrix, (N, ceil(N/64)) uint64, the N^2 work.
    2. nms_greedy_kernel: the sequential pass over the rows, in one block.
    Only the number kept is read back (a scalar: it sets the result's length).
    sorted_boxes: (N, 4) cupy. Returns (K,) int64 cupy positions into sorted_boxes.
    """
    import cupy
    n = sorted_boxes.shape[0]
    if n == 0:
        return cupy.zeros(0, dtype=cupy.int64)
    if max_output is None:
        max_output = n
    max_output = int(min(max_output, n))
    boxes = cupy.ascontiguousarray(sorted_boxes)
    ctype = _ctype(boxes.dtype)
    col_blocks = (n + NMS_BLOCK - 1) // NMS_BLOCK
    mask = cupy.empty((n, col_blocks), dtype=cupy.uint64)              # (N, col_blocks) bits
    _kernel(NMS_MASK_SOURCE, "nms_mask_kernel", ctype)(
        (col_blocks, col_blocks), (NMS_BLOCK,),
        (boxes, mask, np.int32(n), np.int32(col_blocks), boxes.dtype.type(iou_threshold)))
    keep = cupy.empty(max_output, dtype=cupy.int64)                     # (max_output,)
    num_kept = cupy.zeros(1, dtype=cupy.int32)
    _kernel(NMS_GREEDY_SOURCE, "nms_greedy_kernel", ctype)(
        (1,), (THREADS,),
        (mask, np.int32(n), np.int32(col_blocks), np.int32(max_output), keep, num_kept),
        shared_mem=col_blocks * 8)
    return keep[:int(num_kept[0])]                                      # (K,) one scalar read


# --------------------------------------------------------------------------- max pooling backward

MAX_POOL_BACKWARD_SOURCE = r"""
// dx[n, c, h, w] = sum of dout[n, c, i, j] over the windows (i, j) whose FIRST maximum (offsets
// (a, e) in row-major order, compared with out[n, c, i, j] as pool.py does) sits at (h, w).
// One thread per element of dx (N, C, H, W): it GATHERS from the windows that contain it, in
// the order a, then e, in which the array version adds its slices, so sums are identical.
extern "C" __global__ void max_pool_backward_kernel(const T* x, const T* out, const T* dout,
        T* dx, long long total, int H, int W, int OH, int OW, int k, int s) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    int w = idx % W;
    int h = (idx / W) % H;
    long long plane = idx / ((long long)H * W);     // n * C + c
    const T* xs = x + plane * H * W;
    const T* outs = out + plane * OH * OW;
    const T* douts = dout + plane * OH * OW;
    T sum = 0;
    for (int a = 0; a < k; a++) {
        int ti = h - a;                             // = i * s for the window row i that has h at a
        if (ti < 0 || ti % s != 0 || ti / s >= OH) continue;
        int i = ti / s;
        for (int e = 0; e < k; e++) {
            int tj = w - e;
            if (tj < 0 || tj % s != 0 || tj / s >= OW) continue;
            int j = tj / s;
            T best = outs[i * OW + j];
            if (!(xs[h * W + w] == best)) continue;  // not a maximum of window (i, j)
            bool earlier = false;                   // does an earlier offset hold the maximum?
            for (int q = 0; q < a * k + e && !earlier; q++)
                earlier = xs[(i * s + q / k) * W + j * s + q % k] == best;
            if (!earlier) sum += douts[i * OW + j];
        }
    }
    dx[idx] = sum;
}
"""


def max_pool2d_backward(x, out, dout, kernel, stride):
    """Gradient of max pooling on the GPU: x (N, C, H, W), out and dout (N, C, OH, OW) cupy
    -> dx (N, C, H, W), one thread per input pixel (pool.max_pool2d_backward's rule)."""
    import cupy
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    x, out, dout = (cupy.ascontiguousarray(a) for a in (x, out, dout))
    dx = cupy.empty((N, C, H, W), dtype=x.dtype)                        # (N, C, H, W)
    _launch(MAX_POOL_BACKWARD_SOURCE, "max_pool_backward_kernel", x.dtype, dx.size,
            (x, out, dout, dx, np.int64(dx.size)) + _ints(H, W, OH, OW, kernel, stride))
    return dx


# --------------------------------------------------------------------------- SGD step

SGD_SOURCE = r"""
// Caffe's SGD step of one parameter, in place (optim.py has the formula and the array version):
//   g = grad + decay * w  (only when with_decay),   v = momentum * v + lr * g,   w = w - v
// One thread per element, with the same float operations in the same order as optim.py's.
extern "C" __global__ void sgd_kernel(T* w, T* v, const T* grad, long long total,
        T lr, T momentum, T decay, int with_decay) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    T g = grad[idx];
    if (with_decay) g = g + decay * w[idx];
    T vel = v[idx] * momentum;
    vel = vel + lr * g;
    v[idx] = vel;
    w[idx] = w[idx] - vel;
}
"""


def sgd_update(w, v, grad, lr, momentum, decay):
    """One SGD step on the GPU, in place on w and v (C-contiguous cupy arrays of one dtype).

    lr: the learning rate times the parameter's lr_mult; decay: weight_decay times decay_mult
    (0: no decay term, as optim.py skips it). Python numbers, cast to the arrays' dtype as
    CuPy casts a Python scalar in `v += lr * g`.
    """
    T = w.dtype.type
    _launch(SGD_SOURCE, "sgd_kernel", w.dtype, w.size,
            (w, v, grad, np.int64(w.size), T(lr), T(momentum), T(decay)) + _ints(decay != 0.0))
