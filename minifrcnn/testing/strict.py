"""A testing aid: a fake "device" that is NumPy underneath and obeys CuPy's rules on top.

No GPU here, so how do we know the code runs on CuPy? Most CuPy mistakes are not about the GPU
at all; they are about the border between host (NumPy) and device (CuPy) memory, which NumPy
alone never enforces. This module enforces it on a CPU:

    from minifrcnn.testing import strict
    a = strict.xp.asarray(np.arange(6.0))   # "host to device": a StrictArray wrapping a NumPy copy
    b = strict.xp.exp(a) + 1                # computes with NumPy, stays a StrictArray
    np.asarray(b)                           # TypeError, as with CuPy: an implicit device -> host copy
    b.get()                                 # the explicit copy, a numpy.ndarray (as cupy's .get())

    model.to("strict")                      # or MINIFRCNN_DEVICE=strict: the whole model on it

The rules, each one a real CuPy behaviour (cupy/_core/core.pyx, _kernel.pyx):

  1. No implicit conversion to NumPy. np.asarray(a), np.array(a), host_array[...] = a and
     anything else that calls __array__ raise TypeError with CuPy's message. .get() (or
     backend.to_numpy) is the explicit copy.
  2. No host arrays inside device computations. a + numpy_array, numpy_array * a,
     xp.concatenate([a, numpy_array]) raise TypeError ("Unsupported type <class
     'numpy.ndarray'>"), as CuPy's kernels do. Python and NumPy scalars are fine. Host data
     reaches the device only through xp.asarray / xp.array, or as an index or a value in
     a[...] = value (CuPy copies those too).
  3. Reductions and scalar indexing give 0-d arrays, not NumPy scalars: a.sum(), a[0, 1],
     xp.max(a) stay on the device. float(), int(), bool() and .item() work on one-element
     arrays (CuPy allows them; each one is a device-to-host sync, so keep them out of loops).
  4. sort and argsort are stable (CuPy sorts with a stable radix sort).
  5. Only the methods cupy.ndarray has are there (STRICT_METHODS): a.tobytes(), a.data,
     a.ctypes, ... are AttributeErrors.

Calling a NumPy function on a strict array, np.concatenate([a, b]) or np.clip(a, 0, 1), works
through NEP 18 as it does with CuPy (NumPy hands the call to the array's module), but it is a
hard-coded `np.` in a device code path, which minifrcnn's style forbids (the function may not
exist in CuPy, and it hides where the code runs), so it warns with NumpyCallWarning. The tests
turn that warning into an error.

Using it in tests (tests/test_strict_backend.py does all three):

    pytestmark = pytest.mark.filterwarnings("error::minifrcnn.testing.strict.NumpyCallWarning")
    model = FasterRCNN(cfg).to("strict"); train_step(model, ...)   # compare with a NumPy run
    MINIFRCNN_DEVICE=strict python -m pytest -W error::minifrcnn.testing.strict.NumpyCallWarning

What this does NOT check: speed, GPU memory, kernel launches, CuPy's small dtype-promotion
differences, or whether CuPy implements every function (names resolve to NumPy's). It is a
net for host/device mistakes, not a GPU simulator: run the tests on a real GPU too
(MINIFRCNN_DEVICE=cuda python -m pytest).
"""
import contextlib
import operator
import sys
import warnings

import numpy as np

IMPLICIT_CONVERSION_MESSAGE = ("Implicit conversion to a NumPy array is not allowed. "
                               "Please use `.get()` to construct a NumPy array explicitly.")

# The cupy.ndarray methods and attributes that StrictArray forwards to its NumPy array.
STRICT_METHODS = (
    "all", "any", "argmax", "argmin", "argsort", "astype", "clip", "copy", "cumprod", "cumsum",
    "diagonal", "dot", "fill", "flatten", "item", "max", "mean", "min", "nonzero", "prod",
    "ravel", "repeat", "reshape", "round", "sort", "squeeze", "std", "sum", "swapaxes", "take",
    "tolist", "trace", "transpose", "var", "view")
STRICT_ATTRIBUTES = ("shape", "dtype", "ndim", "size", "itemsize", "nbytes", "strides", "flags",
                     "T", "base", "real", "imag")


_host_copies = None          # a list while record_host_copies() is active, else None
_device_counts = None        # a DeviceCounts while count_device_ops() is active, else None

