"""Run minifrcnn's CUDA kernels on the CPU: a stand-in for cupy.RawKernel, for machines with no GPU.

Most sessions and CI have no GPU, so tests/test_gpu.py skips there. This module lets the CUDA C
of ops/cuda_kernels.py run anyway: the kernel source, exactly the string CuPy would compile,
is compiled by the host's C++ compiler (g++) together with a small launcher, and the launcher
runs every block and every thread of the grid on the CPU:

    kernel = EmulatedRawKernel(source, "im2col_kernel")      # as cupy.RawKernel(source, name)
    kernel((blocks,), (threads,), (x, cols, np.int64(n), ...))   # NumPy arrays instead of CuPy's

What it emulates:
    blockIdx, threadIdx, blockDim, gridDim     set for each thread it runs
    __global__, __device__                     plain C++ functions
    __shared__ arrays                          one per block (the blocks run one after another)
    extern __shared__ (dynamic) arrays         the launch's shared_mem bytes
    __syncthreads()                            kernels that use it run the threads of a block as
                                               real threads meeting at a barrier (a RuntimeError
                                               if they do not all reach it equally often); all
                                               other kernels run their threads one by one
    atomicAdd                                  an addition (under a lock)
    max, min, round, floor, ceil               std::max / std::min and <cmath>

What it checks, more strictly than CuPy: the number of arguments; every pointer argument is a
C-contiguous NumPy array whose dtype is the pointee's C type (CuPy would pass any array's
address); every scalar is a NumPy scalar of exactly the declared C type (np.int32 for int,
np.int64 for long long, np.float32 / np.float64 for T): a Python int, which CuPy passes as
8 bytes, is refused. A wrong argument is a TypeError naming the kernel and the parameter.

What it does NOT check: the GPU's float arithmetic (g++ with -ffp-contract=off does IEEE
float and double like nvcc --fmad=false, but the CUDA math library's exp/log may differ),
memory races between threads, timing, or CUDA compile errors (tests/test_cuda_emulated.py
compiles the sources with nvcc separately where nvcc is installed). Only what the four
kernels use is emulated.
"""
import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
import types

import numpy as np

C_TYPES = {"float": np.float32, "double": np.float64, "int": np.int32, "long long": np.int64,
           "unsigned long long": np.uint64, "bool": np.bool_}

PRELUDE = r"""
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>
using std::max; using std::min;
struct emu_dim3 { unsigned x, y, z; };
static thread_local emu_dim3 threadIdx, blockIdx;
static thread_local unsigned emu_syncs_passed;   // how many __syncthreads this thread reached
static emu_dim3 blockDim, gridDim;
static unsigned char* emu_dynamic_shared = nullptr;
static std::mutex emu_atomic_lock;

// The block's barrier. A thread that returns from the kernel leaves it (as exited threads do
// on a GPU), so threads that disagree on how many barriers there are finish instead of
// waiting forever; the launcher then reports the disagreement.
struct EmuBarrier {
    std::mutex m; std::condition_variable cv;
    unsigned expected = 0, arrived = 0; unsigned long long phase = 0;
    void release() { arrived = 0; phase++; cv.notify_all(); }
    void wait() {
        std::unique_lock<std::mutex> hold(m);
        unsigned long long mine = phase;
        if (++arrived == expected) release();
        else cv.wait(hold, [&] { return phase != mine; });
    }
    void leave() {
        std::lock_guard<std::mutex> hold(m);
        expected--;
        if (arrived > 0 && arrived == expected) release();
    }
};
static EmuBarrier* emu_barrier = nullptr;
static inline void __syncthreads() { emu_syncs_passed++; emu_barrier->wait(); }
template <class U> static inline U atomicAdd(U* at, U value) {
    std::lock_guard<std::mutex> hold(emu_atomic_lock);
    U old = *at; *at = old + value; return old;
}
#define __global__
#define __device__
#define __shared__ static
"""

