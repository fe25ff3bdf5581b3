"""Faster R-CNN: the whole detector, composed from the steps in the other modules.

    images (N, 3, H, W)
      -> backbone (backbones.py)                      feat (N, C, H/s, W/s)
      -> RPN head (rpn.py)                            logits (N, R, 2), deltas (N, R, 4)
      -> proposal layer (proposals.py, no gradient)   rois (S, 5)
      -> Fast R-CNN head (fast_rcnn.py)               scores (S, K+1), deltas (S, 4(K+1))
      -> decode, per-class NMS                        detections per image

This file is the network and its use at test time: predict / detect, save / load. Training
it (the anchor and RoI sampling, the four loss terms and the backward pass of approximate
joint training, paper section 3.2) is joint_training.py; the loop around it (SGD,
checkpoints, resume) is train.py.

    model = FasterRCNN(Config.small(num_classes=4, class_names=("circle", ...)))
    detections = model.predict([image_uint8_hwc])      # [{"boxes", "scores", "labels"}]
    model.save("run/model.npz"); model = FasterRCNN.load("run/model.npz")
"""
import json

import numpy as np

from .anchors import base_anchors_from_config, grid_anchors
from .backbones import backbone_channels, backbone_stride, build_backbone
from .backend import device_of, get_array_module, to_device, to_numpy
from .boxes import batched_nms, clip_boxes, decode
from .config import Config
from .data.transforms import boxes_to_original, prepare_batch
from .fast_rcnn import FastRCNNHead
from .layers import Module
from .npz import read_npz, write_npz
from .ops import softmax
from .proposals import proposal_layer, proposal_settings
from .rpn import RPNHead

CHECKPOINT_FORMAT = "minifrcnn-model-1"   # model.npz; train.py's checkpoint.npz adds to it


def config_from_checkpoint(arrays, path):
    """The Config saved in a checkpoint's arrays (as JSON); a ValueError naming the file."""
    try:
        return Config.from_dict(json.loads(str(arrays["config_json"])))
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"checkpoint {path}: its config cannot be read ({e})") from None


