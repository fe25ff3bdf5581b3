"""`python -m minifrcnn bench`: time the ops, and the whole detector, on the shapes it uses.

Prints a markdown table: one row per case, the median wall time in milliseconds over several
repeats, and, when PyTorch happens to be installed (it is never a dependency), the same
computation through torch on the same thread count and the ratio ours / torch. Timings are
measurements of this machine only: run it, don't quote it blindly.

Groups (--only picks some):
    conv, pool, linear, roi, nms   one op, forward + backward, at the default detector's shapes
    step    the default detector (Config.small, 4 classes) at batch 2 x 128x128: forward_train,
            backward, the network part of a training step (torch side by side: same layers,
            weights, batch and samples), the whole train step, and predict on 8 images
            (images/s), each with the peak memory one call allocates
    vgg16   the paper's VGG-16 Faster R-CNN (Config(), 20 classes) on one 600x1000 image:
            forward_train, backward, the whole train step, and predict with 300 proposals
            (images/s); repeat 1 on a CPU, where each call takes seconds (a few minutes in all)
The step and vgg16 groups run on NumPy and, with --device cuda, on CuPy as well.
With --device cuda the torch twins run on the GPU too (torch.cuda), and RoI pooling, RoIAlign
and NMS are compared with torchvision.ops when torchvision is installed. The CUDA kernels of
ops/cuda_kernels.py are used on CuPy; MINIFRCNN_CUDA_KERNELS=0 times the array versions instead.

    python -m minifrcnn bench                   # NumPy, float32
    python -m minifrcnn bench --device cuda     # CuPy (synchronised timing)
    python -m minifrcnn bench --repeat 20 --only conv step
"""
import os
import platform
import time
import tracemalloc
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from . import ops
from .backend import array_module_for, resolve_device


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
    """One row of the table. The op groups yield plain (name, run, torch_run) tuples."""
    name: str
    run: Callable                          # the timed call
    torch_run: Optional[Callable] = None   # the same computation in PyTorch (None: no torch)
    setup: Optional[Callable] = None       # untimed, before every timed call
    images: int = 0                        # > 0: also print images per second
    memory: bool = False                   # also print the peak memory of one call
    repeat: Optional[int] = None           # overrides --repeat (VGG-16 on a CPU: 1)
    warmup: Optional[int] = None
    xp: object = None                      # the array module to synchronise (None: the device's)
    note: str = ""                         # printed once under the table


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

            def torch_run(op=op, rois=rois):
                return _torchvision_roi(op, feat.shape, rois)

            yield (f"{op} fwd+bwd 128 {name} RoIs (1,256,38,50)", run,
                   torch_run if _torchvision() is not None else None)


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
    torch_run = (lambda: _torchvision_nms(boxes, scores, 0.7)) if _torchvision() else None
    yield "nms 6000 RPN-like boxes, IoU 0.7", (lambda: nms(boxes, scores, 0.7)), torch_run


def _bench_devices(xp):
    """The step and vgg16 groups run on NumPy, and on the requested device when it is another."""
    if _is_cupy(xp):
        return [("cpu", np), ("cuda", xp)]
    if xp is not np:                                   # the strict test device's strict.xp
        return [("cpu", np), ("strict", xp)]
    return [("cpu", np)]


def default_step_setup(device, config=None, num_images=16):
    """The default detector (Config.small for the 4-class shapes data) on `device`, its SGD,
    a shapes data set and one prepared batch of 2 images: what the step cases time."""
    from .config import Config
    from .data import shapes
    from .model import FasterRCNN
    from .optim import SGD
    from .train import prepare_batch
    from .backend import to_device
    cfg = config or Config.small(num_classes=4, class_names=tuple(shapes.CLASS_NAMES))
    data = shapes.make_split("train", num_images, size=cfg.image_min_size)
    model = FasterRCNN(cfg).to(device)
    optimizer = SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                    weight_decay=cfg.weight_decay)
    images, sizes, boxes, labels, scales = prepare_batch(
        data[:cfg.images_per_batch], cfg, np.random.default_rng(0))
    batch = (to_device(images, device), sizes, boxes, labels, scales)
    return cfg, data, model, optimizer, batch


