"""Argument checks shared by the ops: a wrong shape or dtype is a ValueError
that says which argument, what was expected and what was given.

    >>> check_array(x, "x", ndim=4)                  # x must be a 4-D float array
    >>> check_same_dtype(("x", x), ("w", w))         # all float32 or all float64
    >>> stride = check_int(stride, "stride", 1)      # a whole number >= 1
    >>> check_dout(dout, out_shape, x.dtype)         # a backward's upstream gradient
"""
import numpy as np

from ..backend import get_array_module

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_array(a, name, ndim=None, float_only=True, shape=None):
    """Raise ValueError unless `a` is an array with `ndim` dims (and `shape`, None = any)."""
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise ValueError(f"{name}: expected a numpy or cupy array, got {type(a).__name__}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {tuple(a.shape)}")
    # dtype objects compare directly; str(a.dtype) would cost ~5 us, and every op calls this
    if float_only and a.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    if shape is not None:
        for i, (want, got) in enumerate(zip(shape, a.shape)):
            if want is not None and want != got:
                raise ValueError(
                    f"{name}: expected shape {tuple('*' if s is None else s for s in shape)}, "
                    f"got {tuple(a.shape)} (axis {i})")
    return a


def check_same_dtype(*named):
    """Raise ValueError unless every (name, array) pair has the same dtype."""
    dtypes = {a.dtype for _, a in named}
    if len(dtypes) > 1:
        desc = ", ".join(f"{n}: {a.dtype}" for n, a in named)
        raise ValueError(f"expected one dtype for all of them, got {desc}")


def check_same_device(*named):
    """Raise ValueError when NumPy and CuPy arrays are mixed."""
    modules = {get_array_module(a).__name__ for _, a in named}
    if len(modules) > 1:
        desc = ", ".join(f"{n}: {get_array_module(a).__name__}" for n, a in named)
        raise ValueError(f"expected all arrays on one device, got {desc}")


def check_int(value, name, minimum):
    """Raise ValueError unless value is a Python/NumPy int >= minimum (bool is not an int here)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def check_dout(dout, expected_shape, dtype):
    """A backward's dout must have the forward output's shape and the forward input's dtype."""
    check_array(dout, "dout")
    if tuple(dout.shape) != tuple(expected_shape):
        raise ValueError(f"dout: expected shape {tuple(expected_shape)} (the forward output), "
                         f"got {tuple(dout.shape)}")
    if dout.dtype != np.dtype(dtype):
        raise ValueError(f"dout: expected dtype {np.dtype(dtype)} (the forward input's), got {dout.dtype}")
