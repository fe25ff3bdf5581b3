"""RoIAlign (Mask R-CNN, He et al. 2017): RoI pooling without rounding, by bilinear sampling.

RoI max pooling rounds the RoI's corners and bin edges to whole cells. RoIAlign keeps them
continuous: every bin is sampled at a regular grid of points, each point's value is read by
bilinear interpolation of the 4 surrounding cells, and the bin's output is the points' average.
The rules are torchvision.ops.roi_align's (torchvision/csrc/ops/cpu/roi_align_kernel.cpp). For a
RoI (b, x1, y1, x2, y2) in image pixels, spatial scale s, PH x PW bins and a feature map H x W:

    off = 0.5 if aligned else 0                       aligned=True: pixel centres sit at +0.5
    y_start = y1 * s - off      roi_h = y2 * s - off - y_start     (roi_h = max(roi_h, 1) if not aligned)
    bin_h = roi_h / PH          S_h = sampling_ratio, or ceil(roi_h / PH) when sampling_ratio <= 0
    sample rows  y(ph, iy) = y_start + ph * bin_h + (iy + 0.5) * bin_h / S_h,   iy = 0 .. S_h - 1
    (the same along x with x_start, roi_w, bin_w, PW, S_w)

    out[k, c, ph, pw] = 1 / (S_h S_w) * sum_{iy, ix} bilinear(feat[b, c], y(ph, iy), x(pw, ix))

bilinear(F, y, x), as torchvision's bilinear_interpolate:
    a point with y < -1 or y > H or x < -1 or x > W contributes 0;
    y <= 0 -> y = 0;  y_low = floor(y);  if y_low >= H - 1: y_low = y_high = H - 1, y = H - 1
    else y_high = y_low + 1;  ly = y - y_low, hy = 1 - ly  (the same along x)
    bilinear = hy hx F[y_low, x_low] + hy lx F[y_low, x_high] + ly hx F[y_high, x_low] + ly lx F[y_high, x_high]

The key fact for the fast path: the bilinear weight of cell (h, w) is a product of a weight of
row h and a weight of column w, and the out-of-map test is a test on y or on x. So the whole
op is, for each RoI k and channel c, a product of small matrices:

    out[k, c] = A_y[k] @ feat[b_k, c] @ A_x[k]^T
    A_y[k][ph, h] = 1/S_h sum_iy (weight of row h when sampling at y(ph, iy))    (K, PH, H)
    A_x[k][pw, w] = 1/S_w sum_ix (weight of column w when sampling at x(pw, ix))  (K, PW, W)

Each row of A_y has at most 2 S_h non-zeros that sum to 1 (less where samples fall off the map).
The op is linear in feat, so the backward pass is the same product transposed:

    dfeat[b, c] = sum over RoIs k of image b of  A_y[k]^T @ dout[k, c] @ A_x[k]

The fast path builds A_y and A_x with array ops and runs two matrix products per image (BLAS,
or cuBLAS on the GPU). The reference follows torchvision's loops sample by sample. Both compute
the sample coordinates in feat's dtype (torchvision's T); only the order of the final sums
differs, so they agree to rounding error (~1e-6 relative in float32), not bit for bit.
The RoI coordinates get no gradient here (Mask R-CNN does not need one; torchvision has none).

    from minifrcnn import ops
    out, cache = ops.roi_align_forward(feat, rois, output_size=(7, 7), spatial_scale=1 / 16,
                                       sampling_ratio=2, aligned=False)
    dfeat = ops.roi_align_backward(dout, cache)
"""
import math

import numpy as np

from ..backend import get_array_module, to_numpy
from .checks import check_dout
from .roi_pool import check_feat_rois, check_spatial_scale, parse_output_size


def _check_align_args(sampling_ratio, aligned):
    """sampling_ratio: an int (<= 0 means adaptive); aligned: a bool. ValueError otherwise."""
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, (int, np.integer)):
        raise ValueError(f"sampling_ratio: expected an int (<= 0 means adaptive), got {sampling_ratio!r}")
    if not isinstance(aligned, (bool, np.bool_)):
        raise ValueError(f"aligned: expected True or False, got {aligned!r}")
    return int(sampling_ratio), bool(aligned)


# --------------------------------------------------------------------------- fast path