# Methods that only re-describe the same memory (a view), which CuPy does without a kernel.
VIEW_METHODS = frozenset(("reshape", "ravel", "transpose", "swapaxes", "squeeze", "view"))
# Functions whose result size depends on the data, or that read back: the host must wait.
SYNC_FUNCTIONS = frozenset(("nonzero", "flatnonzero", "argwhere", "unique", "item", "tolist"))


@contextlib.contextmanager
def record_host_copies():
    """Record every device-to-host copy of more than one element (.get() or .tolist()).

        with strict.record_host_copies() as copies:
            train_step(model, ...)                  # the model on the strict device
        # copies: a list of (where, size), where = "module.function" that asked for the copy

    One-element reads (float(a), int(a), bool(a), .item()) are scalars and are not recorded.
    Used by the test that a training step copies no arrays to the host.
    """
    global _host_copies
    previous, _host_copies = _host_copies, []
    try:
        yield _host_copies
    finally:
        _host_copies = previous


class DeviceCounts:
    """What count_device_ops() counted: two Counters keyed by 'module.function'.

    ops:   every device operation (one count per call that makes or writes a device array);
    syncs: the operations among them that make the host wait for the device (a subset).
    """

    def __init__(self):
        from collections import Counter
        self.ops = Counter()
        self.syncs = Counter()


@contextlib.contextmanager
def count_device_ops():
    """Count the device operations that run, and the waits, by the function that asked.

        with strict.count_device_ops() as counts:
            train_step(model, ...)                  # the model on the strict device
        sum(counts.ops.values())                    # how many operations one step is
        counts.syncs.most_common(5)                 # where the host waits for the device

    ops: one count per call that makes or writes a device array: every xp function and ufunc,
    operator (a + b, a *= 2), array method (a.sum(), a.astype(...)), advanced index
    (a[mask], a[idx]) and a[...] = value; xp.asarray of host data (a host-to-device copy);
    every read back (float(a), int(a), bool(a), .item(), .get(), .tolist()). Views (basic
    slicing, reshape, ravel, transpose, .T) are not counted: CuPy makes them without a kernel
    (reshape and ravel copy when the memory is not contiguous; that copy is not counted).

    syncs: the ops after which CuPy's host code cannot go on before the device has finished
    everything queued so far: the reads back, and the ops whose output size depends on the
    data (nonzero, flatnonzero, argwhere, unique, indexing or assigning with a boolean mask).

    Why count: on a GPU each op is (at least) one kernel launch, which costs the host some
    microseconds whatever the array size, and each sync stops the host from queueing work
    ahead of the GPU. For the small default detector those costs, not arithmetic, set the
    speed. This is a proxy, not a GPU timing: one xp call may be several CuPy kernels. On the
    strict device the array versions of the CUDA kernels' operations run and are counted;
    scripts/count_device_ops.py runs the kernels themselves (emulated on the CPU) to count
    what CuPy issues.
    """
    global _device_counts
    previous, _device_counts = _device_counts, DeviceCounts()
    try:
        yield _device_counts
    finally:
        _device_counts = previous


_COMPREHENSIONS = ("<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>")


def _caller():
    """'module.function' of the first frame outside backend.py and strict.py.

    A comprehension counts for the function it is written in: Python 3.12 inlines list, dict
    and set comprehensions into that function's frame, earlier versions give them their own
    ('<dictcomp>'), so without this the names would depend on the Python version.
    """
    frame = sys._getframe(2)
    while (frame.f_globals.get("__name__") in ("minifrcnn.backend", __name__)
           or frame.f_code.co_name in _COMPREHENSIONS):
        frame = frame.f_back
    module = frame.f_globals.get("__name__", "?").rsplit(".", 1)[-1]
    return f"{module}.{frame.f_code.co_name}"


def _note_device_op(sync=False):
    if _device_counts is not None:
        note_device_op(_caller(), sync)


def note_device_op(where, sync=False):
    """Count one device operation made outside the strict namespace (e.g. an emulated CUDA
    kernel launch, scripts/count_device_ops.py) under `where`, when counting is on."""
    if _device_counts is not None:
        _device_counts.ops[where] += 1
        if sync:
            _device_counts.syncs[where] += 1


def _is_advanced_index(key):
    """An index that needs a gather/scatter kernel (an array or a list in it), not a view."""
    items = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, (StrictArray, np.ndarray, list)) for k in items)


