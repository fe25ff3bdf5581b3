"""Layers as functional forward/backward pairs, CS231n style.

Every forward returns (out, cache) and every backward takes (dout, cache).
Each op takes its array module (numpy or cupy) from its inputs.

    from minifrcnn import ops
    out, cache = ops.conv2d_forward(x, w, b, stride=1, pad=1)
    dx, dw, db = ops.conv2d_backward(dout, cache)
"""
from .losses import (  # noqa: F401
    smooth_l1, smooth_l1_reference, softmax, softmax_cross_entropy, softmax_cross_entropy_reference)
from .conv import (  # noqa: F401
    col2im, conv2d_backward, conv2d_backward_reference, conv2d_forward, conv2d_forward_reference, im2col,
    im2col_reference)
from .pool import (  # noqa: F401
    max_pool2d_backward, max_pool2d_backward_reference, max_pool2d_forward, max_pool2d_forward_reference)
from .linear import linear_backward, linear_forward  # noqa: F401
from .group_norm import (  # noqa: F401
    group_norm_backward, group_norm_backward_reference, group_norm_forward, group_norm_forward_reference)
from .relu import relu_backward, relu_forward  # noqa: F401
from .roi_pool import (  # noqa: F401
    roi_pool_backward, roi_pool_backward_reference, roi_pool_forward, roi_pool_forward_reference)
from .roi_align import (  # noqa: F401
    roi_align_backward, roi_align_backward_reference, roi_align_forward, roi_align_forward_reference)
