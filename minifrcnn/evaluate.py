"""How good is a detector? Average precision, the PASCAL VOC way and the COCO way.

Both rank all the detections of one class, over all images, by score, and walk down the
list marking each one a true positive (TP: it finds an object nobody found before) or a
false positive (FP). After the first n detections::

    precision(n) = TP(n) / n          recall(n) = TP(n) / number of ground-truth objects

AP summarises the precision-recall curve in one number in [0, 1]; mAP is the mean over
the classes.

PASCAL VOC (``evaluate_detections``, the paper's Table numbers), at IoU 0.5, exactly as the
VOC devkit's VOCevaldet.m matches:
  * detections of a class are sorted by score, descending (a stable sort: ties keep their
    order, image by image, which the devkit's MATLAB sort does too);
  * each detection takes the ground truth (gt) of its class in its image with the highest
    IoU (taken or not, difficult or not);
  * IoU >= threshold and that gt is 'difficult': ignored, neither TP nor FP;
    IoU >= threshold and the gt is not yet taken: TP, and the gt is now taken;
    IoU >= threshold and the gt is already taken: FP (a duplicate);
    IoU < threshold (or no gt of the class in the image): FP.
  * AP "voc07": 11-point interpolation, AP = 1/11 sum_{t in 0, 0.1, ..., 1} max_{recall >= t}
    precision (0 when no point reaches recall t). The points t are np.arange(0, 1.1, 0.1), as
    py-faster-rcnn's voc_eval.py, chainercv and mmdetection make them, to the last bit: three of
    them lie just above k / 10 (0.30000000000000004, 0.6000000000000001, 0.7000000000000001), so
    a recall of exactly 3/10 does not reach t = 0.3 (with t = k / 10 it would, and the AP would
    differ from theirs).
  * AP "area" (VOC2010 and later): the area under the precision envelope,
    p_env(r) = max_{r' >= r} p(r'), AP = sum_i (r_{i+1} - r_i) p_env(r_{i+1}).
  * A class with no (non-difficult) gt in the whole set has AP NaN (the devkit would divide
    by zero) and is left out of the mAP: mAP is the mean over the classes that have gt.
  * The devkit's ">= threshold" is used (py-faster-rcnn's voc_eval.py writes "> threshold";
    the two differ only for an IoU of exactly 0.5). IoU uses our continuous boxes, no +1.

COCO (``coco_map``), as pycocotools' COCOeval does for bounding boxes, area "all":
  * per image and class, at most 100 detections (the highest scoring), sorted by score;
  * for each IoU threshold t in 0.50, 0.55, ..., 0.95 and each detection in turn: it takes the
    still-unmatched gt with the highest IoU >= t (ties: the later gt), preferring a normal gt
    to a 'difficult' one; matched to a difficult gt it is ignored; unmatched it is a FP.
    Difficult gts play the part of pycocotools' ignored gts (not iscrowd regions: each can
    absorb one detection) and are not counted in the recall;
  * precision is read off the envelope at the 101 recalls 0, 0.01, ..., 1 (the first point
    with recall >= r; 0 past the last); AP = mean over the 101 recalls;
  * mAP@[.5:.95] = mean over the 10 thresholds and the classes with gt; map50, map75 at one t.

Inputs (one entry per image, in the same order for both lists)::

    detections[i]    = {"boxes": (K, 4), "scores": (K,), "labels": (K,) in 1..C}
    ground_truths[i] = {"boxes": (G, 4), "labels": (G,) in 1..C, "difficult": (G,) optional}

Boxes are (x1, y1, x2, y2) in the original image's pixels. NumPy or CuPy arrays are
accepted (they are copied to the host: evaluation is host-side NumPy code).

    >>> result = evaluate_detections(dets, gts, class_names, method="voc07")
    >>> print(format_ap_table(result))
    >>> coco_map(dets, gts, class_names)["map"]
"""
import math

import numpy as np

from .backend import to_numpy