def _is_mask_index(key):
    """An index with a boolean array in it: CuPy counts its True entries first (a sync)."""
    items = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, (StrictArray, np.ndarray)) and k.dtype == bool for k in items)


def _note_host_copy(size):
    """Append (the caller outside backend.py and strict.py, size) to the active record."""
    if _host_copies is None or size <= 1:
        return
    _host_copies.append((_caller(), int(size)))


class NumpyCallWarning(UserWarning):
    """A NumPy function was called on a strict (device) array: write xp.<name> instead."""


def _host_array_error(who):
    return TypeError(
        f"Unsupported type {np.ndarray}: a NumPy (host) array was passed to {who} together with "
        "device arrays. CuPy refuses this too; copy it to the device first with xp.asarray(...)")


def unwrap(obj, who="a device function", allow_host=False):
    """StrictArrays -> their NumPy arrays, recursively through lists, tuples and dicts.

    A numpy.ndarray found on the way is a TypeError (rule 2) unless allow_host is True.
    Scalars, dtypes, slices and everything else pass through unchanged.
    """
    if isinstance(obj, StrictArray):
        return obj._array
    if isinstance(obj, np.ndarray):
        if not allow_host:
            raise _host_array_error(who)
        return obj
    if isinstance(obj, (list, tuple)):
        items = [unwrap(o, who, allow_host) for o in obj]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, dict):
        return {k: unwrap(v, who, allow_host) for k, v in obj.items()}
    return obj


def wrap(obj):
    """NumPy results -> StrictArrays: arrays, and NumPy scalars as 0-d arrays (rule 3).

    Tuples and lists (xp.nonzero, xp.unique(..., return_counts=True)) are wrapped item by item.
    """
    if isinstance(obj, np.ndarray):
        return StrictArray(obj)
    if isinstance(obj, np.generic):
        return StrictArray(np.asarray(obj))
    if isinstance(obj, tuple):
        items = [wrap(o) for o in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, list):
        return [wrap(o) for o in obj]
    return obj


def _call(fn, args, kwargs, who):
    """fn(*args, **kwargs) on unwrapped arguments; results wrapped; `out=` returned as given."""
    name = who.rsplit(".", 1)[-1]
    if name not in VIEW_METHODS:
        _note_device_op(sync=name in SYNC_FUNCTIONS)
    out = kwargs.get("out")
    result = fn(*unwrap(args, who), **unwrap(kwargs, who))
    if isinstance(out, StrictArray) and result is out._array:
        return out                                   # in place: hand back the same object
    return wrap(result)


class StrictArray:
    """A NumPy array that behaves like a cupy.ndarray where it matters (module docstring).

    Make one with strict.xp.asarray(numpy_array) (a copy, like a host-to-device transfer) or
    backend.to_device(x, "strict"); get a NumPy copy back with .get().
    """

    __slots__ = ("_array",)
    __hash__ = None

    def __init__(self, array):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"StrictArray wraps a numpy.ndarray, got {type(array).__name__}; "
                            "use strict.xp.asarray(...) to make one")
        self._array = array

    # -- the border between host and device ------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT_CONVERSION_MESSAGE)

    def get(self):
        """A NumPy copy (device -> host), as cupy.ndarray.get()."""
        _note_host_copy(self._array.size)
        _note_device_op(sync=True)
        return self._array.copy()

    def set(self, host):
        """Copy a NumPy array of the same shape into this array (host -> device)."""
        self._array[...] = unwrap(host, "set", allow_host=True)

    # -- NumPy's hooks: np.<ufunc>(a) and np.<function>(a) ------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # Operators with a NumPy scalar on the left (np.float32(2) * a) come here too: fine.
        # A numpy.ndarray among the inputs is a TypeError in unwrap (rule 2), as in CuPy.
        if "out" in kwargs:
            outs = kwargs["out"]
            if not all(isinstance(o, StrictArray) for o in outs):
                raise TypeError("Output arguments type must be a device array (StrictArray)")
            kwargs["out"] = outs[0] if len(outs) == 1 else outs
        return _call(getattr(ufunc, method), inputs, kwargs, f"numpy.{ufunc.__name__}")

    def __array_function__(self, func, types, args, kwargs):
        warnings.warn(
            f"numpy.{func.__name__} was called on a strict (device) array; it works through "
            f"NEP 18 as with CuPy, but write xp = get_array_module(...); xp.{func.__name__}(...)",
            NumpyCallWarning, stacklevel=2)
        return _call(func, args, kwargs, f"numpy.{func.__name__}")

    # -- indexing --------------------------------------------------------------------------
    def __getitem__(self, key):
        if _is_advanced_index(key):
            _note_device_op(sync=_is_mask_index(key))
        return wrap(self._array[unwrap(key, "an index", allow_host=True)])

    def __setitem__(self, key, value):
        _note_device_op(sync=_is_mask_index(key))
        self._array[unwrap(key, "an index", allow_host=True)] = unwrap(value, "setitem",
                                                                       allow_host=True)

    def __len__(self):
        if self._array.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._array)

    def __iter__(self):
        if self._array.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._array)))

    # -- one-element arrays to Python values (a device-to-host sync in CuPy) ----------------
    def __bool__(self):
        _note_device_op(sync=True)
        return bool(self._array)

    def __float__(self):
        _note_device_op(sync=True)
        return float(self._array)

    def __int__(self):
        _note_device_op(sync=True)
        return int(self._array)

    def __complex__(self):
        return complex(self._array)

    def __format__(self, spec):
        return format(self._array, spec)                 # as CuPy: format(self.get(), spec)

    # -- the rest --------------------------------------------------------------------------
    def __repr__(self):
        return "strict_" + repr(self._array)

    def __str__(self):
        return str(self._array)

    def __copy__(self):
        return StrictArray(self._array.copy())

    def __deepcopy__(self, memo):
        return StrictArray(self._array.copy())

    def __reduce__(self):
        return StrictArray, (self._array.copy(),)


