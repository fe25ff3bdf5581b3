"""Rectified linear unit, forward and backward.

    out = max(x, 0)            dx = dout * [x > 0]

At x == 0 the function has no derivative; we use 0 there, as PyTorch does.

    from minifrcnn import ops
    out, cache = ops.relu_forward(x)
    dx = ops.relu_backward(dout, cache)
"""
from ..backend import get_array_module
from .checks import check_array


def relu_forward(x):
    """out = max(x, 0), elementwise. x: any shape, float32 or float64 -> out: same shape and dtype.

    cache = x (not copied: do not change x in place before the backward pass).
    """
    check_array(x, "x")
    xp = get_array_module(x)
    out = xp.maximum(x, 0)                                             # x's shape and dtype
    return out, x


def relu_backward(dout, cache):
    """dx = dout where x > 0, else 0. dout: x's shape -> dx: x's shape, in dout's dtype."""
    x = cache
    check_array(dout, "dout")
    if dout.shape != x.shape:
        raise ValueError(f"dout: expected shape {tuple(x.shape)} (the forward output), got {tuple(dout.shape)}")
    if dout.dtype != x.dtype:
        raise ValueError(f"dout: expected dtype {x.dtype} (the forward input's), got {dout.dtype}")
    return dout * (x > 0)                                              # x's shape