VOC_METHODS = ("area", "voc07")
# Made exactly as pycocotools makes them (np.linspace), so that a recall landing exactly on a
# threshold is treated the same way to the last bit (np.linspace(0, 1, 101)[35] is
# 0.35000000000000003, not 35 / 100).
COCO_IOU_THRESHOLDS = tuple(np.linspace(0.5, 0.95, 10).tolist())     # 0.50, 0.55, ..., 0.95
COCO_RECALL_THRESHOLDS = tuple(np.linspace(0.0, 1.0, 101).tolist())  # 0.00, 0.01, ..., 1.00
# VOC07's 11 recall points made as py-faster-rcnn's voc_eval.py makes them: np.arange's 0.3,
# 0.6 and 0.7 are 0.30000000000000004, 0.6000000000000001, 0.7000000000000001 (not k / 10).
VOC07_RECALL_POINTS = tuple(np.arange(0.0, 1.1, 0.1).tolist())       # 0.0, 0.1, ..., 1.0


# ----------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------

def iou_matrix(a, b):
    """IoU of every box of a (N, 4) with every box of b (M, 4) -> (N, M) float64, no +1.

        IoU = area(a & b) / (area(a) + area(b) - area(a & b)),  area = (x2 - x1) (y2 - y1)
    Host-side NumPy (a small copy of boxes.box_iou, so evaluation stands on its own).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])                          # (N,)
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])                          # (M,)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)                         # (N, M)
    union = area_a[:, None] + area_b[None, :] - inter                           # (N, M)
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)    # (N, M)


def _field(d, key, where, required=True):
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a dict, got {type(d).__name__}")
    if key not in d or (d[key] is None and not required):
        if required:
            raise ValueError(f"{where}: missing key {key!r}")
        return None                                   # an optional key may also be None
    return to_numpy(d[key])


def _boxes(x, where):
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x.reshape(0, 4)
    if x.ndim != 2 or x.shape[1] != 4:
        raise ValueError(f"{where}: expected a (K, 4) array of boxes, got shape {x.shape}")
    return x


def _labels(x, n, where, num_classes):
    x = np.asarray(x).reshape(-1)
    if x.size != n:
        raise ValueError(f"{where}: expected {n} labels (one per box), got {x.size}")
    if x.size and not np.all(x == np.round(x)):
        raise ValueError(f"{where}: labels must be whole numbers")
    x = x.astype(np.int64)
    if num_classes is not None and x.size and (x.min() < 1 or x.max() > num_classes):
        raise ValueError(f"{where}: labels must lie in 1..{num_classes} (0 is background), "
                         f"got values from {x.min()} to {x.max()}")
    return x


def ground_truths(samples):
    """The ground_truths argument of evaluate_detections / coco_map, from data-set samples
    (dicts with "boxes", "labels" and an optional "difficult")."""
    return [{"boxes": s["boxes"], "labels": s["labels"], "difficult": s.get("difficult")}
            for s in samples]


def prepare_inputs(detections, ground_truths, num_classes=None):
    """Check the two lists and return host copies: (dets, gts), lists of dicts of NumPy arrays.

    dets[i] = {"boxes" (K, 4) float64, "scores" (K,) float64, "labels" (K,) int64}
    gts[i]  = {"boxes" (G, 4) float64, "labels" (G,) int64, "difficult" (G,) bool}
    """
    detections, ground_truths = list(detections), list(ground_truths)
    if len(detections) != len(ground_truths):
        raise ValueError(f"detections and ground_truths: expected one entry per image in both, "
                         f"got {len(detections)} and {len(ground_truths)}")
    dets, gts = [], []
    for i, (d, g) in enumerate(zip(detections, ground_truths)):
        where = f"detections[{i}]"
        boxes = _boxes(_field(d, "boxes", where), f"{where}['boxes']")
        scores = np.asarray(_field(d, "scores", where), dtype=np.float64).reshape(-1)
        if scores.size != len(boxes):
            raise ValueError(f"{where}['scores']: expected {len(boxes)} scores (one per box), "
                             f"got {scores.size}")
        labels = _labels(_field(d, "labels", where), len(boxes), f"{where}['labels']",
                         num_classes)
        dets.append({"boxes": boxes, "scores": scores, "labels": labels})

        where = f"ground_truths[{i}]"
        gboxes = _boxes(_field(g, "boxes", where), f"{where}['boxes']")
        glabels = _labels(_field(g, "labels", where), len(gboxes), f"{where}['labels']",
                          num_classes)
        diff = _field(g, "difficult", where, required=False)
        if diff is None:
            diff = np.zeros(len(gboxes), dtype=bool)
        diff = np.asarray(diff).astype(bool).reshape(-1)
        if diff.size != len(gboxes):
            raise ValueError(f"{where}['difficult']: expected {len(gboxes)} flags, got {diff.size}")
        gts.append({"boxes": gboxes, "labels": glabels, "difficult": diff})
    return dets, gts


# ----------------------------------------------------------------------------------------
# PASCAL VOC
# ----------------------------------------------------------------------------------------

def class_inputs(dets, gts, k):
    """One class's share of prepare_inputs' lists: its detections from all images, its gts image
    by image (what voc_tp_fp takes).

    Returns det_image (D,) int64, det_scores (D,), det_boxes (D, 4), and gt_boxes, gt_difficult:
    lists over the images of (G_i, 4) boxes and (G_i,) bools.
    """
    gt_boxes = [g["boxes"][g["labels"] == k] for g in gts]
    gt_difficult = [g["difficult"][g["labels"] == k] for g in gts]
    det_image = np.concatenate([np.full(int((d["labels"] == k).sum()), i, dtype=np.int64)
                                for i, d in enumerate(dets)] + [np.zeros(0, np.int64)])
    det_scores = np.concatenate([d["scores"][d["labels"] == k] for d in dets] + [np.zeros(0)])
    det_boxes = np.concatenate([d["boxes"][d["labels"] == k] for d in dets] + [np.zeros((0, 4))])
    return det_image, det_scores, det_boxes, gt_boxes, gt_difficult


def voc_ap(recall, precision, method="area"):
    """AP from a precision-recall curve (recall (n,), precision (n,), in detection order).

    "voc07": 1/11 sum_{t in VOC07_RECALL_POINTS} max(precision[recall >= t])  (0 if none)
    "area":  add the points (0, 0) and (1, 0); p_env(i) = max_{j >= i} p(j);
             AP = sum over the points where recall changes of (r_{i+1} - r_i) p_env(i + 1)
    Both are the devkit's code (VOCevaldet.m / VOCap.m), line for line, with the 11 points t
    made as py-faster-rcnn's voc_eval.py makes them (np.arange(0, 1.1, 0.1), not k / 10).
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if method == "voc07":
        points = []
        for t in VOC07_RECALL_POINTS:
            above = recall >= t
            points.append(precision[above].max() if above.any() else 0.0)
        return float(sum(points) / 11)        # summed first, so 11 ones give exactly 1.0
    if method == "area":
        mrec = np.concatenate([[0.0], recall, [1.0]])                 # (n + 2,)
        mpre = np.concatenate([[0.0], precision, [0.0]])              # (n + 2,)
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]                # envelope, right to left
        i = np.flatnonzero(mrec[1:] != mrec[:-1])                     # where recall changes
        return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
    raise ValueError(f"method: expected one of {VOC_METHODS}, got {method!r}")