def step_cases(xp, dtype, rng, config=None):
    """The default detector at batch 2 x 128x128 (Config.small, 4 classes: the shapes setting);
    config replaces it (the tests time a tiny one)."""
    from .train import train_step
    for device, dev_xp in _bench_devices(xp):
        cfg, data, model, optimizer, batch = default_step_setup(device, config)
        images, sizes, boxes, labels, scales = batch
        tag = f"[{device}]"

        def forward(model=model):
            return model.forward_train(images, sizes, boxes, labels, np.random.default_rng(0),
                                       scales=scales)

        samples = forward()[1]                 # one fixed sample of anchors and RoIs

        def network_step(model=model, optimizer=optimizer, samples=samples):
            model.zero_grad()
            model.forward_train(images, sizes, boxes, labels, None, scales=scales, samples=samples)
            model.backward()
            optimizer.step()

        counter = iter(range(10 ** 9))

        def whole_step(model=model, optimizer=optimizer):
            train_step(model, optimizer, data, cfg, next(counter))

        pictures = [s["image"] for s in data[:8]]
        torch_run = None
        if device == _TORCH_DEVICE[0]:    # torch on the same device; built when first timed
            torch_run = _lazy(lambda m=model, s=samples: _torch_train_step(m, cfg, images, s))
        n = images.shape[0]
        size = f"{images.shape[2]}x{images.shape[3]}"
        yield Case(f"step {tag}: forward_train, batch {n} x {size}", forward, memory=True,
                   xp=dev_xp)
        yield Case(f"step {tag}: backward", model.backward, setup=forward, memory=True, xp=dev_xp)
        yield Case(f"step {tag}: train step, network only (samples fixed): fwd + bwd + SGD",
                   network_step, torch_run=torch_run, memory=True, xp=dev_xp, note=(
                       "network only: the anchor labels and the sampled RoIs of one batch are "
                       "held fixed, so no sampling or NMS is timed; the torch twin has the same "
                       "layers, weights (copied), batch, samples, losses and SGD, with RoI max "
                       "pooling as a loop of adaptive_max_pool2d over the RoIs on the CPU and "
                       "torchvision.ops.roi_pool on the GPU (the same bins)"))
        yield Case(f"step {tag}: train step, whole: data prep + sampling + NMS + fwd + bwd + SGD",
                   whole_step, memory=True, xp=dev_xp)
        yield Case(f"step {tag}: predict, {len(pictures)} images {size}",
                   lambda m=model: m.predict(pictures),
                   images=len(pictures), memory=True, xp=dev_xp)


def vgg16_cases(xp, dtype, rng):
    """The paper's VGG-16 detector (Config() defaults, 20 classes) at 600x1000: forward_train,
    backward and the whole train step on one image with three boxes (the paper's batch: 1
    image, 256 anchors, 2000 proposals, 128 RoIs), and predict with 300 proposals. One untimed
    call first; then 5 timed calls on a GPU, 1 on a CPU (each call takes seconds there)."""
    from .config import Config
    from .model import FasterRCNN
    from .optim import SGD
    from .train import prepare_batch, train_step
    from .backend import to_device
    image = rng.integers(0, 256, (600, 1000, 3), dtype=np.uint8)
    sample = {"image": image, "labels": np.array([3, 8, 15]),
              "boxes": np.array([[40, 60, 300, 420], [500, 100, 760, 300], [620, 350, 980, 590]],
                                dtype=np.float32)}
    for device, dev_xp in _bench_devices(xp):
        cfg = Config(num_classes=20)
        model = FasterRCNN(cfg).to(device)
        optimizer = SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                        weight_decay=cfg.weight_decay)
        images, sizes, boxes, labels, scales = prepare_batch([sample], cfg,
                                                             np.random.default_rng(0))
        images = to_device(images, device)                                 # (1, 3, 600, 1000)
        counter = iter(range(10 ** 9))
        on_gpu = _is_cupy(dev_xp)
        # one untimed call first: page faults of the big buffers, kernel compiles on a GPU
        timing = dict(memory=True, repeat=5 if on_gpu else 1, warmup=1, xp=dev_xp)
        tag = f"vgg16 [{device}]"

        def forward(model=model, images=images, sizes=sizes, boxes=boxes, labels=labels,
                    scales=scales):
            return model.forward_train(images, sizes, boxes, labels, np.random.default_rng(0),
                                       scales=scales)

        yield Case(f"{tag}: forward_train, 1 image 600x1000", forward, **timing)
        yield Case(f"{tag}: backward", model.backward, setup=forward, **timing)
        yield Case(f"{tag}: train step, whole, 1 image 600x1000",
                   lambda m=model, o=optimizer, c=cfg: train_step(m, o, [sample], c, next(counter)),
                   **timing)
        yield Case(f"{tag}: predict, 1 image 600x1000, {cfg.rpn_post_nms_top_n_test} proposals",
                   lambda m=model: m.predict([image]), images=1, **timing)


