"""Box arithmetic for every stage of Faster R-CNN: IoU, the (tx, ty, tw, th) deltas, clipping, NMS.

Boxes are (x1, y1, x2, y2) in pixels, continuous, with no "+1": width = x2 - x1, as in torchvision.

IoU (intersection over union) of boxes a and b:

    inter = max(0, min(a.x2, b.x2) - max(a.x1, b.x1)) * max(0, min(a.y2, b.y2) - max(a.y1, b.y1))
    IoU   = inter / (area(a) + area(b) - inter)

A zero-area box (x2 == x1 or y2 == y1) has IoU 0 with every box, itself included: its
intersection with anything is 0, and where the union is 0 too we return 0, never NaN.

The box deltas of the paper (eq. 2), from a reference box a (an anchor or an RoI) with centre
(xa, ya) and size (wa, ha) to a target box with centre (x, y) and size (w, h):

    tx = wx * (x - xa) / wa          ty = wy * (y - ya) / ha
    tw = ww * log(w / wa)            th = wh * log(h / ha)

(wx, wy, ww, wh) are optional weights, (1, 1, 1, 1) for the RPN. The Fast R-CNN head normalises its
targets by dividing by stds (0.1, 0.1, 0.2, 0.2); that is the same as weights 1 / stds =
(10, 10, 5, 5). decode() inverts encode(), clamping tw, th at log(1000 / 16) before exp so that a
wild prediction cannot overflow (py-faster-rcnn / torchvision do the same).

NMS (non-maximum suppression, greedy, torchvision's semantics): visit the boxes by decreasing
score; keep a box unless its IoU with a box kept before it is > iou_threshold.

    iou = box_iou(anchors, gt_boxes)                     # (A, G)
    deltas = encode(anchors, gt_boxes[iou.argmax(1)])    # (A, 4)
    keep = nms(boxes, scores, 0.7)                       # int64 indices, best score first
"""
import math

import numpy as np

from .backend import get_array_module, is_cupy_array, to_numpy
from .ops.checks import check_array, check_same_device
from .ops.cuda_kernels import kernels_enabled, nms_sorted

# decode() clamps tw and th at this value: a box never grows more than 1000/16 = 62.5 times.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _check_boxes(boxes, name, columns=4):
    """(N, 4) float boxes (or (N, 4*K) when columns is None), else a ValueError naming `name`."""
    check_array(boxes, name, ndim=2, shape=(None, columns))
    if columns is None and boxes.shape[1] % 4 != 0:
        raise ValueError(f"{name}: expected shape (N, 4*K), got {tuple(boxes.shape)}")
    return boxes


def _check_weights(weights, name="weights"):
    if len(weights) != 4:
        raise ValueError(f"{name}: expected 4 numbers (wx, wy, ww, wh), got {weights!r}")
    return tuple(float(w) for w in weights)


# ----------------------------------------------------------------------------------------
# area and IoU
# ----------------------------------------------------------------------------------------

def box_area(boxes):
    """Area (x2 - x1) * (y2 - y1) of each box; a box with x2 < x1 or y2 < y1 counts as area 0.

    boxes: (N, 4). Returns (N,), same dtype.
    """
    _check_boxes(boxes, "boxes")
    xp = get_array_module(boxes)
    wh = xp.maximum(boxes[:, 2:4] - boxes[:, 0:2], 0)    # (N, 2) width, height
    return wh[:, 0] * wh[:, 1]                            # (N,)


