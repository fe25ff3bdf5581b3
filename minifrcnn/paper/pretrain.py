"""Backbone pre-training: the stand-in for the paper's ImageNet initialisation.

Faster R-CNN starts its shared convs from a network trained on ImageNet classification. We
cannot download one, so we do the same thing at small scale: train the backbone as an image
classifier on crops of the training set, the objects (K classes) and background patches
(class 0), and save its weights for `train --backbone-weights`.

    crop (B, 3, S, S) -> backbone -> (B, C, S/s, S/s) -> global average pool -> (B, C)
        -> linear -> scores (B, K+1) -> softmax cross-entropy

Global average pooling (mean over the spatial cells) is the only new layer:

    forward   y[b, c] = 1/(H W) sum_{h,w} x[b, c, h, w]
    backward  dx[b, c, h, w] = dy[b, c] / (H W)

    python -m minifrcnn pretrain --dataset shapes --out runs/backbone.npz
    python -m minifrcnn train --dataset shapes --backbone-weights runs/backbone.npz --out runs/pre
"""
import numpy as np

from ..backbones import backbone_channels, build_backbone
from ..backend import get_array_module, to_device, to_numpy
from ..boxes import box_iou
from ..data.transforms import normalize
from ..layers import Linear
from ..npz import write_npz
from ..ops import softmax_cross_entropy
from ..optim import SGD, lr_at
from ..train import TrainingDiverged


def global_avg_pool_forward(x):
    """x (N, C, H, W) -> (out (N, C), cache): the mean over the H*W cells."""
    return x.mean(axis=(2, 3)), x.shape


def global_avg_pool_backward(dout, cache):
    """dout (N, C) -> dx (N, C, H, W): every cell gets dout / (H W)."""
    n, c, h, w = cache
    xp = get_array_module(dout)
    return xp.broadcast_to((dout / (h * w))[:, :, None, None], (n, c, h, w)).copy()


def make_crops(samples, rng, crop_size=48, background_per_image=1, margin=0.1):
    """Object and background crops, resized to crop_size x crop_size.

    Every gt box (not difficult) gives one crop with `margin` context on each side, labelled
    with its class; each image also gives `background_per_image` random squares whose IoU
    with every gt box is below 0.3, labelled 0. Returns (crops (M, S, S, 3) uint8, labels (M,)).
    """
    crops, labels = [], []
    for s in samples:
        img = s["image"]
        h, w = img.shape[:2]
        boxes = np.asarray(s["boxes"], dtype=np.float32).reshape(-1, 4)
        keep = ~np.asarray(s.get("difficult", np.zeros(len(boxes), bool)), dtype=bool)
        for box, label in zip(boxes[keep], np.asarray(s["labels"])[keep]):
            crops.append(_crop(img, _square(box, margin, h, w), crop_size))
            labels.append(int(label))
        for _ in range(background_per_image):
            for _attempt in range(20):
                side = rng.uniform(0.15, 0.6) * min(h, w)
                x1, y1 = rng.uniform(0, w - side), rng.uniform(0, h - side)
                cand = np.array([[x1, y1, x1 + side, y1 + side]], dtype=np.float32)
                if len(boxes) == 0 or box_iou(cand, boxes).max() < 0.3:
                    crops.append(_crop(img, cand[0], crop_size))
                    labels.append(0)
                    break
    if not crops:
        return np.zeros((0, crop_size, crop_size, 3), np.uint8), np.zeros(0, np.int64)
    return np.stack(crops), np.array(labels, dtype=np.int64)


def _square(box, margin, h, w):
    """The box grown by `margin` of its size on each side, clipped to the image."""
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    return np.array([max(0, x1 - mx), max(0, y1 - my), min(w, x2 + mx), min(h, y2 + my)])


