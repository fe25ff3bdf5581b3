"""`python -m minifrcnn bench`: time the ops, and the whole detector, on the shapes it uses.

Prints a markdown table: one row per case, the median wall time in milliseconds over several
repeats. Timings are measurements of this machine only: run it, don't quote it blindly.

The same table with PyTorch's columns beside ours (the same computation through torch on the
same thread count, and the ratio ours / torch) comes from benchmarks/bench_vs_torch.py at the
repository root: torch is never a dependency, so its code lives beside the package, not in it.
That script hands run_bench a "twin": an object that, asked for one of our cases (twin.conv,
twin.pool, twin.linear, twin.roi, twin.nms, twin.train_step), returns a function running the
same computation in its library, or None.

Groups (--only picks some):
    conv, pool, linear, roi, nms   one op, forward + backward, at the default detector's shapes
    step    the default detector (Config.small, 4 classes) at batch 2 x 128x128: the training forward,
            backward, the network part of a training step (the twin's: same layers, weights,
            batch and samples), the whole train step, and predict on 8 images (images/s), each
            with the peak memory one call allocates
    vgg16   the paper's VGG-16 Faster R-CNN (Config(), 20 classes) on one 600x1000 image:
            training forward, backward, the whole train step, and predict with 300 proposals
            (images/s); repeat 1 on a CPU, where each call takes seconds (a few minutes in all)
The step and vgg16 groups run on NumPy and, with --device cuda, on CuPy as well. The CUDA
kernels of ops/cuda_kernels.py are used on CuPy; MINIFRCNN_CUDA_KERNELS=0 times the array
versions instead.

    python -m minifrcnn bench                   # NumPy, float32
    python -m minifrcnn bench --device cuda     # CuPy (synchronised timing)
    python -m minifrcnn bench --repeat 20 --only conv step
    python benchmarks/bench_vs_torch.py --device cuda   # the same, PyTorch's columns beside ours
"""
import os
import platform
import time
import tracemalloc
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from . import ops
from .backend import array_module_for, keep_freed_memory, resolve_device


def _is_cupy(xp):
    return hasattr(xp, "cuda")                         # numpy and strict.xp have no .cuda


def _sync(xp):
    """Wait for the GPU so a timer measures the work, not the launch (no-op on NumPy)."""
    if _is_cupy(xp):
        xp.cuda.Stream.null.synchronize()


def median_time(fn, xp=np, repeat=10, warmup=2, setup=None):
    """Median wall time of fn() in seconds after `warmup` untimed calls.

    setup: called (untimed) before every call of fn, e.g. the forward pass before a backward.
    """
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    _sync(xp)
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
            _sync(xp)
        t0 = time.perf_counter()
        fn()
        _sync(xp)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def peak_memory_mb(fn, xp=np, setup=None):
    """Peak memory that one call of fn() allocates on top of what exists before it, in MiB.

    NumPy: tracemalloc's peak (NumPy reports its array buffers to tracemalloc). CuPy: the growth
    of the memory pool, which keeps the blocks it has handed out, so about the high-water mark.
    """
    if setup is not None:
        setup()
    if _is_cupy(xp):
        pool = xp.get_default_memory_pool()
        _sync(xp)
        pool.free_all_blocks()
        before = pool.total_bytes()
        fn()
        _sync(xp)
        return (pool.total_bytes() - before) / 2 ** 20
    tracemalloc.start()
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak / 2 ** 20


@dataclass
class Case:
    """One row of the table. The op groups yield plain (name, run, twin_run) tuples."""
    name: str
    run: Callable                          # the timed call
    twin_run: Optional[Callable] = None    # the same computation by the twin (None: no twin)
    setup: Optional[Callable] = None       # untimed, before every timed call
    images: int = 0                        # > 0: also print images per second
    memory: bool = False                   # also print the peak memory of one call
    repeat: Optional[int] = None           # overrides --repeat (VGG-16 on a CPU: 1)
    warmup: Optional[int] = None
    xp: object = None                      # the array module to synchronise (None: the device's)
    note: str = ""                         # printed once under the table