def voc_tp_fp_reference(det_image, det_scores, det_boxes, gt_boxes, gt_difficult,
                        iou_threshold=0.5):
    """The devkit's matching for ONE class, as a plain loop (VOCevaldet.m, line for line).

    det_image  (D,) int     the image of each detection
    det_scores (D,) float
    det_boxes  (D, 4)
    gt_boxes   list over images of (G_i, 4): the gts of this class in image i
    gt_difficult list over images of (G_i,) bool
    Returns (tp, fp), (D,) bool each, in score order (descending, stable); a detection on
    a difficult gt has both False.
    """
    order = np.argsort(-np.asarray(det_scores), kind="stable")
    taken = [np.zeros(len(g), dtype=bool) for g in gt_boxes]
    tp = np.zeros(len(order), dtype=bool)
    fp = np.zeros(len(order), dtype=bool)
    for d, j in enumerate(order):
        i = det_image[j]
        ovmax, jmax = -math.inf, -1
        for g in range(len(gt_boxes[i])):                  # the best gt, taken or not
            ov = iou_matrix(det_boxes[j:j + 1], gt_boxes[i][g:g + 1])[0, 0]
            if ov > ovmax:
                ovmax, jmax = ov, g
        if ovmax >= iou_threshold:
            if not gt_difficult[i][jmax]:
                if not taken[i][jmax]:
                    tp[d] = True                           # true positive
                    taken[i][jmax] = True
                else:
                    fp[d] = True                           # false positive (duplicate)
            # a difficult gt: neither
        else:
            fp[d] = True                                   # false positive (no gt)
    return tp, fp


