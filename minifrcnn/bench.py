"""`python -m minifrcnn bench`: time the ops on the shapes the default detector uses.

Prints a markdown table: one row per op and shape, the median time of forward + backward in
milliseconds over several repeats, and, when PyTorch happens to be installed (it is never a
dependency), the same computation through torch on the same thread count and the ratio
ours / torch. Timings are measurements of this machine only: run it, don't quote it blindly.

    python -m minifrcnn bench                   # NumPy, float32
    python -m minifrcnn bench --device cuda     # CuPy (synchronised timing)
    python -m minifrcnn bench --repeat 20 --only conv
"""
import platform
import time

import numpy as np

from . import ops
from .backend import array_module_for, resolve_device


def _sync(xp):
    """Wait for the GPU so a timer measures the work, not the launch (no-op on NumPy)."""
    if xp is not np:
        xp.cuda.Stream.null.synchronize()


def median_time(fn, xp=np, repeat=10, warmup=2):
    """Median wall time of fn() in seconds after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(xp)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(xp)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# The default ("small") detector at batch 2 of 128x128 images: backbone convs (3x3, pad 1),
# the RPN's 3x3 conv, the three 2x2 max-pools, and the Fast R-CNN head's fc layers
# (2 images x 128 RoIs = 256 rows, 128*7*7 = 6272 inputs, 256 hidden, 5 classes).
CONV_SHAPES = [((2, 3, 128, 128), 32), ((2, 32, 64, 64), 64),
               ((2, 64, 32, 32), 128), ((2, 128, 16, 16), 128)]
POOL_SHAPES = [(2, 32, 128, 128), (2, 64, 64, 64), (2, 128, 32, 32)]
LINEAR_SHAPES = [(256, 6272, 256), (256, 256, 256), (256, 256, 25)]


def conv_cases(xp, dtype, rng):
    for x_shape, f in CONV_SHAPES:
        x = xp.asarray(rng.standard_normal(x_shape), dtype=dtype)
        w = xp.asarray(rng.standard_normal((f, x_shape[1], 3, 3)) * 0.1, dtype=dtype)
        b = xp.zeros(f, dtype=dtype)

        def run(x=x, w=w, b=b):
            out, cache = ops.conv2d_forward(x, w, b, stride=1, pad=1)
            return ops.conv2d_backward(out, cache)

        def torch_run(x_shape=x_shape, f=f):
            return _torch_conv(x_shape, f)

        yield f"conv2d 3x3 fwd+bwd {x_shape}->{f}", run, torch_run


def pool_cases(xp, dtype, rng):
    for shape in POOL_SHAPES:
        x = xp.asarray(rng.standard_normal(shape), dtype=dtype)

        def run(x=x):
            out, cache = ops.max_pool2d_forward(x, 2, 2)
            return ops.max_pool2d_backward(out, cache)

        def torch_run(shape=shape):
            return _torch_pool(shape)

        yield f"max_pool2d 2x2 fwd+bwd {shape}", run, torch_run


def linear_cases(xp, dtype, rng):
    for n, d_in, d_out in LINEAR_SHAPES:
        x = xp.asarray(rng.standard_normal((n, d_in)), dtype=dtype)
        w = xp.asarray(rng.standard_normal((d_in, d_out)) * 0.01, dtype=dtype)
        b = xp.zeros(d_out, dtype=dtype)

        def run(x=x, w=w, b=b):
            out, cache = ops.linear_forward(x, w, b)
            return ops.linear_backward(out, cache)

        def torch_run(n=n, d_in=d_in, d_out=d_out):
            return _torch_linear(n, d_in, d_out)

        yield f"linear fwd+bwd ({n},{d_in})->{d_out}", run, torch_run


def proposal_like_rois(rng, k, img_h, img_w, min_side, max_side):
    """(k, 5) RoIs on image 0: uniform centres, log-uniform sides, clipped to the image."""
    cx, cy = rng.uniform(0, img_w, k), rng.uniform(0, img_h, k)
    w = np.exp(rng.uniform(np.log(min_side), np.log(max_side), k))
    h = np.exp(rng.uniform(np.log(min_side), np.log(max_side), k))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    boxes = np.clip(boxes, 0, [img_w - 1, img_h - 1, img_w - 1, img_h - 1])
    return np.concatenate([np.zeros((k, 1)), boxes], axis=1)


def roi_cases(xp, dtype, rng):
    """The issue's target shape: 128 RoIs, 7x7, on a (1, 256, 38, 50) map (600x800 at stride 16)."""
    feat = xp.asarray(rng.standard_normal((1, 256, 38, 50)), dtype=dtype)
    for name, (lo, hi) in {"proposal-like": (32, 512), "large": (256, 800)}.items():
        rois = xp.asarray(proposal_like_rois(rng, 128, 38 * 16, 50 * 16, lo, hi), dtype=dtype)
        for op, forward, backward in [("roi_pool", ops.roi_pool_forward, ops.roi_pool_backward),
                                      ("roi_align", ops.roi_align_forward, ops.roi_align_backward)]:
            def run(forward=forward, backward=backward, rois=rois):
                out, cache = forward(feat, rois, (7, 7), 1 / 16)
                return backward(out, cache)

            yield f"{op} fwd+bwd 128 {name} RoIs (1,256,38,50)", run, None


