"""RoI max pooling (Fast R-CNN sec. 2.1): every RoI becomes a fixed PH x PW grid of maxima.

The detection head needs a fixed-size input, but RoIs come in every size. RoI pooling cuts the
RoI's window of the shared feature map into PH x PW bins and keeps the maximum of each bin,
channel by channel. The rules are Caffe's, bit for bit the same as torchvision.ops.roi_pool
(torchvision/csrc/ops/cpu/roi_pool_kernel.cpp). For a RoI (b, x1, y1, x2, y2) in image pixels,
spatial scale s (1/16 for a stride-16 backbone) and a feature map of H x W cells:

    x_start = round(x1 * s)   y_start = round(y1 * s)        round half AWAY from zero (C's round:
    x_end   = round(x2 * s)   y_end   = round(y2 * s)        round(0.5) = 1, round(2.5) = 3)
    roi_w   = max(x_end - x_start + 1, 1)                    inclusive cells; a RoI whose corners
    roi_h   = max(y_end - y_start + 1, 1)                    cross after rounding becomes 1 cell
    bin_h   = roi_h / PH    bin_w = roi_w / PW               floats: bins need not be whole cells

    bin (ph, pw) covers rows [h_start, h_end) and columns [w_start, w_end):
        h_start = clip(floor(ph * bin_h)       + y_start, 0, H)
        h_end   = clip(ceil((ph + 1) * bin_h)  + y_start, 0, H)
        w_start = clip(floor(pw * bin_w)       + x_start, 0, W)
        w_end   = clip(ceil((pw + 1) * bin_w)  + x_start, 0, W)

    out[k, c, ph, pw]    = max over the bin of feat[b, c, h, w]    (0 if the bin is empty)
    argmax[k, c, ph, pw] = h * W + w of the FIRST maximum, scanning h outer, w inner  (-1 if empty)

floor/ceil make neighbouring bins overlap by one row or column when bin_h is not a whole number,
so one feature cell can be the maximum of two bins. A bin is empty when it lies wholly outside
the map (after clipping h_end <= h_start or w_end <= w_start).

Backward: the max is a selection, so its gradient is a routing. Each output's gradient goes to
the one cell it copied, in the RoI's own image:

    dfeat[b_k, c, h, w] = sum over (k, ph, pw) with argmax[k, c, ph, pw] = h * W + w  of  dout[k, c, ph, pw]

Several bins (of one RoI, or of overlapping RoIs) can share an argmax: their gradients add up.
The RoI coordinates get no gradient (rounding is flat almost everywhere), as in Fast R-CNN.

Arithmetic is done in feat's dtype, as torchvision does in its kernel's type T: with float32 the
bin edges are computed in float32 (bin_h = roi_h / PH is a float32), so both agree even in the
rare cases where float32 and float64 would land on different sides of an integer.

The fast path (roi_pool_forward) has no Python loop over RoIs or bins. Bins with the same
height x width (a few dozen distinct shapes) are handled together, and for each shape a loop runs
over the offsets (dy, dx) inside the bin in scan order, keeping a running max with a strict `>`
(so the first maximum wins, as in torchvision). The feature map is transposed to channels-last
so that reading one cell for all C channels copies one contiguous row.
The reference (roi_pool_forward_reference) is the torchvision kernel as plain Python loops.
On a GPU (CuPy arrays) forward and backward run as CUDA kernels instead (cuda_kernels.py:
torchvision's kernel, one thread per output element), tested against the array version.

    from minifrcnn import ops
    out, cache = ops.roi_pool_forward(feat, rois, output_size=(7, 7), spatial_scale=1 / 16)
    dfeat = ops.roi_pool_backward(dout, cache)
"""
import math

import numpy as np

from ..backend import get_array_module, to_numpy
from . import cuda_kernels
from .checks import check_array, check_dout, check_same_device

# torchvision starts every running max at -FLT_MAX (the float32 limit, for every dtype). A value
# can only win with a strict `>`, so a bin full of -inf would keep -FLT_MAX and argmax -1.
NEG_FLT_MAX = -float(np.finfo(np.float32).max)


# --------------------------------------------------------------------------- helpers

