"""2-D convolution (cross-correlation, as in every deep-learning library), forward and backward.

Forward, for input x (N, C, H, W), filters w (F, C, kh, kw), bias b (F,), stride s, zero padding p:

    xpad = x with p zeros added on each side of H and W            (N, C, H + 2p, W + 2p)
    out[n, f, i, j] = b[f] + sum_{c, a, e} w[f, c, a, e] * xpad[n, c, i*s + a, j*s + e]
    OH = (H + 2p - kh) // s + 1,   OW = (W + 2p - kw) // s + 1     (floor: rows that do not
                                                                     fill a window are unused)

im2col turns the sum into ONE matrix product. Copy every window into a column:

    cols[n, (c, a, e), (i, j)] = xpad[n, c, i*s + a, j*s + e]      (N, C*kh*kw, OH*OW)
    out[n] = W2 @ cols[n] + b        with W2 = w.reshape(F, C*kh*kw)  (N, F, OH*OW)

and out is already in NCHW order (no transpose). Backward, with dout (N, F, OH, OW):

    db     = sum over n, i, j of dout                               (F,)
    dW2    = sum_n dout[n] @ cols[n]^T                              (F, C*kh*kw)
    dcols  = W2^T @ dout[n]                                         (N, C*kh*kw, OH*OW)
    dx     = col2im(dcols): add every column back into the window it came from; where
             windows overlap (stride < kernel) the contributions add up.

Two versions live here, as everywhere in minifrcnn:
  - the fast path: im2col / col2im as a loop over the kh*kw kernel offsets, each one a
    strided slice copy (DeZero's and CS231n's "fast" im2col), plus np.matmul;
  - conv2d_forward_reference / conv2d_backward_reference: a plain loop over the output
    positions (i, j). Slow, obviously right; the tests compare the fast path to it.

    from minifrcnn import ops
    out, cache = ops.conv2d_forward(x, w, b, stride=1, pad=1)
    dx, dw, db = ops.conv2d_backward(dout, cache)

Memory: the fast path keeps cols in its cache, kh*kw times the size of x (9x for a 3x3 conv).
That buys a backward pass without a second im2col; it is the price of speed.
"""
from ..backend import get_array_module
from . import cuda_kernels
from .checks import check_array, check_dout, check_int, check_same_device, check_same_dtype


# --------------------------------------------------------------------------- argument checks


def conv_output_size(size, kernel, stride, pad):
    """Output length of a convolution along one axis: (size + 2*pad - kernel) // stride + 1."""
    return (size + 2 * pad - kernel) // stride + 1


def _check_window(x, kh, kw, stride, pad, who="w"):
    """Check stride/pad and that a kh x kw window fits the padded x; return (OH, OW)."""
    stride = check_int(stride, "stride", 1)
    pad = check_int(pad, "pad", 0)
    H, W = x.shape[2], x.shape[3]
    if kh > H + 2 * pad or kw > W + 2 * pad:
        raise ValueError(
            f"{who}: expected a kernel no larger than the padded input "
            f"(H + 2*pad, W + 2*pad) = ({H + 2 * pad}, {W + 2 * pad}), got kernel ({kh}, {kw})")
    return conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)


def _check_conv_args(x, w, b, stride, pad):
    """All the ValueErrors of conv2d_forward in one place; returns (OH, OW)."""
    check_array(x, "x", ndim=4)
    check_array(w, "w", ndim=4)
    check_array(b, "b", ndim=1)
    check_same_device(("x", x), ("w", w), ("b", b))
    check_same_dtype(("x", x), ("w", w), ("b", b))
    F, C = w.shape[0], w.shape[1]
    if C != x.shape[1]:
        raise ValueError(
            f"w: expected shape (F, C={x.shape[1]}, kh, kw) to match the {x.shape[1]} channels "
            f"of x {tuple(x.shape)}, got {tuple(w.shape)}")
    if b.shape[0] != F:
        raise ValueError(f"b: expected shape ({F},), one bias per filter of w, got {tuple(b.shape)}")
    return _check_window(x, w.shape[2], w.shape[3], stride, pad)


def _pad(x, pad):
    """x with `pad` zeros on each side of H and W: (N, C, H, W) -> (N, C, H + 2pad, W + 2pad)."""
    if pad == 0:
        return x
    xp = get_array_module(x)
    N, C, H, W = x.shape
    xpad = xp.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=x.dtype)  # (N, C, Hp, Wp)
    xpad[:, :, pad:pad + H, pad:pad + W] = x
    return xpad


# --------------------------------------------------------------------------- im2col / col2im

