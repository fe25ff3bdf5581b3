"""Every hyper-parameter of the detector in one place, with the paper's defaults.

Where the paper is silent the value is py-faster-rcnn's (docs/DESIGN.md lists them).
`Config()` is the paper's setting (600 px images, stride 16, anchors 128-512 px);
`Config.small()` is the CPU preset for ~128 px images, which overrides what the data needs
(backbone, stride, anchor sizes, image size) and what makes a detector trained from scratch
learn in minutes (optimiser, jittered ground-truth RoIs, iterations; docs/time-to-accuracy), and
`config_for_data(samples, class_names)` sizes that preset to a data set: the config the
command line trains with. Its iterations, 3000, are for random weights (the library's
default start); the command line starts the backbone pre-trained (backbones.PRETRAINED) and
then trains ITERS_FROM_PRETRAINED (1500), as the paper starts from ImageNet.

    >>> from minifrcnn.config import Config
    >>> cfg = Config.small(num_classes=4)
    >>> cfg.anchor_sizes()            # base_size * scales, in pixels
    (16, 32, 64)
"""
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

LR_STEP_AT = 0.8          # the learning rate steps down after this fraction of the iterations
ITERS_FROM_PRETRAINED = 1500   # the small preset's schedule from a pre-trained backbone (the
                               # command line's default start); from random weights: .iters, 3000
REMOVED_FIELDS = ("extra",)   # fields older checkpoints may hold; read and ignored