def round_half_away(v):
    """C's round(): to the nearest integer, halves away from zero (np.round rounds halves to even).

        round_half_away(0.5) = 1,  round_half_away(2.5) = 3,  round_half_away(-0.5) = -1

    Written as floor(|v|) + (frac >= 0.5) rather than floor(|v| + 0.5): the sum |v| + 0.5 can
    round up in floating point (float32 0.49999997 + 0.5 == 1.0), the fraction |v| - floor(|v|)
    cannot (it is exact). v: an array or a NumPy scalar -> the same shape and dtype, whole numbers.
    """
    xp = get_array_module(v)
    a = xp.abs(v)
    whole = xp.floor(a)
    whole = whole + (a - whole >= 0.5)                   # the fraction is exact: no double rounding
    return xp.copysign(whole, v)


def parse_output_size(output_size):
    """(PH, PW) from an int n (meaning n x n) or a pair of ints; ValueError naming output_size."""
    if isinstance(output_size, (int, np.integer)) and not isinstance(output_size, bool):
        output_size = (output_size, output_size)
    ok = (isinstance(output_size, (tuple, list)) and len(output_size) == 2
          and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1
                  for s in output_size))
    if not ok:
        raise ValueError(f"output_size: expected an int >= 1 or a pair (PH, PW) of them, got {output_size!r}")
    return int(output_size[0]), int(output_size[1])


def check_spatial_scale(spatial_scale):
    """spatial_scale must be a positive finite number; returns it as a Python float."""
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, (int, float, np.integer, np.floating)) \
            or not math.isfinite(spatial_scale) or spatial_scale <= 0:
        raise ValueError(f"spatial_scale: expected a positive number (e.g. 1/16), got {spatial_scale!r}")
    return float(spatial_scale)


def check_feat_rois(feat, rois):
    """ValueErrors for feat (N, C, H, W) and rois (K, 5); returns the batch index (K,) int64.

    rois may be float or integer; it is read in feat's dtype. Its column 0 must hold whole numbers
    in [0, N) and every coordinate must be finite. Costs one host sync (a single bool).
    """
    check_array(feat, "feat", ndim=4)
    check_array(rois, "rois", ndim=2, float_only=False, shape=(None, 5))
    if rois.dtype.kind not in "iuf":
        raise ValueError(f"rois: expected a float or integer dtype, got {rois.dtype}")
    check_same_device(("feat", feat), ("rois", rois))
    xp = get_array_module(feat)
    N = feat.shape[0]
    batch = rois[:, 0]                                                  # (K,)
    if rois.shape[0] and bool((~xp.isfinite(rois)).any() | (batch < 0).any() | (batch >= N).any()
                              | (batch != xp.floor(batch)).any()):
        if bool((~xp.isfinite(rois)).any()):
            raise ValueError("rois: expected finite coordinates, got NaN or inf")
        bad = to_numpy(batch)
        bad = bad[(bad < 0) | (bad >= N) | (bad != np.floor(bad))]
        raise ValueError(
            f"rois: column 0 is the batch index, expected whole numbers in [0, {N - 1}] "
            f"(feat has N = {N}), got {bad[:5].tolist()}")
    return batch.astype(xp.int64)


def _make_cache(argmax, batch, feat):
    """The cache every forward (array, CUDA kernel, reference) hands to the backward."""
    return {"argmax": argmax, "batch_index": batch, "feat_shape": tuple(feat.shape),
            "dtype": str(feat.dtype)}


