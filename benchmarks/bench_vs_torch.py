"""minifrcnn's bench with PyTorch beside it: the same table, plus torch's time and ours / torch.

    python benchmarks/bench_vs_torch.py                      # NumPy against torch on the CPU
    python benchmarks/bench_vs_torch.py --device cuda        # CuPy against torch.cuda
    python benchmarks/bench_vs_torch.py --repeat 20 --only conv step

torch is never a dependency of minifrcnn, so this comparison lives here, beside the package and
not in it. minifrcnn/bench.py makes the cases and times them (`python -m minifrcnn bench` prints
our columns alone); this script hands its run_bench a TorchTwin, which returns for each case a
function doing the same computation in torch, on the same thread count and the same device:
the op groups on random data of the same shapes, the network part of the train step with our
model's layers and weights. With --device cuda, RoI pooling, RoIAlign and NMS are compared with
torchvision.ops when torchvision is installed (without it those rows have no torch column).
Without torch, or with --device cuda and a torch that has no CUDA, the table has our columns
only.
"""
import argparse
import os

import numpy as np

from minifrcnn.backend import DeviceError, keep_freed_memory, resolve_device, to_numpy
from minifrcnn.bench import CASES, run_bench
from minifrcnn.layers import Conv2d, MaxPool2d, ReLU
from minifrcnn.ops.roi_pool import round_half_away


def _torchvision():
    try:
        import torchvision.ops
    except Exception:                  # not installed, or a build that does not match torch
        return None
    return torchvision


class TorchTwin:
    """The bench's cases in PyTorch on one device ("cpu" or "cuda"), for bench.run_bench(twin=).

    Each case method returns a function to time (it makes its tensors on its first call, then
    reuses them) or None where torch has no counterpart (RoI ops and NMS without torchvision).
    """

    name = "torch"
    train_step_note = (
        "the torch twin has the same layers, weights (copied), batch, samples, losses and optimiser, "
        "with RoI max pooling as a loop of adaptive_max_pool2d over the RoIs on the CPU and "
        "torchvision.ops.roi_pool on the GPU (the same bins)")

    def __init__(self, device="cpu"):
        import torch
        self.torch = torch
        self.device = device
        self.tv = _torchvision()
        self._prepared_tensors = {}
        torch.set_num_threads(os.cpu_count() or 1)
        self.description = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"

    def sync(self):
        """Wait for torch's GPU work, so the timer measures it (no-op on the CPU)."""
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def _prepared(self, key, make):
        if key not in self._prepared_tensors:
            self._prepared_tensors[key] = make()
        return self._prepared_tensors[key]

    def _forward_backward(self, key, make, forward):
        """A run: forward(*inputs) and the backward of its output; the inputs made once."""
        def run():
            out = forward(*self._prepared(key, make))
            out.backward(out.detach())
            self.sync()
        return run

    def _randn(self, shape):
        return self.torch.randn(shape, device=self.device, requires_grad=True)

    def as_torch(self, a):
        """Our array (NumPy or CuPy) as a torch tensor on the twin's device (a copy)."""
        return self.torch.from_numpy(to_numpy(a).copy()).to(self.device)

    # -- one method per case of minifrcnn/bench.py --------------------------------------------
    def conv(self, x_shape, f):
        nn = self.torch.nn
        return self._forward_backward(
            ("conv", x_shape, f),
            lambda: (self._randn(x_shape), nn.Conv2d(x_shape[1], f, 3, padding=1).to(self.device)),
            lambda x, conv: conv(x))

    def pool(self, shape):
        F = self.torch.nn.functional
        return self._forward_backward(("pool", shape), lambda: (self._randn(shape),),
                                      lambda x: F.max_pool2d(x, 2, 2))

    def linear(self, n, d_in, d_out):
        nn = self.torch.nn
        return self._forward_backward(
            ("linear", n, d_in, d_out),
            lambda: (self._randn((n, d_in)), nn.Linear(d_in, d_out).to(self.device)),
            lambda x, lin: lin(x))

    def roi(self, op, feat_shape, rois):
        """torchvision.ops.roi_pool / roi_align fwd+bwd on the same RoIs (None without it)."""
        tv = self.tv
        if tv is None:
            return None

        def make():
            feat = self._prepared(("roi_feat", tuple(feat_shape)),
                                  lambda: self._randn(tuple(feat_shape)))
            return feat, self._prepared(("rois", id(rois)), lambda: self.as_torch(rois))

        def forward(feat, boxes):
            if op == "roi_pool":
                return tv.ops.roi_pool(feat, boxes, (7, 7), 1 / 16)
            return tv.ops.roi_align(feat, boxes, (7, 7), 1 / 16, sampling_ratio=2)
        return self._forward_backward(("roi", op, id(rois)), make, forward)

    def nms(self, boxes, scores, threshold):
        """torchvision.ops.nms on the same boxes (None without torchvision)."""
        tv = self.tv
        if tv is None:
            return None

        def run():
            b = self._prepared(("nms_boxes", id(boxes)), lambda: self.as_torch(boxes))
            s = self._prepared(("nms_scores", id(scores)), lambda: self.as_torch(scores))
            keep = tv.ops.nms(b, s, threshold)
            self.sync()
            return keep
        return run

    def train_step(self, model, cfg, images, samples):
        """The network part of our training step in PyTorch, for a side-by-side time.

        The same layers as `model` (weights copied now, so the losses agree with ours), the
        same batch, the same anchor labels, RoIs and targets, the paper's loss normalisation and
        the config's optimiser (SGD with momentum, or AdamW) with weight decay (none on biases). Returns a function doing one step
        that returns the total loss as a float. On the GPU, RoI max pooling is
        torchvision.ops.roi_pool when torchvision is installed (the kernel ours follows), since
        a Python loop over the RoIs would time launches, not pooling.
        """
        torch = self.torch
        nn, F = torch.nn, torch.nn.functional

        def conv(layer):
            f, c, kh, kw = layer.weight.shape
            t = nn.Conv2d(c, f, (kh, kw), stride=layer.stride, padding=layer.pad)
            t.weight.data = torch.from_numpy(to_numpy(layer.weight.data).copy())
            t.bias.data = torch.from_numpy(to_numpy(layer.bias.data).copy())
            return t

        def linear(layer):
            d_in, d_out = layer.weight.shape
            t = nn.Linear(d_in, d_out)
            # ours is (D_in, D_out), torch's (D_out, D_in)
            t.weight.data = torch.from_numpy(to_numpy(layer.weight.data).T.copy())
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
            "cls": linear(model.head.cls), "reg": linear(model.head.reg)}).to(self.device)
        biases = [p for name, p in net.named_parameters() if name.endswith("bias")]
        weights = [p for name, p in net.named_parameters() if not name.endswith("bias")]
        groups = [{"params": weights, "weight_decay": cfg.weight_decay},
                  {"params": biases, "weight_decay": 0.0}]
        if cfg.optimizer == "adamw":                                   # the small preset's
            optimizer = torch.optim.AdamW(groups, lr=cfg.lr, eps=1e-8)
        else:
            optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
        x = self.as_torch(images)
        rpn_labels = self.as_torch(samples["rpn_labels"]).reshape(-1)                  # (N*R,)
        rpn_targets = self.as_torch(samples["rpn_targets"]).reshape(-1, 4)             # (N*R, 4)
        rpn_weights = (rpn_labels == 1).to(x.dtype)[:, None]                           # (N*R, 1)
        rois = to_numpy(samples["rois"])                                               # (S, 5)
        roi_labels = self.as_torch(samples["roi_labels"])
        roi_targets = self.as_torch(samples["roi_targets"])
        roi_weights = self.as_torch(samples["roi_weights"])
        n = x.shape[0]
        s = max(len(rois), 1)
        assert cfg.loss_normalization == "paper" and cfg.roi_op == "pool"
        tv = self.tv if self.device == "cuda" else None
        tv_rois = self.as_torch(rois) if tv is not None else None

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
                pooled = roi_max_pool(torch, feat, rois, model.head.pool_size,
                                      model.head.spatial_scale)             # (S, C, 7, 7)
            hidden = F.relu(net["fc7"](F.relu(net["fc6"](pooled.flatten(1)))))
            scores, head_deltas = net["cls"](hidden), net["reg"](hidden)
            head_cls = F.cross_entropy(scores, roi_labels, reduction="sum") / s
            head_reg = cfg.head_lambda * F.smooth_l1_loss(
                head_deltas * roi_weights, roi_targets * roi_weights,
                beta=1.0 / cfg.head_sigma ** 2, reduction="sum") / s
            total = rpn_cls + rpn_reg + head_cls + head_reg
            total.backward()
            optimizer.step()
            return float(total.detach())

        return step


