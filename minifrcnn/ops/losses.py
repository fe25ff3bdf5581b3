"""The two losses of Faster R-CNN's multi-task objective (paper, eq. 1):

    L({p_i}, {t_i}) = 1/N_cls sum_i L_cls(p_i, p*_i)  +  lambda 1/N_reg sum_i p*_i L_reg(t_i, t*_i)

L_cls is the log loss of a softmax over classes (2 classes for the RPN, K+1 for the head):

    p_ic  = exp(z_ic) / sum_k exp(z_ik)                 softmax of the logits z (N, C)
    L_cls = -log p_{i, y_i}
    dL_cls / dz_ic = p_ic - [c == y_i]                  softmax minus one-hot

L_reg is the smooth L1 ("robust L1") loss of Fast R-CNN, with py-faster-rcnn's sigma:

    d    = w * (pred - target)                          w: "inside weights", 0 or 1 per coordinate
    f(d) = 0.5 sigma^2 d^2        if |d| < 1 / sigma^2
           |d| - 0.5 / sigma^2    otherwise
    f'(d) = sigma^2 d             if |d| < 1 / sigma^2
            sign(d)               otherwise

sigma = 1 is the paper's smooth L1; py-faster-rcnn uses sigma = 3 for the RPN (the quadratic
zone shrinks to |d| < 1/9) and sigma = 1 for the Fast R-CNN head.

Both functions return (loss, grad) in one go: a loss has no upstream gradient, so there is no
separate backward. The loss is a 0-d array (not a Python float) of the input's array module and
dtype, so on the GPU nothing is copied to the host until you ask for it with float(loss).

    loss, dlogits = softmax_cross_entropy(logits, labels)          # labels -1 are ignored
    loss, dpred = smooth_l1(pred, target, weights, sigma=3.0, normalizer=256)
"""
import math

import numpy as np

from ..backend import get_array_module, to_numpy
from .checks import check_array, check_same_device, check_same_dtype


def _check_normalizer(normalizer, name="normalizer"):
    """A Python number must be > 0; a 0-d array is taken as is (checking it would sync the GPU)."""
    if hasattr(normalizer, "shape"):
        if normalizer.ndim != 0:
            raise ValueError(f"{name}: expected a number or a 0-d array, got shape {tuple(normalizer.shape)}")
        return
    if not isinstance(normalizer, (int, float, np.integer, np.floating)) or isinstance(normalizer, bool):
        raise ValueError(f"{name}: expected a positive number, got {normalizer!r}")
    if not normalizer > 0:
        raise ValueError(f"{name}: expected a positive number, got {normalizer!r}")


# ----------------------------------------------------------------------------------------
# softmax cross-entropy (L_cls)
# ----------------------------------------------------------------------------------------

def _check_logits_labels(logits, labels):
    check_array(logits, "logits", ndim=2)
    check_array(labels, "labels", ndim=1, float_only=False, shape=(logits.shape[0],))
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels: expected an integer dtype, got {labels.dtype}")
    check_same_device(("logits", logits), ("labels", labels))
    C = logits.shape[1]
    # One host sync (a single bool): a label outside [-1, C-1] would silently index
    # the wrong column, so we pay it.
    if labels.size and bool(((labels < -1) | (labels >= C)).any()):
        xp = get_array_module(labels)
        lo, hi = int(xp.min(labels)), int(xp.max(labels))
        raise ValueError(
            f"labels: expected values in [-1, {C - 1}] (C = {C} classes, -1 = ignored), "
            f"got min {lo}, max {hi}")


def _shifted_exp(logits):
    """The pieces of a stable softmax of (N, C) logits z:

        shifted_ic = z_ic - max_k z_ik      (N, C) <= 0, so exp cannot overflow
        exp_ic     = exp(shifted_ic)        (N, C)
        sum_exp_i  = sum_c exp_ic           (N, 1) >= 1
    """
    xp = get_array_module(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)        # (N, C)
    exp = xp.exp(shifted)                                       # (N, C)
    return shifted, exp, exp.sum(axis=1, keepdims=True)         # (N, C), (N, C), (N, 1)