# The stride-8 "small" detector with 7 x 7 RoI pooling (the default until 2026-12; kept so that
# the recorded runs in docs/benchmarks stay comparable) at batch 2 of 128x128 images: backbone
# convs (3x3, pad 1), the RPN's 3x3 conv, the three 2x2 max-pools, and the Fast R-CNN head's fc
# layers (2 images x 128 RoIs = 256 rows, 128*7*7 = 6272 inputs, 256 hidden, 5 classes).
CONV_SHAPES = [((2, 3, 128, 128), 32), ((2, 32, 64, 64), 64),
               ((2, 64, 32, 32), 128), ((2, 128, 16, 16), 128)]
POOL_SHAPES = [(2, 32, 128, 128), (2, 64, 64, 64), (2, 128, 32, 32)]
LINEAR_SHAPES = [(256, 6272, 256), (256, 256, 256), (256, 256, 25)]


def conv_cases(xp, dtype, rng, twin=None):
    for x_shape, f in CONV_SHAPES:
        x = xp.asarray(rng.standard_normal(x_shape), dtype=dtype)
        w = xp.asarray(rng.standard_normal((f, x_shape[1], 3, 3)) * 0.1, dtype=dtype)
        b = xp.zeros(f, dtype=dtype)

        def run(x=x, w=w, b=b):
            out, cache = ops.conv2d_forward(x, w, b, stride=1, pad=1)
            return ops.conv2d_backward(out, cache)

        yield (f"conv2d 3x3 fwd+bwd {x_shape}->{f}", run,
               twin.conv(x_shape, f) if twin else None)


def pool_cases(xp, dtype, rng, twin=None):
    for shape in POOL_SHAPES:
        x = xp.asarray(rng.standard_normal(shape), dtype=dtype)

        def run(x=x):
            out, cache = ops.max_pool2d_forward(x, 2, 2)
            return ops.max_pool2d_backward(out, cache)

        yield f"max_pool2d 2x2 fwd+bwd {shape}", run, twin.pool(shape) if twin else None


def linear_cases(xp, dtype, rng, twin=None):
    for n, d_in, d_out in LINEAR_SHAPES:
        x = xp.asarray(rng.standard_normal((n, d_in)), dtype=dtype)
        w = xp.asarray(rng.standard_normal((d_in, d_out)) * 0.01, dtype=dtype)
        b = xp.zeros(d_out, dtype=dtype)

        def run(x=x, w=w, b=b):
            out, cache = ops.linear_forward(x, w, b)
            return ops.linear_backward(out, cache)

        yield (f"linear fwd+bwd ({n},{d_in})->{d_out}", run,
               twin.linear(n, d_in, d_out) if twin else None)


def proposal_like_rois(rng, k, img_h, img_w, min_side, max_side):
    """(k, 5) RoIs on image 0: uniform centres, log-uniform sides, clipped to the image."""
    cx, cy = rng.uniform(0, img_w, k), rng.uniform(0, img_h, k)
    w = np.exp(rng.uniform(np.log(min_side), np.log(max_side), k))
    h = np.exp(rng.uniform(np.log(min_side), np.log(max_side), k))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    boxes = np.clip(boxes, 0, [img_w - 1, img_h - 1, img_w - 1, img_h - 1])
    return np.concatenate([np.zeros((k, 1)), boxes], axis=1)


def roi_cases(xp, dtype, rng, twin=None):
    """The issue's target shape: 128 RoIs, 7x7, on a (1, 256, 38, 50) map (600x800 at stride 16)."""
    feat = xp.asarray(rng.standard_normal((1, 256, 38, 50)), dtype=dtype)
    for name, (lo, hi) in {"proposal-like": (32, 512), "large": (256, 800)}.items():
        rois = xp.asarray(proposal_like_rois(rng, 128, 38 * 16, 50 * 16, lo, hi), dtype=dtype)
        for op, forward, backward in [("roi_pool", ops.roi_pool_forward, ops.roi_pool_backward),
                                      ("roi_align", ops.roi_align_forward, ops.roi_align_backward)]:
            def run(forward=forward, backward=backward, rois=rois):
                out, cache = forward(feat, rois, (7, 7), 1 / 16)
                return backward(out, cache)

            yield (f"{op} fwd+bwd 128 {name} RoIs (1,256,38,50)", run,
                   twin.roi(op, feat.shape, rois) if twin else None)


