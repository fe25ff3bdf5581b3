"""Numeric gradients by centred differences, to check every hand-written backward pass.

For a scalar function f of an array x, the centred difference along coordinate i is

    df/dx_i  ~=  (f(x + h e_i) - f(x - h e_i)) / (2 h)          error O(h^2)

Most layers are not scalar: for an output `out` and an upstream gradient `dout`
we check the scalar f(x) = sum(out(x) * dout), whose gradient is exactly what
the backward pass returns (the chain rule with dout as dL/dout).

Run the checks in float64: with h = 1e-6 float32 has no digits left.

Usage (the pattern every test follows)::

    x = rng.standard_normal((2, 3, 5, 5))
    out, cache = relu_forward(x)
    dout = rng.standard_normal(out.shape)
    dx = relu_backward(dout, cache)
    dx_num = numeric_gradient_array(lambda: relu_forward(x)[0], x, dout)
    assert rel_error(dx, dx_num) < 1e-6
"""
import numpy as np

from .backend import get_array_module


def rel_error(a, b, eps=1e-8):
    """max |a - b| / max(|a| + |b|, eps), elementwise, as in CS231n. 0 means identical."""
    xp = get_array_module(a, b)
    a = xp.asarray(a, dtype=xp.float64)
    b = xp.asarray(b, dtype=xp.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(xp.max(xp.abs(a - b) / xp.maximum(xp.abs(a) + xp.abs(b), eps)))


def _centred_difference(f, flat_x, i, dout, h):
    """(F(x + h e_i) - F(x - h e_i)) / 2h for F = f() (scalar) or sum(f() * dout); x restored."""
    def value():
        out = f()
        return float(out) if dout is None else float((out * dout).sum())

    old = flat_x[i].item()
    flat_x[i] = old + h
    plus = value()
    flat_x[i] = old - h
    minus = value()
    flat_x[i] = old
    return (plus - minus) / (2 * h)


def _flat_view(x, who):
    """x.reshape(-1) as a view that writes through to x (x must be C-contiguous)."""
    if not x.flags.c_contiguous:
        raise ValueError(f"{who}: x must be C-contiguous so it can be perturbed in place")
    return x.reshape(-1)


def numeric_gradient(f, x, h=1e-6):
    """Gradient of the scalar f() with respect to x, every coordinate.

    f takes no argument: it reads x, which this function perturbs in place and
    restores. Returns a float64 array shaped like x.
    """
    return numeric_gradient_array(f, x, None, h)


def numeric_gradient_array(f, x, dout, h=1e-6):
    """Gradient of sum(f() * dout) with respect to x, every coordinate (dout None: f is scalar)."""
    xp = get_array_module(x)
    flat_x = _flat_view(x, "numeric_gradient")
    grad = xp.zeros(x.size, dtype=xp.float64)
    for i in range(x.size):
        grad[i] = _centred_difference(f, flat_x, i, dout, h)
    return grad.reshape(x.shape)


def sparse_numeric_gradient(f, x, dout=None, num_checks=20, rng=None, h=1e-6):
    """Numeric gradient at `num_checks` random coordinates, for arrays too big to check whole.

    Returns (indices, values): flat indices into x and the numeric gradient there.
    Compare with ``analytic.reshape(-1)[indices]``.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    flat_x = _flat_view(x, "sparse_numeric_gradient")
    idx = rng.choice(x.size, size=min(num_checks, x.size), replace=False)
    values = np.array([_centred_difference(f, flat_x, i, dout, h) for i in idx], dtype=np.float64)
    return idx, values
