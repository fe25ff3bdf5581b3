"""Anchor targets: which anchors the RPN should call object / background, and where to move them
(paper 3.1.2, py-faster-rcnn's anchor_target_layer).

For one image, with IoU[a, g] the IoU of anchor a with ground-truth box g:

    label[a] = -1  (ignored)    if anchor a crosses the image border by more than allowed_border
    then, among the anchors inside, in this order (a later rule overwrites an earlier one):
      1. label[a] = 0  (negative)  if max_g IoU[a, g] <  negative_iou   (0.3)
      2. label[a] = 1  (positive)  if a is a best anchor of some gt g:  IoU[a, g] == max_a' IoU[a', g]
                                   (ties: every anchor reaching the gt's maximum; a gt whose
                                   maximum is 0 touches no anchor and makes no positive)
      3. label[a] = 1  (positive)  if max_g IoU[a, g] >= positive_iou   (0.7)
    (anchors that are neither stay -1: they do not count in the loss)

So a positive always overrides a negative: a gt's best anchor is positive even when its IoU is
below 0.3 (py-faster-rcnn's order, RPN_CLOBBER_POSITIVES = False).

Sampling (the RPN mini-batch, 256 anchors, up to half positive): if there are more than
batch_size * positive_fraction positives, randomly chosen extra ones become -1; then the
negatives fill the rest of batch_size and randomly chosen extra negatives become -1.
The random choice uses a numpy Generator on the host, which picks positions among the N
candidates (only N, a shape, is needed); the chosen positions go to the labels' device.
In training the model calls this with numpy arrays: the targets depend only on the ground truth
and the image size, so they are computed on the host and uploaded (joint_training.JointTraining.sample).

Regression targets, for positive anchors only (zeros elsewhere; the loss ignores them):

    bbox_targets[a] = encode(anchor a, gt box argmax_g IoU[a, g])     (tx, ty, tw, th), no weights

    labels, bbox_targets, matched_gt = anchor_targets(anchors, gt_boxes, (H, W), rng)
    # (A_total,) int64 in {1, 0, -1};  (A_total, 4);  (A_total,) int64, -1 unless positive
"""

from .backend import get_array_module
from .boxes import box_iou, encode
from .ops.checks import check_array, check_same_device


def random_subset(indices, max_count, rng):
    """At most max_count of `indices`, chosen at random without replacement, in increasing order.

    indices: (N,) integer array (numpy or cupy). The numpy Generator `rng` chooses which
    POSITIONS 0..N-1 to keep, on the host (so a run is reproducible on any device); only N, a
    shape, is needed for that, so the indices themselves never leave the device. The positions
    go to the device and pick the indices there. rng.choice(N, ...) draws exactly what
    rng.choice(indices, ...) would, so results match the older host version bit for bit.
    All of them, unchanged, when N <= max_count. Returns (min(N, max_count),) int64.
    """
    xp = get_array_module(indices)
    max_count = max(int(max_count), 0)
    if indices.shape[0] <= max_count:
        return indices.astype(xp.int64)
    positions = rng.choice(indices.shape[0], size=max_count, replace=False)  # (max_count,) host
    chosen = indices[xp.asarray(positions)]                                  # (max_count,) device
    return xp.sort(chosen).astype(xp.int64)


def inside_image(anchors, image_size, allowed_border=0):
    """Mask of the anchors lying inside the image, give or take allowed_border pixels.

        inside = x1 >= -b  and  y1 >= -b  and  x2 <= W + b  and  y2 <= H + b

    An anchor touching the border (x1 == 0 or x2 == W) is inside.
    anchors: (A, 4), image_size: (H, W). Returns (A,) bool.
    """
    H, W = image_size
    b = allowed_border
    return ((anchors[:, 0] >= -b) & (anchors[:, 1] >= -b)
            & (anchors[:, 2] <= W + b) & (anchors[:, 3] <= H + b))           # (A,)


def _label_inside_anchors(iou, positive_iou, negative_iou):
    """The labelling rules 1-3 for anchors that are all inside the image.

    iou: (A_in, G). Returns (labels (A_in,) int64, argmax_gt (A_in,) int64).
    """
    xp = get_array_module(iou)
    A_in, G = iou.shape
    labels = xp.full(A_in, -1, dtype=xp.int64)                          # (A_in,)
    if G == 0 or A_in == 0:                     # no objects (all negative), or no anchor inside
        labels[:] = 0
        return labels, xp.zeros(A_in, dtype=xp.int64)
    max_iou = iou.max(axis=1)                                           # (A_in,) best gt per anchor
    argmax_gt = iou.argmax(axis=1).astype(xp.int64)                     # (A_in,)
    gt_max = iou.max(axis=0)                                            # (G,) best anchor IoU per gt
    # rule 2: every anchor reaching its gt's maximum (ties included), for gts that touch something
    is_best = (iou == gt_max[None, :]) & (gt_max[None, :] > 0)         # (A_in, G)
    # xp.where rather than labels[mask] = value: the same labels, but on a GPU a boolean-mask
    # assignment first counts the mask's True entries, which makes the host wait for the device
    labels = xp.where(max_iou < negative_iou, 0, labels)                # rule 1
    labels = xp.where(is_best.any(axis=1), 1, labels)                   # rule 2
    labels = xp.where(max_iou >= positive_iou, 1, labels)               # rule 3
    return labels, argmax_gt