@dataclass
class Config:
    # --- data -------------------------------------------------------------------------
    num_classes: int = 20               # K object classes; label 0 is background, 1..K objects
    class_names: tuple = ()             # K names, in label order (label k -> class_names[k - 1])
    image_min_size: int = 600           # resize so the shorter side is this ...
    image_max_size: int = 1000          # ... unless the longer side would exceed this
    allow_upscale: bool = True          # False: never enlarge an image (small-image presets)
    pixel_mean: tuple = (0.485, 0.456, 0.406)   # per-channel mean/std of [0, 1] RGB images
    pixel_std: tuple = (0.229, 0.224, 0.225)
    flip: bool = True                   # random horizontal flip while training

    # --- backbone (shared conv layers) ------------------------------------------------
    backbone: str = "vgg16"             # "small4" | "small" | "zf" | "vgg16" (see backbones.py)
    feat_stride: int = 16               # pixels of the image per cell of the feature map
    backbone_norm: str = "none"         # "none": conv -> ReLU (the paper's); "group": conv ->
                                        # GroupNorm -> ReLU (Wu & He 2018; not in the paper)
    backbone_norm_groups: int = 8       # GroupNorm's groups; must divide every conv's channels

    # --- anchors ----------------------------------------------------------------------
    anchor_base_size: int = 16          # anchor side before scaling, pixels
    anchor_scales: tuple = (8, 16, 32)  # -> 128, 256, 512 px
    anchor_ratios: tuple = (0.5, 1.0, 2.0)   # h / w

    # --- RPN training targets (anchor_targets.py) -------------------------------------
    rpn_positive_iou: float = 0.7       # IoU >= this: positive (and the best anchor of each gt)
    rpn_negative_iou: float = 0.3       # IoU < this: negative
    rpn_batch_size: int = 256           # anchors sampled per image
    rpn_positive_fraction: float = 0.5  # at most this fraction of the sample positive
    rpn_allowed_border: int = 0         # anchors further than this outside the image are ignored

    # --- proposal layer (proposals.py) ------------------------------------------------
    rpn_pre_nms_top_n_train: int = 12000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 6000
    rpn_post_nms_top_n_test: int = 300
    rpn_nms_threshold: float = 0.7
    rpn_min_size: float = 16.0          # pixels at the original image scale

    # --- RoI sampling (proposal_targets.py) -------------------------------------------
    roi_batch_size: int = 128           # RoIs per image
    roi_fg_fraction: float = 0.25
    roi_fg_iou: float = 0.5             # IoU >= this: foreground
    roi_bg_iou_hi: float = 0.5          # background IoU in [lo, hi)
    roi_bg_iou_lo: float = 0.1
    bbox_stds: tuple = (0.1, 0.1, 0.2, 0.2)   # head regression targets are divided by these
    roi_gt_jitter: int = 0              # extra candidate RoIs per gt box, jittered (0: the paper's)

    # --- RoI pooling and head ---------------------------------------------------------
    roi_op: str = "pool"                # "pool" (RoI max pooling, the paper) | "align" (RoIAlign)
    roi_output_size: int = 7
    roi_align_sampling_ratio: int = 2
    head_hidden: int = 4096             # width of the two fc layers
    head_cls_std: float = 0.01          # Gaussian init std of the class layer (py-faster-rcnn's)
    head_reg_std: float = 0.001         # ... and of the box layer

    # --- loss -------------------------------------------------------------------------
    rpn_lambda: float = 10.0            # lambda balancing L_cls and L_reg in the RPN loss
    head_lambda: float = 1.0            # the same balance for the Fast R-CNN head
    rpn_sigma: float = 3.0              # smooth-L1 sigma (py-faster-rcnn)
    head_sigma: float = 1.0
    loss_normalization: str = "paper"   # "paper": N_cls=256, N_reg=#anchor locations, lambda=10
                                        # "py-faster-rcnn": both terms / sampled count, lambda=1

    # --- optimiser --------------------------------------------------------------------
    optimizer: str = "sgd"              # "sgd" (the paper's, Caffe form) | "adamw" (optim.py)
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_steps: tuple = (50000,)          # iterations where lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    lr_warmup_iters: int = 0            # linear warm-up over these first iterations (0: none)
    lr_schedule: str = "step"           # "step" (x lr_gamma at lr_steps) | "linear" (to 0 at iters)
    iters: int = 70000
    images_per_batch: int = 1

    # --- test -------------------------------------------------------------------------
    test_nms: float = 0.3               # per-class NMS at test time
    score_threshold: float = 0.05       # keep detections scoring at least this
    max_detections: int = 100           # per image

    seed: int = 0

    def anchor_sizes(self):
        """The anchors' sides in pixels for ratio 1: base_size * scale."""
        return tuple(int(round(self.anchor_base_size * s)) for s in self.anchor_scales)

    def num_anchors(self):
        """A: anchors per feature-map cell."""
        return len(self.anchor_scales) * len(self.anchor_ratios)

    @classmethod
    def small(cls, **overrides):
        """The CPU preset for ~128 px images (docs/DESIGN.md: the paper's defaults and the small preset)."""
        values = dict(
            backbone="small4", feat_stride=4,
            anchor_base_size=8, anchor_scales=(2, 4, 8),   # 16, 32, 64 px
            image_min_size=128, image_max_size=256, allow_upscale=False,
            rpn_min_size=4.0,
            rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=300,
            rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=100,
            roi_gt_jitter=4,
            roi_op="align", roi_output_size=4,             # 4 x 4 RoIAlign bins: fc6 has 2048 inputs
            head_hidden=256,
            optimizer="adamw", lr=1e-3, lr_warmup_iters=100,
            images_per_batch=2, iters=3000, lr_steps=(2400,),
        )
        values.update(overrides)
        return cls(**values)

    def with_iters(self, iters):
        """A copy that trains for `iters` iterations, the learning rate stepped down after
        LR_STEP_AT (80%) of them (never before iteration 1): lr_steps = (0.8 * iters,)."""
        iters = int(iters)
        return self.replace(iters=iters, lr_steps=(max(1, int(iters * LR_STEP_AT)),))

    def replace(self, **changes):
        """A copy with some fields changed (unknown names are a ValueError)."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"Config has no field(s) {unknown}")
        return replace(self, **changes)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Inverse of to_dict; lists become tuples again, unknown keys are a ValueError
        (REMOVED_FIELDS, which older checkpoints hold, are dropped)."""
        names = {f.name: f for f in fields(cls)}
        d = {k: v for k, v in d.items() if k not in REMOVED_FIELDS}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**values)


def config_for_data(samples, class_names, seed=0, min_size=None, max_size=None, **overrides):
    """The training config for a data set: the small-image preset (Config.small), sized to it.

    The image size is the median shorter side of the training images (never up-scaled,
    at most 600 px, the paper's size), unless min_size / max_size (--min-size / --max-size)
    say otherwise; max_size defaults to min_size * 1000 / 600, the paper's ratio. The anchors
    scale with the image: 16/32/64 px at 128 px, so the largest anchor is about half the
    shorter side; the RPN's minimum proposal size (4 px at 128 px) scales the same way.

    samples: dicts with an "image" (H, W, 3); class_names: the K names in label order.
    """
    shorter = int(np.median([min(s["image"].shape[:2]) for s in samples]))
    min_size = int(min_size or min(shorter, 600))
    max_size = int(max_size or max(min_size, int(round(min_size * 1000 / 600))))
    factor = min_size / 128.0
    sized = dict(image_min_size=min_size, image_max_size=max_size, rpn_min_size=4.0 * factor,
                 anchor_scales=tuple(round(s * factor, 3) for s in (2, 4, 8)))
    sized.update(overrides)                                     # the caller's choice wins
    return Config.small(num_classes=len(class_names), class_names=tuple(class_names), seed=seed,
                        **sized)
