"""How many device operations (a proxy for GPU kernel launches) does one training step make?

    python scripts/count_device_ops.py [--steps 5] [--top 30] [--array-versions] [--weights W]

Runs the default detector's train step on the strict device (NumPy underneath, CuPy's rules on
top; see minifrcnn/testing/strict.py) under strict.count_device_ops() and prints the mean count
per step, by module and by function, of device operations and of syncs (where the host waits for
the device). On a GPU each operation is at least one kernel launch costing the host some
microseconds, which for the small default detector is what sets the step time.

By default the CUDA kernels of ops/cuda_kernels.py take part as they do on CuPy: their
sources run on the CPU through tests/cuda_emulator.py (needs g++), each launch counted as one
operation ("cuda_kernels.<kernel>"), and what they allocate counted too. So the counts are
the operations the step issues on a GPU. --array-versions counts the step with the kernels
off (MINIFRCNN_CUDA_KERNELS=0 on CuPy). --weights data/shapes_model.npz counts a step of the
trained model (late training: more RoIs pass the sampling) instead of a fresh one.
"""
import argparse
import os
import sys

from minifrcnn import boxes
from minifrcnn.bench import default_step_setup
from minifrcnn.model import FasterRCNN
from minifrcnn.ops import cuda_kernels
from minifrcnn.testing import strict
from minifrcnn.train import train_step

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--top", type=int, default=30)
parser.add_argument("--array-versions", action="store_true",
                    help="the kernels off: the array versions run instead")
parser.add_argument("--weights", help="a model.npz to start from (same config as the default)")
args = parser.parse_args()


def emulated_kernels_on_the_strict_device():
    """cuda_kernels.py as on CuPy, with strict arrays and the CPU emulator of RawKernel."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import cuda_emulator

    class CountedKernel(cuda_emulator.EmulatedRawKernel):
        def __call__(self, grid, block, kernel_args, shared_mem=0):
            strict.note_device_op(f"cuda_kernels.{self.name}")          # one launch
            host = tuple(strict.unwrap(a, allow_host=True) for a in kernel_args)
            return super().__call__(grid, block, host, shared_mem)

    sys.modules["cupy"] = cuda_emulator.fake_cupy(strict.xp, CountedKernel)
    enabled = lambda x: isinstance(x, strict.StrictArray)                # noqa: E731
    cuda_kernels.kernels_enabled = enabled
    boxes.kernels_enabled = enabled


if not args.array_versions:
    emulated_kernels_on_the_strict_device()
cfg, data, model, optimizer, _ = default_step_setup("strict", num_images=64)
if args.weights:
    model.load_state_dict(FasterRCNN.load(args.weights).state_dict())
train_step(model, optimizer, data, cfg, 0)            # first step: momentum buffers are made
with strict.count_device_ops() as counts:
    for it in range(1, 1 + args.steps):
        train_step(model, optimizer, data, cfg, it)


def report(title, counter):
    rows = {k: v / args.steps for k, v in counter.items()}
    kernels = sum(v for k, v in rows.items() if k.startswith("cuda_kernels.") and k.endswith("_kernel"))
    print(f"{title} per default train step (mean of iterations 1-{args.steps}, "
          f"{'array versions' if args.array_versions else 'CUDA kernels emulated'}): "
          f"{sum(rows.values()):.0f}" + (f" ({kernels:.0f} of them CUDA kernel launches)" if kernels else ""))
    by_module = {}
    for k, v in rows.items():
        by_module[k.split(".")[0]] = by_module.get(k.split(".")[0], 0) + v
    print("  by module: " + ", ".join(f"{k} {v:.0f}" for k, v in
                                      sorted(by_module.items(), key=lambda kv: -kv[1])))
    print(f"  by function (top {args.top}):")
    for k, v in sorted(rows.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"    {v:8.1f}  {k}")
    print()


report("device operations", counts.ops)
report("syncs (the host waits for the device)", counts.syncs)