def rpn_like_boxes(rng, n, img_h=600, img_w=1000, stride=16):
    """n boxes as the RPN's proposal layer sees them before NMS: the paper's 9 anchors over a
    600 x 1000 image, randomly chosen and jittered by small deltas, clipped to the image."""
    from .anchors import generate_base_anchors, grid_anchors
    from .boxes import clip_boxes, decode
    anchors = grid_anchors(generate_base_anchors(), img_h // stride, img_w // stride, stride)
    pick = rng.choice(len(anchors), size=n, replace=False)
    deltas = rng.normal(0, 0.1, (n, 4))
    return clip_boxes(decode(anchors[pick].astype(np.float64), deltas), (img_h, img_w))


def nms_cases(xp, dtype, rng):
    """NMS at 0.7 over 6000 pre-NMS proposals (the paper's test-time pre-NMS top-N)."""
    from .boxes import nms
    boxes = xp.asarray(rpn_like_boxes(rng, 6000), dtype=dtype)
    scores = xp.asarray(rng.random(6000), dtype=dtype)
    yield "nms 6000 RPN-like boxes, IoU 0.7", (lambda: nms(boxes, scores, 0.7)), None


CASES = {"conv": conv_cases, "pool": pool_cases, "linear": linear_cases, "roi": roi_cases,
         "nms": nms_cases}


# --- PyTorch side by side (only if torch is importable; never a dependency) ----------------
_TORCH_CACHE = {}


def _torch():
    try:
        import torch
    except Exception:
        return None
    return torch


def _torch_prepared(key, make):
    if key not in _TORCH_CACHE:
        _TORCH_CACHE[key] = make()
    return _TORCH_CACHE[key]


def _torch_conv(x_shape, f):
    torch = _torch()

    def make():
        x = torch.randn(x_shape, requires_grad=True)
        conv = torch.nn.Conv2d(x_shape[1], f, 3, padding=1)
        return x, conv

    x, conv = _torch_prepared(("conv", x_shape, f), make)
    out = conv(x)
    out.backward(out.detach())


def _torch_pool(shape):
    torch = _torch()
    x = _torch_prepared(("pool", shape), lambda: torch.randn(shape, requires_grad=True))
    out = torch.nn.functional.max_pool2d(x, 2, 2)
    out.backward(out.detach())


def _torch_linear(n, d_in, d_out):
    torch = _torch()

    def make():
        return torch.randn(n, d_in, requires_grad=True), torch.nn.Linear(d_in, d_out)

    x, lin = _torch_prepared(("linear", n, d_in, d_out), make)
    out = lin(x)
    out.backward(out.detach())


def machine_description(xp):
    """One line naming the machine the numbers came from."""
    import os
    desc = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores visible"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    desc = f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
                    break
    except OSError:
        pass
    if xp is not np:
        desc += f"; GPU {xp.cuda.runtime.getDeviceProperties(0)['name'].decode()}"
    return desc


def run_bench(device=None, repeat=10, only=None, with_torch=True, out=print):
    """Time every case and print a markdown table. Returns the rows as dicts."""
    device = resolve_device(device)
    xp = array_module_for(device)
    rng = np.random.default_rng(0)
    torch = _torch() if (with_torch and device == "cpu") else None
    if torch is not None:
        import os
        torch.set_num_threads(os.cpu_count() or 1)
    out(f"machine: {machine_description(xp)}; device {device}; numpy {np.__version__}"
        + (f"; torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else ""))
    header = "| op | ours (ms) |" + (" torch (ms) | ours / torch |" if torch else "")
    out(header)
    out("|---|---|" + ("---|---|" if torch else ""))
    rows = []
    for group, make_cases in CASES.items():
        if only and group not in only:
            continue
        for name, fn, torch_fn in make_cases(xp, np.float32, rng):
            ours = median_time(fn, xp, repeat)
            row = {"op": name, "ours_ms": ours * 1e3}
            line = f"| {name} | {ours * 1e3:.2f} |"
            if torch is not None and torch_fn is not None:
                theirs = median_time(torch_fn, np, repeat)
                row["torch_ms"] = theirs * 1e3
                line += f" {theirs * 1e3:.2f} | {ours / theirs:.2f} |"
            elif torch is not None:
                line += " | |"
            rows.append(row)
            out(line)
    return rows
