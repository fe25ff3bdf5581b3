"""Faster R-CNN: the whole detector, composed from the steps in the other modules.

    images (N, 3, H, W)
      -> backbone (backbones.py)                      feat (N, C, H/s, W/s)
      -> RPN head (rpn.py)                            logits (N, R, 2), deltas (N, R, 4)
           training: anchor_targets.py (on the host) -> rpn_loss
      -> proposal layer (proposals.py, no gradient)   rois (S, 5)
           training: proposal_targets.py samples 128 RoIs per image
      -> Fast R-CNN head (fast_rcnn.py)               scores (S, K+1), deltas (S, 4(K+1))
           training: fast_rcnn_loss;  test: decode, per-class NMS

Approximate joint training (paper, section 3.2): forward_train() computes the four loss terms;
backward() sends the RPN's and the head's gradients back to the shared feature map, where they
are summed, and on through the backbone. The proposal boxes are treated as constants: no
gradient flows through their coordinates.

    model = FasterRCNN(Config.small(num_classes=4, class_names=("circle", ...)))
    detections = model.predict([image_uint8_hwc])      # [{"boxes", "scores", "labels"}]
    model.save("run/model.npz"); model = FasterRCNN.load("run/model.npz")
"""
import json

import numpy as np

from .anchor_targets import anchor_targets
from .anchors import generate_base_anchors, grid_anchors
from .backbones import backbone_channels, backbone_stride, build_backbone
from .backend import device_of, get_array_module, to_device, to_numpy
from .boxes import batched_nms, clip_boxes, decode
from .config import Config
from .data.transforms import normalize, resize_image, resize_scale, resized_shape, to_batch
from .fast_rcnn import FastRCNNHead, fast_rcnn_loss
from .layers import Module
from .npz import read_npz, write_npz
from .proposal_targets import proposal_targets
from .proposals import proposal_layer
from .rpn import RPNHead, rpn_loss

CHECKPOINT_FORMAT = "minifrcnn-model-1"