def roi_max_pool(torch, feat, rois, output_size, spatial_scale):
    """RoI max pooling in torch ops, with ops/roi_pool.py's (Caffe's) bins.

    Inside the map, Caffe's bins of a roi_h x roi_w window (floor / ceil of ph * roi_h / PH) are
    exactly adaptive_max_pool2d's bins of that window; outside, the map is padded with -inf so
    a bin that is partly outside takes the max of its inside part and a bin wholly outside
    gives -inf, set to 0 as Caffe's empty bin. One adaptive_max_pool2d per RoI (a Python loop).
    feat: (N, C, H, W) tensor; rois: (K, 5) NumPy array (the batch index first).
    """
    F = torch.nn.functional
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


def torch_twin(device):
    """A TorchTwin on our bench's device ("cuda" for cuda, else "cpu"), or None where torch is
    not installed or, for cuda, has no CUDA (a CPU-only torch cannot be the GPU twin)."""
    try:
        import torch
    except Exception:
        return None
    if device == "cuda" and not torch.cuda.is_available():
        return None
    return TorchTwin("cuda" if device == "cuda" else "cpu")


def run(device=None, repeat=10, only=None, out=print):
    """minifrcnn's bench on `device` with the torch twin beside it. Returns the rows."""
    keep_freed_memory()                        # before torch allocates: see its docstring
    device = resolve_device(device)
    return run_bench(device, repeat=repeat, only=only, twin=torch_twin(device), out=out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: $MINIFRCNN_DEVICE or cpu")
    p.add_argument("--repeat", type=int, default=10, help="timed calls per case (at least 1)")
    p.add_argument("--only", nargs="+", choices=list(CASES), help="groups to run")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error(f"--repeat {args.repeat}: must be at least 1")
    try:
        run(args.device, repeat=args.repeat, only=args.only)
    except DeviceError as e:
        p.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