def _forward_method(name):
    def method(self, *args, **kwargs):
        if name == "tolist":
            _note_host_copy(self._array.size)        # a device -> host copy too
        if name in ("sort", "argsort"):
            kwargs["kind"] = "stable"                # rule 4: CuPy's sort is stable
        return _call(getattr(self._array, name), args, kwargs, f"ndarray.{name}")
    method.__name__ = name
    method.__doc__ = f"cupy.ndarray.{name}, computed by numpy.ndarray.{name}."
    return method


def _forward_attribute(name):
    return property(lambda self: wrap(getattr(self._array, name)),
                    doc=f"cupy.ndarray.{name} (numpy.ndarray.{name}).")


def _operand(other, op):
    """The other operand of an operator: a strict array or a scalar (CuPy takes nothing else)."""
    if isinstance(other, (list, tuple)):
        raise TypeError(f"Unsupported type {type(other)} in operator {op.__name__}: "
                        "make it an array with xp.asarray(...) first")
    return unwrap(other, f"operator {op.__name__}")


def _binary_operator(op, reflected=False):
    def method(self, other):
        other = _operand(other, op)
        _note_device_op()
        return wrap(op(other, self._array) if reflected else op(self._array, other))
    return method


def _inplace_operator(op):
    def method(self, other):
        op(self._array, _operand(other, op))         # numpy updates self._array in place
        _note_device_op()
        return self
    return method


def _unary_operator(op):
    def method(self):
        _note_device_op()
        return wrap(op(self._array))
    return method


for _name in STRICT_METHODS:
    setattr(StrictArray, _name, _forward_method(_name))
for _name in STRICT_ATTRIBUTES:
    setattr(StrictArray, _name, _forward_attribute(_name))
for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul",
              "and", "or", "xor", "lshift", "rshift"):
    _op = getattr(operator, _name + "_" if _name in ("and", "or") else _name)
    setattr(StrictArray, f"__{_name}__", _binary_operator(_op))
    setattr(StrictArray, f"__r{_name}__", _binary_operator(_op, reflected=True))
    setattr(StrictArray, f"__i{_name}__", _inplace_operator(getattr(operator, "i" + _name)))
for _name in ("lt", "le", "eq", "ne", "gt", "ge"):
    setattr(StrictArray, f"__{_name}__", _binary_operator(getattr(operator, _name)))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(StrictArray, f"__{_name}__", _unary_operator(getattr(operator, _name)))


# ------------------------------------------------------------------------------------------
# the module-like namespace: what get_array_module returns for strict arrays
# ------------------------------------------------------------------------------------------