def im2col_reference(x, kh, kw, stride=1, pad=0):
    """Windows as columns, the obvious way: one output position (i, j) at a time.

    cols[n, (c, a, e), i*OW + j] = xpad[n, c, i*stride + a, j*stride + e]

    x: (N, C, H, W) -> cols: (N, C*kh*kw, OH*OW). Same result as im2col, much slower.
    """
    check_array(x, "x", ndim=4)
    OH, OW = _check_window(x, kh, kw, stride, pad, who="kernel")
    xp = get_array_module(x)
    N, C = x.shape[:2]
    xpad = _pad(x, pad)                                                 # (N, C, Hp, Wp)
    cols = xp.zeros((N, C * kh * kw, OH * OW), dtype=x.dtype)           # (N, C*kh*kw, OH*OW)
    for i in range(OH):
        for j in range(OW):
            window = xpad[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]  # (N, C, kh, kw)
            cols[:, :, i * OW + j] = window.reshape(N, C * kh * kw)
    return cols


def im2col(x, kh, kw, stride=1, pad=0):
    """Windows as columns, fast: a loop over the kh*kw kernel offsets instead of the OH*OW windows.

    For a fixed offset (a, e) inside the window, the pixels it touches in all windows form a
    strided grid of the padded input:  xpad[:, :, a : a + stride*OH : stride, e : e + stride*OW : stride].
    So kh*kw slice copies (9 for a 3x3 kernel) fill the whole array:

        cols[n, c, a, e, i, j] = xpad[n, c, i*stride + a, j*stride + e]

    x: (N, C, H, W) -> cols: (N, C*kh*kw, OH*OW), in x's dtype.
    On a GPU (CuPy arrays) one CUDA kernel does the same copy, one thread per element of cols
    (cuda_kernels.im2col); this array version is its reference.
    """
    check_array(x, "x", ndim=4)
    OH, OW = _check_window(x, kh, kw, stride, pad, who="kernel")
    if cuda_kernels.kernels_enabled(x):
        return cuda_kernels.im2col(x, kh, kw, stride, pad, OH, OW)     # (N, C*kh*kw, OH*OW)
    xp = get_array_module(x)
    N, C = x.shape[:2]
    xpad = _pad(x, pad)                                                 # (N, C, Hp, Wp)
    cols = xp.empty((N, C, kh, kw, OH, OW), dtype=x.dtype)              # (N, C, kh, kw, OH, OW)
    for a in range(kh):
        for e in range(kw):
            cols[:, :, a, e] = xpad[:, :, a:a + stride * OH:stride, e:e + stride * OW:stride]  # (N, C, OH, OW)
    return cols.reshape(N, C * kh * kw, OH * OW)                        # a view: no copy


def col2im(cols, x_shape, kh, kw, stride=1, pad=0):
    """The adjoint of im2col: add every column back into the window it came from.

        dxpad[n, c, i*stride + a, j*stride + e] += cols[n, (c, a, e), (i, j)]

    Where windows overlap (stride < kernel) a pixel collects one term per window that covers it.
    cols: (N, C*kh*kw, OH*OW), x_shape: (N, C, H, W) -> dx: (N, C, H, W) in cols' dtype
    (a view into the padded buffer when pad > 0; no extra copy).
    On a GPU one CUDA kernel gathers each pixel's terms in the same order (cuda_kernels.col2im).
    """
    xp = get_array_module(cols)
    N, C, H, W = x_shape
    OH, OW = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    if tuple(cols.shape) != (N, C * kh * kw, OH * OW):
        raise ValueError(f"cols: expected shape {(N, C * kh * kw, OH * OW)} for x_shape {tuple(x_shape)}, "
                         f"got {tuple(cols.shape)}")
    if cuda_kernels.kernels_enabled(cols):
        return cuda_kernels.col2im(cols, x_shape, kh, kw, stride, pad, OH, OW)   # (N, C, H, W)
    cols = cols.reshape(N, C, kh, kw, OH, OW)                           # (N, C, kh, kw, OH, OW)
    dxpad = xp.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)  # (N, C, Hp, Wp)
    for a in range(kh):
        for e in range(kw):
            # += (not =): with stride < kernel the strided grids of different offsets overlap
            dxpad[:, :, a:a + stride * OH:stride, e:e + stride * OW:stride] += cols[:, :, a, e]
    return dxpad[:, :, pad:pad + H, pad:pad + W]                        # (N, C, H, W)


# --------------------------------------------------------------------------- fast conv

def conv2d_forward(x, w, b, stride=1, pad=0):
    """Convolution via im2col and one (batched) matrix product.

    out[n, f, i, j] = b[f] + sum_{c, a, e} w[f, c, a, e] * xpad[n, c, i*stride + a, j*stride + e]

    x: (N, C, H, W), w: (F, C, kh, kw), b: (F,), all float32 or all float64.
    Returns out: (N, F, OH, OW) with OH = (H + 2*pad - kh) // stride + 1 (same for OW),
    and cache = (x_shape, w, cols, stride, pad) for conv2d_backward.
    """
    OH, OW = _check_conv_args(x, w, b, stride, pad)
    xp = get_array_module(x)
    N = x.shape[0]
    F, C, kh, kw = w.shape
    cols = im2col(x, kh, kw, stride, pad)                               # (N, C*kh*kw, OH*OW)
    w2 = w.reshape(F, C * kh * kw)                                      # (F, C*kh*kw)
    out = xp.matmul(w2, cols)                                           # (N, F, OH*OW): one BLAS call per image
    out += b[:, None]                                                   # (N, F, OH*OW), in place
    cache = (tuple(x.shape), w, cols, stride, pad)
    return out.reshape(N, F, OH, OW), cache


