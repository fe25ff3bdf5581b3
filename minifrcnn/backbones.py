"""The shared convolutional layers ("backbone") that both the RPN and the Fast R-CNN head read.

Five named configurations, each a Sequential of Conv2d / ReLU / MaxPool2d (with a GroupNorm
between each conv and its ReLU when config.backbone_norm is "group"):

    "small4" 4 convs 32-64-128-128, 3x3 pad 1, two 2x2 max-pools     -> stride 4
             (the CPU default for ~128 px images; docs/DESIGN.md: the small preset)
    "small"  the same with a third max-pool before the last conv      -> stride 8
             (the CPU default before 2026-12; docs/time-to-accuracy: why stride 4)
    "zf"     Zeiler & Fergus' 5 conv layers as used in the paper       -> stride 16
             conv1 96 7x7/2, pool 3x3/2, conv2 256 5x5/2, pool 3x3/2, conv3 384, conv4 384, conv5 256
    "vgg16"  the 13 conv layers of VGG-16 (conv5_3 output)            -> stride 16
    "tiny"   "small4" with 4-8 channels, for gradient checks and quick demonstrations

The paper starts from ImageNet weights; we cannot download any, so these start from He
initialisation. In their place "small4" ships pre-trained (PRETRAINED: data/small4_backbone.npz,
a classifier of the patterned patches of scripts/make_patterns_voc.py, a third synthetic set,
neither shapes nor digits; data/README.md says how it was made), and the command line's `train`
starts from it unless told `--backbone-weights none`. A user's own weights load from an npz
file whose keys are the parameter names of the Sequential
(``python -c "from minifrcnn.backbones import *; print(parameter_names('zf'))"``).

Differences from the paper, kept small on purpose: ZF's max-pools here have no padding (our
max_pool2d has none) and ZF's local response normalisation layers are left out.

An option the paper does not have (Config.backbone_norm, off by default): norm="group" puts a
GroupNorm (Wu & He, 2018; ops/group_norm.py) between every conv and its ReLU,

    conv -> GroupNorm(out_ch, norm_groups) -> ReLU

which normalises each image on its own, so it works at our 2 images per batch where batch
normalisation would not. It adds no random draw: the convs get exactly the weights they get
without it, and only the parameter indices after the first conv move ("3.weight" becomes
"4.weight"). The conv keeps its bias: a GroupNorm after it cancels the bias's mean over each
group of channels but not the differences within a group, so it is not quite redundant
(it would be with one channel per group, or with batch normalisation). Frameworks usually
build a conv that a normalisation follows without a bias; we keep it, so that norm="group"
only adds layers and changes nothing else.
"""
import os

import numpy as np

from .layers import Conv2d, GroupNorm, MaxPool2d, ReLU, Sequential
from .npz import read_npz
from .ops.checks import check_int

# (out_channels, kernel, stride, pad) for each conv, "M" for a 2x2/2 max-pool, "M3" for 3x3/2.
BACKBONES = {
    "small": {"stride": 8, "layers": [(32, 3, 1, 1), "M", (64, 3, 1, 1), "M",
                                      (128, 3, 1, 1), "M", (128, 3, 1, 1)]},
    "small4": {"stride": 4, "layers": [(32, 3, 1, 1), "M", (64, 3, 1, 1), "M",
                                       (128, 3, 1, 1), (128, 3, 1, 1)]},
    "tiny": {"stride": 4, "layers": [(4, 3, 1, 1), "M", (8, 3, 1, 1), "M",
                                     (8, 3, 1, 1), (8, 3, 1, 1)]},
    "zf": {"stride": 16, "layers": [(96, 7, 2, 3), "M3", (256, 5, 2, 2), "M3",
                                    (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1)]},
    "vgg16": {"stride": 16, "layers": [(64, 3, 1, 1), (64, 3, 1, 1), "M",
                                       (128, 3, 1, 1), (128, 3, 1, 1), "M",
                                       (256, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1), "M",
                                       (512, 3, 1, 1), (512, 3, 1, 1), (512, 3, 1, 1), "M",
                                       (512, 3, 1, 1), (512, 3, 1, 1), (512, 3, 1, 1)]},
}

