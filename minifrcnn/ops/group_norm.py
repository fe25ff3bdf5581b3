"""Group normalisation (Wu & He, 2018, arXiv 1803.08494), forward and backward.

The C channels of x (N, C, H, W) are split into G groups of C/G consecutive channels. Each
(image n, group g) is normalised by its own mean and variance, taken over its C/G channels
and all H x W positions, M = (C/G) H W numbers; then every channel gets its own scale gamma_c
and shift beta_c:

    S(n, g)  = the M elements x[n, c, h, w] with c in channels g*C/G .. (g+1)*C/G - 1
    mu       = 1/M sum_{i in S} x_i                                           (N, G)
    var      = 1/M sum_{i in S} (x_i - mu)^2        (the biased variance)     (N, G)
    x_hat_i  = (x_i - mu) / sqrt(var + eps)                                   (N, C, H, W)
    out      = gamma_c x_hat + beta_c                                         (N, C, H, W)

Nothing is averaged over the batch, so an image's output does not depend on the other images
in the batch (batch normalisation's statistics are poor at our 2 images per batch) and
training and test compute the same thing (no running averages). G = 1 is layer norm over
(C, H, W); G = C is instance norm.

Backward. Write r = 1 / sqrt(var + eps) and, inside one group, g_i = dL/dx_hat_i =
dout_i gamma_c(i). mu and var depend on every x_j of the group:

    dmu/dx_j    = 1/M
    dvar/dx_j   = 2/M (x_j - mu)              (the term through mu is 2/M sum_i (x_i - mu) (-1/M) = 0)
    dr/dx_j     = -1/2 (var + eps)^(-3/2) dvar/dx_j = -r^3 (x_j - mu) / M = -r^2 x_hat_j / M
    dx_hat_i/dx_j = r (delta_ij - 1/M) + (x_i - mu) dr/dx_j
                  = r (delta_ij - 1/M - x_hat_i x_hat_j / M)

and summing g_i dx_hat_i/dx_j over the group gives the closed form the fast path computes:

    dx     = r (g - mean_S(g) - x_hat mean_S(g x_hat))         per (n, g), means over its M elements
    dgamma = sum_{n, h, w} dout x_hat                          (C,)
    dbeta  = sum_{n, h, w} dout                                (C,)

The two means are why dx sums to 0 over a group and is orthogonal to x_hat there (up to the
eps): shifting or scaling a group's input does not change its output.

Two versions, as everywhere in minifrcnn:
  - the fast path: the groups as an (N, G, M) reshape, one vectorised reduction per statistic,
    in x's array module (NumPy, CuPy or the strict test device) and x's dtype;
  - group_norm_forward_reference / group_norm_backward_reference: plain loops over the images n
    and the groups g, on the host in float64, the backward by the chain rule step by step
    (through var, then mu) rather than the closed form. Slow, obviously right; the tests compare
    the fast path to it.

    from minifrcnn import ops
    out, cache = ops.group_norm_forward(x, gamma, beta, num_groups=8)
    dx, dgamma, dbeta = ops.group_norm_backward(dout, cache)

Memory: the cache holds x_hat (x's size) and r (N, G); x itself is not kept.
"""
import math

import numpy as np

from ..backend import get_array_module, to_numpy
from .checks import check_array, check_dout, check_int, check_same_device, check_same_dtype


# --------------------------------------------------------------------------- argument checks

def _check_group_norm_args(x, gamma, beta, num_groups, eps):
    """All the ValueErrors of group_norm_forward in one place; returns (num_groups, eps)."""
    check_array(x, "x", ndim=4)
    C = x.shape[1]
    check_array(gamma, "gamma", ndim=1, shape=(C,))
    check_array(beta, "beta", ndim=1, shape=(C,))
    check_same_device(("x", x), ("gamma", gamma), ("beta", beta))
    check_same_dtype(("x", x), ("gamma", gamma), ("beta", beta))
    num_groups = check_int(num_groups, "num_groups", 1)
    if C % num_groups:
        raise ValueError(f"num_groups: expected a divisor of the {C} channels of x {tuple(x.shape)}, "
                         f"got {num_groups}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)) \
            or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps: expected a positive number (e.g. 1e-5), got {eps!r}")
    # a Python float: a NumPy float64 scalar would turn float32 arithmetic into float64
    return num_groups, float(eps)


# --------------------------------------------------------------------------- fast path

def group_norm_forward(x, gamma, beta, num_groups, eps=1e-5):
    """Group normalisation: out = gamma_c (x - mu) / sqrt(var + eps) + beta_c, mu and var per
    (image, group of C / num_groups channels).

    x: (N, C, H, W), gamma: (C,), beta: (C,), all float32 or all float64; num_groups divides C.
    Returns out: (N, C, H, W) in x's dtype and cache = (x_hat, rstd, gamma, num_groups).
    """
    num_groups, eps = _check_group_norm_args(x, gamma, beta, num_groups, eps)
    xp = get_array_module(x)
    N, C, H, W = x.shape
    xg = x.reshape(N, num_groups, -1)                                   # (N, G, M), M = C/G * H * W
    mu = xg.mean(axis=2, keepdims=True)                                 # (N, G, 1)
    x_hat = xg - mu                                                     # (N, G, M): x - mu
    var = (x_hat * x_hat).mean(axis=2, keepdims=True)                   # (N, G, 1)
    rstd = 1.0 / xp.sqrt(var + eps)                                     # (N, G, 1): r
    x_hat *= rstd                                                       # (N, G, M), in place
    x_hat = x_hat.reshape(N, C, H, W)                                   # (N, C, H, W)
    out = x_hat * gamma[:, None, None]                                  # (N, C, H, W)
    out += beta[:, None, None]                                          # (N, C, H, W), in place
    return out, (x_hat, rstd, gamma, num_groups)


