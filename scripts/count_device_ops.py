"""How many device operations (a proxy for GPU kernel launches) does one training step make?

    python scripts/count_device_ops.py [--steps 5] [--top 30]

Runs the default detector's train step on the strict device (NumPy underneath, CuPy's rules on
top; see minifrcnn/strict.py) under strict.count_device_ops() and prints the average count per
step, by module and by function. On a GPU each operation is at least one kernel launch costing
the host some microseconds, which for the small default detector is what sets the step time.
On the strict device im2col/col2im, RoI pooling and NMS run their array versions; on CuPy the
CUDA kernels replace those (cuda_kernels.REPLACED_ARRAY_VERSIONS), so their share is given apart.
"""
import argparse
from collections import Counter

from minifrcnn import strict
from minifrcnn.bench import default_step_setup
from minifrcnn.ops.cuda_kernels import REPLACED_ARRAY_VERSIONS
from minifrcnn.train import train_step

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--top", type=int, default=30)
args = parser.parse_args()
cfg, data, model, optimizer, _ = default_step_setup("strict", num_images=64)
train_step(model, optimizer, data, cfg, 0)            # first step: momentum buffers are made
with strict.count_device_ops() as counts:
    for it in range(1, 1 + args.steps):
        train_step(model, optimizer, data, cfg, it)


def per_step(counter):
    return {k: v / args.steps for k, v in counter.items()}


def report(title, counter):
    rows = per_step(counter)
    replaced = sum(v for k, v in rows.items() if k in REPLACED_ARRAY_VERSIONS)
    print(f"{title} per default train step (mean of {args.steps} steps): "
          f"{sum(rows.values()):.0f}, of which {replaced:.0f} in array versions that CUDA "
          f"kernels replace on CuPy ({', '.join(sorted(REPLACED_ARRAY_VERSIONS))})")
    by_module = Counter()
    for k, v in rows.items():
        by_module[k.split(".")[0]] += v
    print("  by module: " + ", ".join(f"{k} {v:.0f}" for k, v in by_module.most_common()))
    print(f"  by function (top {args.top}):")
    for k, v in sorted(rows.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"    {v:8.1f}  {k}")
    print()


report("device operations", counts.ops)
report("syncs (the host waits for the device)", counts.syncs)