def _axis_weights(start, size, n_bins, length, sampling_ratio, T):
    """The interpolation matrix along one axis (rows y with H, or columns x with W), all RoIs.

        A[k, p, i] = 1/S_k sum_{j < S_k} (weight of cell i when sampling at t(k, p, j))
        t(k, p, j) = start_k + p * bin_k + (j + 0.5) * bin_k / S_k,   bin_k = size_k / n_bins

    start, size: (K,) in dtype T (size already forced >= 1 if not aligned). n_bins: PH or PW.
    length: H or W. sampling_ratio > 0: S_k = sampling_ratio; <= 0: S_k = ceil(size_k / n_bins).
    Returns A: (K, n_bins, length) in dtype T.
    """
    xp = get_array_module(start)
    K = start.shape[0]
    bin_size = size / T(n_bins)                                         # (K,)
    if sampling_ratio > 0:
        grid = xp.full((K,), sampling_ratio, dtype=xp.int64)            # (K,)
        max_grid = sampling_ratio                                       # known: no host sync
    else:
        grid = xp.ceil(size / T(n_bins)).astype(xp.int64)               # (K,) may be <= 0: no samples
        max_grid = int(grid.max()) if K else 0                          # one host sync
    p = xp.arange(n_bins, dtype=T)[None, :, None]                       # (1, n_bins, 1)
    j = xp.arange(max(max_grid, 0), dtype=T)[None, None, :]             # (1, 1, G)
    b, st, g = bin_size[:, None, None], start[:, None, None], grid[:, None, None]  # (K, 1, 1) each
    g_div = xp.maximum(g, 1).astype(T)                # = g where there are samples; avoids 0 / 0 elsewhere
    t = st + p * b + (j + T(0.5)) * b / g_div                           # (K, n_bins, G) sample coordinates
    used = (j < g) & (t >= -1) & (t <= length)                          # (K, n_bins, G) a sample on the map
    t = xp.maximum(t, T(0))                                             # t <= 0 -> 0
    low = xp.floor(t).astype(xp.int64)                                  # (K, n_bins, G)
    at_edge = low >= length - 1                                         # last cell: both corners on it
    low = xp.where(at_edge, length - 1, low)
    high = xp.where(at_edge, length - 1, low + 1)
    t = xp.where(at_edge, low.astype(T), t)
    frac_high = t - low.astype(T)                                       # (K, n_bins, G) ly: weight of `high`
    frac_low = T(1) - frac_high                                         # hy: weight of `low`
    scale = used / g_div                                                # (K, n_bins, G) 1/S or 0
    cell = xp.arange(length)                                            # (length,)
    A = ((frac_low * scale)[..., None] * (low[..., None] == cell)       # (K, n_bins, G, length)
         + (frac_high * scale)[..., None] * (high[..., None] == cell))
    return A.sum(axis=2).astype(T)                                      # (K, n_bins, length)


def roi_align_matrices(rois, spatial_scale, output_size, feat_size, dtype, sampling_ratio=2, aligned=False):
    """A_y: (K, PH, H) and A_x: (K, PW, W) with out[k, c] = A_y[k] @ feat[b_k, c] @ A_x[k]^T.

    The RoI geometry of the module docstring, in `dtype` (torchvision's T). rois: (K, 5).
    """
    PH, PW = output_size
    H, W = feat_size
    T = np.dtype(dtype).type
    xp = get_array_module(rois)
    offset = T(0.5) if aligned else T(0)
    box = rois[:, 1:].astype(dtype) * T(spatial_scale) - offset         # (K, 4) in feature cells
    x_start, y_start, x_end, y_end = box[:, 0], box[:, 1], box[:, 2], box[:, 3]
    roi_w = x_end - x_start                                             # (K,)
    roi_h = y_end - y_start                                             # (K,)
    if not aligned:
        roi_w = xp.maximum(roi_w, T(1))                                 # malformed RoIs forced to 1 x 1
        roi_h = xp.maximum(roi_h, T(1))
    A_y = _axis_weights(y_start, roi_h, PH, H, sampling_ratio, T)       # (K, PH, H)
    A_x = _axis_weights(x_start, roi_w, PW, W, sampling_ratio, T)       # (K, PW, W)
    return A_y, A_x