def _crop(img, box, size):
    """The pixels inside box (rounded outwards), resized to size x size."""
    x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
    x2, y2 = max(x1 + 1, int(np.ceil(box[2]))), max(y1 + 1, int(np.ceil(box[3])))
    patch = img[y1:y2, x1:x2]
    from PIL import Image
    return np.asarray(Image.fromarray(patch).resize((size, size), Image.BILINEAR))


class BackboneClassifier:
    """backbone -> global average pool -> linear (K+1 classes)."""

    def __init__(self, backbone_name, num_classes, rng, dtype=np.float32):
        self.backbone = build_backbone(backbone_name, rng, dtype=dtype)
        self.fc = Linear(backbone_channels(backbone_name), num_classes + 1, init="gaussian",
                         std=0.01, rng=rng, dtype=dtype)

    def parameters(self):
        return self.backbone.parameters() + self.fc.parameters()

    def forward(self, x):
        """x (B, 3, S, S) -> scores (B, K+1)."""
        feat = self.backbone.forward(x)                                  # (B, C, s, s)
        pooled, self._pool_cache = global_avg_pool_forward(feat)         # (B, C)
        return self.fc.forward(pooled)

    def backward(self, dscores):
        dpooled = self.fc.backward(dscores)                              # (B, C)
        self.backbone.backward(global_avg_pool_backward(dpooled, self._pool_cache))

    def to(self, device):
        self.backbone.to(device)
        self.fc.to(device)
        return self


def pretrain_backbone(cfg, samples, out_path, iters=1000, batch_size=32, lr=0.01,
                      crop_size=48, device="cpu", log=print):
    """Train cfg.backbone as a classifier on crops of `samples`; save its weights to out_path.

    Returns {"train_accuracy": float (last 100 iterations), "num_crops": int}. The npz keys
    are the backbone's parameter names (backbones.load_backbone_weights reads it).
    """
    rng = np.random.default_rng([cfg.seed, 12345])
    crops, labels = make_crops(samples, rng, crop_size)
    if not (labels > 0).any():
        raise ValueError("pretrain: the training set has no objects to crop")
    log(f"pretraining backbone {cfg.backbone!r} on {len(crops)} crops "
        f"({int((labels > 0).sum())} objects, {int((labels == 0).sum())} background)")
    x_all = np.stack([normalize(c, cfg.pixel_mean, cfg.pixel_std) for c in crops])  # (M, 3, S, S)
    net = BackboneClassifier(cfg.backbone, cfg.num_classes, np.random.default_rng(cfg.seed))
    net.to(device)
    opt = SGD(net.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    correct = []
    try:
        for it in range(iters):
            idx = rng.choice(len(x_all), size=min(batch_size, len(x_all)), replace=False)
            x = x_all[idx]
            if rng.random() < 0.5:
                x = x[:, :, :, ::-1]                                        # horizontal flip
            x = to_device(np.ascontiguousarray(x), device)
            y = to_device(labels[idx], device)
            opt.set_lr(lr_at(it, lr, (int(iters * 0.8),), 0.1))
            for p in net.parameters():
                p.grad.fill(0)
            scores = net.forward(x)
            loss, dscores = softmax_cross_entropy(scores, y)
            if not np.isfinite(float(loss)):
                raise TrainingDiverged(f"pretrain: loss became {float(loss)} at iteration {it}; "
                                       f"nothing was written to {out_path}")
            net.backward(dscores)
            opt.step()
            correct.append(float((to_numpy(scores).argmax(1) == labels[idx]).mean()))
    except KeyboardInterrupt:
        log(f"\ninterrupted at iteration {it}: nothing was written to {out_path} (pretraining "
            "keeps no checkpoint: run the command again)")
        raise
    accuracy = float(np.mean(correct[-100:]))
    weights = net.backbone.state_dict()
    write_npz(out_path, weights)
    log(f"saved backbone weights to {out_path}; training accuracy {accuracy:.3f}")
    return {"train_accuracy": accuracy, "num_crops": int(len(crops))}