CASES = {"conv": conv_cases, "pool": pool_cases, "linear": linear_cases, "roi": roi_cases,
         "nms": nms_cases, "step": step_cases, "vgg16": vgg16_cases}


# --- PyTorch side by side (only if torch is importable; never a dependency) ----------------
_TORCH_CACHE = {}
_TORCH_DEVICE = ["cpu"]        # where the torch twins run: "cuda" when the bench runs on CuPy


def _torch_sync():
    """Wait for torch's GPU work, so the timer measures it (no-op on the CPU)."""
    if _TORCH_DEVICE[0] == "cuda":
        _torch().cuda.synchronize()


def _torch():
    try:
        import torch
    except Exception:
        return None
    return torch


def _torch_prepared(key, make):
    key = (_TORCH_DEVICE[0],) + tuple(key)
    if key not in _TORCH_CACHE:
        _TORCH_CACHE[key] = make()
    return _TORCH_CACHE[key]


def _torch_conv(x_shape, f):
    torch = _torch()

    def make():
        x = torch.randn(x_shape, device=_TORCH_DEVICE[0], requires_grad=True)
        conv = torch.nn.Conv2d(x_shape[1], f, 3, padding=1).to(_TORCH_DEVICE[0])
        return x, conv

    x, conv = _torch_prepared(("conv", x_shape, f), make)
    out = conv(x)
    out.backward(out.detach())
    _torch_sync()


def _torch_pool(shape):
    torch = _torch()
    x = _torch_prepared(("pool", shape), lambda: torch.randn(shape, device=_TORCH_DEVICE[0],
                                                             requires_grad=True))
    out = torch.nn.functional.max_pool2d(x, 2, 2)
    out.backward(out.detach())
    _torch_sync()


def _torch_linear(n, d_in, d_out):
    torch = _torch()

    def make():
        return (torch.randn(n, d_in, device=_TORCH_DEVICE[0], requires_grad=True),
                torch.nn.Linear(d_in, d_out).to(_TORCH_DEVICE[0]))

    x, lin = _torch_prepared(("linear", n, d_in, d_out), make)
    out = lin(x)
    out.backward(out.detach())
    _torch_sync()


def _torchvision():
    try:
        import torchvision.ops
    except Exception:                  # not installed, or a build that does not match torch
        return None
    return torchvision


def _as_torch(a):
    """Our array (NumPy or CuPy) as a torch tensor on the torch twins' device (a copy)."""
    from .backend import to_numpy
    return _torch().from_numpy(to_numpy(a).copy()).to(_TORCH_DEVICE[0])


def _torchvision_roi(op, feat_shape, rois):
    """torchvision.ops.roi_pool / roi_align fwd+bwd on the same RoIs (torchvision installed)."""
    tv = _torchvision()
    torch = _torch()
    feat = _torch_prepared(("roi_feat", tuple(feat_shape)),
                           lambda: torch.randn(tuple(feat_shape), device=_TORCH_DEVICE[0],
                                               requires_grad=True))
    boxes = _torch_prepared(("rois", id(rois)), lambda: _as_torch(rois))
    if op == "roi_pool":
        out = tv.ops.roi_pool(feat, boxes, (7, 7), 1 / 16)
    else:
        out = tv.ops.roi_align(feat, boxes, (7, 7), 1 / 16, sampling_ratio=2)
    out.backward(out.detach())
    _torch_sync()


def _torchvision_nms(boxes, scores, threshold):
    """torchvision.ops.nms on the same boxes (torchvision installed)."""
    tv = _torchvision()
    b = _torch_prepared(("nms_boxes", id(boxes)), lambda: _as_torch(boxes))
    s = _torch_prepared(("nms_scores", id(scores)), lambda: _as_torch(scores))
    keep = tv.ops.nms(b, s, threshold)
    _torch_sync()
    return keep


def _lazy(make):
    """A function that calls make() once, on its first call, and then calls what it made."""
    made = []

    def call():
        if not made:
            made.append(make())
        return made[0]()
    return call