def roi_align_forward(feat, rois, output_size=(7, 7), spatial_scale=1 / 16, sampling_ratio=2, aligned=False):
    """RoIAlign as two matrix products per image: out[k, c] = A_y[k] @ feat[b_k, c] @ A_x[k]^T.

    feat: (N, C, H, W) float32 or float64. rois: (K, 5) = (batch index, x1, y1, x2, y2) in image
    pixels. output_size: (PH, PW) or an int. sampling_ratio: S points per bin along each axis
    (<= 0: ceil(roi size / bins), per RoI). aligned: subtract half a cell (see module docstring).
    Returns out: (K, C, PH, PW) in feat's dtype and cache = {"A_y": (K, PH, H), "A_x": (K, PW, W),
    "rois_of_image": N index arrays (the RoIs of each image, found once: each is a host wait
    on a GPU, so the backward pass reuses them), "feat_shape", "out_shape", "dtype"}.
    """
    PH, PW = parse_output_size(output_size)
    spatial_scale = check_spatial_scale(spatial_scale)
    sampling_ratio, aligned = _check_align_args(sampling_ratio, aligned)
    batch = check_feat_rois(feat, rois)                                 # (K,) int64
    xp = get_array_module(feat)
    N, C, H, W = feat.shape
    K = rois.shape[0]
    A_y, A_x = roi_align_matrices(rois, spatial_scale, (PH, PW), (H, W), feat.dtype, sampling_ratio, aligned)
    out = xp.zeros((K, C, PH, PW), dtype=feat.dtype)                    # (K, C, PH, PW)
    rois_of_image = [xp.nonzero(batch == n)[0] for n in range(N)]       # N arrays (Kn,)
    for n, ks in enumerate(rois_of_image):            # a loop over images, not over RoIs
        Kn = ks.size
        if Kn == 0:
            continue
        image = feat[n].transpose(1, 0, 2).reshape(H, C * W)            # (H, C*W): rows first
        rows = A_y[ks].reshape(Kn * PH, H) @ image                      # (Kn*PH, C*W): y done
        # x: one small (C, W) @ (W, PW) product per RoI and bin row. Small on purpose: as Kn
        # larger (PH*C, W) products, OpenBLAS ran each on 2 threads, and with another busy process
        # on a 2-core machine the thread hand-offs made this step take 1 s instead of 5 ms (measured).
        rows = rows.reshape(Kn, PH, C, W)                               # (Kn, PH, C, W)
        both = rows @ A_x[ks].transpose(0, 2, 1)[:, None]               # (Kn, PH, C, PW): x done
        out[ks] = both.transpose(0, 2, 1, 3)                            # (Kn, C, PH, PW)
    cache = {"A_y": A_y, "A_x": A_x, "rois_of_image": rois_of_image, "feat_shape": tuple(feat.shape),
             "out_shape": (K, C, PH, PW), "dtype": str(feat.dtype)}
    return out, cache


def roi_align_backward(dout, cache):
    """Gradient of RoIAlign w.r.t. feat: the forward's products transposed, summed over RoIs.

        dfeat[b, c] = sum_{k in image b} A_y[k]^T @ dout[k, c] @ A_x[k]

    The sum over the RoIs of one image is the inner dimension of one matrix product, so
    overlapping RoIs add up their gradients with no scatter at all.

    dout: (K, C, PH, PW) in the forward input's dtype -> dfeat: (N, C, H, W), same dtype.
    """
    check_dout(dout, cache["out_shape"], cache["dtype"])
    xp = get_array_module(dout)
    N, C, H, W = cache["feat_shape"]
    K, _, PH, PW = cache["out_shape"]
    A_y, A_x = cache["A_y"], cache["A_x"]
    dfeat = xp.zeros((N, C, H, W), dtype=dout.dtype)                    # (N, C, H, W)
    for n, ks in enumerate(cache["rois_of_image"]):                     # (Kn,) the RoIs of image n
        Kn = ks.size
        if Kn == 0:
            continue
        g = dout[ks].transpose(0, 2, 1, 3)                              # (Kn, PH, C, PW)
        rows = (g @ A_x[ks][:, None]).reshape(Kn * PH, C * W)           # (Kn*PH, C*W): x undone
        image = A_y[ks].reshape(Kn * PH, H).T @ rows                    # (H, C*W): y undone, RoIs summed
        dfeat[n] = image.reshape(H, C, W).transpose(1, 0, 2)            # (C, H, W)
    return dfeat


# --------------------------------------------------------------------------- reference

def bilinear_interpolate_reference(plane, y, x):
    """torchvision's bilinear_interpolate for one point, all channels, plus its 4 cells and weights.

    plane: (C, H, W); y, x: scalars in dtype T. Returns (value (C,), [(h, w, weight) x 4]),
    value 0 and no cells for a point off the map (y < -1 or y > H or x < -1 or x > W).
    """
    xp = get_array_module(plane)
    T = type(y)
    C, H, W = plane.shape
    if y < -1.0 or y > H or x < -1.0 or x > W:
        return xp.zeros((C,), dtype=plane.dtype), []
    y = max(y, T(0))
    x = max(x, T(0))
    y_low, x_low = int(y), int(x)                     # truncation = floor here: y, x >= 0
    if y_low >= H - 1:
        y_high = y_low = H - 1
        y = T(y_low)
    else:
        y_high = y_low + 1
    if x_low >= W - 1:
        x_high = x_low = W - 1
        x = T(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - T(y_low), x - T(x_low)
    hy, hx = T(1) - ly, T(1) - lx
    cells = [(y_low, x_low, hy * hx), (y_low, x_high, hy * lx), (y_high, x_low, ly * hx), (y_high, x_high, ly * lx)]
    value = (cells[0][2] * plane[:, y_low, x_low] + cells[1][2] * plane[:, y_low, x_high]
             + cells[2][2] * plane[:, y_high, x_low] + cells[3][2] * plane[:, y_high, x_high])  # (C,)
    return value, cells


def _roi_geometry_reference(box, scale, PH, PW, sampling_ratio, aligned, T):
    """Per-RoI numbers of torchvision's kernel: starts, bin sizes and grid sizes, as scalars."""
    offset = T(0.5) if aligned else T(0)
    x_start, y_start = box[1] * scale - offset, box[2] * scale - offset
    x_end, y_end = box[3] * scale - offset, box[4] * scale - offset
    roi_w, roi_h = x_end - x_start, y_end - y_start
    if not aligned:
        roi_w, roi_h = max(roi_w, T(1)), max(roi_h, T(1))
    bin_h, bin_w = roi_h / T(PH), roi_w / T(PW)
    grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / T(PH)))
    grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / T(PW)))
    return y_start, x_start, bin_h, bin_w, grid_h, grid_w