def voc_tp_fp(det_image, det_scores, det_boxes, gt_boxes, gt_difficult, iou_threshold=0.5):
    """Same result as voc_tp_fp_reference, with arrays instead of the loop over detections.

    The devkit's best gt of a detection does not depend on what was taken before, so it is
    computed for all detections at once, image by image. What remains sequential, "the gt
    is already taken", means: among the detections (in score order) that claim a gt, the
    first claim wins and later ones are duplicates. np.unique(return_index=True) gives
    exactly the first claim of each gt.
    """
    det_image = np.asarray(det_image, dtype=np.int64)
    order = np.argsort(-np.asarray(det_scores), kind="stable")     # (D,)
    D = len(order)
    offsets = np.cumsum([0] + [len(g) for g in gt_boxes])          # gt index -> global index
    best_iou = np.full(D, -1.0)                                    # (D,) best IoU, -1: no gt
    best_gt = np.full(D, -1, dtype=np.int64)                       # (D,) its global index
    for i in np.unique(det_image):
        if len(gt_boxes[i]) == 0:
            continue
        rows = np.flatnonzero(det_image == i)                      # this image's detections
        iou = iou_matrix(det_boxes[rows], gt_boxes[i])             # (d_i, G_i)
        jmax = iou.argmax(axis=1)                                  # (d_i,) first max, as the devkit
        best_iou[rows] = iou[np.arange(len(rows)), jmax]
        best_gt[rows] = offsets[i] + jmax
    all_difficult = np.concatenate([np.zeros(0, dtype=bool)] + [np.asarray(g, dtype=bool)
                                                                for g in gt_difficult])
    best_iou, best_gt = best_iou[order], best_gt[order]            # score order
    hit = best_iou >= iou_threshold                                # (D,)
    ignored = np.zeros(D, dtype=bool)                              # (D,) hit a difficult gt
    ignored[hit] = all_difficult[best_gt[hit]]
    claims = np.flatnonzero(hit & ~ignored)                        # claims, in score order
    tp = np.zeros(D, dtype=bool)
    _, first = np.unique(best_gt[claims], return_index=True)      # first claim of each gt
    tp[claims[first]] = True
    fp = ~tp & ~ignored
    return tp, fp


