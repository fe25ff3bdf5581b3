"""One small module that lets NumPy and CuPy share every line of minifrcnn.

The idea (from DeZero): no op ever writes ``numpy.`` directly. It asks its
input which array module it belongs to and uses that one::

    xp = get_array_module(x)        # numpy for a numpy array, cupy for a cupy array
    out = xp.maximum(x, 0)          # the same line runs on the CPU and on the GPU

Which device a run uses comes from an argument or from the environment:

    MINIFRCNN_DEVICE=cpu    (default) NumPy
    MINIFRCNN_DEVICE=cuda   CuPy; a clear error if no usable GPU is present
    MINIFRCNN_DEVICE=strict a test device: NumPy underneath, CuPy's refusal of implicit
                            host conversion on top (minifrcnn/strict.py), so CuPy mistakes
                            show up on a machine without a GPU

"cuda" without a usable GPU is a ``DeviceError`` with one readable line.
``cupy.is_available()`` is the test, not a failed import: CuPy can be
installed on a machine with no GPU or no driver.
"""
import os

import numpy as np

from . import strict

DEVICES = ("cpu", "cuda", "strict")


class DeviceError(RuntimeError):
    """The requested device cannot be used (for example cuda without a GPU)."""


def _cupy_module():
    """Return the cupy module if it is importable, else None (never raises)."""
    try:
        import cupy
    except Exception:  # ImportError, or a broken CUDA install raising on import
        return None
    return cupy


def resolve_device(device=None):
    """Return "cpu", "cuda" or "strict": the argument if given, else $MINIFRCNN_DEVICE, else "cpu".

    Raises ValueError for an unknown name and DeviceError when "cuda" is asked
    for without a usable GPU.
    """
    source = "argument device"
    if device is None:
        device = os.environ.get("MINIFRCNN_DEVICE", "") or "cpu"
        source = "MINIFRCNN_DEVICE"
    name = str(device).strip().lower()
    if name not in DEVICES:
        raise ValueError(f"{source}={device!r}: expected one of {', '.join(DEVICES)}")
    if name == "cuda":
        cupy = _cupy_module()
        if cupy is None:
            raise DeviceError(
                f"{source}=cuda, but CuPy is not installed: "
                "pip install -r requirements-gpu.txt, or use the cpu device")
        try:
            available = bool(cupy.is_available())
        except Exception:
            available = False
        if not available:
            raise DeviceError(
                f"{source}=cuda, but CuPy finds no usable GPU (cupy.is_available() is False): "
                "check the NVIDIA driver, or use the cpu device")
    return name


def array_module_for(device=None):
    """The array module (numpy, cupy or strict.xp) for a device name (see resolve_device)."""
    name = resolve_device(device)
    if name == "cuda":
        return _cupy_module()
    if name == "strict":
        return strict.xp
    return np


def is_cupy_array(x):
    """True for a cupy.ndarray, checked without importing cupy."""
    return type(x).__module__.split(".")[0] == "cupy"


def is_strict_array(x):
    """True for an array of the strict test device (strict.StrictArray)."""
    return isinstance(x, strict.StrictArray)


def get_array_module(*arrays):
    """numpy, or cupy if any argument is a CuPy array (like cupy.get_array_module),
    or strict.xp if any is a strict test array."""
    for a in arrays:
        if is_cupy_array(a):
            return _cupy_module()
        if is_strict_array(a):
            return strict.xp
    return np


def to_numpy(x):
    """A NumPy copy (or view) of x, wherever x lives. Scalars and lists pass through np.asarray."""
    if is_cupy_array(x) or is_strict_array(x):
        return x.get()
    return np.asarray(x)


def to_device(x, device=None):
    """x as an array on `device` ("cpu", "cuda" or "strict"; None means MINIFRCNN_DEVICE)."""
    xp = array_module_for(device)
    if xp is np:
        return to_numpy(x)
    if (is_cupy_array(x) or is_strict_array(x)) and get_array_module(x) is not xp:
        x = x.get()                    # from one device to the other goes through the host
    return xp.asarray(x)


def device_of(x):
    """"cuda" for a CuPy array, "strict" for a strict test array, "cpu" otherwise."""
    if is_cupy_array(x):
        return "cuda"
    return "strict" if is_strict_array(x) else "cpu"
