"""Proposal targets: sample the RoIs the Fast R-CNN head trains on, with their class labels and
class-specific regression targets (Fast R-CNN 2.3, py-faster-rcnn's proposal_target_layer).

For one image:

    rois      = proposals + the gt boxes themselves           (so there is always some foreground)
    IoU[r, g] = box_iou(rois, gt_boxes);  best gt of r: g*(r) = argmax_g IoU[r, g],  m(r) = max_g IoU[r, g]
    fg candidates: m(r) >= fg_iou                  (0.5)          label = gt_labels[g*(r)]  in 1..K
    bg candidates: bg_iou_lo <= m(r) < bg_iou_hi   ([0.1, 0.5))   label = 0
    sample at most round(fg_fraction * batch_size) fg (32 of 128), then bg up to batch_size,
    each without replacement (random, through the numpy Generator on the host).

Regression targets, normalised by stds (0.1, 0.1, 0.2, 0.2) so they have roughly unit variance:

    t(r) = encode(roi r, gt box g*(r)) / stds       (the same as encode(..., weights=1 / stds))

The head predicts 4 deltas per class, so targets are class-specific: row r of bbox_targets
(S, 4 * (K + 1)) holds t(r) in columns 4c : 4c + 4 for its class c, zeros elsewhere, and
bbox_weights is 1 exactly there (foreground rows only: background has no box to regress).
The head decodes its predictions with decode(rois, pred, weights=1 / stds).

Choices where py-faster-rcnn differs or is silent:
  - Too few candidates: we return fewer than batch_size rows. We never repeat an RoI
    (py-faster-rcnn samples with replacement when it is short, which only duplicates rows).
  - No bg candidate in [lo, hi) (e.g. lo = 0.1 and every proposal far from every gt): the
    sample is the fg rows alone.
  - An image with no gt boxes: nothing is near an object, so every proposal is a background
    candidate, whatever lo is (otherwise such images would give the head no rows at all);
    targets and weights are all zero.

    t = proposal_targets(proposals, gt_boxes, gt_labels, num_classes, rng)
    t["rois"], t["labels"], t["bbox_targets"], t["bbox_weights"]
"""
from .anchor_targets import random_subset
from .backend import get_array_module
from .boxes import box_iou, encode
from .ops.checks import check_array, check_same_device