def roi_pool_bin_edges(rois, spatial_scale, output_size, feat_size, dtype):
    """Every bin's rows [h_start, h_end) and columns [w_start, w_end), all RoIs at once.

    The formulas of the module docstring, computed in `dtype` (feat's) like torchvision's T.

    rois: (K, 5); feat_size = (H, W). Returns hstart, hend: (K, PH) int64 and wstart, wend:
    (K, PW) int64, clipped to [0, H] and [0, W]. A row range does not depend on pw nor a column
    range on ph, so bin (ph, pw) of RoI k is rows hstart[k, ph]:hend[k, ph] x columns
    wstart[k, pw]:wend[k, pw].
    """
    xp = get_array_module(rois)
    PH, PW = output_size
    H, W = feat_size
    T = np.dtype(dtype).type                                            # np.float32 or np.float64
    corners = round_half_away(rois[:, 1:].astype(dtype) * T(spatial_scale)).astype(xp.int64)  # (K, 4)
    x_start, y_start, x_end, y_end = corners[:, 0], corners[:, 1], corners[:, 2], corners[:, 3]
    roi_w = xp.maximum(x_end - x_start + 1, 1)                          # (K,) whole cells, >= 1
    roi_h = xp.maximum(y_end - y_start + 1, 1)                          # (K,)
    bin_h = roi_h.astype(dtype) / T(PH)                                 # (K,) float, in dtype
    bin_w = roi_w.astype(dtype) / T(PW)                                 # (K,)
    ph = xp.arange(PH, dtype=dtype)                                     # (PH,) 0, 1, ..., PH-1
    pw = xp.arange(PW, dtype=dtype)                                     # (PW,)
    hstart = xp.floor(ph * bin_h[:, None]).astype(xp.int64) + y_start[:, None]       # (K, PH)
    hend = xp.ceil((ph + 1) * bin_h[:, None]).astype(xp.int64) + y_start[:, None]    # (K, PH)
    wstart = xp.floor(pw * bin_w[:, None]).astype(xp.int64) + x_start[:, None]       # (K, PW)
    wend = xp.ceil((pw + 1) * bin_w[:, None]).astype(xp.int64) + x_start[:, None]    # (K, PW)
    return (xp.clip(hstart, 0, H), xp.clip(hend, 0, H),
            xp.clip(wstart, 0, W), xp.clip(wend, 0, W))


# --------------------------------------------------------------------------- fast path

def roi_pool_forward(feat, rois, output_size=(7, 7), spatial_scale=1 / 16):
    """RoI max pooling, vectorised over RoIs and bins (the rules are in the module docstring).

    out[k, c, ph, pw] = max_{h_start <= h < h_end, w_start <= w < w_end} feat[b_k, c, h, w]

    feat: (N, C, H, W) float32 or float64. rois: (K, 5) = (batch index, x1, y1, x2, y2) in image
    pixels. output_size: (PH, PW) or an int. spatial_scale: feature cells per image pixel.
    Returns out: (K, C, PH, PW) in feat's dtype, and cache = {"argmax": (K, C, PH, PW) int64
    (h * W + w of the first maximum, -1 for an empty bin), "batch_index": (K,) int64,
    "feat_shape": (N, C, H, W), "dtype": feat's dtype name}.
    """
    PH, PW = parse_output_size(output_size)
    spatial_scale = check_spatial_scale(spatial_scale)
    batch = check_feat_rois(feat, rois)                                 # (K,) int64
    xp = get_array_module(feat)
    N, C, H, W = feat.shape
    K = rois.shape[0]
    if cuda_kernels.kernels_enabled(feat):
        # on a GPU: one CUDA thread per output element, torchvision's kernel (cuda_kernels.py)
        out, argmax = cuda_kernels.roi_pool_forward(feat, rois, PH, PW, spatial_scale)  # (K, C, PH, PW) x2
        return out, _make_cache(argmax, batch, feat)
    hstart, hend, wstart, wend = roi_pool_bin_edges(rois, spatial_scale, (PH, PW), (H, W), feat.dtype)

    # One row per bin (k, ph, pw), flattened to B = K * PH * PW rows.
    B = K * PH * PW
    top = xp.broadcast_to(hstart[:, :, None], (K, PH, PW)).reshape(B)              # (B,) first row
    left = xp.broadcast_to(wstart[:, None, :], (K, PH, PW)).reshape(B)             # (B,) first column
    bin_rows = xp.broadcast_to((hend - hstart)[:, :, None], (K, PH, PW)).reshape(B)  # (B,) height, >= 0
    bin_cols = xp.broadcast_to((wend - wstart)[:, None, :], (K, PH, PW)).reshape(B)  # (B,) width, >= 0
    image_start = xp.broadcast_to((batch * (H * W))[:, None, None], (K, PH, PW)).reshape(B)  # (B,)

    # Channels-last: row n*H*W + h*W + w holds cell (h, w) of image n, all C channels contiguous.
    cells = xp.ascontiguousarray(feat.transpose(0, 2, 3, 1)).reshape(N * H * W, C)  # (N*H*W, C)

    out = xp.zeros((B, C), dtype=feat.dtype)          # (B, C) empty bins keep 0 ...
    argmax = xp.full((B, C), -1, dtype=xp.int64)      # (B, C) ... and argmax -1

    # Group the bins by shape (height, width): bins of one shape read the same offsets.
    shape_id = bin_rows * (W + 1) + bin_cols                                        # (B,)
    for sid in xp.unique(shape_id).tolist():          # a few dozen shapes, not B bins
        rows, cols = divmod(int(sid), W + 1)
        if rows == 0 or cols == 0:
            continue                                  # empty bins: out 0, argmax -1 already
        sel = xp.nonzero(shape_id == sid)[0]                            # (S,) the bins of this shape
        corner = (top[sel] * W + left[sel]).astype(xp.int32)            # (S,) h*W + w of the top-left cell
        offset = image_start[sel]                                       # (S,) first row of the image in cells
        best = xp.full((sel.size, C), NEG_FLT_MAX, dtype=feat.dtype)    # (S, C) running max
        best_at1 = xp.zeros((sel.size, C), dtype=xp.int32)              # (S, C) argmax + 1 (0 = none yet)
        for dy in range(rows):                        # scan order: h outer, w inner, as torchvision
            for dx in range(cols):
                pos = corner + (dy * W + dx)                            # (S,) cell h*W + w
                value = cells[offset + pos]                             # (S, C)
                better = value > best                                   # (S, C) strict: first max wins
                xp.fmax(best, value, out=best)        # = where(better, value, best); fmax skips NaN like `>`
                # best_at = where(better, pos, best_at), without where (slow: it branches per element).
                # The argmax is the last offset where `better` held; pos grows along the scan, so
                # that offset has the largest better * (pos + 1). 0 means `better` never held.
                xp.maximum(best_at1, better * (pos + 1)[:, None], out=best_at1)
        out[sel] = best
        argmax[sel] = best_at1 - 1                    # -1 where no value beat -FLT_MAX

    out = xp.ascontiguousarray(out.reshape(K, PH, PW, C).transpose(0, 3, 1, 2))   # (K, C, PH, PW)
    argmax = argmax.reshape(K, PH, PW, C).transpose(0, 3, 1, 2)  # (K, C, PH, PW), a channels-last view
    return out, _make_cache(argmax, batch, feat)