class _StrictUfunc:
    """A NumPy ufunc on strict arrays: xp.maximum(a, b, out=a), xp.add.reduce(a), xp.add.at(...)."""

    def __init__(self, ufunc):
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        return _call(self._ufunc, args, kwargs, f"xp.{self.__name__}")

    def reduce(self, *args, **kwargs):
        return _call(self._ufunc.reduce, args, kwargs, f"xp.{self.__name__}.reduce")

    def accumulate(self, *args, **kwargs):
        return _call(self._ufunc.accumulate, args, kwargs, f"xp.{self.__name__}.accumulate")

    def outer(self, *args, **kwargs):
        return _call(self._ufunc.outer, args, kwargs, f"xp.{self.__name__}.outer")

    def at(self, *args, **kwargs):
        # CuPy has ufunc.at only where it has a scatter kernel (add, maximum, minimum)
        if self.__name__ not in ("add", "maximum", "minimum"):
            raise NotImplementedError(f"`{self.__name__}.at` is not supported by CuPy")
        return _call(self._ufunc.at, args, kwargs, f"xp.{self.__name__}.at")


class StrictNamespace:
    """Stands in for the cupy module: xp.zeros, xp.asarray, xp.maximum, xp.int64, ...

    Every function is NumPy's, called on the unwrapped arrays with the results wrapped again.
    xp.asarray / xp.array copy host data to the "device"; any other function given a
    numpy.ndarray raises TypeError (rule 2). Dtypes, constants (xp.inf, xp.newaxis) and
    NumPy's scalar types pass through unchanged.
    """

    __name__ = "strict"
    ndarray = StrictArray

    def __init__(self, module=np, prefix="xp"):
        self._module = module
        self._prefix = prefix
        self._cache = {}

    def __repr__(self):
        return "<minifrcnn.testing.strict namespace: NumPy with CuPy's host/device rules>"

    def __getattr__(self, name):
        if name.startswith("_"):                       # no private or special names
            raise AttributeError(name)
        if name not in self._cache:
            self._cache[name] = self._resolve(name)
        return self._cache[name]

    def _resolve(self, name):
        value = getattr(self._module, name)           # AttributeError for unknown names
        who = f"{self._prefix}.{name}"
        if name in ("linalg",):
            return StrictNamespace(value, who)
        if isinstance(value, type(np)):                # np.random, np.fft, ...: not mirrored
            raise AttributeError(
                f"{who}: the strict backend mirrors only NumPy's top-level functions and linalg "
                "(draw random numbers on the host with a numpy Generator, then xp.asarray)")
        if isinstance(value, np.ufunc):
            return _StrictUfunc(value)
        if isinstance(value, type) or not callable(value):
            return value                               # np.float32, np.dtype, np.inf, np.newaxis
        sort_kind = name in ("sort", "argsort")

        def function(*args, **kwargs):
            if sort_kind:
                kwargs["kind"] = "stable"              # rule 4
            return _call(value, args, kwargs, who)
        function.__name__ = name
        function.__doc__ = f"numpy.{name} on strict arrays (see minifrcnn.testing.strict)."
        return function

    # -- host <-> device -------------------------------------------------------------------
    def asarray(self, a, dtype=None, order=None):
        """A strict array: host data is copied over (as cupy.asarray); a strict array
        is returned as it is, or cast when dtype differs."""
        if isinstance(a, StrictArray):
            if dtype is None or np.dtype(dtype) == a.dtype:
                return a
            _note_device_op()
            return StrictArray(a._array.astype(dtype))
        _note_device_op()
        host = np.array(unwrap(a, "xp.asarray", allow_host=True), dtype=dtype, order=order or "K")
        return StrictArray(host)

    def array(self, a, dtype=None, copy=True, order="K"):
        """Like cupy.array: a new strict array (a copy unless copy=False and nothing changes)."""
        if isinstance(a, StrictArray) and not copy:
            return self.asarray(a, dtype)
        _note_device_op()
        host = np.array(unwrap(a, "xp.array", allow_host=True), dtype=dtype, order=order)
        return StrictArray(host)

    def asnumpy(self, a):
        """A NumPy copy of a strict array (as cupy.asnumpy); NumPy input passes through."""
        return a.get() if isinstance(a, StrictArray) else np.asarray(a)

    def get_array_module(self, *arrays):
        return self if any(isinstance(a, StrictArray) for a in arrays) else np


xp = StrictNamespace()