class FasterRCNN(Module):
    """Backbone + RPN + Fast R-CNN head sharing one feature map. See the module docstring."""

    def __init__(self, config=None, rng=None, dtype="float32"):
        super().__init__()
        cfg = Config.small() if config is None else config
        if cfg.class_names and len(cfg.class_names) != cfg.num_classes:
            raise ValueError(f"config: {len(cfg.class_names)} class_names for num_classes="
                             f"{cfg.num_classes}")
        if backbone_stride(cfg.backbone) != cfg.feat_stride:
            raise ValueError(f"config: feat_stride={cfg.feat_stride} but backbone "
                             f"{cfg.backbone!r} has stride {backbone_stride(cfg.backbone)}")
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed) if rng is None else rng
        channels = backbone_channels(cfg.backbone)
        self.dtype = np.dtype(dtype)       # float32; float64 for gradient checks
        self.backbone = build_backbone(cfg.backbone, rng, dtype=self.dtype, norm=cfg.backbone_norm,
                                       norm_groups=cfg.backbone_norm_groups)
        self.rpn = RPNHead(channels, channels, cfg.num_anchors(), rng, dtype=self.dtype)
        self.head = FastRCNNHead(channels, cfg.num_classes, cfg, 1.0 / cfg.feat_stride, rng,
                                 dtype=self.dtype)
        self.base_anchors = base_anchors_from_config(cfg)                  # (A, 4) numpy
        self._anchor_cache = {}

    # --- helpers ------------------------------------------------------------------------
    def anchors(self, feat_h, feat_w, xp):
        """All anchors of a feat_h x feat_w map, (feat_h*feat_w*A, 4), cached per size."""
        key = (feat_h, feat_w, xp.__name__)
        if key not in self._anchor_cache:
            a = grid_anchors(self.base_anchors, feat_h, feat_w, self.cfg.feat_stride)
            self._anchor_cache[key] = xp.asarray(a, dtype=self.dtype)
        return self._anchor_cache[key]

    def to(self, device):
        self._anchor_cache = {}
        return super().to(device)

    def proposals(self, anchors, logits_i, deltas_i, image_size, scale, training):
        """The proposal layer for one image: (P, 4) boxes, no gradient.

        anchors (R, 4); logits_i (R, 2) and deltas_i (R, 4): the RPN's outputs for this image;
        image_size (h, w); scale: the image's resize factor (the minimum box size is in
        original pixels). Train or test settings from the config (proposal_settings).
        """
        fg = softmax(logits_i)[:, 1]                                      # (R,) P(object)
        boxes, _ = proposal_layer(anchors, fg, deltas_i, image_size,
                                  **proposal_settings(self.cfg, training, scale))
        return boxes                                                      # (P, 4)

    def with_batch_index(self, boxes, i):
        """(P, 4) boxes of image i -> (P, 5) RoIs (i, x1, y1, x2, y2) in the model's dtype."""
        xp = get_array_module(boxes)
        batch_col = xp.full((boxes.shape[0], 1), i, dtype=self.dtype)     # (P, 1)
        return xp.concatenate([batch_col, boxes.astype(self.dtype)], axis=1)

    # --- inference ----------------------------------------------------------------------
    def preprocess(self, images):
        """Resize and normalise a list of HxWx3 uint8 images into one padded batch on the
        model's device: data.transforms.prepare_batch, the same road training takes (no flip).

        Returns (batch (N, 3, H, W) in the model's dtype, sizes [(h, w)], scales [float]).
        """
        batch, sizes, _, _, scales = prepare_batch([{"image": im} for im in images], self.cfg,
                                                   train=False)
        return to_device(batch.astype(self.dtype, copy=False), self.device()), sizes, scales

    def device(self):
        """Where the parameters live: "cpu", "cuda" (or "strict", the test device)."""
        return device_of(self.parameters()[0].data)

    def predict(self, images):
        """Detect objects. Returns one dict per image in original pixel coordinates:
        {"boxes" (D, 4) float32, "scores" (D,), "labels" (D,) int64 in 1..K}, as NumPy arrays.

        images: a list of HxWx3 uint8 arrays (any sizes), or an (N, 3, H, W) float array with
        values in [0, 1] (converted to uint8 first, so both take the same road).
        """
        if hasattr(images, "ndim"):
            images = to_numpy(images)
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"images: expected (N, 3, H, W) floats in [0, 1] or a list of "
                                 f"HxWx3 uint8 arrays, got shape {images.shape}")
            lo, hi = (float(images.min()), float(images.max())) if images.size else (0, 0)
            if not (0 <= lo and hi <= 1):          # 0..255 pixels, or an already normalised batch
                raise ValueError(f"images: expected floats in [0, 1], got values from {lo:.4g} "
                                 f"to {hi:.4g}; divide 0..255 pixels by 255, or pass the images "
                                 "as a list of HxWx3 uint8 arrays (predict normalises them)")
            images = [np.clip(np.round(im.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
                      for im in images]
        originals = [np.asarray(im).shape[:2] for im in images]
        batch, sizes, scales = self.preprocess(images)
        dets = self.detect(batch, sizes, scales)
        for d, s, size in zip(dets, scales, originals):
            d["boxes"] = boxes_to_original(d["boxes"], s, size)          # (D, 4) float32
        return dets

    def detect(self, batch, image_sizes, scales=None):
        """Detections in the batch's pixel coordinates (see predict()).

        batch (N, 3, H, W) normalised, on the model's device; image_sizes: N (h, w) of the
        real images inside the padded batch; scales: the resize factor of each image
        (the RPN's minimum box size is in original pixels); default 1.
        """
        feat = self.backbone.forward_inference(batch)                    # (N, C, h, w), caches dropped
        rois, counts = self.propose(feat, image_sizes, scales)           # (S, 5), N counts
        return self.detect_in_rois(feat, rois, counts, image_sizes)

    def propose(self, feat, image_sizes, scales=None):
        """Test-time proposals of every image: the RPN and the proposal layer.

        feat (N, C, h, w) -> rois (S, 5) with the batch index in column 0, and the number
        of RoIs of each image (they are stacked image after image).
        """
        xp = get_array_module(feat)
        logits, deltas = self.rpn.forward(feat)                         # (N, R, 2), (N, R, 4)
        self.rpn.drop_caches()                # no backward follows: give the activations back
        anchors = self.anchors(feat.shape[2], feat.shape[3], xp)        # (R, 4)
        scales = [1.0] * len(image_sizes) if scales is None else scales
        rois, counts = [], []
        for i, size in enumerate(image_sizes):
            props = self.proposals(anchors, logits[i], deltas[i], size, scales[i], False)
            rois.append(self.with_batch_index(props, i))
            counts.append(props.shape[0])
        return xp.concatenate(rois), counts                              # (S, 5)

    def detect_in_rois(self, feat, rois, counts, image_sizes):
        """The Fast R-CNN head on given RoIs: class probabilities, class-specific boxes,
        then per image a score threshold and per-class NMS (_postprocess).

        feat (N, C, h, w); rois (S, 5) stacked image after image, counts[i] of image i.
        Returns one dict of NumPy arrays per image, in the batch's pixel coordinates.
        """
        scores, head_deltas = self.head.forward(feat, rois)             # (S, K+1), (S, 4(K+1))
        self.head.drop_caches()               # no backward follows: give the activations back
        probs = softmax(scores)                                          # (S, K+1)
        weights = tuple(1.0 / s for s in self.cfg.bbox_stds)
        boxes = decode(rois[:, 1:], head_deltas, weights)              # (S, 4(K+1))
        out, start = [], 0
        for count, size in zip(counts, image_sizes):
            sl = slice(start, start + count)
            start += count
            out.append(self._postprocess(boxes[sl], probs[sl], size))
        return out

    def _postprocess(self, boxes, probs, size):
        """Per-class score threshold and NMS for one image -> dict of NumPy arrays."""
        cfg = self.cfg
        xp = get_array_module(boxes)
        k = cfg.num_classes
        s = boxes.shape[0]
        boxes = clip_boxes(boxes.reshape(s * (k + 1), 4), size).reshape(s, k + 1, 4)
        boxes = boxes[:, 1:].reshape(-1, 4)                              # (S*K, 4) no background
        scores = probs[:, 1:].reshape(-1)                                # (S*K,)
        labels = xp.tile(xp.arange(1, k + 1), s)                         # (S*K,)
        keep = xp.nonzero(scores >= cfg.score_threshold)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, cfg.test_nms)[:cfg.max_detections]
        return {"boxes": to_numpy(boxes[keep]).astype(np.float32),
                "scores": to_numpy(scores[keep]).astype(np.float32),
                "labels": to_numpy(labels[keep]).astype(np.int64)}

    # --- checkpoints --------------------------------------------------------------------
    def save(self, path, extra=None):
        """One .npz holding every weight and the config (as JSON).

        extra: more arrays for the same file (train.py's checkpoint adds the momentum
        buffers and the iteration); load() reads only the weights and the config.
        """
        arrays = {f"param/{name}": to_numpy(p.data) for name, p in self.named_parameters()}
        arrays["config_json"] = np.array(json.dumps(self.cfg.to_dict()))
        arrays["format"] = np.array(CHECKPOINT_FORMAT)
        arrays.update(extra or {})
        write_npz(path, arrays)      # all or nothing: an interrupted save keeps the previous file

    @classmethod
    def load(cls, path, device=None):
        """A model from a file written by save(); device None keeps the CPU."""
        arrays = read_npz(path, "checkpoint")
        if "config_json" not in arrays or "format" not in arrays:
            raise ValueError(f"checkpoint {path}: not a minifrcnn model checkpoint (no config_json)")
        model = cls(config_from_checkpoint(arrays, path))
        try:
            model.load_state_dict(weights_in_checkpoint(arrays))
        except ValueError as e:
            raise ValueError(f"checkpoint {path}: {e}") from None
        if device is not None:
            model.to(device)
        return model


def weights_in_checkpoint(arrays):
    """{parameter name: array} of the "param/..." entries save() wrote."""
    return {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