def roi_pool_backward(dout, cache):
    """Gradient of RoI max pooling: each dout goes to its argmax cell; shared argmaxes add up.

        dfeat[b_k, c, h, w] += dout[k, c, ph, pw]   where argmax[k, c, ph, pw] = h * W + w

    The scatter-add is one xp.bincount over flat indices into dfeat, with dout as the weights:
    bincount adds every weight that lands on the same index (it works the same in NumPy and CuPy;
    fancy `dfeat[idx] += g` would keep only one of several writes to one cell). The flat layout
    gives every (image, channel) plane one spare slot in front of its H*W cells: an empty bin's
    argmax -1 lands there, and the spare slots are dropped at the end (no masking needed).

    dout: (K, C, PH, PW) in the forward input's dtype -> dfeat: (N, C, H, W), same dtype.
    Takes the cache of roi_pool_forward or of roi_pool_forward_reference.
    """
    check_dout(dout, cache["argmax"].shape, cache["dtype"])
    xp = get_array_module(dout)
    N, C, H, W = cache["feat_shape"]
    batch = cache["batch_index"]                                        # (K,)
    if cuda_kernels.kernels_enabled(dout):
        # on a GPU: one CUDA thread per dout element, atomicAdd into its argmax cell
        return cuda_kernels.roi_pool_backward(dout, cache["argmax"], batch, (N, C, H, W))
    # (K, PH, PW, C): for the fast forward's cache this transpose is contiguous (no copy).
    argmax = cache["argmax"].transpose(0, 2, 3, 1)                      # (K, PH, PW, C)
    grad = dout.transpose(0, 2, 3, 1)                                   # (K, PH, PW, C)
    slot = (batch[:, None, None, None] * C + xp.arange(C)) * (H * W + 1) + 1  # (K, 1, 1, C) cell 0 of plane (b, c)
    flat = slot + argmax                                                # (K, PH, PW, C) -1 -> the spare slot
    sums = xp.bincount(flat.reshape(-1), weights=grad.reshape(-1), minlength=N * C * (H * W + 1))  # float64
    dfeat = sums.reshape(N, C, H * W + 1)[:, :, 1:]                     # (N, C, H*W): spare slots dropped
    return dfeat.reshape(N, C, H, W).astype(cache["dtype"])             # (N, C, H, W)


