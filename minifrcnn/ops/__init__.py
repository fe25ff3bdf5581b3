"""Layers as functional forward/backward pairs, CS231n style.

Every forward returns (out, cache) and every backward takes (dout, cache).
Each op takes its array module (numpy or cupy) from its inputs.

    from minifrcnn import ops
    out, cache = ops.conv2d_forward(x, w, b, stride=1, pad=1)
    dx, dw, db = ops.conv2d_backward(dout, cache)
"""