def _torch_roi_max_pool(torch, feat, rois, output_size, spatial_scale):
    """RoI max pooling in torch ops, with ops/roi_pool.py's (Caffe's) bins.

    Inside the map, Caffe's bins of a roi_h x roi_w window (floor / ceil of ph * roi_h / PH) are
    exactly adaptive_max_pool2d's bins of that window; outside, the map is padded with -inf so
    a bin that is partly outside takes the max of its inside part and a bin wholly outside
    gives -inf, set to 0 as Caffe's empty bin. One adaptive_max_pool2d per RoI (a Python loop).
    feat: (N, C, H, W) tensor; rois: (K, 5) NumPy array (the batch index first).
    """
    F = torch.nn.functional
    from .ops.roi_pool import round_half_away
    corners = round_half_away(rois[:, 1:].astype(np.float32) * np.float32(spatial_scale))
    corners = corners.astype(np.int64)                                  # (K, 4) x0, y0, x1, y1
    H, W = feat.shape[2], feat.shape[3]
    pad = int(max(0, -corners.min(), (corners - [W - 1, H - 1, W - 1, H - 1]).max()))  # overhang
    padded = F.pad(feat, (pad, pad, pad, pad), value=float("-inf")) if pad else feat
    pooled = []
    for k in range(len(rois)):
        b = int(rois[k, 0])
        x0, y0, x1, y1 = (int(v) + pad for v in corners[k])
        window = padded[b, :, y0:y0 + max(y1 - y0 + 1, 1), x0:x0 + max(x1 - x0 + 1, 1)]
        pooled.append(F.adaptive_max_pool2d(window, output_size))       # (C, PH, PW)
    pooled = torch.stack(pooled)                                        # (K, C, PH, PW)
    return torch.where(torch.isneginf(pooled), torch.zeros_like(pooled), pooled)


def _torch_train_step(model, cfg, images, samples):
    """The network part of our training step in PyTorch, for a side-by-side time.

    The same layers as `model` (weights copied, so the losses agree with ours), the same batch,
    the same anchor labels, RoIs and targets, the paper's loss normalisation and SGD with
    momentum and weight decay (none on biases). Returns a function doing one step that
    returns the total loss as a float. Runs on the torch twins' device (_TORCH_DEVICE); on
    the GPU, RoI max pooling is torchvision.ops.roi_pool when torchvision is installed (the
    kernel ours follows), since a Python loop over the RoIs would time launches, not pooling.
    """
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional
    from .layers import Conv2d, MaxPool2d, ReLU
    from .backend import to_numpy

    def conv(layer):
        f, c, kh, kw = layer.weight.shape
        t = nn.Conv2d(c, f, (kh, kw), stride=layer.stride, padding=layer.pad)
        t.weight.data = torch.from_numpy(to_numpy(layer.weight.data).copy())
        t.bias.data = torch.from_numpy(to_numpy(layer.bias.data).copy())
        return t

    def linear(layer):
        d_in, d_out = layer.weight.shape
        t = nn.Linear(d_in, d_out)
        t.weight.data = torch.from_numpy(to_numpy(layer.weight.data).T.copy())   # ours is (D_in, D_out)
        t.bias.data = torch.from_numpy(to_numpy(layer.bias.data).copy())
        return t

    backbone = []
    for layer in model.backbone:
        if isinstance(layer, Conv2d):
            backbone.append(conv(layer))
        elif isinstance(layer, ReLU):
            backbone.append(nn.ReLU())
        elif isinstance(layer, MaxPool2d):
            backbone.append(nn.MaxPool2d(layer.kernel, layer.stride))
    net = nn.ModuleDict({
        "backbone": nn.Sequential(*backbone), "rpn_conv": conv(model.rpn.conv),
        "rpn_cls": conv(model.rpn.cls), "rpn_reg": conv(model.rpn.reg),
        "fc6": linear(model.head.fc6), "fc7": linear(model.head.fc7),
        "cls": linear(model.head.cls), "reg": linear(model.head.reg)}).to(_TORCH_DEVICE[0])
    biases = [p for name, p in net.named_parameters() if name.endswith("bias")]
    weights = [p for name, p in net.named_parameters() if not name.endswith("bias")]
    optimizer = torch.optim.SGD([{"params": weights, "weight_decay": cfg.weight_decay},
                                 {"params": biases, "weight_decay": 0.0}],
                                lr=cfg.lr, momentum=cfg.momentum)
    x = _as_torch(images)
    rpn_labels = _as_torch(samples["rpn_labels"]).reshape(-1)                         # (N*R,)
    rpn_targets = _as_torch(samples["rpn_targets"]).reshape(-1, 4)                    # (N*R, 4)
    rpn_weights = (rpn_labels == 1).to(x.dtype)[:, None]                               # (N*R, 1)
    rois = to_numpy(samples["rois"])                                                   # (S, 5)
    roi_labels = _as_torch(samples["roi_labels"])
    roi_targets = _as_torch(samples["roi_targets"])
    roi_weights = _as_torch(samples["roi_weights"])
    n = x.shape[0]
    s = max(len(rois), 1)
    assert cfg.loss_normalization == "paper" and cfg.roi_op == "pool"
    tv = _torchvision() if _TORCH_DEVICE[0] == "cuda" else None
    tv_rois = _as_torch(rois) if tv is not None else None

    def step():
        optimizer.zero_grad()
        feat = net["backbone"](x)                                        # (N, C, h, w)
        h, w = feat.shape[2], feat.shape[3]
        mid = F.relu(net["rpn_conv"](feat))
        logits = net["rpn_cls"](mid).permute(0, 2, 3, 1).reshape(-1, 2)    # (N*R, 2)
        deltas = net["rpn_reg"](mid).permute(0, 2, 3, 1).reshape(-1, 4)   # (N*R, 4)
        rpn_cls = F.cross_entropy(logits, rpn_labels, ignore_index=-1, reduction="sum") \
            / (n * cfg.rpn_batch_size)
        rpn_reg = cfg.rpn_lambda * F.smooth_l1_loss(
            deltas * rpn_weights, rpn_targets * rpn_weights, beta=1.0 / cfg.rpn_sigma ** 2,
            reduction="sum") / (n * h * w)
        if tv is not None:
            pooled = tv.ops.roi_pool(feat, tv_rois, model.head.pool_size,
                                     model.head.spatial_scale)          # (S, C, 7, 7)
        else:
            pooled = _torch_roi_max_pool(torch, feat, rois, model.head.pool_size,
                                         model.head.spatial_scale)      # (S, C, 7, 7)
        hidden = F.relu(net["fc7"](F.relu(net["fc6"](pooled.flatten(1)))))
        scores, head_deltas = net["cls"](hidden), net["reg"](hidden)
        head_cls = F.cross_entropy(scores, roi_labels, reduction="sum") / s
        head_reg = cfg.head_lambda * F.smooth_l1_loss(
            head_deltas * roi_weights, roi_targets * roi_weights, beta=1.0 / cfg.head_sigma ** 2,
            reduction="sum") / s
        total = rpn_cls + rpn_reg + head_cls + head_reg
        total.backward()
        optimizer.step()
        return float(total.detach())

    return step


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