def softmax(logits, axis=-1):
    """Numerically stable softmax along `axis` (same shape as logits)."""
    xp = get_array_module(logits)
    z = logits - logits.max(axis=axis, keepdims=True)
    e = xp.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


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
        self.backbone = build_backbone(cfg.backbone, rng, dtype=self.dtype)
        self.rpn = RPNHead(channels, channels, cfg.num_anchors(), rng, dtype=self.dtype)
        self.head = FastRCNNHead(channels, cfg.num_classes, cfg, 1.0 / cfg.feat_stride, rng,
                                 dtype=self.dtype)
        self.base_anchors = generate_base_anchors(cfg.anchor_base_size, cfg.anchor_ratios,
                                                  cfg.anchor_scales)       # (A, 4) numpy
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

    def _proposals(self, anchors, logits_i, deltas_i, image_size, scale, training,
                   post_nms_top_n=None, use_nms=True):
        """Proposal layer for one image: (P, 4) boxes, no gradient.

        Train or test settings from the config; post_nms_top_n and use_nms=False override
        them for the paper's Table 2 experiments.
        """
        cfg = self.cfg
        fg = softmax(logits_i)[:, 1]                                      # (R,) P(object)
        pre = cfg.rpn_pre_nms_top_n_train if training else cfg.rpn_pre_nms_top_n_test
        post = cfg.rpn_post_nms_top_n_train if training else cfg.rpn_post_nms_top_n_test
        boxes, _ = proposal_layer(anchors, fg, deltas_i, image_size, pre_nms_top_n=pre,
                                  post_nms_top_n=post_nms_top_n or post,
                                  nms_threshold=cfg.rpn_nms_threshold if use_nms else 1.0,
                                  min_size=cfg.rpn_min_size * scale)
        return boxes

    def _with_batch_index(self, boxes, i):
        """(P, 4) boxes of image i -> (P, 5) RoIs (i, x1, y1, x2, y2) in the model's dtype."""
        xp = get_array_module(boxes)
        batch_col = xp.full((boxes.shape[0], 1), i, dtype=self.dtype)     # (P, 1)
        return xp.concatenate([batch_col, boxes.astype(self.dtype)], axis=1)

    # --- training -----------------------------------------------------------------------
    def forward_train(self, images, image_sizes, gt_boxes, gt_labels, rng, scales=None,
                      samples=None, parts=("rpn", "head"), proposer=None):
        """One forward pass of approximate joint training; returns (terms, samples).

        images (N, 3, H, W) normalised float32, on the model's device.
        image_sizes: N (h, w) of the real (unpadded) image inside each row of the batch.
        gt_boxes: N arrays (G_i, 4) in the batch's pixel coordinates; gt_labels N arrays (G_i,).
        rng: numpy Generator for the anchor and RoI sampling.
        scales: N resize factors (only for the RPN's minimum proposal size); default 1.
        samples: the `samples` of an earlier call to reuse instead of sampling anew (the
            whole-model gradient check holds anchors labels and RoIs fixed this way).
        parts: the losses to compute, ("rpn", "head") for joint training; the 4-step
            alternating scheme trains ("rpn",) or ("head",) alone (alternating.py).
        proposer: another FasterRCNN whose RPN makes the proposals for the head (step 2 of
            the alternating scheme); None: this model's own RPN.

        terms: {"rpn_cls", "rpn_reg", "head_cls", "head_reg", "total"} as 0-d arrays, only
        the terms of `parts` (and "total").
        """
        cfg = self.cfg
        n = images.shape[0]
        scales = [1.0] * n if scales is None else scales
        want_rpn, want_head = "rpn" in parts, "head" in parts
        feat = self.backbone.forward(images)                             # (N, C, h, w)
        fh, fw = feat.shape[2:]
        logits = deltas = None
        if want_rpn or proposer is None:
            logits, deltas = self.rpn.forward(feat)                     # (N, R, 2), (N, R, 4)
        if samples is None:
            if proposer is None:
                prop_logits, prop_deltas = logits, deltas
            else:                                # the other model's RPN, on the same images
                prop_logits, prop_deltas = proposer.rpn.forward(proposer.backbone.forward(images))
            samples = self.sample((fh, fw), prop_logits, prop_deltas, image_sizes, gt_boxes,
                                  gt_labels, rng, scales, want_rpn, want_head)
        terms, self._grads = {}, {}
        if want_rpn:
            rpn_terms, dlogits, ddeltas = rpn_loss(logits, deltas, samples["rpn_labels"],
                                                   samples["rpn_targets"], (fh, fw), cfg)
            terms.update(rpn_terms)
            self._grads["rpn"] = (dlogits, ddeltas)
        if want_head:
            scores, head_deltas = self.head.forward(feat, samples["rois"])   # (S, K+1), (S, 4(K+1))
            head_terms, dscores, dhead = fast_rcnn_loss(
                scores, head_deltas, samples["roi_labels"], samples["roi_targets"],
                samples["roi_weights"], cfg)
            terms.update(head_terms)
            self._grads["head"] = (dscores, dhead)
        terms["total"] = sum(terms.values())
        return terms, samples

    def sample(self, feat_size, logits, deltas, image_sizes, gt_boxes, gt_labels, rng, scales,
               rpn=True, head=True):
        """Anchor targets for the RPN (if rpn) and sampled RoIs with their targets (if head).

        feat_size: (h, w) of the feature map. logits, deltas: the RPN outputs the proposals
        are made from. gt_boxes, gt_labels: N host (numpy) arrays, as prepare_batch gives them.

        The anchor targets depend only on the ground truth and the image size, never on the
        network, so they are computed on the host, where the ground truth is (py-faster-rcnn's
        anchor_target_layer ran on the CPU too), and go to the device stacked, in two uploads,
        like the images. On a GPU that saves about 90 small device operations and 4 host-device
        waits per image (scripts/count_device_ops.py); on the CPU it is the same computation.
        The proposals and their targets need the RPN's outputs, so they stay on the device.
        The random draws happen in the same order either way (image by image: anchors, RoIs).
        """
        cfg = self.cfg
        xp = get_array_module(logits)
        host_anchors = self.anchors(feat_size[0], feat_size[1], np)     # (R, 4) numpy
        anchors = self.anchors(feat_size[0], feat_size[1], xp)          # (R, 4) on the device
        rpn_labels, rpn_targets, rois, roi_labels, roi_targets, roi_weights = [], [], [], [], [], []
        for i, (size, boxes, labels) in enumerate(zip(image_sizes, gt_boxes, gt_labels)):
            host_boxes = to_numpy(boxes).astype(self.dtype).reshape(-1, 4)   # (G, 4) numpy
            if rpn:
                lab, tgt = anchor_targets(
                    host_anchors, host_boxes, size, rng, positive_iou=cfg.rpn_positive_iou,
                    negative_iou=cfg.rpn_negative_iou, batch_size=cfg.rpn_batch_size,
                    positive_fraction=cfg.rpn_positive_fraction,
                    allowed_border=cfg.rpn_allowed_border)[:2]              # (R,), (R, 4) numpy
                rpn_labels.append(lab)
                rpn_targets.append(tgt)
            if head:
                boxes = xp.asarray(host_boxes)                              # (G, 4) device
                labels = xp.asarray(labels).reshape(-1)                     # (G,)
                props = self._proposals(anchors, logits[i], deltas[i], size, scales[i], True)
                t = proposal_targets(
                    props, boxes, labels, cfg.num_classes, rng, batch_size=cfg.roi_batch_size,
                    fg_fraction=cfg.roi_fg_fraction, fg_iou=cfg.roi_fg_iou,
                    bg_iou_hi=cfg.roi_bg_iou_hi, bg_iou_lo=cfg.roi_bg_iou_lo,
                    stds=cfg.bbox_stds)
                rois.append(self._with_batch_index(t["rois"], i))
                roi_labels.append(t["labels"])
                roi_targets.append(t["bbox_targets"])
                roi_weights.append(t["bbox_weights"])
        samples = {}
        if rpn:
            samples["rpn_labels"] = xp.asarray(np.stack(rpn_labels))                      # (N, R)
            samples["rpn_targets"] = xp.asarray(np.stack(rpn_targets).astype(self.dtype))  # (N, R, 4)
        if head:
            samples["rois"] = xp.concatenate(rois)                               # (S, 5)
            samples["roi_labels"] = xp.concatenate(roi_labels)                   # (S,)
            samples["roi_targets"] = xp.concatenate(roi_targets).astype(self.dtype)  # (S, 4(K+1))
            samples["roi_weights"] = xp.concatenate(roi_weights).astype(self.dtype)
        return samples

    def backward(self):
        """Backpropagate the last forward_train's loss into every parameter's .grad.

        The RPN and the head each give a gradient on the shared feature map; they are summed
        there (approximate joint training) and sent on through the backbone. A frozen
        backbone (alternating training, steps 3 and 4) is skipped: nothing there would change.
        """
        dfeat = 0
        if "rpn" in self._grads:
            dfeat = dfeat + self.rpn.backward(*self._grads["rpn"])
        if "head" in self._grads:
            dfeat = dfeat + self.head.backward(*self._grads["head"])
        if any(p.requires_grad for p in self.backbone.parameters()):
            self.backbone.backward(dfeat)

    # --- inference ----------------------------------------------------------------------
    def check_image(self, img, name):
        """A ValueError naming `name` unless img is an HxWx3 uint8 array that this model can
        take: after resizing, each side at least the backbone's stride (one feature-map cell).
        Returns the resize factor.
        """
        cfg = self.cfg
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"{name}: expected an HxWx3 uint8 array, got shape "
                             f"{img.shape} dtype {img.dtype}")
        h, w = img.shape[:2]
        s = resize_scale(h, w, cfg.image_min_size, cfg.image_max_size, cfg.allow_upscale)
        nh, nw = resized_shape(h, w, s)
        if min(nh, nw) < cfg.feat_stride:
            raise ValueError(f"{name}: {w}x{h} px is too small for this model ({nw}x{nh} after "
                             f"resizing; the backbone's stride is {cfg.feat_stride}, so each "
                             f"side needs at least {cfg.feat_stride} px)")
        return s

    def preprocess(self, images):
        """Resize and normalise a list of HxWx3 uint8 images into one padded batch.

        Returns (batch (N, 3, H, W) float32 on the model's device, sizes [(h, w)], scales).
        """
        cfg = self.cfg
        arrays, sizes, scales = [], [], []
        for k, img in enumerate(images):
            img = np.asarray(img)
            s = self.check_image(img, f"image {k}")
            resized = resize_image(img, s) if s != 1.0 else img
            arrays.append(normalize(resized, cfg.pixel_mean, cfg.pixel_std))
            scales.append(s)
        batch, sizes = to_batch(arrays)
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
            images = [np.clip(np.round(im.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
                      for im in images]
        originals = [np.asarray(im).shape[:2] for im in images]
        batch, sizes, scales = self.preprocess(images)
        dets = self.detect(batch, sizes, scales)
        for d, s, (h, w) in zip(dets, scales, originals):
            d["boxes"] = clip_boxes(d["boxes"] / s, (h, w)).astype(np.float32)
        return dets

    def detect(self, batch, image_sizes, scales=None, post_nms_top_n=None, use_nms=True,
               proposer=None):
        """Detections in the batch's pixel coordinates (see predict()).

        scales: the resize factor of each image (the RPN's minimum box size is in original
        pixels, so it is multiplied by it); default 1.

        post_nms_top_n overrides the number of test proposals; use_nms=False skips the
        proposal layer's NMS (both for the paper's Table 2 experiments). proposer: another
        FasterRCNN whose RPN proposes (unshared features, experiments.py).
        """
        cfg = self.cfg
        xp = get_array_module(batch)
        feat = self.backbone.forward_inference(batch)                    # (N, C, h, w), caches dropped
        rpn_model = self if proposer is None else proposer
        rpn_feat = feat if proposer is None else proposer.backbone.forward_inference(batch)
        logits, deltas = rpn_model.rpn.forward(rpn_feat)                # (N, R, 2), (N, R, 4)
        anchors = self.anchors(feat.shape[2], feat.shape[3], xp)
        scales = [1.0] * len(image_sizes) if scales is None else scales
        rois, counts = [], []
        for i, size in enumerate(image_sizes):
            props = self._proposals(anchors, logits[i], deltas[i], size, scales[i], False,
                                    post_nms_top_n, use_nms)
            rois.append(self._with_batch_index(props, i))
            counts.append(props.shape[0])
        rois = xp.concatenate(rois)                                      # (S, 5)
        scores, head_deltas = self.head.forward(feat, rois)             # (S, K+1), (S, 4(K+1))
        probs = softmax(scores)
        weights = tuple(1.0 / s for s in cfg.bbox_stds)
        boxes = decode(rois[:, 1:], head_deltas, weights)              # (S, 4(K+1))
        self.drop_caches()                    # no backward follows: give the activations back
        rpn_model.drop_caches()
        out, start = [], 0
        for i, size in enumerate(image_sizes):
            sl = slice(start, start + counts[i])
            start += counts[i]
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
    def save(self, path):
        """One .npz holding the config (as JSON) and every weight."""
        arrays = {f"param/{name}": to_numpy(p.data) for name, p in self.named_parameters()}
        arrays["config_json"] = np.array(json.dumps(self.cfg.to_dict()))
        arrays["format"] = np.array(CHECKPOINT_FORMAT)
        write_npz(path, arrays)

    @classmethod
    def load(cls, path, device=None):
        """A model from a file written by save(); device None keeps the CPU."""
        arrays = read_npz(path, "checkpoint")
        if "config_json" not in arrays or "format" not in arrays:
            raise ValueError(f"checkpoint {path}: not a minifrcnn model checkpoint (no config_json)")
        try:
            cfg = Config.from_dict(json.loads(str(arrays["config_json"])))
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"checkpoint {path}: its config cannot be read ({e})") from None
        weights = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
        model = cls(cfg)
        try:
            model.load_state_dict(weights)
        except ValueError as e:
            raise ValueError(f"checkpoint {path}: {e}") from None
        if device is not None:
            model.to(device)
        return model