LAUNCHER = r"""
// Returns 0, or 1 when the threads of a block reached __syncthreads different numbers of times.
extern "C" int emu_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                          unsigned bz, size_t shared_mem, void** a) {
    blockDim = {bx, by, bz};
    gridDim = {gx, gy, gz};
    std::vector<unsigned char> dynamic_shared(shared_mem + 1);
    emu_dynamic_shared = dynamic_shared.data();
    for (unsigned z = 0; z < gz; z++) for (unsigned y = 0; y < gy; y++) for (unsigned x = 0; x < gx; x++) {
        emu_dim3 block = {x, y, z};
        std::vector<unsigned> syncs(bx * by * bz);
        auto run = [&](unsigned tx, unsigned ty, unsigned tz) {
            blockIdx = block;
            threadIdx = {tx, ty, tz};
            emu_syncs_passed = 0;
            %(call)s;
            syncs[(tz * by + ty) * bx + tx] = emu_syncs_passed;
            if (emu_barrier) emu_barrier->leave();
        };
        if (%(threaded)s) {                      // __syncthreads: the block's threads at once
            EmuBarrier barrier;
            barrier.expected = bx * by * bz;
            emu_barrier = &barrier;
            std::vector<std::thread> threads;
            for (unsigned tz = 0; tz < bz; tz++) for (unsigned ty = 0; ty < by; ty++)
                for (unsigned tx = 0; tx < bx; tx++) threads.emplace_back(run, tx, ty, tz);
            for (auto& t : threads) t.join();
            emu_barrier = nullptr;
            for (unsigned n : syncs) if (n != syncs[0]) return 1;
        } else {
            for (unsigned tz = 0; tz < bz; tz++) for (unsigned ty = 0; ty < by; ty++)
                for (unsigned tx = 0; tx < bx; tx++) run(tx, ty, tz);
        }
    }
    return 0;
}
"""

_BUILD_DIR = os.path.join(tempfile.gettempdir(), f"minifrcnn-cuda-emulator-{os.getuid()}")


def compiler_available():
    """True when g++ with C++20 (std::barrier) can build the emulator here."""
    try:
        _build(PRELUDE + "extern \"C\" void emu_nothing() {}\n")
        return True
    except (OSError, RuntimeError):
        return False


def _build(code):
    """Compile C++ `code` into a shared library (cached by content); returns its path."""
    os.makedirs(_BUILD_DIR, exist_ok=True)
    digest = hashlib.sha256(code.encode()).hexdigest()[:20]
    lib = os.path.join(_BUILD_DIR, f"k{digest}.so")
    if not os.path.exists(lib):
        src = os.path.join(_BUILD_DIR, f"k{digest}.cpp")
        with open(src, "w") as f:
            f.write(code)
        tmp = f"{lib}.{os.getpid()}.tmp"
        done = subprocess.run(["g++", "-std=c++20", "-O1", "-ffp-contract=off", "-shared", "-fPIC",
                               "-pthread", "-o", tmp, src], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"g++ could not compile the emulated kernel:\n{done.stderr}")
        os.replace(tmp, lib)
    return lib


def _parameters(source, name):
    """[(C type text, parameter name)] of `extern "C" __global__ void name(...)` in source."""
    match = re.search(r'__global__\s+void\s+' + re.escape(name) + r'\s*\(([^)]*)\)', source)
    if match is None:
        raise ValueError(f"kernel {name!r} not found in its source")
    params = []
    for part in match.group(1).split(","):
        part = " ".join(part.split())
        m = re.match(r"(.*?[\s*])(\w+)$", part)
        params.append((m.group(1).strip(), m.group(2)))
    return params


def _typedef_T(source):
    m = re.match(r"\s*typedef\s+(float|double)\s+T\s*;", source)
    return m.group(1) if m else None