def evaluate_detections(detections, ground_truths, class_names, iou_threshold=0.5,
                        method="area"):
    """PASCAL VOC average precision per class and its mean (see the module docstring).

    detections:    one dict per image {"boxes" (K, 4), "scores" (K,), "labels" (K,)}
    ground_truths: one dict per image {"boxes" (G, 4), "labels" (G,), "difficult" (G,) optional}
    class_names:   the C names; label k is class_names[k - 1]
    method:        "area" (all-point, VOC2010+) or "voc07" (11-point, the paper's VOC2007)

    Returns a dict:
        "map"        mean AP over the classes with gt (NaN if no class has any)
        "ap"         {name: AP}, NaN for a class without (non-difficult) gt
        "precision"  {name: (n,) array}, "recall": {name: (n,) array}: the curve, one point per
                     detection of the class in score order (ignored detections left out)
        "num_gt"     {name: number of non-difficult gts}
        "num_detections" {name: number of detections}
        "iou_threshold", "method", "class_names"
    """
    if method not in VOC_METHODS:
        raise ValueError(f"method: expected one of {VOC_METHODS}, got {method!r}")
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold: expected a number in (0, 1], got {iou_threshold}")
    class_names = tuple(class_names)
    dets, gts = prepare_inputs(detections, ground_truths, num_classes=len(class_names))

    result = {"ap": {}, "precision": {}, "recall": {}, "num_gt": {}, "num_detections": {},
              "iou_threshold": float(iou_threshold), "method": method,
              "class_names": class_names}
    for k, name in enumerate(class_names, start=1):
        det_image, det_scores, det_boxes, gt_boxes, gt_difficult = class_inputs(dets, gts, k)
        npos = int(sum((~d).sum() for d in gt_difficult))
        tp, fp = voc_tp_fp(det_image, det_scores, det_boxes, gt_boxes, gt_difficult,
                           iou_threshold)
        counted = tp | fp                                   # drop the ignored ones
        tp_cum = np.cumsum(tp[counted]).astype(np.float64)  # (n,)
        fp_cum = np.cumsum(fp[counted]).astype(np.float64)  # (n,)
        if npos > 0:
            recall = tp_cum / npos
            precision = tp_cum / np.maximum(tp_cum + fp_cum, 1.0)   # tp + fp >= 1 anyway
            ap = voc_ap(recall, precision, method)
        else:
            recall = np.full(len(tp_cum), np.nan)
            precision = tp_cum / np.maximum(tp_cum + fp_cum, 1.0)
            ap = float("nan")
        result["ap"][name] = ap
        result["precision"][name] = precision
        result["recall"][name] = recall
        result["num_gt"][name] = npos
        result["num_detections"][name] = int(len(det_scores))

    valid = [ap for ap in result["ap"].values() if not math.isnan(ap)]
    result["map"] = float(np.mean(valid)) if valid else float("nan")
    return result


# ----------------------------------------------------------------------------------------
# COCO
# ----------------------------------------------------------------------------------------

def coco_match_image(ious, gt_ignore, iou_thresholds):
    """pycocotools' evaluateImg matching for one image and one class.

    ious      (D, G): detections sorted by score (descending), gts sorted normal-first
    gt_ignore (G,) bool: difficult gts (these come last)
    Returns (matched, ignored), (T, D) bool each: detection d found a gt at threshold t,
    and that gt was an ignored one.
    A plain transcription of the pycocotools loop (iscrowd is never set here, so a matched
    gt cannot be matched again).
    """
    T, (D, G) = len(iou_thresholds), ious.shape
    matched = np.zeros((T, D), dtype=bool)
    ignored = np.zeros((T, D), dtype=bool)
    ious_list = ious.tolist()                       # Python floats: a faster inner loop
    ignore_list = [bool(v) for v in gt_ignore]
    for ti, t in enumerate(iou_thresholds):
        gt_taken = [False] * G
        for d in range(D):
            best = min(t, 1 - 1e-10)                # the IoU to beat
            m = -1
            for g in range(G):
                if gt_taken[g]:
                    continue                        # already matched
                if m > -1 and not ignore_list[m] and ignore_list[g]:
                    break                           # have a normal gt; only ignored ones left
                if ious_list[d][g] < best:
                    continue
                best, m = ious_list[d][g], g        # ">=": on a tie the later gt wins
            if m == -1:
                continue                            # no match: a false positive
            ignored[ti, d] = ignore_list[m]
            matched[ti, d] = True
            gt_taken[m] = True
    return matched, ignored


