"""Where does a training step spend its time? cProfile over N steps of the default detector.

    python scripts/profile_train_step.py [--device cuda] [--steps 100] [--top 35]
    python scripts/profile_train_step.py --device cuda --weights data/shapes_model.npz

--weights starts from a trained model (the shipped one: late training) instead of a fresh one:
on the H100 (2026-11-25, commit e022830) the default training ran at about 20.5 iterations/s
near its end (48.8 ms per iteration) while the bench's step from a fresh model took 29.4 ms.
On the H200 (2026-11-26, commit 13fa58a) the iterations took 18-19 ms (median) from the first to
the last, and the trained model's step 19.2 ms under this profiler, so there the state did not
matter.

On CuPy, Python-level time lands where the host waits for the GPU (float(), int(), nonzero,
.get()), so a function high in 'tottime' is either slow Python or a synchronisation point.
"""
import argparse
import cProfile
import pstats
import time

from minifrcnn.backend import keep_freed_memory
from minifrcnn.bench import default_step_setup
from minifrcnn.model import FasterRCNN
from minifrcnn.train import train_step

parser = argparse.ArgumentParser()
parser.add_argument("--device", default="cpu")
parser.add_argument("--steps", type=int, default=100)
parser.add_argument("--top", type=int, default=35)
parser.add_argument("--weights", help="a model.npz to start from (same config as the default)")
args = parser.parse_args()
keep_freed_memory()                                   # as the command line and the bench do
cfg, data, model, optimizer, _ = default_step_setup(args.device, num_images=64)
if args.weights:
    model.load_state_dict(FasterRCNN.load(args.weights).state_dict())
for it in range(5):                                   # warm-up: kernel compilation, memory pool
    train_step(model, optimizer, data, cfg, it)
profiler = cProfile.Profile()
t0 = time.perf_counter()
profiler.enable()
for it in range(5, 5 + args.steps):
    train_step(model, optimizer, data, cfg, it)
profiler.disable()
print(f"{args.device}: {1e3 * (time.perf_counter() - t0) / args.steps:.2f} ms per train step "
      f"(under cProfile) over {args.steps} steps")
stats = pstats.Stats(profiler)
stats.sort_stats("tottime").print_stats(args.top)
stats.sort_stats("cumulative").print_stats(args.top)