def group_norm_backward(dout, cache):
    """Gradients of group_norm_forward, in closed form (derived in the module docstring).

    dx = r (g - mean(g) - x_hat mean(g x_hat)) per group, g = dout gamma_c;
    dgamma = sum_{n,h,w} dout x_hat;  dbeta = sum_{n,h,w} dout.

    dout: (N, C, H, W) -> dx: (N, C, H, W), dgamma: (C,), dbeta: (C,), in dout's dtype.
    """
    x_hat, rstd, gamma, num_groups = cache
    check_dout(dout, x_hat.shape, x_hat.dtype)
    N = x_hat.shape[0]
    dbeta = dout.sum(axis=(0, 2, 3))                                    # (C,)
    dgamma = (dout * x_hat).sum(axis=(0, 2, 3))                         # (C,)
    g = (dout * gamma[:, None, None]).reshape(N, num_groups, -1)        # (N, G, M): dL/dx_hat
    xh = x_hat.reshape(N, num_groups, -1)                               # (N, G, M)
    dx = g - g.mean(axis=2, keepdims=True)                              # (N, G, M)
    dx -= xh * (g * xh).mean(axis=2, keepdims=True)                     # (N, G, M), in place
    dx *= rstd                                                          # (N, G, M), in place
    return dx.reshape(x_hat.shape), dgamma, dbeta


# --------------------------------------------------------------------------- reference

def group_norm_forward_reference(x, gamma, beta, num_groups, eps=1e-5):
    """The same normalisation as a plain loop over images and groups (slow; for tests and notebooks).

    Runs on the host in float64 and returns NumPy arrays (out cast to x's dtype).
    x: (N, C, H, W), gamma, beta: (C,) -> out (N, C, H, W),
    cache = (x, gamma, num_groups, eps, dtype) for group_norm_backward_reference (host float64;
    not for group_norm_backward).
    """
    num_groups, eps = _check_group_norm_args(x, gamma, beta, num_groups, eps)
    x64 = to_numpy(x).astype(np.float64)                                # (N, C, H, W) on the host
    gamma64 = to_numpy(gamma).astype(np.float64)                        # (C,)
    beta64 = to_numpy(beta).astype(np.float64)                          # (C,)
    N, C = x64.shape[:2]
    per_group = C // num_groups
    out = np.zeros(x64.shape)                                           # (N, C, H, W)
    for n in range(N):
        for g in range(num_groups):
            chans = slice(g * per_group, (g + 1) * per_group)
            s = x64[n, chans]                                           # (C/G, H, W): one group
            mu = s.mean()
            var = ((s - mu) ** 2).mean()
            x_hat = (s - mu) / math.sqrt(var + eps)                     # (C/G, H, W)
            out[n, chans] = gamma64[chans, None, None] * x_hat + beta64[chans, None, None]
    return out.astype(x.dtype), (x64, gamma64, num_groups, eps, x.dtype)


def group_norm_backward_reference(dout, cache):
    """Gradients of group_norm_forward_reference, one (image, group) at a time, by the chain rule
    step by step (CS231n's staged batch-norm backward) instead of the closed form:

        d x_hat = dout gamma_c
        d var   = sum d x_hat (x - mu) * (-1/2) (var + eps)^(-3/2)
        d mu    = -sum d x_hat / sqrt(var + eps) + d var * (-2/M) sum (x - mu)
        dx      = d x_hat / sqrt(var + eps) + d var * 2 (x - mu) / M + d mu / M

    and dgamma_c += sum_{h,w} dout x_hat, dbeta_c += sum_{h,w} dout for each image.
    dout: (N, C, H, W) -> dx (N, C, H, W), dgamma (C,), dbeta (C,): NumPy arrays in x's dtype.
    """
    x64, gamma64, num_groups, eps, dtype = cache
    check_dout(dout, x64.shape, dtype)
    d64 = to_numpy(dout).astype(np.float64)                             # (N, C, H, W) on the host
    N, C = x64.shape[:2]
    per_group = C // num_groups
    dx = np.zeros(x64.shape)                                            # (N, C, H, W)
    dgamma = np.zeros(C)                                                # (C,)
    dbeta = np.zeros(C)                                                 # (C,)
    for n in range(N):
        for g in range(num_groups):
            chans = slice(g * per_group, (g + 1) * per_group)
            s = x64[n, chans]                                           # (C/G, H, W): one group
            M = s.size
            mu = s.mean()
            var = ((s - mu) ** 2).mean()
            std = math.sqrt(var + eps)
            x_hat = (s - mu) / std                                      # (C/G, H, W)
            d = d64[n, chans]                                           # (C/G, H, W)
            dgamma[chans] += (d * x_hat).sum(axis=(1, 2))
            dbeta[chans] += d.sum(axis=(1, 2))
            dx_hat = d * gamma64[chans, None, None]                     # (C/G, H, W)
            dvar = (dx_hat * (s - mu)).sum() * -0.5 * (var + eps) ** -1.5
            dmu = -dx_hat.sum() / std + dvar * -2.0 * (s - mu).sum() / M
            dx[n, chans] = dx_hat / std + dvar * 2.0 * (s - mu) / M + dmu / M
    return dx.astype(dtype), dgamma.astype(dtype), dbeta.astype(dtype)