def coco_precision_at_recalls(scores, matched, ignored, num_gt, recall_thresholds):
    """pycocotools' accumulate for one class and one IoU threshold.

    scores (D,), matched (D,), ignored (D,) over all images; num_gt the non-ignored gts.
    Returns q (R,): the precision envelope read at each recall threshold r, at the first
    point with recall >= r (searchsorted 'left'), 0 when the recall never reaches r.
    """
    order = np.argsort(-scores, kind="mergesort")                     # (D,)
    tps = matched[order] & ~ignored[order]
    fps = ~matched[order] & ~ignored[order]
    tp = np.cumsum(tps).astype(np.float64)                            # (D,)
    fp = np.cumsum(fps).astype(np.float64)                            # (D,)
    rc = tp / num_gt                                                  # (D,)
    pr = tp / (fp + tp + np.spacing(1))                               # (D,)
    pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr     # envelope
    inds = np.searchsorted(rc, recall_thresholds, side="left")        # (R,)
    q = np.zeros(len(recall_thresholds))
    inside = inds < len(pr)
    q[inside] = pr[inds[inside]]
    return q


def coco_map(detections, ground_truths, class_names=None, max_detections=100,
             iou_thresholds=COCO_IOU_THRESHOLDS):
    """COCO-style mAP@[.5:.95] (pycocotools' bbox evaluation, area "all").

    detections, ground_truths: as for evaluate_detections.
    class_names: the C names (label k -> class_names[k - 1]); None: the labels found,
                 named by their number.
    max_detections: per image and class, the highest scoring ones are kept (pycocotools
                 applies maxDets per image and category).
    Returns a dict:
        "map"    mean precision over the 10 IoU thresholds, 101 recalls, classes with gt
        "map50", "map75"   the same at IoU 0.5 and 0.75 only
        "ap_per_class"     {name: AP@[.5:.95]} (NaN without gt), "ap50_per_class" likewise
        "precision"        (T, 101, C) array, NaN for classes without gt
        "num_gt"           {name: non-difficult gts}
        "iou_thresholds", "class_names"
    """
    iou_thresholds = tuple(float(t) for t in iou_thresholds)
    if class_names is not None:
        class_names = tuple(class_names)
        dets, gts = prepare_inputs(detections, ground_truths, num_classes=len(class_names))
        labels = list(range(1, len(class_names) + 1))
    else:
        dets, gts = prepare_inputs(detections, ground_truths)
        labels = sorted({int(v) for d in dets for v in d["labels"]}
                        | {int(v) for g in gts for v in g["labels"]})
        class_names = tuple(str(k) for k in labels)
    T, R, C = len(iou_thresholds), len(COCO_RECALL_THRESHOLDS), len(labels)
    recall_thresholds = np.array(COCO_RECALL_THRESHOLDS)
    precision = np.full((T, R, C), np.nan)                            # (T, R, C)
    num_gt = {}

    for c, (k, name) in enumerate(zip(labels, class_names)):
        all_scores, all_matched, all_ignored, npig = [], [], [], 0
        for d, g in zip(dets, gts):
            dk = d["labels"] == k
            gk = g["labels"] == k
            if not dk.any() and not gk.any():
                continue
            order = np.argsort(-d["scores"][dk], kind="mergesort")[:max_detections]
            scores = d["scores"][dk][order]                            # (D,)
            boxes = d["boxes"][dk][order]                              # (D, 4)
            gt_order = np.argsort(g["difficult"][gk], kind="mergesort")   # normal gts first
            gt_boxes = g["boxes"][gk][gt_order]                        # (G, 4)
            gt_ignore = g["difficult"][gk][gt_order]                   # (G,)
            matched, ignored = coco_match_image(iou_matrix(boxes, gt_boxes), gt_ignore,
                                                iou_thresholds)        # (T, D) each
            all_scores.append(scores)
            all_matched.append(matched)
            all_ignored.append(ignored)
            npig += int((~gt_ignore).sum())
        num_gt[name] = npig
        if npig == 0:
            continue                                                   # NaN: no gt
        scores = np.concatenate(all_scores)                            # (D_all,)
        matched = np.concatenate(all_matched, axis=1)                  # (T, D_all)
        ignored = np.concatenate(all_ignored, axis=1)                  # (T, D_all)
        for t in range(T):
            precision[t, :, c] = coco_precision_at_recalls(
                scores, matched[t], ignored[t], npig, recall_thresholds)

    def mean_or_nan(a):
        a = a[~np.isnan(a)]
        return float(a.mean()) if a.size else float("nan")

    def at(threshold, c=slice(None)):
        """Mean precision at one IoU threshold (of one class c, or all)."""
        hits = [i for i, t in enumerate(iou_thresholds) if abs(t - threshold) < 1e-9]
        return mean_or_nan(precision[hits][:, :, c]) if hits else float("nan")

    return {
        "map": mean_or_nan(precision),
        "map50": at(0.5),
        "map75": at(0.75),
        "ap_per_class": {n: mean_or_nan(precision[:, :, c]) for c, n in enumerate(class_names)},
        "ap50_per_class": {n: at(0.5, c) for c, n in enumerate(class_names)},
        "precision": precision,
        "num_gt": num_gt,
        "iou_thresholds": iou_thresholds,
        "class_names": class_names,
    }