class EmulatedRawKernel:
    """cupy.RawKernel(code, name, options) with the kernel run on the CPU (module docstring)."""

    def __init__(self, code, name, options=()):
        self.name = name
        self.params = _parameters(code, name)
        T = _typedef_T(code)
        self._dtypes = []
        for ctype, pname in self.params:
            base = ctype.replace("const", "").replace("*", "").strip()
            base = T if base == "T" else base
            if base not in C_TYPES:
                raise ValueError(f"{name}: parameter {pname} has a type the emulator lacks: {ctype}")
            self._dtypes.append((np.dtype(C_TYPES[base]), "*" in ctype, "const" in ctype))
        # extern __shared__ T name[];  ->  a pointer into the launch's dynamic shared memory
        body = re.sub(r"extern\s+__shared__\s+([\w ]+?)\s+(\w+)\s*\[\s*\]\s*;",
                      r"\1* \2 = (\1*)emu_dynamic_shared;", code)
        args = ", ".join(f"({ctype})a[{i}]" if "*" in ctype else f"*({ctype}*)a[{i}]"
                         for i, (ctype, _) in enumerate(self.params))
        threaded = "true" if "__syncthreads" in code else "false"
        launcher = LAUNCHER % {"call": f"{name}({args})", "threaded": threaded}
        self._lib = ctypes.CDLL(_build(PRELUDE + body + launcher))
        self._lib.emu_launch.argtypes = [ctypes.c_uint] * 6 + [ctypes.c_size_t,
                                                               ctypes.POINTER(ctypes.c_void_p)]
        self._lib.emu_launch.restype = ctypes.c_int

    def _check(self, args):
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}: expected {len(self.params)} arguments, got {len(args)}")
        for arg, (ctype, pname), (dtype, pointer, const) in zip(args, self.params, self._dtypes):
            if pointer:
                if not isinstance(arg, np.ndarray):
                    raise TypeError(f"{self.name}: {pname} ({ctype}) needs an array, got "
                                    f"{type(arg).__name__}")
                if arg.dtype != dtype or not arg.flags.c_contiguous:
                    raise TypeError(f"{self.name}: {pname} ({ctype}) needs a C-contiguous {dtype} "
                                    f"array, got {arg.dtype} (contiguous: {arg.flags.c_contiguous})")
                if not const and not arg.flags.writeable:
                    raise TypeError(f"{self.name}: {pname} ({ctype}) is written but read-only")
            elif not (isinstance(arg, np.generic) and arg.dtype == dtype):
                raise TypeError(f"{self.name}: {pname} ({ctype}) needs a numpy.{dtype} scalar, got "
                                f"{type(arg).__name__} {arg!r}")

    def __call__(self, grid, block, args, shared_mem=0):
        self._check(args)
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        keep = []                                          # scalars must live through the call
        pointers = (ctypes.c_void_p * len(args))()
        for i, arg in enumerate(args):
            if isinstance(arg, np.ndarray):
                pointers[i] = arg.ctypes.data
            else:
                box = np.array(arg)                        # the scalar's bytes, in its C type
                keep.append(box)
                pointers[i] = box.ctypes.data
        status = self._lib.emu_launch(*(int(g) for g in grid), *(int(b) for b in block),
                                      int(shared_mem), pointers)
        if status:
            raise RuntimeError(
                f"{self.name}: the threads of a block reached __syncthreads() different numbers "
                "of times (a __syncthreads in divergent code, or a race that makes threads "
                "decide differently); on a GPU this can hang or corrupt shared memory")


def fake_cupy(xp=np, raw_kernel=EmulatedRawKernel):
    """A module-like stand-in for `cupy` inside ops/cuda_kernels.py: xp's arrays, emulated kernels.

    Only what cuda_kernels.py calls: RawKernel, empty, zeros, ascontiguousarray and the dtypes.
    xp: numpy, or minifrcnn.testing.strict.xp (scripts/count_device_ops.py, with a RawKernel
    that counts).
    ascontiguousarray returns an array that is already contiguous and of the dtype as it is,
    as CuPy does (no copy, no kernel).
    """
    def ascontiguousarray(a, dtype=None):
        if a.flags.c_contiguous and (dtype is None or a.dtype == np.dtype(dtype)):
            return a
        return xp.ascontiguousarray(a, dtype=dtype)

    return types.SimpleNamespace(
        RawKernel=raw_kernel, empty=xp.empty, zeros=xp.zeros,
        ascontiguousarray=ascontiguousarray, int32=np.int32, int64=np.int64,
        uint64=np.uint64, float32=np.float32, float64=np.float64)