def box_iou(a, b):
    """IoU of every box in a with every box in b.

        IoU[i, j] = inter(a_i, b_j) / (area(a_i) + area(b_j) - inter(a_i, b_j))

    a: (N, 4), b: (M, 4). Returns (N, M) in the promoted dtype of a and b.
    Zero-area boxes have IoU 0 with everything (the 0 / 0 case is defined as 0, never NaN).
    """
    _check_boxes(a, "a")
    _check_boxes(b, "b")
    check_same_device(("a", a), ("b", b))
    xp = get_array_module(a, b)
    area_a = box_area(a)                                              # (N,)
    area_b = box_area(b)                                              # (M,)
    # the intersection of a_i and b_j: from the larger top-left corner to the smaller bottom-right
    top_left = xp.maximum(a[:, None, 0:2], b[None, :, 0:2])           # (N, M, 2) x1, y1
    bottom_right = xp.minimum(a[:, None, 2:4], b[None, :, 2:4])       # (N, M, 2) x2, y2
    inter_wh = xp.maximum(bottom_right - top_left, 0)                 # (N, M, 2) width, height
    inter = inter_wh[:, :, 0] * inter_wh[:, :, 1]                     # (N, M)
    union = area_a[:, None] + area_b[None, :] - inter                 # (N, M)
    # union == 0 only when both boxes have zero area, and then inter == 0 too: 0 / 1 = 0.
    return inter / xp.where(union > 0, union, 1)                      # (N, M)


# ----------------------------------------------------------------------------------------
# box deltas: encode / decode (paper eq. 2)
# ----------------------------------------------------------------------------------------

def _centre_size(boxes):
    """Centres (cx, cy) and sizes (w, h) of (N, 4) boxes, as two (N, 2) arrays.

    Pairs rather than four columns: x and y follow the same formulas, so one array operation
    does both (on a GPU each operation is a kernel launch, whatever its size).
    """
    size = boxes[:, 2:4] - boxes[:, 0:2]    # (N, 2) w, h
    centre = boxes[:, 0:2] + 0.5 * size     # (N, 2) cx, cy
    return centre, size


def encode(ref, target, weights=(1.0, 1.0, 1.0, 1.0)):
    """Deltas that move each reference box onto its target box (paper eq. 2, times weights).

        tx = wx (x - xa) / wa,   ty = wy (y - ya) / ha,   tw = ww log(w / wa),   th = wh log(h / ha)

    ref: (N, 4) anchors or RoIs; target: (N, 4) the boxes they should become (row i to row i).
    weights: (wx, wy, ww, wh); the head uses (10, 10, 5, 5) = 1 / stds (0.1, 0.1, 0.2, 0.2),
    which is the same as dividing the unweighted deltas by the stds.
    Returns (N, 4) deltas (tx, ty, tw, th) in the promoted dtype of ref and target.

    Every box of ref and target needs a positive width and height (log(w / wa) is undefined
    otherwise): a zero or negative size is a ValueError. The check reads one bool back from
    the device.

    The code computes x and y together as (N, 2) pairs: t_xy = (tx, ty), t_wh = (tw, th).
    """
    _check_boxes(ref, "ref")
    _check_boxes(target, "target", columns=4)
    check_array(target, "target", shape=(ref.shape[0], 4))
    check_same_device(("ref", ref), ("target", target))
    xp = get_array_module(ref, target)
    w = xp.asarray(_check_weights(weights), dtype=xp.result_type(ref, target))   # (4,) wx wy ww wh
    centre_a, size_a = _centre_size(ref)       # (N, 2) xa, ya and wa, ha
    centre, size = _centre_size(target)        # (N, 2) x, y and w, h
    if not bool(((size_a > 0) & (size > 0)).all()):        # one read back for both arguments
        for name, sizes in (("ref", size_a), ("target", size)):   # False also for NaN sizes
            bad = xp.logical_not((sizes > 0).all(axis=1))  # (N,)
            if bool(xp.any(bad)):
                raise ValueError(
                    f"{name}: every box needs x2 > x1 and y2 > y1 to be encoded "
                    f"(log(w / wa) is undefined for a zero-size box); got {int(xp.sum(bad))} such box(es)")
    t_xy = w[0:2] * (centre - centre_a) / size_a           # (N, 2) tx, ty
    t_wh = w[2:4] * xp.log(size / size_a)                  # (N, 2) tw, th
    return xp.concatenate([t_xy, t_wh], axis=1)            # (N, 4)