# ----------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------

def _fmt(v):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def format_ap_table(result, class_names=None, coco=None):
    """A markdown table of the per-class AP of evaluate_detections (and coco_map, if given).

        | class | #gt | AP@0.5 (area) | AP@[.5:.95] |
        |---|---:|---:|---:|
        | circle | 120 | 0.9123 | 0.6512 |
        ...
        | **mAP** | 470 | 0.8765 | 0.6021 |
    A class without gt shows "n/a" (it is not in the mean).
    """
    names = tuple(class_names) if class_names is not None else tuple(result["class_names"])
    head = f"AP@{result.get('iou_threshold', 0.5):g} ({result.get('method', 'area')})"
    cols = ["class", "#gt", head] + (["AP@[.5:.95]"] if coco is not None else [])
    lines = ["| " + " | ".join(cols) + " |",
             "|---|---:|---:|" + ("---:|" if coco is not None else "")]
    for name in names:
        row = [name, str(result["num_gt"].get(name, 0)), _fmt(result["ap"].get(name))]
        if coco is not None:
            row.append(_fmt(coco["ap_per_class"].get(name)))
        lines.append("| " + " | ".join(row) + " |")
    total = sum(result["num_gt"].get(n, 0) for n in names)
    last = ["**mAP**", str(total), _fmt(result["map"])]
    if coco is not None:
        last.append(_fmt(coco["map"]))
    lines.append("| " + " | ".join(last) + " |")
    return "\n".join(lines)


def plot_pr_curves(result, path, title=None):
    """Draw the precision-recall curve of every class of evaluate_detections into a PNG.

    Uses matplotlib's Agg canvas directly (no pyplot, so a notebook's backend is untouched).
    Returns path.
    """
    from .detect import offscreen_figure

    fig, ax = offscreen_figure((6, 5))
    for name in result["class_names"]:
        rec, prec = result["recall"][name], result["precision"][name]
        ap = result["ap"][name]
        if len(rec) == 0 or math.isnan(ap):
            ax.plot([], [], label=f"{name} (AP {_fmt(ap)})")
            continue
        r = np.concatenate([[0.0], rec])
        p = np.concatenate([[prec[0]], prec])
        ax.plot(r, p, label=f"{name} (AP {ap:.3f})")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    method = result.get("method", "area")
    ax.set_title(title or f"Precision-recall at IoU {result.get('iou_threshold', 0.5):g}: "
                          f"mAP {_fmt(result['map'])} ({method})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