def softmax(logits):
    """Row-wise softmax: p_ic = exp(z_ic) / sum_k exp(z_ik), (N, C) -> (N, C).

    The same arithmetic softmax_cross_entropy uses for its gradient; the detector's
    objectness and class probabilities at test time come from here.
    """
    _, exp, sum_exp = _shifted_exp(logits)
    return exp / sum_exp                                        # (N, C)


def softmax_cross_entropy(logits, labels, normalizer=None):
    """Mean (or normalised) softmax log loss over the rows whose label is not -1.

        keep_i = labels_i >= 0                                  rows with label -1 are ignored
        s_ic   = z_ic - max_k z_ik                              subtract the row max: no overflow
        log p_ic = s_ic - log sum_k exp(s_ik)                   log-softmax (log-sum-exp)
        loss   = -sum_{i kept} log p_{i, y_i} / normalizer
        dz_ic  = (p_ic - [c == y_i]) / normalizer  on kept rows, 0 on ignored rows

    Args:
        logits: (N, C) float32 or float64 class scores z.
        labels: (N,) integer, values in [-1, C-1]; -1 means "ignore this row".
        normalizer: None -> the number of kept rows (0 kept rows -> loss 0, zero gradient);
            a positive number (or a 0-d array) -> the summed loss is divided by it
            (the paper's N_cls = 256 for the RPN).
    Returns:
        loss: 0-d array, same array module and dtype as logits.
        dlogits: (N, C), d loss / d logits, same dtype as logits.
    Raises:
        ValueError naming `logits`, `labels` or `normalizer` when shapes, dtypes or values are wrong.
    """
    _check_logits_labels(logits, labels)
    xp = get_array_module(logits)
    N, C = logits.shape
    dtype = logits.dtype

    keep = labels >= 0                                          # (N,) bool
    safe_labels = xp.where(keep, labels, 0)                     # (N,) ignored rows point at class 0
    shifted, exp, sum_exp = _shifted_exp(logits)                # (N, C), (N, C), (N, 1)
    log_probs = shifted - xp.log(sum_exp)                       # (N, C)
    probs = exp / sum_exp                                       # (N, C)

    rows = xp.arange(N)                                         # (N,)
    picked = log_probs[rows, safe_labels]                       # (N,) log p_{i, y_i}
    keep_f = keep.astype(dtype)                                 # (N,) 1.0 kept, 0.0 ignored

    if normalizer is None:
        # Number of kept rows, as an array (no host sync); max(., 1) so that with no kept
        # rows we divide 0 by 1 instead of 0 by 0.
        norm = xp.maximum(keep_f.sum(), 1).astype(dtype)        # 0-d
    else:
        _check_normalizer(normalizer)
        norm = normalizer

    # xp.where (rather than multiplying by keep_f) gives exact zeros on ignored rows.
    nll = xp.where(keep, -picked, 0)                            # (N,) -log p_{i, y_i}, 0 if ignored
    loss = nll.sum() / norm                                     # 0-d
    onehot = (xp.arange(C)[None, :] == safe_labels[:, None])    # (N, C) bool
    dlogits = xp.where(keep[:, None], probs - onehot, 0) / norm  # (N, C)
    return xp.asarray(loss, dtype=dtype), dlogits.astype(dtype, copy=False)


def softmax_cross_entropy_reference(logits, labels, normalizer=None):
    """Plain loop version of softmax_cross_entropy, one row at a time.

    Runs on the host in float64 and returns NumPy arrays (cast to logits' dtype).

    Same arguments and return values; used by the tests as the thing to agree with.
    """
    logits_np = to_numpy(logits).astype(np.float64)            # (N, C) on the host
    labels_np = to_numpy(labels)                                # (N,)
    N, C = logits_np.shape
    total = 0.0
    kept = 0
    grad = np.zeros((N, C))                                     # (N, C)
    for i in range(N):
        y = int(labels_np[i])
        if y == -1:
            continue
        row = logits_np[i]                                      # (C,)
        m = max(row)
        sum_exp = sum(math.exp(v - m) for v in row)
        log_p_y = (row[y] - m) - math.log(sum_exp)
        total += -log_p_y
        kept += 1
        for c in range(C):
            p = math.exp(row[c] - m) / sum_exp
            grad[i, c] = p - (1.0 if c == y else 0.0)
    norm = max(kept, 1) if normalizer is None else float(normalizer)
    dtype = logits.dtype
    return np.asarray(total / norm, dtype=dtype), (grad / norm).astype(dtype)