# The backbones that ship pre-trained, by name: the file in the repository's data/ folder.
PRETRAINED = {"small4": os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     "data", "small4_backbone.npz")}


def start_weights(flag, name):
    """Where the `name` backbone of a training starts (train's and experiment's --backbone-weights).

    flag None: the shipped pre-trained weights of that backbone (PRETRAINED; None if it has
    none), as the paper starts from ImageNet; "none": None, random weights; otherwise flag, the
    npz file to start from. A missing shipped file is a ValueError that says so.
    """
    if flag is None:
        shipped = PRETRAINED.get(name)
        if shipped is not None and not os.path.exists(shipped):
            raise ValueError(f"--backbone-weights: the shipped pre-trained backbone {shipped} is "
                             "missing (it comes with the repository's data/ folder); give "
                             "--backbone-weights none to train from random weights")
        return shipped
    return None if flag.lower() == "none" else flag


def backbone_stride(name):
    """Pixels of the input per cell of the output feature map."""
    return _spec(name)["stride"]


def backbone_channels(name):
    """C of the output feature map."""
    convs = [layer for layer in _spec(name)["layers"] if not isinstance(layer, str)]
    return convs[-1][0]


NORMS = ("none", "group")


def build_backbone(name, rng, in_channels=3, dtype=np.float32, norm="none", norm_groups=8):
    """A Sequential of the named backbone, He-initialised from the numpy Generator `rng`.

    norm: "none" (conv -> ReLU, the paper's) or "group" (conv -> GroupNorm(norm_groups) -> ReLU;
    norm_groups must divide every conv's channel count). Config.backbone_norm and
    Config.backbone_norm_groups choose them.
    Input (N, 3, H, W) -> output (N, backbone_channels(name), ~H/stride, ~W/stride).
    """
    spec = _spec(name)
    if norm not in NORMS:
        raise ValueError(f"backbone_norm: expected one of {', '.join(map(repr, NORMS))}, got {norm!r}")
    if norm == "group":
        norm_groups = check_int(norm_groups, "backbone_norm_groups", 1)
        convs = [layer[0] for layer in spec["layers"] if not isinstance(layer, str)]
        if any(c % norm_groups for c in convs):
            raise ValueError(f"backbone_norm_groups: expected a divisor of every conv's channels "
                             f"{convs} in backbone {name!r}, got {norm_groups}")
    layers = []
    channels = in_channels
    for layer in spec["layers"]:
        if layer == "M":
            layers.append(MaxPool2d(kernel=2, stride=2))
        elif layer == "M3":
            layers.append(MaxPool2d(kernel=3, stride=2))
        else:
            out_ch, k, stride, pad = layer
            layers.append(Conv2d(channels, out_ch, k, stride=stride, pad=pad, init="he",
                                 rng=rng, dtype=dtype))
            if norm == "group":
                layers.append(GroupNorm(out_ch, norm_groups, dtype=dtype))   # no random draw
            layers.append(ReLU())
            channels = out_ch
    return Sequential(*layers)


def feature_size(name, height, width):
    """(feat_h, feat_w) that the backbone gives for an (height, width) input (floor at every layer)."""
    h, w = height, width
    for layer in _spec(name)["layers"]:
        if layer == "M":
            h, w = h // 2, w // 2
        elif layer == "M3":
            h, w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
        else:
            _, k, stride, pad = layer
            h, w = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    return h, w


def parameter_names(name, norm="none", norm_groups=8):
    """The keys an npz of backbone weights must have."""
    net = build_backbone(name, np.random.default_rng(0), norm=norm, norm_groups=norm_groups)
    return [n for n, _ in net.named_parameters()]


def load_backbone_weights(backbone, path):
    """Load weights saved with numpy.savez(path, **{name: array}) into `backbone` (strict)."""
    weights = read_npz(path, "backbone weights")
    try:
        backbone.load_state_dict(weights)
    except ValueError as e:
        raise ValueError(f"backbone weights {path}: {e}") from None
    return backbone


def _spec(name):
    if name not in BACKBONES:
        raise ValueError(f"backbone {name!r}: expected one of {', '.join(BACKBONES)}")
    return BACKBONES[name]