def decode(ref, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    """Apply deltas to reference boxes: the inverse of encode().

        x = tx / wx * wa + xa,   y = ty / wy * ha + ya,
        w = exp(min(tw / ww, log(1000/16))) * wa,   h = exp(min(th / wh, log(1000/16))) * ha
        box = (x - w/2, y - h/2, x + w/2, y + h/2)

    ref: (N, 4). deltas: (N, 4) or class-specific (N, 4*K), where columns 4k:4k+4 are the
    deltas for class k; every class of row i is applied to the same ref box i.
    Returns boxes of the same shape as deltas, (N, 4) or (N, 4*K), promoted dtype.
    The code computes x and y together as pairs, like encode().
    """
    _check_boxes(ref, "ref")
    _check_boxes(deltas, "deltas", columns=None)
    check_array(deltas, "deltas", shape=(ref.shape[0], None))
    check_same_device(("ref", ref), ("deltas", deltas))
    xp = get_array_module(ref, deltas)
    w = xp.asarray(_check_weights(weights), dtype=deltas.dtype)   # (4,) wx wy ww wh
    N, K4 = deltas.shape
    d = deltas.reshape(N, K4 // 4, 4)                          # (N, K, 4)
    centre_a, size_a = _centre_size(ref)                       # (N, 2) each
    centre_a, size_a = centre_a[:, None, :], size_a[:, None, :]   # (N, 1, 2) each
    d_xy = d[:, :, 0:2] / w[0:2]                               # (N, K, 2) tx / wx, ty / wy
    d_wh = xp.minimum(d[:, :, 2:4] / w[2:4], BBOX_XFORM_CLIP)  # (N, K, 2) clamped tw / ww, th / wh
    centre = d_xy * size_a + centre_a                          # (N, K, 2) x, y
    size = xp.exp(d_wh) * size_a                               # (N, K, 2) w, h
    boxes = xp.concatenate([centre - 0.5 * size, centre + 0.5 * size], axis=2)   # (N, K, 4)
    return boxes.reshape(N, K4)                                # (N, 4*K)


# ----------------------------------------------------------------------------------------
# clipping and small boxes
# ----------------------------------------------------------------------------------------

def clip_boxes(boxes, image_size):
    """Clip boxes to the image: x into [0, W], y into [0, H].

    boxes: (N, 4) or class-specific (N, 4*K). image_size: (H, W).
    Returns a new array of the same shape and dtype.
    """
    _check_boxes(boxes, "boxes", columns=None)
    H, W = image_size
    xp = get_array_module(boxes)
    K = boxes.shape[1] // 4
    upper = xp.asarray([W, H, W, H] * K, dtype=boxes.dtype)   # (4*K,) x1, y1, x2, y2 of each class
    return xp.clip(boxes, 0, upper)                           # (N, 4*K), each column in [0, its limit]


def remove_small_boxes(boxes, min_size):
    """Indices of the boxes at least min_size wide and high (w >= min_size and h >= min_size).

    boxes: (N, 4). Returns (K,) int64 indices, increasing.
    """
    _check_boxes(boxes, "boxes")
    xp = get_array_module(boxes)
    size = boxes[:, 2:4] - boxes[:, 0:2]                   # (N, 2) w, h
    return xp.nonzero((size >= min_size).all(axis=1))[0].astype(xp.int64)   # (K,)


# ----------------------------------------------------------------------------------------
# non-maximum suppression
# ----------------------------------------------------------------------------------------

def _check_nms_args(boxes, scores, iou_threshold):
    _check_boxes(boxes, "boxes")
    check_array(scores, "scores", ndim=1, shape=(boxes.shape[0],))
    check_same_device(("boxes", boxes), ("scores", scores))
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold: expected a number in [0, 1], got {iou_threshold!r}")


def score_order(scores):
    """Indices that sort scores from high to low; equal scores keep their input order (stable).

    scores: (N,). Returns (N,) int64.
    """
    xp = get_array_module(scores)
    if xp is np:
        return np.argsort(-scores, kind="stable").astype(np.int64)   # (N,)
    # CuPy's argsort is always stable (a radix sort); older versions reject the `kind` argument
    return xp.argsort(-scores).astype(xp.int64)                     # (N,)


def nms_reference(boxes, scores, iou_threshold):
    """Greedy NMS as a plain O(N^2) Python loop: the definition the fast versions are tested against.

    Visit boxes by decreasing score (ties: lower index first); keep box i unless
    IoU(i, k) > iou_threshold for a box k already kept.
    boxes: (N, 4), scores: (N,). Returns (K,) int64 numpy indices in the order they were kept.
    """
    _check_nms_args(boxes, scores, iou_threshold)
    iou = to_numpy(box_iou(boxes, boxes))                 # (N, N) the same IoU values nms uses
    order = to_numpy(score_order(scores))                 # (N,)
    keep = []
    for i in order:
        if all(iou[i, k] <= iou_threshold for k in keep):
            keep.append(int(i))
    return np.array(keep, dtype=np.int64)


def _nms_loop(sorted_boxes, iou_threshold, max_output):
    """Greedy NMS on boxes already sorted by score: the "suppressed mask" loop.

    One Python iteration per box, but the work inside is one round of vector ops: the IoU of a
    kept box with every box after it (the same arithmetic as box_iou, written out on views of
    the coordinate columns because this is the hot loop). A suppressed box costs one bool
    look-up. Fast in NumPy (about 50 ms for 6000 RPN boxes on one CPU core); on a GPU every
    `if suppressed[i]` reads a bool back from the device, so nms() uses _nms_matrix there.
    sorted_boxes: (N, 4). Returns a Python list of kept positions (into sorted_boxes).
    """
    xp = get_array_module(sorted_boxes)
    n = sorted_boxes.shape[0]
    x1, y1, x2, y2 = (xp.ascontiguousarray(sorted_boxes[:, k]) for k in range(4))  # each (N,)
    area = box_area(sorted_boxes)                                     # (N,)
    suppressed = xp.zeros(n, dtype=bool)                              # (N,)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == max_output:
            break
        # IoU of box i with the boxes i+1 .. n-1 (all later, i.e. lower-scoring, boxes)
        inter_w = xp.minimum(x2[i], x2[i + 1:]) - xp.maximum(x1[i], x1[i + 1:])   # (N-i-1,)
        inter_h = xp.minimum(y2[i], y2[i + 1:]) - xp.maximum(y1[i], y1[i + 1:])   # (N-i-1,)
        inter = xp.maximum(inter_w, 0) * xp.maximum(inter_h, 0)                  # (N-i-1,)
        union = area[i] + area[i + 1:] - inter                                    # (N-i-1,)
        iou = inter / xp.where(union > 0, union, 1)                               # (N-i-1,)
        suppressed[i + 1:] |= iou > iou_threshold
    return keep


def _nms_matrix(sorted_boxes, iou_threshold, max_output, block=2048):
    """Greedy NMS on boxes already sorted by score, from the full overlap matrix.

    overlaps[i, j] = IoU(i, j) > threshold, for j > i, is computed on the boxes' device
    (in row blocks, so the float IoU matrix never exceeds block x N), then copied to the host
    as an (N, N) bool array, where the greedy pass is a loop over rows:
        keep i if nobody kept before it overlaps it; then mark everything i overlaps.
    This is what GPU NMS implementations do (torchvision copies a bit mask to the host too):
    the device does the N^2 IoU work, the host does the short sequential part.
    On the CPU it is slower than _nms_loop (N^2 IoUs instead of about kept x N).
    sorted_boxes: (N, 4). Returns a Python list of kept positions.
    """
    xp = get_array_module(sorted_boxes)
    n = sorted_boxes.shape[0]
    overlaps = xp.zeros((n, n), dtype=bool)                           # (N, N)
    for start in range(0, n, block):
        rows = sorted_boxes[start:start + block]                      # (B, 4)
        overlaps[start:start + block] = box_iou(rows, sorted_boxes) > iou_threshold   # (B, N)
    overlaps = to_numpy(xp.triu(overlaps, k=1))                       # (N, N) only j > i, on the host
    suppressed = np.zeros(n, dtype=bool)                              # (N,)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == max_output:
            break
        suppressed |= overlaps[i]
    return keep


def nms(boxes, scores, iou_threshold, max_output=None, method="auto"):
    """Greedy non-maximum suppression (torchvision's semantics).

    Visit the boxes by decreasing score; keep a box unless its IoU with an already kept box
    is > iou_threshold. Equal scores: the lower index is visited first (stable sort), so of two
    identical boxes with equal scores the first one is kept. Zero-area boxes have IoU 0 with
    everything and are therefore never suppressed and never suppress.

    boxes: (N, 4), scores: (N,), iou_threshold: float in [0, 1].
    max_output: stop after this many kept boxes (None: all). The greedy pass decides box by
        box in score order, so this equals nms(...)[:max_output], only faster.
    method: "loop" (suppressed-mask loop, fast on NumPy: ~50 ms for 6000 RPN boxes),
        "matrix" (the N x N "IoU > threshold" matrix is computed on the device and copied to
        the host as bools, where a short loop does the greedy pass),
        "kernel" (CuPy only: two CUDA kernels, the overlap bit matrix and the greedy pass, both
        on the GPU, so nothing but the count kept comes back to the host; ops/cuda_kernels.py),
        or "auto": loop for NumPy arrays, kernel for CuPy arrays (matrix when
        MINIFRCNN_CUDA_KERNELS=0), matrix for other devices. All give identical results.
    Returns (K,) int64 indices into boxes, in decreasing score order, on the boxes' device.
    """
    _check_nms_args(boxes, scores, iou_threshold)
    if method not in ("auto", "loop", "matrix", "kernel"):
        raise ValueError(f"method: expected 'auto', 'loop', 'matrix' or 'kernel', got {method!r}")
    xp = get_array_module(boxes, scores)
    if method == "kernel" and not is_cupy_array(boxes):
        raise ValueError("method='kernel': the CUDA kernel needs CuPy arrays (use 'loop' or 'matrix')")
    if method == "auto":
        method = "loop" if xp is np else "kernel" if kernels_enabled(boxes) else "matrix"
    if max_output is not None and max_output <= 0:
        return xp.zeros(0, dtype=xp.int64)
    order = score_order(scores)                                       # (N,)
    sorted_boxes = boxes[order]                                       # (N, 4)
    if method == "kernel":
        return order[nms_sorted(sorted_boxes, iou_threshold, max_output)]   # (K,)
    if method == "loop":
        keep = _nms_loop(sorted_boxes, iou_threshold, max_output)
    else:
        keep = _nms_matrix(sorted_boxes, iou_threshold, max_output)
    return order[xp.asarray(keep, dtype=xp.int64)]                   # (K,)


def batched_nms(boxes, scores, labels, iou_threshold, max_output=None, method="auto"):
    """NMS within each label separately: boxes of different labels never suppress each other.

    The coordinate offset trick: shift every box by label * span, where span is larger than
    the extent of all boxes, so boxes of different labels cannot overlap; then one nms().
    The shift is done in float64 so that large offsets do not eat the float32 digits.

    boxes: (N, 4), scores: (N,), labels: (N,) integers.
    Returns (K,) int64 indices in decreasing score order (all labels mixed), like nms().
    """
    _check_nms_args(boxes, scores, iou_threshold)
    check_array(labels, "labels", ndim=1, float_only=False, shape=(boxes.shape[0],))
    xp = get_array_module(boxes, scores)
    if boxes.shape[0] == 0:
        return xp.zeros(0, dtype=xp.int64)
    boxes64 = boxes.astype(xp.float64)                                # (N, 4)
    span = boxes64.max() - boxes64.min() + 1                          # () wider than any box set
    offsets = labels.astype(xp.float64) * span                        # (N,)
    shifted = boxes64 + offsets[:, None]                              # (N, 4)
    return nms(shifted, scores, iou_threshold, max_output=max_output, method=method)


def batched_nms_reference(boxes, scores, labels, iou_threshold):
    """batched_nms by a plain loop over labels (nms_reference per label), merged by score.

    Returns (K,) int64 numpy indices in decreasing score order (ties: lower index first).
    """
    boxes_np, scores_np, labels_np = to_numpy(boxes), to_numpy(scores), to_numpy(labels)
    keep = []
    for label in np.unique(labels_np):
        idx = np.nonzero(labels_np == label)[0]
        keep.extend(idx[nms_reference(boxes_np[idx], scores_np[idx], iou_threshold)])
    keep = np.array(sorted(keep), dtype=np.int64)         # index order, then a stable score sort
    return keep[np.argsort(-scores_np[keep], kind="stable")]
