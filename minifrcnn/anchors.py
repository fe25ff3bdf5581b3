"""Anchors: the reference boxes the RPN scores and regresses at every feature-map cell (paper 3.1).

At each cell the RPN predicts A = len(ratios) * len(scales) boxes relative to A anchors of
fixed shapes. An anchor of scale s and ratio r (= h / w) has

    area = (base_size * s)^2,     w = base_size * s / sqrt(r),     h = base_size * s * sqrt(r)

so h / w = r exactly and w * h = area exactly (our boxes are continuous: no rounding to whole
pixels as py-faster-rcnn's generate_anchors does). The paper's defaults, base_size 16, scales
(8, 16, 32), ratios (0.5, 1, 2), give the 9 anchors of 128^2, 256^2 and 512^2 pixels.

Centre convention: the base anchors are centred on (base_size / 2, base_size / 2), the centre of
the first cell when base_size == stride (16 and 16 in the paper). Config.small() has base_size 8
and stride 4 (since 2026-12-05), so its anchors are centred on the corner between cells, 2 px
off each cell's centre (notebook 03 shows it); the RPN's regression absorbs the offset.
grid_anchors() shifts them by (x * stride, y * stride), so the anchors of cell (x, y) are
centred on

    (x * stride + base_size / 2,  y * stride + base_size / 2)

which is the cell's centre whenever base_size == stride.

    base = generate_base_anchors(16, (0.5, 1, 2), (8, 16, 32))   # (9, 4)
    anchors = grid_anchors(base, feat_h=38, feat_w=50, stride=16)  # (38 * 50 * 9, 4)
"""
import numpy as np

from .backend import get_array_module
from .ops.checks import check_array


def generate_base_anchors(base_size=16, ratios=(0.5, 1.0, 2.0), scales=(8, 16, 32), dtype=np.float32):
    """The A anchors of one cell, centred on (base_size / 2, base_size / 2).

    For each ratio r (h / w) and, inside it, each scale s (ratio-major, as py-faster-rcnn):
        w = base_size * s / sqrt(r),  h = base_size * s * sqrt(r)
        anchor = (c - w/2, c - h/2, c + w/2, c + h/2),  c = base_size / 2
    Returns (A, 4) numpy array, A = len(ratios) * len(scales), row index = ratio_i * len(scales) + scale_j.
    Built on the host (it is 9 boxes); move it to the GPU with backend.to_device before grid_anchors.
    """
    if base_size <= 0:
        raise ValueError(f"base_size: expected a positive number, got {base_size!r}")
    if len(ratios) == 0 or any(r <= 0 for r in ratios):
        raise ValueError(f"ratios: expected positive numbers (h / w), got {ratios!r}")
    if len(scales) == 0 or any(s <= 0 for s in scales):
        raise ValueError(f"scales: expected positive numbers, got {scales!r}")
    centre = base_size / 2.0
    rows = []
    for r in ratios:
        for s in scales:
            side = base_size * s                    # sqrt(area)
            w = side / np.sqrt(r)
            h = side * np.sqrt(r)
            rows.append([centre - w / 2, centre - h / 2, centre + w / 2, centre + h / 2])
    return np.array(rows, dtype=dtype)              # (A, 4)


def base_anchors_from_config(cfg, dtype=np.float32):
    """generate_base_anchors with the config's anchor_base_size, anchor_ratios, anchor_scales."""
    return generate_base_anchors(cfg.anchor_base_size, cfg.anchor_ratios, cfg.anchor_scales, dtype=dtype)


def grid_anchors(base, feat_h, feat_w, stride):
    """Every anchor of a feat_h x feat_w feature map: the base anchors shifted to each cell.

        anchors[(y * feat_w + x) * A + a] = base[a] + (x * stride, y * stride, x * stride, y * stride)

    Row-major over cells (y outer, x inner) with the A anchors of a cell fastest: the same
    order as the RPN's outputs reshaped (A, H, W) -> (H, W, A) -> (H * W * A,).
    base: (A, 4) (numpy or cupy; the result lives where base lives, with its dtype).
    Returns (feat_h * feat_w * A, 4).
    """
    check_array(base, "base", ndim=2, shape=(None, 4))
    xp = get_array_module(base)
    A = base.shape[0]
    xs = xp.arange(feat_w, dtype=base.dtype) * stride                  # (W,) left edge of each column
    ys = xp.arange(feat_h, dtype=base.dtype) * stride                  # (H,) top edge of each row
    shift_x = xp.broadcast_to(xs[None, :], (feat_h, feat_w))           # (H, W)
    shift_y = xp.broadcast_to(ys[:, None], (feat_h, feat_w))           # (H, W)
    shifts = xp.stack([shift_x, shift_y, shift_x, shift_y], axis=2)    # (H, W, 4)
    anchors = shifts[:, :, None, :] + base[None, None, :, :]           # (H, W, A, 4)
    return anchors.reshape(feat_h * feat_w * A, 4)                     # (H*W*A, 4)


def grid_anchors_reference(base, feat_h, feat_w, stride):
    """grid_anchors as three plain loops (y, x, a): what the tests compare grid_anchors to."""
    base = np.asarray(base)
    rows = []
    for y in range(feat_h):
        for x in range(feat_w):
            for a in range(base.shape[0]):
                rows.append(base[a] + np.array([x * stride, y * stride, x * stride, y * stride]))
    return np.array(rows, dtype=base.dtype).reshape(-1, 4)