def anchor_targets(anchors, gt_boxes, image_size, rng, positive_iou=0.7, negative_iou=0.3,
                   batch_size=256, positive_fraction=0.5, allowed_border=0):
    """Labels and regression targets for the RPN's anchors of one image (see the module docstring).

    anchors: (A_total, 4) from grid_anchors. gt_boxes: (G, 4), G may be 0 (then every inside
    anchor is a negative candidate and all targets are zero). image_size: (H, W) of the
    (resized) image. rng: numpy Generator used for the random sampling.
    positive_iou, negative_iou: the 0.7 / 0.3 thresholds. batch_size, positive_fraction: the
    sample, 256 anchors with at most int(256 * 0.5) = 128 positives. allowed_border: pixels an
    anchor may stick out of the image and still be used (0 in the paper's training).

    Returns a tuple (labels, bbox_targets, matched_gt):
        labels:       (A_total,) int64: 1 positive, 0 negative, -1 ignored (outside the image,
                      between the thresholds, or not sampled)
        bbox_targets: (A_total, 4) anchors' dtype: encode(anchor, matched gt) on positive rows,
                      0 elsewhere
        matched_gt:   (A_total,) int64: for positive anchors, the index of the gt box their
                      target points to (their highest-IoU gt); -1 elsewhere
    """
    check_array(anchors, "anchors", ndim=2, shape=(None, 4))
    check_array(gt_boxes, "gt_boxes", ndim=2, shape=(None, 4))
    check_same_device(("anchors", anchors), ("gt_boxes", gt_boxes))
    if not 0 <= negative_iou <= positive_iou <= 1:
        raise ValueError(f"expected 0 <= negative_iou <= positive_iou <= 1, "
                         f"got negative_iou={negative_iou}, positive_iou={positive_iou}")
    xp = get_array_module(anchors)
    A_total = anchors.shape[0]

    # 1. only anchors inside the image take part; the rest stay -1
    inside = xp.nonzero(inside_image(anchors, image_size, allowed_border))[0]   # (A_in,)
    iou = box_iou(anchors[inside], gt_boxes)                                     # (A_in, G)
    labels_in, argmax_in = _label_inside_anchors(iou, positive_iou, negative_iou)  # (A_in,) each
    labels = xp.full(A_total, -1, dtype=xp.int64)                                # (A_total,)
    labels[inside] = labels_in
    argmax_gt = xp.zeros(A_total, dtype=xp.int64)                                # (A_total,)
    argmax_gt[inside] = argmax_in

    # 2. sample: at most batch_size * positive_fraction positives, negatives fill the rest
    positives = xp.nonzero(labels == 1)[0]                                       # (P,)
    keep_pos = random_subset(positives, int(batch_size * positive_fraction), rng)  # (P',)
    labels[positives] = -1
    labels[keep_pos] = 1
    negatives = xp.nonzero(labels == 0)[0]                                       # (Q,)
    keep_neg = random_subset(negatives, batch_size - keep_pos.shape[0], rng)     # (Q',)
    labels[negatives] = -1
    labels[keep_neg] = 0

    # 3. regression targets for the sampled positives only
    bbox_targets = xp.zeros((A_total, 4), dtype=anchors.dtype)                   # (A_total, 4)
    matched_gt = xp.full(A_total, -1, dtype=xp.int64)                            # (A_total,)
    if keep_pos.shape[0] > 0:
        gt_of_pos = argmax_gt[keep_pos]                                          # (P',)
        bbox_targets[keep_pos] = encode(anchors[keep_pos], gt_boxes[gt_of_pos]).astype(anchors.dtype)
        matched_gt[keep_pos] = gt_of_pos
    return labels, bbox_targets, matched_gt


def anchor_target_settings(cfg):
    """The keyword arguments of anchor_targets taken from a Config:

        anchor_targets(anchors, gt_boxes, (H, W), rng, **anchor_target_settings(cfg))
    """
    return dict(positive_iou=cfg.rpn_positive_iou, negative_iou=cfg.rpn_negative_iou,
                batch_size=cfg.rpn_batch_size, positive_fraction=cfg.rpn_positive_fraction,
                allowed_border=cfg.rpn_allowed_border)