def run_bench(device=None, repeat=10, only=None, with_torch=True, out=print):
    """Time every case and print a markdown table. Returns the rows as dicts."""
    device = resolve_device(device)
    xp = array_module_for(device)
    rng = np.random.default_rng(0)
    torch = _torch() if with_torch else None
    if torch is not None and device == "cuda" and not torch.cuda.is_available():
        torch = None                               # a CPU-only torch cannot be the GPU twin
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)
        _TORCH_DEVICE[0] = "cuda" if device == "cuda" else "cpu"
    out(f"machine: {machine_description(xp)}; device {device}; numpy {np.__version__}"
        + (f"; torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else ""))
    header = "| op | ours (ms) |" + (" torch (ms) | ours / torch |" if torch else "")
    out(header + " images/s | peak memory (MiB) |")
    out("|---|---|" + ("---|---|" if torch else "") + "---|---|")
    rows, notes = [], []
    for group, make_cases in CASES.items():
        if only and group not in only:
            continue
        for case in make_cases(xp, np.float32, rng):
            case = case if isinstance(case, Case) else Case(*case)
            rows.append(_run_case(case, xp, repeat, torch, out))
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


def _run_case(case, xp, repeat, torch, out):
    """Time one case (and its torch twin), print its table line, return its row."""
    case_xp = case.xp if case.xp is not None else xp
    warmup = 2 if case.warmup is None else case.warmup
    ours = median_time(case.run, case_xp, case.repeat or repeat, warmup, case.setup)
    row = {"op": case.name, "ours_ms": ours * 1e3}
    line = f"| {case.name} | {ours * 1e3:.2f} |"
    if torch is not None and case.torch_run is not None:
        # One block after the other, not in turns: called in turns, NumPy's BLAS threads and
        # torch's thread pool slow each other down (measured: torch's step 2x slower).
        theirs = median_time(case.torch_run, np, case.repeat or repeat, warmup)
        row["torch_ms"] = theirs * 1e3
        line += f" {theirs * 1e3:.2f} | {ours / theirs:.2f} |"
    elif torch is not None:
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