# --------------------------------------------------------------------------- reference

def roi_pool_forward_reference(feat, rois, output_size=(7, 7), spatial_scale=1 / 16):
    """RoI max pooling as plain loops over RoIs, bins and cells (slow; for tests and notebooks).

    A line-by-line transcription of torchvision's CPU kernel; only the channels are vectorised.
    Same arguments and returns as roi_pool_forward (the argmax in the cache is (K, C, PH, PW)).
    """
    PH, PW = parse_output_size(output_size)
    spatial_scale = check_spatial_scale(spatial_scale)
    check_feat_rois(feat, rois)
    xp = get_array_module(feat)
    N, C, H, W = feat.shape
    K = rois.shape[0]
    T = np.dtype(feat.dtype).type                     # torchvision's T: every float below is a T
    scale = T(spatial_scale)
    boxes = to_numpy(rois).astype(feat.dtype)         # (K, 5) host copy: we read scalars from it
    out = xp.zeros((K, C, PH, PW), dtype=feat.dtype)              # (K, C, PH, PW)
    argmax = xp.full((K, C, PH, PW), -1, dtype=xp.int64)          # (K, C, PH, PW)
    batch = xp.asarray(boxes[:, 0].astype(np.int64))              # (K,)
    for k in range(K):
        b = int(boxes[k, 0])
        x_start = int(round_half_away(boxes[k, 1] * scale))
        y_start = int(round_half_away(boxes[k, 2] * scale))
        x_end = int(round_half_away(boxes[k, 3] * scale))
        y_end = int(round_half_away(boxes[k, 4] * scale))
        roi_w = max(x_end - x_start + 1, 1)           # malformed RoIs are forced to 1 x 1 cell
        roi_h = max(y_end - y_start + 1, 1)
        bin_h = T(roi_h) / T(PH)
        bin_w = T(roi_w) / T(PW)
        for ph in range(PH):
            for pw in range(PW):
                h0 = math.floor(T(ph) * bin_h) + y_start
                h1 = math.ceil(T(ph + 1) * bin_h) + y_start
                w0 = math.floor(T(pw) * bin_w) + x_start
                w1 = math.ceil(T(pw + 1) * bin_w) + x_start
                h0, h1 = min(max(h0, 0), H), min(max(h1, 0), H)      # clip to the map
                w0, w1 = min(max(w0, 0), W), min(max(w1, 0), W)
                if h1 <= h0 or w1 <= w0:
                    continue                          # empty bin: out 0, argmax -1
                best = xp.full((C,), NEG_FLT_MAX, dtype=feat.dtype)   # (C,)
                best_at = xp.full((C,), -1, dtype=xp.int64)           # (C,)
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        value = feat[b, :, h, w]                      # (C,)
                        better = value > best                         # (C,) strict: first max wins
                        best = xp.where(better, value, best)
                        best_at = xp.where(better, h * W + w, best_at)
                out[k, :, ph, pw] = best
                argmax[k, :, ph, pw] = best_at
    return out, _make_cache(argmax, batch, feat)


def roi_pool_backward_reference(dout, cache):
    """Gradient of RoI max pooling as a plain loop: dfeat[b, c, h, w] += dout[k, c, ph, pw].

    dout: (K, C, PH, PW) -> dfeat: (N, C, H, W). Takes either forward's cache.
    """
    check_dout(dout, cache["argmax"].shape, cache["dtype"])
    xp = get_array_module(dout)
    N, C, H, W = cache["feat_shape"]
    argmax = to_numpy(cache["argmax"])                # (K, C, PH, PW) host copy: read as scalars
    batch = to_numpy(cache["batch_index"])            # (K,)
    K, _, PH, PW = argmax.shape
    dfeat = xp.zeros((N, C, H, W), dtype=dout.dtype)  # (N, C, H, W)
    for k in range(K):
        for ph in range(PH):
            for pw in range(PW):
                for c in range(C):
                    at = int(argmax[k, c, ph, pw])
                    if at >= 0:                       # -1: empty bin, no gradient
                        dfeat[batch[k], c, at // W, at % W] += dout[k, c, ph, pw]
    return dfeat