def _sample_points_reference(feat, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """Yield (k, b, ph, pw, y, x, count) for every sample point, in torchvision's loop order."""
    PH, PW = output_size
    T = np.dtype(feat.dtype).type
    scale = T(spatial_scale)
    boxes = to_numpy(rois).astype(feat.dtype)         # (K, 5) host copy: we read scalars from it
    for k in range(boxes.shape[0]):
        b = int(boxes[k, 0])
        y_start, x_start, bin_h, bin_w, grid_h, grid_w = _roi_geometry_reference(
            boxes[k], scale, PH, PW, sampling_ratio, aligned, T)
        count = max(grid_h * grid_w, 1)
        for ph in range(PH):
            for pw in range(PW):
                for iy in range(grid_h):
                    y = y_start + T(ph) * bin_h + T(iy + 0.5) * bin_h / T(grid_h)
                    for ix in range(grid_w):
                        x = x_start + T(pw) * bin_w + T(ix + 0.5) * bin_w / T(grid_w)
                        yield k, b, ph, pw, y, x, count


def roi_align_forward_reference(feat, rois, output_size=(7, 7), spatial_scale=1 / 16, sampling_ratio=2,
                                aligned=False):
    """RoIAlign as torchvision's loops: for every bin, average bilinear samples (slow; for tests).

    Same arguments as roi_align_forward. Returns out: (K, C, PH, PW) and a cache for
    roi_align_backward_reference (it holds feat and rois; roi_align_backward needs the fast cache).
    """
    output_size = parse_output_size(output_size)
    spatial_scale = check_spatial_scale(spatial_scale)
    sampling_ratio, aligned = _check_align_args(sampling_ratio, aligned)
    check_feat_rois(feat, rois)
    xp = get_array_module(feat)
    N, C, H, W = feat.shape
    K = rois.shape[0]
    PH, PW = output_size
    total = xp.zeros((K, C, PH, PW), dtype=feat.dtype)                  # (K, C, PH, PW) sums of samples
    counts = np.ones((K,), dtype=feat.dtype)                            # (K,) samples per bin
    for k, b, ph, pw, y, x, count in _sample_points_reference(feat, rois, output_size, spatial_scale,
                                                              sampling_ratio, aligned):
        value, _ = bilinear_interpolate_reference(feat[b], y, x)        # (C,)
        total[k, :, ph, pw] += value
        counts[k] = count
    out = total / xp.asarray(counts)[:, None, None, None]               # (K, C, PH, PW) the average
    cache = {"feat": feat, "rois": rois, "output_size": output_size, "spatial_scale": spatial_scale,
             "sampling_ratio": sampling_ratio, "aligned": aligned, "feat_shape": tuple(feat.shape),
             "out_shape": (K, C, PH, PW), "dtype": str(feat.dtype)}
    return out, cache


def roi_align_backward_reference(dout, cache):
    """Gradient of RoIAlign as torchvision's backward loop: each sample sends dout * weight / count
    to its 4 cells.

    dout: (K, C, PH, PW) -> dfeat: (N, C, H, W). Needs roi_align_forward_reference's cache.
    """
    check_dout(dout, cache["out_shape"], cache["dtype"])
    xp = get_array_module(dout)
    feat = cache["feat"]
    dfeat = xp.zeros(feat.shape, dtype=dout.dtype)                      # (N, C, H, W)
    T = np.dtype(dout.dtype).type
    for k, b, ph, pw, y, x, count in _sample_points_reference(
            feat, cache["rois"], cache["output_size"], cache["spatial_scale"], cache["sampling_ratio"],
            cache["aligned"]):
        _, cells = bilinear_interpolate_reference(feat[b], y, x)
        for h, w, weight in cells:
            dfeat[b, :, h, w] += dout[k, :, ph, pw] * (weight / T(count))
    return dfeat