def conv2d_backward(dout, cache):
    """Gradients of conv2d_forward.

    db = sum_{n,i,j} dout[n, :, i, j];   dW2 = sum_n dout[n] @ cols[n]^T;
    dx = col2im(W2^T @ dout)   (overlapping windows add up).

    dout: (N, F, OH, OW) -> dx: (N, C, H, W), dw: (F, C, kh, kw), db: (F,), in dout's dtype.
    """
    x_shape, w, cols, stride, pad = cache
    xp = get_array_module(dout)
    N = x_shape[0]
    F, C, kh, kw = w.shape
    OH = conv_output_size(x_shape[2], kh, stride, pad)
    OW = conv_output_size(x_shape[3], kw, stride, pad)
    check_dout(dout, (N, F, OH, OW), w.dtype)
    dout2 = dout.reshape(N, F, OH * OW)                                 # (N, F, OH*OW)
    db = dout2.sum(axis=(0, 2))                                         # (F,)
    dw = xp.matmul(dout2, cols.transpose(0, 2, 1)).sum(axis=0)          # (F, C*kh*kw)
    w2 = w.reshape(F, C * kh * kw)                                      # (F, C*kh*kw)
    dcols = xp.matmul(w2.T, dout2)                                      # (N, C*kh*kw, OH*OW)
    dx = col2im(dcols, x_shape, kh, kw, stride, pad)                    # (N, C, H, W)
    return dx, dw.reshape(F, C, kh, kw), db


# --------------------------------------------------------------------------- reference conv

def conv2d_forward_reference(x, w, b, stride=1, pad=0):
    """The same convolution as a plain loop over output positions (slow; for tests and notebooks).

    For every (i, j):  out[:, :, i, j] = sum_{c,a,e} window[:, c, a, e] * w[:, c, a, e] + b
    with window = xpad[:, :, i*stride : i*stride + kh, j*stride : j*stride + kw].

    x: (N, C, H, W), w: (F, C, kh, kw), b: (F,) -> out (N, F, OH, OW),
    cache = (x, w, b, stride, pad) for conv2d_backward_reference (not for conv2d_backward).
    """
    OH, OW = _check_conv_args(x, w, b, stride, pad)
    xp = get_array_module(x)
    N = x.shape[0]
    F, C, kh, kw = w.shape
    xpad = _pad(x, pad)                                                 # (N, C, Hp, Wp)
    out = xp.zeros((N, F, OH, OW), dtype=x.dtype)                       # (N, F, OH, OW)
    for i in range(OH):
        for j in range(OW):
            window = xpad[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]  # (N, C, kh, kw)
            # sum over c, a, e of window[n, c, a, e] * w[f, c, a, e]
            out[:, :, i, j] = xp.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b  # (N, F)
    return out, (x, w, b, stride, pad)


def conv2d_backward_reference(dout, cache):
    """Gradients of conv2d_forward_reference, one output position (i, j) at a time.

    Each output out[n, f, i, j] touched one window, so its gradient dout[n, f, i, j] flows to
        dxpad[n, :, window] += dout[n, f, i, j] * w[f]      and      dw[f] += dout[n, f, i, j] * window[n]
    and db[f] = sum over n, i, j of dout[n, f, i, j].

    dout: (N, F, OH, OW) -> dx: (N, C, H, W), dw: (F, C, kh, kw), db: (F,).
    """
    x, w, b, stride, pad = cache
    xp = get_array_module(dout)
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    OH = conv_output_size(H, kh, stride, pad)
    OW = conv_output_size(W, kw, stride, pad)
    check_dout(dout, (N, F, OH, OW), x.dtype)
    xpad = _pad(x, pad)                                                 # (N, C, Hp, Wp)
    dxpad = xp.zeros(xpad.shape, dtype=x.dtype)                         # (N, C, Hp, Wp)
    dw = xp.zeros(w.shape, dtype=w.dtype)                               # (F, C, kh, kw)
    for i in range(OH):
        for j in range(OW):
            win_h = slice(i * stride, i * stride + kh)                  # the window's rows
            win_w = slice(j * stride, j * stride + kw)                  # and columns
            g = dout[:, :, i, j]                                        # (N, F)
            dxpad[:, :, win_h, win_w] += xp.tensordot(g, w, axes=([1], [0]))         # (N, C, kh, kw)
            dw += xp.tensordot(g, xpad[:, :, win_h, win_w], axes=([0], [0]))         # (F, C, kh, kw)
    db = dout.sum(axis=(0, 2, 3))                                       # (F,)
    dx = dxpad[:, :, pad:pad + H, pad:pad + W]                          # (N, C, H, W)
    return dx, dw, db