# ----------------------------------------------------------------------------------------
# smooth L1 (L_reg)
# ----------------------------------------------------------------------------------------

def _check_smooth_l1_args(pred, target, weights, sigma):
    check_array(pred, "pred")
    check_array(target, "target")
    check_array(weights, "weights")
    for name, a in (("target", target), ("weights", weights)):
        if tuple(a.shape) != tuple(pred.shape):
            raise ValueError(f"{name}: expected the shape of pred {tuple(pred.shape)}, got {tuple(a.shape)}")
    check_same_dtype(("pred", pred), ("target", target), ("weights", weights))
    check_same_device(("pred", pred), ("target", target), ("weights", weights))
    if not (isinstance(sigma, (int, float, np.integer, np.floating)) and sigma > 0):
        raise ValueError(f"sigma: expected a positive number, got {sigma!r}")


def smooth_l1(pred, target, weights, sigma=1.0, normalizer=1.0):
    """Smooth L1 loss of Fast R-CNN with py-faster-rcnn's sigma and inside weights.

        d    = weights * (pred - target)                         elementwise
        f(d) = 0.5 * sigma^2 * d^2       if |d| < 1 / sigma^2
               |d| - 0.5 / sigma^2       otherwise
        loss = sum f(d) / normalizer
        dpred = weights * f'(d) / normalizer,   f'(d) = sigma^2 d  or  sign(d)

    The two pieces meet with equal value and slope at |d| = 1/sigma^2.
    sigma: 3.0 for the RPN, 1.0 for the Fast R-CNN head (py-faster-rcnn; sigma 1 is the
    paper's smooth L1). weights is 1 where a coordinate has a target (positive anchors /
    foreground RoIs, and only the 4 columns of the true class in the head) and 0 elsewhere.

    Args:
        pred: any shape, float32 or float64, e.g. (N, 4) box deltas.
        target: same shape and dtype as pred.
        weights: same shape and dtype as pred ("inside weights").
        sigma: positive number.
        normalizer: positive number or 0-d array; e.g. the paper's N_reg, or the sampled count.
    Returns:
        loss: 0-d array of pred's array module and dtype.
        dpred: d loss / d pred, same shape and dtype as pred.
    """
    _check_smooth_l1_args(pred, target, weights, sigma)
    _check_normalizer(normalizer)
    xp = get_array_module(pred)
    dtype = pred.dtype
    s2 = float(sigma) ** 2

    d = weights * (pred - target)                               # (...) same shape as pred
    abs_d = xp.abs(d)                                           # (...)
    small = abs_d < 1.0 / s2                                    # (...) bool: quadratic zone
    f = xp.where(small, 0.5 * s2 * d * d, abs_d - 0.5 / s2)     # (...)
    df = xp.where(small, s2 * d, xp.sign(d))                    # (...) f'(d)

    loss = f.sum() / normalizer                                 # 0-d
    dpred = weights * df / normalizer                           # (...)
    return xp.asarray(loss, dtype=dtype), dpred.astype(dtype, copy=False)


def smooth_l1_reference(pred, target, weights, sigma=1.0, normalizer=1.0):
    """Plain loop version of smooth_l1, one element at a time.

    Runs on the host in float64 and returns NumPy arrays (cast to pred's dtype).
    """
    p = to_numpy(pred).astype(np.float64).reshape(-1)          # host copies, flattened
    t = to_numpy(target).astype(np.float64).reshape(-1)
    w = to_numpy(weights).astype(np.float64).reshape(-1)
    s2 = float(sigma) ** 2
    total = 0.0
    grad = np.zeros(p.size)
    for i in range(p.size):
        d = w[i] * (p[i] - t[i])
        if abs(d) < 1.0 / s2:
            total += 0.5 * s2 * d * d
            grad[i] = w[i] * s2 * d
        else:
            total += abs(d) - 0.5 / s2
            grad[i] = w[i] * (1.0 if d > 0 else -1.0 if d < 0 else 0.0)
    norm = float(normalizer)
    dtype = pred.dtype
    return (np.asarray(total / norm, dtype=dtype),
            (grad / norm).reshape(pred.shape).astype(dtype))
