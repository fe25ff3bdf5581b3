"""One small module that lets NumPy and CuPy share every line of minifrcnn.

The idea (from DeZero): no op ever writes ``numpy.`` directly. It asks its
input which array module it belongs to and uses that one::

    xp = get_array_module(x)        # numpy for a numpy array, cupy for a cupy array
    out = xp.maximum(x, 0)          # the same line runs on the CPU and on the GPU

Which device a run uses comes from an argument or from the environment:

    MINIFRCNN_DEVICE=cpu    (default) NumPy
    MINIFRCNN_DEVICE=cuda   CuPy; a clear error if no usable GPU is present
    MINIFRCNN_DEVICE=strict a test device: NumPy underneath, CuPy's refusal of implicit
                            host conversion on top (minifrcnn/testing/strict.py), so CuPy
                            mistakes show up on a machine without a GPU

"cuda" without a usable GPU is a ``DeviceError`` with one readable line.
``cupy.is_available()`` is the test, not a failed import: CuPy can be
installed on a machine with no GPU or no driver.
"""
import contextlib
import os

import numpy as np

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


STRICT_MODULE = "minifrcnn.testing.strict"


def _strict_xp():
    """The strict test device's array module. Imported here, on first use, and never when
    minifrcnn is imported: the test device is a testing aid, not part of the library."""
    from .testing import strict
    return strict.xp


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
        return _strict_xp()
    return np


def is_cupy_array(x):
    """True for a cupy.ndarray, checked without importing cupy."""
    return type(x).__module__.split(".")[0] == "cupy"


def is_strict_array(x):
    """True for an array of the strict test device (strict.StrictArray), checked without
    importing minifrcnn.testing.strict."""
    return type(x).__module__ == STRICT_MODULE


def get_array_module(*arrays):
    """numpy, or cupy if any argument is a CuPy array (like cupy.get_array_module),
    or strict.xp if any is a strict test array."""
    for a in arrays:
        if is_cupy_array(a):
            return _cupy_module()
        if is_strict_array(a):
            return _strict_xp()
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


BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def one_blas_thread_in_new_processes():
    """Within the `with`, the processes started (multiprocessing, "spawn") get one BLAS thread
    each: the variables are read when NumPy loads, so they must be set before a process starts.
    This process keeps its own threads; the variables come back as they were after the `with`.

    Why: on this project's 2-core machine two single-threaded processes do about 1.5 times the
    work of one process with two BLAS threads (most of a training step is too small to keep two
    threads busy); the paper experiments' seeds and data-parallel training use it.
    """
    saved = {k: os.environ.get(k) for k in BLAS_THREAD_VARIABLES}
    os.environ.update({k: "1" for k in BLAS_THREAD_VARIABLES})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def keep_freed_memory():
    """Ask glibc's malloc to keep large freed blocks for reuse (Linux only; a no-op elsewhere).

    Why: by default glibc hands every block over 128 KB straight back to the operating system
    when NumPy frees it, and the next allocation of the same size gets fresh pages that the
    kernel must zero on first touch. A training step allocates and frees the same large
    arrays (im2col columns, layer outputs) over and over, so on this project's 2-core machine
    that page-zeroing was about half of a small conv layer's forward time. Raising the mmap
    and trim thresholds makes freed blocks go back to malloc's free lists instead, and the
    conv fwd+bwd of the default backbone went from 30 ms to 23 ms (python -m minifrcnn bench).
    The cost: the process keeps its peak memory until it exits. Returns True if applied.

    It changes the whole process's malloc settings, so importing minifrcnn does not call it:
    the command line (python -m minifrcnn ...) and the bench (bench.run_bench,
    benchmarks/bench_vs_torch.py) call it first thing; a script of your own that trains or
    times can call it too. Set MINIFRCNN_KEEP_FREED_MEMORY=0 to skip it.
    """
    if os.environ.get("MINIFRCNN_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
    except (OSError, AttributeError):
        return False                                     # not glibc (macOS, Windows, musl)
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # from glibc's <malloc.h>
    ok_mmap = libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)   # glibc's maximum: 32 MiB
    ok_trim = libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    return bool(ok_mmap and ok_trim)
