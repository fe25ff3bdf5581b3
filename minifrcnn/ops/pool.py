"""2-D max pooling, forward and backward.

For input x (N, C, H, W), a k x k window and stride s:

    out[n, c, i, j] = max_{0 <= a, e < k} x[n, c, i*s + a, j*s + e]
    OH = (H - k) // s + 1,   OW = (W - k) // s + 1

The output size is floored, like PyTorch's ceil_mode=False: with H = 7, k = s = 2 the last
row is in no window and gets no gradient.

Backward: each output's gradient goes to the input pixel that produced the max (its argmax);
every other pixel of the window gets 0. On ties (several pixels equal to the max) the gradient
goes to the FIRST of them in row-major order inside the window (smallest a, then smallest e),
like numpy's argmax. Where windows overlap (stride < kernel) a pixel can be the argmax of
several windows and collects all their gradients.

The fast path loops over the k*k offsets (a, e) of the window, not over the OH*OW windows:
for a fixed offset the pixels it touches form a strided grid x[:, :, a::s, e::s] (cut to
OH x OW), so the max is k*k - 1 elementwise xp.maximum calls. The same code serves any kernel
and stride. (The reshape trick x.reshape(N, C, OH, k, OW, k).max(axis=(3, 5)), which only works
for kernel == stride, was measured 3 to 6 times slower in NumPy: reductions over short strided
axes are slow. So there is one fast path, not two.)

The forward pass stores no argmax: the backward pass finds it again by comparing each offset's
grid with out. Inference (no backward) then pays for the max only.

On a GPU the backward pass is one CUDA kernel (cuda_kernels.max_pool2d_backward, one thread per
input pixel, the same rule and the same order of additions) instead of 7 small array
operations per offset; the code below stays its reference.

    from minifrcnn import ops
    out, cache = ops.max_pool2d_forward(x, kernel=2, stride=2)
    dx = ops.max_pool2d_backward(dout, cache)
"""
from ..backend import get_array_module
from . import cuda_kernels
from .checks import check_array, check_dout, check_int


def _check_pool_args(x, kernel, stride):
    """All the ValueErrors of max_pool2d_forward; returns (kernel, stride, OH, OW)."""
    check_array(x, "x", ndim=4)
    kernel = check_int(kernel, "kernel", 1)
    stride = check_int(stride, "stride", 1)
    H, W = x.shape[2], x.shape[3]
    if kernel > H or kernel > W:
        raise ValueError(f"kernel: expected kernel <= H and <= W of x {tuple(x.shape)}, got {kernel}")
    return kernel, stride, (H - kernel) // stride + 1, (W - kernel) // stride + 1


# --------------------------------------------------------------------------- fast path

def max_pool2d_forward(x, kernel=2, stride=2):
    """Max pooling over k x k windows with stride s (any k, s; floor output size).

    out[n, c, i, j] = max_{a, e < k} x[n, c, i*s + a, j*s + e]

    x: (N, C, H, W) float32 or float64 -> out: (N, C, OH, OW) in x's dtype,
    OH = (H - k) // s + 1 (same for OW); cache = (x, out, kernel, stride).
    The backward pass compares x with out, so neither may be changed in place in between.
    """
    kernel, stride, OH, OW = _check_pool_args(x, kernel, stride)
    xp = get_array_module(x)
    out = x[:, :, 0:stride * OH:stride, 0:stride * OW:stride].copy()   # (N, C, OH, OW): offset (0, 0)
    for a in range(kernel):
        for e in range(kernel):
            if a == 0 and e == 0:
                continue                                                # already in out
            grid = x[:, :, a:a + stride * OH:stride, e:e + stride * OW:stride]  # (N, C, OH, OW)
            xp.maximum(out, grid, out=out)                              # running max, in place
    return out, (x, out, kernel, stride)


def max_pool2d_backward(dout, cache):
    """Gradient of max pooling: dout[n, c, i, j] goes to the first argmax of window (i, j).

    Walk the offsets (a, e) in row-major order; an output whose max sits at this offset and that
    was not claimed by an earlier offset ("taken") sends its gradient there.

    dout: (N, C, OH, OW) -> dx: (N, C, H, W), zero outside the argmaxes.
    """
    x, out, kernel, stride = cache
    check_dout(dout, out.shape, out.dtype)
    if cuda_kernels.kernels_enabled(dout):
        # on a GPU: one CUDA thread per input pixel gathers the same terms (cuda_kernels.py)
        return cuda_kernels.max_pool2d_backward(x, out, dout, kernel, stride)   # (N, C, H, W)
    xp = get_array_module(dout)
    OH, OW = out.shape[2], out.shape[3]
    dx = xp.zeros(x.shape, dtype=x.dtype)                              # (N, C, H, W)
    taken = xp.zeros(out.shape, dtype=bool)                            # (N, C, OH, OW)
    for a in range(kernel):
        for e in range(kernel):
            rows = slice(a, a + stride * OH, stride)
            cols = slice(e, e + stride * OW, stride)
            hit = x[:, :, rows, cols] == out                           # (N, C, OH, OW): max sits here
            hit &= ~taken                                              # ... and no earlier offset had it
            dx[:, :, rows, cols] += dout * hit                         # += : overlapping windows add up
            taken |= hit
    return dx


# --------------------------------------------------------------------------- reference

def max_pool2d_forward_reference(x, kernel=2, stride=2):
    """Max pooling as a plain loop over output positions (slow; for tests and notebooks).

    x: (N, C, H, W) -> out: (N, C, OH, OW); cache = (x, out, kernel, stride), the same layout
    as max_pool2d_forward's, so either backward accepts either cache.
    """
    kernel, stride, OH, OW = _check_pool_args(x, kernel, stride)
    xp = get_array_module(x)
    N, C = x.shape[:2]
    out = xp.zeros((N, C, OH, OW), dtype=x.dtype)                      # (N, C, OH, OW)
    for i in range(OH):
        for j in range(OW):
            window = x[:, :, i * stride:i * stride + kernel, j * stride:j * stride + kernel]  # (N, C, k, k)
            out[:, :, i, j] = window.reshape(N, C, kernel * kernel).max(axis=2)
    return out, (x, out, kernel, stride)


def max_pool2d_backward_reference(dout, cache):
    """Gradient of max pooling, one window at a time: dout goes to the window's first argmax.

    dout: (N, C, OH, OW) -> dx: (N, C, H, W).
    """
    x, out, kernel, stride = cache
    check_dout(dout, out.shape, out.dtype)
    xp = get_array_module(dout)
    N, C, OH, OW = out.shape
    dx = xp.zeros(x.shape, dtype=x.dtype)                              # (N, C, H, W)
    positions = xp.arange(kernel * kernel)                             # (k*k,) row-major offsets
    for i in range(OH):
        for j in range(OW):
            window = x[:, :, i * stride:i * stride + kernel, j * stride:j * stride + kernel]  # (N, C, k, k)
            first = window.reshape(N, C, kernel * kernel).argmax(axis=2)  # (N, C): argmax = first max
            onehot = positions == first[:, :, None]                    # (N, C, k*k)
            grad = onehot * dout[:, :, i, j, None]                     # (N, C, k*k)
            dx[:, :, i * stride:i * stride + kernel, j * stride:j * stride + kernel] += \
                grad.reshape(N, C, kernel, kernel)
    return dx