def proposal_targets(proposals, gt_boxes, gt_labels, num_classes, rng, batch_size=128, fg_fraction=0.25,
                     fg_iou=0.5, bg_iou_hi=0.5, bg_iou_lo=0.1, stds=(0.1, 0.1, 0.2, 0.2),
                     gt_jitter=0):
    """Sample RoIs for the head and build their targets (see the module docstring).

    proposals: (R, 4) from proposal_layer (R may be 0). gt_boxes: (G, 4) (G may be 0).
    gt_labels: (G,) integers in 1..num_classes. num_classes: K, not counting background.
    rng: numpy Generator for the sampling. stds: 4 numbers the targets are divided by.
    gt_jitter: J extra candidates per gt box (not in the paper; 0 gives the paper's sampling):
        jittered_gt_boxes(gt_boxes, J, rng), labelled by their IoU like every other candidate.
    Requires 0 <= bg_iou_lo <= bg_iou_hi <= fg_iou <= 1 (so no RoI is both fg and bg).

    Returns a dict, S <= batch_size rows, the fg rows first:
        "rois":         (S, 4) proposals' dtype, the sampled boxes (no batch index)
        "labels":       (S,) int64, 0 = background, 1..K = object class
        "bbox_targets": (S, 4 * (K + 1)) class-specific normalised deltas
        "bbox_weights": (S, 4 * (K + 1)) 1 on a fg row's 4 class columns, 0 elsewhere
        "max_iou":      (S,) each RoI's best IoU with a gt box (0 when there is none)
        "matched_gt":   (S,) int64 index of the gt box a fg row regresses to, -1 on bg rows
    """
    check_array(proposals, "proposals", ndim=2, shape=(None, 4))
    check_array(gt_boxes, "gt_boxes", ndim=2, shape=(None, 4))
    check_array(gt_labels, "gt_labels", ndim=1, float_only=False, shape=(gt_boxes.shape[0],))
    check_same_device(("proposals", proposals), ("gt_boxes", gt_boxes), ("gt_labels", gt_labels))
    if gt_labels.dtype.kind not in "iu":
        raise ValueError(f"gt_labels: expected an integer dtype, got {gt_labels.dtype}")
    if not 0 <= bg_iou_lo <= bg_iou_hi <= fg_iou <= 1:
        raise ValueError("expected 0 <= bg_iou_lo <= bg_iou_hi <= fg_iou <= 1, got "
                         f"bg_iou_lo={bg_iou_lo}, bg_iou_hi={bg_iou_hi}, fg_iou={fg_iou}")
    if len(stds) != 4:
        raise ValueError(f"stds: expected 4 numbers, got {stds!r}")
    xp = get_array_module(proposals)
    G = gt_boxes.shape[0]
    if G > 0 and bool((gt_labels.min() < 1) | (gt_labels.max() > num_classes)):   # one scalar read
        lo, hi = int(gt_labels.min()), int(gt_labels.max())
        raise ValueError(f"gt_labels: expected classes in 1..{num_classes} (0 is background), "
                         f"got values from {lo} to {hi}")

    # 1. the candidate RoIs: the proposals and the gt boxes (and J jittered copies of each)
    candidates = [proposals, gt_boxes.astype(proposals.dtype)]
    if gt_jitter > 0 and G > 0:
        candidates.append(jittered_gt_boxes(gt_boxes, gt_jitter, rng).astype(proposals.dtype))
    rois_all = xp.concatenate(candidates, axis=0)                          # (R+G(1+J), 4)
    n_all = rois_all.shape[0]
    if G > 0:
        iou = box_iou(rois_all, gt_boxes)                                  # (R+G(1+J), G)
        max_iou = iou.max(axis=1)                                          # (R+G,)
        best_gt = iou.argmax(axis=1).astype(xp.int64)                      # (R+G,)
        bg_mask = (max_iou >= bg_iou_lo) & (max_iou < bg_iou_hi)           # (R+G,)
    else:                                            # no objects: every proposal is background
        max_iou = xp.zeros(n_all, dtype=rois_all.dtype)                    # (R,)
        best_gt = xp.zeros(n_all, dtype=xp.int64)                          # (R,)
        bg_mask = xp.ones(n_all, dtype=bool)                               # (R,)

    # 2. sample fg, then bg to fill the batch
    fg_wanted = int(round(fg_fraction * batch_size))
    fg = random_subset(xp.nonzero(max_iou >= fg_iou)[0], fg_wanted, rng)          # (F,)
    bg = random_subset(xp.nonzero(bg_mask)[0], batch_size - fg.shape[0], rng)     # (B,)
    keep = xp.concatenate([fg, bg])                                               # (S,) fg first
    F, S = fg.shape[0], keep.shape[0]

    rois = rois_all[keep]                                                         # (S, 4)
    labels = xp.zeros(S, dtype=xp.int64)                                          # (S,)
    matched_gt = xp.full(S, -1, dtype=xp.int64)                                   # (S,)
    bbox_targets = xp.zeros((S, 4 * (num_classes + 1)), dtype=rois_all.dtype)     # (S, 4(K+1))
    bbox_weights = xp.zeros((S, 4 * (num_classes + 1)), dtype=rois_all.dtype)     # (S, 4(K+1))

    # 3. fg rows: class label, and the normalised deltas in that class's 4 columns
    if F > 0:
        gt_of_fg = best_gt[fg]                                                    # (F,)
        labels[:F] = gt_labels[gt_of_fg]
        matched_gt[:F] = gt_of_fg
        stds_arr = xp.asarray(stds, dtype=rois_all.dtype)                         # (4,)
        deltas = encode(rois[:F], gt_boxes[gt_of_fg].astype(rois_all.dtype)) / stds_arr   # (F, 4)
        rows = xp.arange(F)[:, None]                                              # (F, 1)
        cols = 4 * labels[:F, None] + xp.arange(4)[None, :]                       # (F, 4)
        bbox_targets[rows, cols] = deltas
        bbox_weights[rows, cols] = 1
    return {"rois": rois, "labels": labels, "bbox_targets": bbox_targets,
            "bbox_weights": bbox_weights, "max_iou": max_iou[keep], "matched_gt": matched_gt}


JITTER = 0.2      # a jittered box's edges move by up to this fraction of the box's width / height


def jittered_gt_boxes(gt_boxes, copies, rng):
    """`copies` randomly moved copies of every gt box: each edge moves by a uniform amount in
    [-JITTER, JITTER] times the box's width (x1, x2) or height (y1, y2):

        (x1, y1, x2, y2) + (u1 w, u2 h, u3 w, u4 h),   u ~ U(-0.2, 0.2)

    Their IoU with the box spreads over 0.39-0.99 (median 0.68; 99.4% at 0.5 or more, measured on
    100000 copies), so almost all become foreground RoIs that look like what a trained RPN
    proposes: the head gets such RoIs from the first iteration, before the RPN proposes
    anything near the objects.
    (x2 >= x1 always: the two edges move towards each other by at most 0.4 of the side.)
    gt_boxes: (G, 4); rng: numpy Generator (drawn on the host). Returns (G * copies, 4), box by box.
    """
    xp = get_array_module(gt_boxes)
    boxes = xp.repeat(gt_boxes, copies, axis=0)                             # (G*J, 4)
    w = boxes[:, 2] - boxes[:, 0]                                           # (G*J,)
    h = boxes[:, 3] - boxes[:, 1]                                           # (G*J,)
    u = xp.asarray(rng.uniform(-JITTER, JITTER, size=(boxes.shape[0], 4)))   # (G*J, 4)
    return boxes + u * xp.stack([w, h, w, h], axis=1)                        # (G*J, 4)


def proposal_target_settings(cfg):
    """The keyword arguments of proposal_targets taken from a Config:

        proposal_targets(proposals, gt_boxes, gt_labels, cfg.num_classes, rng, **proposal_target_settings(cfg))
    """
    return dict(batch_size=cfg.roi_batch_size, fg_fraction=cfg.roi_fg_fraction, fg_iou=cfg.roi_fg_iou,
                bg_iou_hi=cfg.roi_bg_iou_hi, bg_iou_lo=cfg.roi_bg_iou_lo, stds=tuple(cfg.bbox_stds),
                gt_jitter=cfg.roi_gt_jitter)
