"""backend.py: device selection and the NumPy/CuPy helpers (the cupy paths are faked or skipped)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minifrcnn import backend
from minifrcnn.backend import DeviceError, get_array_module, resolve_device, to_device, to_numpy


def test_default_device_is_cpu(monkeypatch):
    monkeypatch.delenv("MINIFRCNN_DEVICE", raising=False)
    assert resolve_device() == "cpu"
    assert backend.array_module_for() is np


def test_env_variable_and_argument(monkeypatch):
    monkeypatch.setenv("MINIFRCNN_DEVICE", "CPU")
    assert resolve_device() == "cpu"
    assert resolve_device("cpu") == "cpu"


def test_unknown_device_names_the_source(monkeypatch):
    monkeypatch.setenv("MINIFRCNN_DEVICE", "tpu")
    with pytest.raises(ValueError, match="MINIFRCNN_DEVICE='tpu'.*cpu, cuda"):
        resolve_device()
    with pytest.raises(ValueError, match="argument device='gpu'"):
        resolve_device("gpu")


def test_cuda_without_cupy_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(backend, "_cupy_module", lambda: None)
    with pytest.raises(DeviceError, match="CuPy is not installed") as info:
        resolve_device("cuda")
    assert "\n" not in str(info.value)


def test_cuda_without_gpu_uses_is_available(monkeypatch):
    class FakeCupy:
        @staticmethod
        def is_available():
            return False

    monkeypatch.setattr(backend, "_cupy_module", lambda: FakeCupy)
    with pytest.raises(DeviceError, match=r"is_available\(\) is False"):
        resolve_device("cuda")
    monkeypatch.setenv("MINIFRCNN_DEVICE", "cuda")
    with pytest.raises(DeviceError, match="MINIFRCNN_DEVICE=cuda"):
        to_device(np.zeros(3))


def test_numpy_round_trip():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert get_array_module(x) is np
    assert get_array_module(x, 1.0, None) is np
    y = to_device(x, "cpu")
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_array_equal(to_numpy(y), x)
    assert backend.device_of(x) == "cpu"


def test_cupy_round_trip_when_a_gpu_is_present():
    cupy = pytest.importorskip("cupy")
    if not cupy.is_available():
        pytest.skip("no usable GPU")
    x = np.arange(6, dtype=np.float32)
    g = to_device(x, "cuda")
    assert get_array_module(g) is cupy and backend.device_of(g) == "cuda"
    np.testing.assert_array_equal(to_numpy(g), x)


def test_keep_freed_memory_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("MINIFRCNN_KEEP_FREED_MEMORY", "0")
    assert backend.keep_freed_memory() is False
    monkeypatch.delenv("MINIFRCNN_KEEP_FREED_MEMORY")
    assert backend.keep_freed_memory() is sys.platform.startswith("linux")


# Imports every module of the package (not the testing subpackage) with a fake libc that counts
# mallopt calls, prints the count and the testing or torch modules imported, then calls
# keep_freed_memory and prints the count again (the fake is seen: its two calls).
IMPORT_THE_PACKAGE = """
import ctypes, importlib, pathlib, sys
calls = []
class FakeLibc:
    def mallopt(self, *args):
        calls.append(args)
        return 1
ctypes.CDLL = lambda *args, **kwargs: FakeLibc()
import minifrcnn
root = pathlib.Path(minifrcnn.__file__).parent
for path in sorted(root.rglob("*.py")):
    parts = path.relative_to(root).with_suffix("").parts
    if parts[0] != "testing" and parts[-1] != "__main__":
        importlib.import_module(".".join(("minifrcnn",) + parts).removesuffix(".__init__"))
print(len(calls), sorted(m for m in sys.modules if m.startswith(("minifrcnn.testing", "torch"))))
minifrcnn.backend.keep_freed_memory()
print(len(calls))
"""


def test_importing_minifrcnn_leaves_malloc_alone_and_imports_no_testing_aid():
    env = {k: v for k, v in os.environ.items() if k != "MINIFRCNN_KEEP_FREED_MEMORY"}
    out = subprocess.run([sys.executable, "-c", IMPORT_THE_PACKAGE], env=env, check=True,
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    assert out.stdout.split("\n")[:2] == ["0 []", "2"], out.stdout


def test_the_command_line_and_the_bench_keep_freed_memory(monkeypatch):
    from minifrcnn import bench
    from minifrcnn.__main__ import main
    calls = []
    monkeypatch.setattr(backend, "keep_freed_memory", lambda: calls.append("main"))
    monkeypatch.setattr(bench, "keep_freed_memory", lambda: calls.append("bench"))
    assert main(["bench", "--only", "nonexistent"]) == 2       # an error, after the call
    bench.run_bench("cpu", only=["no group"], out=lambda line: None)
    assert calls == ["main", "bench"]
