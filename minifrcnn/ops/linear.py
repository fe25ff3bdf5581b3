"""Fully connected (affine) layer, forward and backward.

    out = x2 @ w + b,   x2 = x.reshape(N, D_in)

x may be (N, D_in) or (N, d1, d2, ...) with d1*d2*... = D_in (a pooled feature map is
flattened in C, H, W order). Backward, with dout (N, D_out):

    dx = (dout @ w^T).reshape(x.shape)      dw = x2^T @ dout      db = sum_n dout[n]

    from minifrcnn import ops
    out, cache = ops.linear_forward(x, w, b)       # w: (D_in, D_out)
    dx, dw, db = ops.linear_backward(dout, cache)
"""
from .checks import check_array, check_same_device, check_same_dtype


def linear_forward(x, w, b):
    """out = x.reshape(N, D_in) @ w + b.

    x: (N, D_in) or (N, d1, d2, ...) with d1*d2*... = D_in; w: (D_in, D_out); b: (D_out,);
    all float32 or all float64. Returns out: (N, D_out) and cache = (x, w).
    """
    check_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x: expected shape (N, D_in) or (N, d1, d2, ...), got {tuple(x.shape)}")
    check_array(w, "w", ndim=2)
    check_array(b, "b", ndim=1)
    check_same_device(("x", x), ("w", w), ("b", b))
    check_same_dtype(("x", x), ("w", w), ("b", b))
    N = x.shape[0]
    D_in, D_out = w.shape
    x2 = x.reshape(N, -1)                                              # (N, D_in)
    if x2.shape[1] != D_in:
        raise ValueError(f"w: expected shape ({x2.shape[1]}, D_out) to match x {tuple(x.shape)} "
                         f"flattened to {tuple(x2.shape)}, got {tuple(w.shape)}")
    if b.shape[0] != D_out:
        raise ValueError(f"b: expected shape ({D_out},), one bias per output of w, got {tuple(b.shape)}")
    out = x2 @ w                                                       # (N, D_out)
    out += b                                                           # (N, D_out), in place
    return out, (x, w)


def linear_backward(dout, cache):
    """Gradients of linear_forward.

    dout: (N, D_out) -> dx: x's shape, dw: (D_in, D_out), db: (D_out,), in dout's dtype.
    """
    x, w = cache
    N = x.shape[0]
    check_array(dout, "dout")
    if tuple(dout.shape) != (N, w.shape[1]):
        raise ValueError(f"dout: expected shape {(N, w.shape[1])} (the forward output), got {tuple(dout.shape)}")
    if dout.dtype != w.dtype:
        raise ValueError(f"dout: expected dtype {w.dtype} (the forward input's), got {dout.dtype}")
    x2 = x.reshape(N, -1)                                              # (N, D_in)
    dx = (dout @ w.T).reshape(x.shape)                                 # x's shape
    dw = x2.T @ dout                                                   # (D_in, D_out)
    db = dout.sum(axis=0)                                              # (D_out,)
    return dx, dw, db