def rpn_like_boxes(rng, n, img_h=600, img_w=1000, stride=16):
    """n boxes as the RPN's proposal layer sees them before NMS: the paper's 9 anchors over a
    600 x 1000 image, randomly chosen and jittered by small deltas, clipped to the image."""
    from .anchors import generate_base_anchors, grid_anchors
    from .boxes import clip_boxes, decode
    anchors = grid_anchors(generate_base_anchors(), img_h // stride, img_w // stride, stride)
    pick = rng.choice(len(anchors), size=n, replace=False)
    deltas = rng.normal(0, 0.1, (n, 4))
    return clip_boxes(decode(anchors[pick].astype(np.float64), deltas), (img_h, img_w))


def nms_cases(xp, dtype, rng, twin=None):
    """NMS at 0.7 over 6000 pre-NMS proposals (the paper's test-time pre-NMS top-N)."""
    from .boxes import nms
    boxes = xp.asarray(rpn_like_boxes(rng, 6000), dtype=dtype)
    scores = xp.asarray(rng.random(6000), dtype=dtype)
    yield ("nms 6000 RPN-like boxes, IoU 0.7", (lambda: nms(boxes, scores, 0.7)),
           twin.nms(boxes, scores, 0.7) if twin else None)


def _bench_devices(xp):
    """The step and vgg16 groups run on NumPy, and on the requested device when it is another."""
    if _is_cupy(xp):
        return [("cpu", np), ("cuda", xp)]
    if xp is not np:                                   # the strict test device's strict.xp
        return [("cpu", np), ("strict", xp)]
    return [("cpu", np)]


def default_step_setup(device, config=None, num_images=16):
    """The default detector (Config.small for the 4-class shapes data) on `device`, its
    optimiser (make_optimizer: AdamW), a shapes data set and one prepared batch of 2 images:
    what the step cases time."""
    from .config import Config
    from .data import shapes
    from .model import FasterRCNN
    from .optim import make_optimizer
    from .data.transforms import prepare_batch
    from .backend import to_device
    cfg = config or Config.small(num_classes=4, class_names=tuple(shapes.CLASS_NAMES))
    data = shapes.make_split("train", num_images, size=cfg.image_min_size)
    model = FasterRCNN(cfg).to(device)
    optimizer = make_optimizer(model.parameters(), cfg)
    images, sizes, boxes, labels, scales = prepare_batch(
        data[:cfg.images_per_batch], cfg, np.random.default_rng(0))
    batch = (to_device(images, device), sizes, boxes, labels, scales)
    return cfg, data, model, optimizer, batch


def step_cases(xp, dtype, rng, config=None, twin=None):
    """The default detector at batch 2 x 128x128 (Config.small, 4 classes: the shapes setting);
    config replaces it (the tests time a tiny one)."""
    from .joint_training import JointTraining
    from .train import train_step
    for device, dev_xp in _bench_devices(xp):
        cfg, data, model, optimizer, batch = default_step_setup(device, config)
        images, sizes, boxes, labels, scales = batch
        step = JointTraining(model)
        tag = f"[{device}]"

        def forward(step=step):
            return step.forward(images, sizes, boxes, labels, np.random.default_rng(0),
                                scales=scales)

        samples = forward()[1]                 # one fixed sample of anchors and RoIs

        def network_step(model=model, step=step, optimizer=optimizer, samples=samples):
            model.zero_grad()
            step.forward(images, sizes, boxes, labels, None, scales=scales, samples=samples)
            step.backward()
            optimizer.step()

        counter = iter(range(10 ** 9))

        def whole_step(model=model, optimizer=optimizer):
            train_step(model, optimizer, data, cfg, next(counter))

        pictures = [s["image"] for s in data[:8]]
        twin_run, note = None, ("network only: the anchor labels and the sampled RoIs of one "
                                "batch are held fixed, so no sampling or NMS is timed")
        if twin is not None and device == twin.device:   # same device; built when first timed
            twin_run = _lazy(lambda m=model, s=samples: twin.train_step(m, cfg, images, s))
            note += "; " + twin.train_step_note
        n = images.shape[0]
        size = f"{images.shape[2]}x{images.shape[3]}"
        yield Case(f"step {tag}: training forward (sampling + 4 losses), batch {n} x {size}",
                   forward, memory=True, xp=dev_xp)
        yield Case(f"step {tag}: backward", step.backward, setup=forward, memory=True, xp=dev_xp)
        yield Case(f"step {tag}: train step, network only (samples fixed): fwd + bwd + update",
                   network_step, twin_run=twin_run, memory=True, xp=dev_xp, note=note)
        yield Case(f"step {tag}: train step, whole: data prep + sampling + NMS + fwd + bwd + update",
                   whole_step, memory=True, xp=dev_xp)
        yield Case(f"step {tag}: predict, {len(pictures)} images {size}",
                   lambda m=model: m.predict(pictures),
                   images=len(pictures), memory=True, xp=dev_xp)


def vgg16_cases(xp, dtype, rng, twin=None):
    """The paper's VGG-16 detector (Config() defaults, 20 classes) at 600x1000: the training forward,
    backward and the whole train step on one image with three boxes (the paper's batch: 1
    image, 256 anchors, 2000 proposals, 128 RoIs), and predict with 300 proposals. One untimed
    call first; then 5 timed calls on a GPU, 1 on a CPU (each call takes seconds there)."""
    from .config import Config
    from .data.transforms import prepare_batch
    from .joint_training import JointTraining
    from .model import FasterRCNN
    from .optim import make_optimizer
    from .train import train_step
    from .backend import to_device
    image = rng.integers(0, 256, (600, 1000, 3), dtype=np.uint8)
    sample = {"image": image, "labels": np.array([3, 8, 15]),
              "boxes": np.array([[40, 60, 300, 420], [500, 100, 760, 300], [620, 350, 980, 590]],
                                dtype=np.float32)}
    for device, dev_xp in _bench_devices(xp):
        cfg = Config(num_classes=20)
        model = FasterRCNN(cfg).to(device)
        optimizer = make_optimizer(model.parameters(), cfg)               # Config(): SGD
        images, sizes, boxes, labels, scales = prepare_batch([sample], cfg,
                                                             np.random.default_rng(0))
        images = to_device(images, device)                                 # (1, 3, 600, 1000)
        counter = iter(range(10 ** 9))
        on_gpu = _is_cupy(dev_xp)
        # one untimed call first: page faults of the big buffers, kernel compiles on a GPU
        timing = dict(memory=True, repeat=5 if on_gpu else 1, warmup=1, xp=dev_xp)
        tag = f"vgg16 [{device}]"
        step = JointTraining(model)

        def forward(step=step, images=images, sizes=sizes, boxes=boxes, labels=labels,
                    scales=scales):
            return step.forward(images, sizes, boxes, labels, np.random.default_rng(0),
                                scales=scales)

        yield Case(f"{tag}: training forward (sampling + 4 losses), 1 image 600x1000", forward,
                   **timing)
        yield Case(f"{tag}: backward", step.backward, setup=forward, **timing)
        yield Case(f"{tag}: train step, whole, 1 image 600x1000",
                   lambda m=model, o=optimizer, c=cfg: train_step(m, o, [sample], c, next(counter)),
                   **timing)
        yield Case(f"{tag}: predict, 1 image 600x1000, {cfg.rpn_post_nms_top_n_test} proposals",
                   lambda m=model: m.predict([image]), images=1, **timing)


CASES = {"conv": conv_cases, "pool": pool_cases, "linear": linear_cases, "roi": roi_cases,
         "nms": nms_cases, "step": step_cases, "vgg16": vgg16_cases}


def _lazy(make):
    """A function that calls make() once, on its first call, and then calls what it made."""
    made = []

    def call():
        if not made:
            made.append(make())
        return made[0]()
    return call


def machine_description(xp):
    """One line naming the machine the numbers came from."""
    desc = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores visible"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    desc = f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
                    break
    except OSError:
        pass
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    desc += f"; BLAS threads {threads or 'default'}"
    if _is_cupy(xp):
        desc += f"; GPU {xp.cuda.runtime.getDeviceProperties(0)['name'].decode()}"
    return desc


def run_bench(device=None, repeat=10, only=None, twin=None, out=print):
    """Time every case and print a markdown table. Returns the rows as dicts.

    twin: None, or the same cases in another library, timed beside ours (its columns and the
    ratio ours / twin): benchmarks/bench_vs_torch.py passes PyTorch's. A twin has a `name` (the
    column's title), a `device` ("cpu" or "cuda": the step case it twins), a `description` for
    the machine line, a `train_step_note`, and one method per case (conv, pool, linear, roi,
    nms, train_step) returning the function to time, or None where it has no counterpart.
    """
    keep_freed_memory()                            # as the command line: see its docstring
    device = resolve_device(device)
    xp = array_module_for(device)
    rng = np.random.default_rng(0)
    out(f"machine: {machine_description(xp)}; device {device}; numpy {np.__version__}"
        + (f"; {twin.description}" if twin else ""))
    header = "| op | ours (ms) |" + (f" {twin.name} (ms) | ours / {twin.name} |" if twin else "")
    out(header + " images/s | peak memory (MiB) |")
    out("|---|---|" + ("---|---|" if twin else "") + "---|---|")
    rows, notes = [], []
    for group, make_cases in CASES.items():
        if only and group not in only:
            continue
        for case in make_cases(xp, np.float32, rng, twin=twin):
            case = case if isinstance(case, Case) else Case(*case)
            rows.append(_run_case(case, xp, repeat, twin, out))
            if case.note and case.note not in notes:
                notes.append(case.note)
    if any("peak_mib" in r for r in rows):
        notes.append("peak memory: what one call allocates on top of what exists before it "
                     "(NumPy: tracemalloc's peak; CuPy: the growth of the memory pool)")
    if notes:
        out("")
        for note in notes:
            out(f"- {note}")
    return rows


def _run_case(case, xp, repeat, twin, out):
    """Time one case (and its twin's run), print its table line, return its row."""
    case_xp = case.xp if case.xp is not None else xp
    warmup = 2 if case.warmup is None else case.warmup
    ours = median_time(case.run, case_xp, case.repeat or repeat, warmup, case.setup)
    row = {"op": case.name, "ours_ms": ours * 1e3}
    line = f"| {case.name} | {ours * 1e3:.2f} |"
    if twin is not None and case.twin_run is not None:
        # One block after the other, not in turns: called in turns, NumPy's BLAS threads and
        # torch's thread pool slow each other down (measured: torch's step 2x slower).
        theirs = median_time(case.twin_run, np, case.repeat or repeat, warmup)
        row[f"{twin.name}_ms"] = theirs * 1e3
        line += f" {theirs * 1e3:.2f} | {ours / theirs:.2f} |"
    elif twin is not None:
        line += " | |"
    if case.images:
        row["images_per_s"] = case.images / ours
        line += f" {row['images_per_s']:.2f} |"
    else:
        line += " |"
    if case.memory:
        row["peak_mib"] = peak_memory_mb(case.run, case_xp, case.setup)
        line += f" {row['peak_mib']:.0f} |"
    else:
        line += " |"
    out(line)
    return row
