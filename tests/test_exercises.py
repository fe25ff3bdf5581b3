"""The classroom exercises: the checks themselves, and the student / solution notebooks.

For every check: the library's own function passes, a stub that raises NotImplementedError fails
(False, "not implemented yet", no exception), and a subtly wrong implementation, written the way
a student might, fails with the hint for that slip. The solution notebooks' functions pass their
checks, and the committed student notebooks are exactly what scripts/make_student_notebooks.py
makes from the solutions.
"""
import importlib.util
import math
from pathlib import Path

import nbformat
import numpy as np
import pytest

from minifrcnn import anchor_targets, anchors, boxes, classroom, evaluate, fast_rcnn, ops, proposal_targets, proposals, rpn
from minifrcnn.classroom import detector_exercises, exercises
from minifrcnn.config import Config
from minifrcnn.classroom.hidden_library import library_allowed

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "notebooks" / "exercises" / "solutions"
STUDENT = ROOT / "notebooks" / "exercises" / "student"
SCRIPT = ROOT / "scripts" / "make_student_notebooks.py"


def load_script():
    spec = importlib.util.spec_from_file_location("make_student_notebooks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------- the library, as a student would

def library_conv_backward(dout, x, w, stride=1, pad=0):
    _, cache = ops.conv2d_forward(x, w, np.zeros(w.shape[0]), stride=stride, pad=pad)
    return ops.conv2d_backward(dout, cache)


def library_sce_backward(logits, labels, normalizer=None):
    return ops.softmax_cross_entropy(logits, labels, normalizer)[1]


def library_roi_pool(feat, rois, output_size=(7, 7), spatial_scale=1 / 16):
    return ops.roi_pool_forward(feat, rois, output_size=output_size, spatial_scale=spatial_scale)[0]


def library_label_anchors(anchors, gt_boxes, image_size, positive_iou=0.7, negative_iou=0.3, allowed_border=0):
    # a sample as large as the anchors, all of it open to positives: nothing is dropped or drawn
    labels, _, matched_gt = anchor_targets.anchor_targets(
        anchors, gt_boxes, image_size, np.random.default_rng(0), positive_iou=positive_iou,
        negative_iou=negative_iou, batch_size=max(len(anchors), 1), positive_fraction=1.0,
        allowed_border=allowed_border)
    return labels, matched_gt


def library_sample_anchors(labels, rng, batch_size=256, positive_fraction=0.5):
    labels = labels.copy()                     # anchor_targets' step 2, with its random_subset
    pos = np.flatnonzero(labels == 1)
    keep_pos = anchor_targets.random_subset(pos, int(batch_size * positive_fraction), rng)
    labels[pos] = -1
    labels[keep_pos] = 1
    neg = np.flatnonzero(labels == 0)
    keep_neg = anchor_targets.random_subset(neg, batch_size - len(keep_pos), rng)
    labels[neg] = -1
    labels[keep_neg] = 0
    return labels


def library_roi_targets(proposals, gt_boxes, gt_labels, num_classes, rng, **kwargs):
    t = proposal_targets.proposal_targets(proposals, gt_boxes, gt_labels, num_classes, rng, **kwargs)
    return t["rois"], t["labels"], t["bbox_targets"], t["bbox_weights"]


def library_rpn_loss(logits, deltas, labels, bbox_targets, feat_size, batch_size=256, lam=10.0, sigma=3.0):
    cfg = Config(rpn_batch_size=batch_size, rpn_lambda=lam, rpn_sigma=sigma, loss_normalization="paper")
    terms, dlogits, ddeltas = rpn.rpn_loss(logits, deltas, labels, bbox_targets, feat_size, cfg)
    return terms["rpn_cls"], terms["rpn_reg"], dlogits, ddeltas


def library_head_loss(scores, deltas, labels, bbox_targets, bbox_weights, lam=1.0, sigma=1.0):
    cfg = Config(head_lambda=lam, head_sigma=sigma)
    terms, dscores, ddeltas = fast_rcnn.fast_rcnn_loss(scores, deltas, labels, bbox_targets, bbox_weights, cfg)
    return terms["head_cls"], terms["head_reg"], dscores, ddeltas


def library_voc_ap(det_image, det_scores, det_boxes, gt_boxes, gt_difficult, iou_threshold=0.5, method="area"):
    images = range(len(gt_boxes))
    dets = [{"boxes": det_boxes[det_image == i], "scores": det_scores[det_image == i],
             "labels": np.ones(int((det_image == i).sum()), dtype=np.int64)} for i in images]
    gts = [{"boxes": gt_boxes[i], "labels": np.ones(len(gt_boxes[i]), dtype=np.int64),
            "difficult": gt_difficult[i]} for i in images]
    return evaluate.evaluate_detections(dets, gts, ["object"], iou_threshold, method)["ap"]["object"]


LIBRARY = {
    "check_iou": (boxes.box_iou,),
    "check_anchors": (anchors.generate_base_anchors,),
    "check_grid_anchors": (anchors.grid_anchors,),
    "check_encode": (boxes.encode,),
    "check_decode": (boxes.decode,),
    "check_encode_decode": (boxes.encode, boxes.decode),
    "check_nms": (boxes.nms,),
    "check_smooth_l1": (ops.smooth_l1,),
    "check_softmax_cross_entropy_backward": (library_sce_backward,),
    "check_roi_pool": (library_roi_pool,),
    "check_conv_backward": (library_conv_backward,),
    "check_label_anchors": (library_label_anchors,),
    "check_sample_anchors": (library_sample_anchors,),
    "check_proposal_layer": (proposals.proposal_layer,),
    "check_roi_targets": (library_roi_targets,),
    "check_rpn_loss": (library_rpn_loss,),
    "check_head_loss": (library_head_loss,),
    "check_voc_ap": (library_voc_ap,),
    "check_capstone": (library_label_anchors, library_sample_anchors, proposals.proposal_layer, library_roi_targets,
                       library_rpn_loss, library_head_loss, library_voc_ap),
}


# These tests run a student's function through the library's own for the checks' feedback:
# a transposed box_iou, a db from the library's conv backward, a debugging print around box_iou.
# The hiding of the library (hidden_library.py) would stop them; it has its own tests
# (tests/test_hidden_library.py, and the ones named here, which run with the library hidden).
TESTS_WITH_THE_LIBRARY_HIDDEN = {"test_a_pass_through_to_the_library_fails_every_case",
                                 "test_an_iou_that_only_knows_the_shown_answers_fails_the_hidden_cases"}


@pytest.fixture(autouse=True)
def library_within_reach(request):
    if request.node.originalname in TESTS_WITH_THE_LIBRARY_HIDDEN:
        yield
    else:
        with library_allowed():
            yield


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_the_library_passes_every_check(name, capsys):
    assert getattr(classroom, name)(*LIBRARY[name]).passed is True
    out = capsys.readouterr().out
    assert "FAIL" not in out and "passed. Well done!" in out
    assert getattr(classroom, name)(*LIBRARY[name], hidden=True).passed is True   # the grader's cases
    out = capsys.readouterr().out
    assert "Hidden cases of" in out and "FAIL" not in out and "inputs" not in out


def pass_through(function):
    """What a student who calls the library instead of writing the function hands in."""
    return lambda *args, **kwargs: function(*args, **kwargs)


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_a_pass_through_to_the_library_fails_every_case(name, capsys):
    result = getattr(classroom, name)(*[pass_through(f) for f in LIBRARY[name]])
    assert result.passed is False and result.n_passed == 0, capsys.readouterr().out
    assert "is not available while your function is checked" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_hidden_cases_print_one_line_per_check(name, capsys):
    assert getattr(classroom, name)(*LIBRARY[name], hidden=True).passed
    lines = capsys.readouterr().out.strip().splitlines()
    assert all(line.startswith("Hidden cases of") or line == "" for line in lines), lines


def test_an_iou_that_only_knows_the_shown_answers_fails_the_hidden_cases(capsys):
    seen = []

    def recording(a, b):
        seen.append((a.copy(), b.copy(), boxes.box_iou(a, b)))
        return seen[-1][2]

    with library_allowed():
        classroom.check_iou(recording)

    def memorised(a, b):            # the shown answers, looked up; zeros for anything else
        for sa, sb, answer in seen:
            if sa.shape == a.shape and sb.shape == b.shape and np.array_equal(sa, a) and np.array_equal(sb, b):
                return answer
        return np.zeros((len(a), len(b)))

    assert classroom.check_iou(memorised).passed
    hidden = classroom.check_iou(memorised, hidden=True)
    assert not hidden.passed and 0 < hidden.n_passed < hidden.n_cases     # the hand-made cases repeat


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_a_stub_fails_and_says_not_implemented(name, capsys):
    result = getattr(classroom, name)(*[stub] * len(LIBRARY[name]))   # must not raise
    assert result.passed is False
    assert "not implemented yet" in capsys.readouterr().out


def test_every_check_is_exported_and_documented():
    assert sorted(classroom.__all__) == sorted(LIBRARY)
    for name in classroom.__all__:
        assert getattr(classroom, name).__doc__, name
        assert name in exercises.__doc__ + detector_exercises.__doc__, \
            f"{name} is missing from the module docstrings' tables"


# ------------------------------------------------------------------------- subtly wrong implementations

def iou_plus_one(a, b):                       # old integer-pixel convention: width = x2 - x1 + 1
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    iw = np.maximum(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1, 0)
    ih = np.maximum(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1, 0)
    inter = iw * ih
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def iou_without_clamp(a, b):                  # forgets max(0, .) on the overlaps
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            iw = min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0])
            ih = min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1])
            inter = iw * ih
            union = (a[i, 2] - a[i, 0]) * (a[i, 3] - a[i, 1]) + (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1]) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def iou_nan_for_zero_area(a, b):              # right formula, but 0 / 0 -> NaN
    inter = np.maximum(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0)
    inter = inter[..., 0] * inter[..., 1]
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def anchors_w_over_h(base_size, ratios, scales):   # reads the ratio as w / h
    c = base_size / 2
    rows = []
    for r in ratios:
        for s in scales:
            w, h = base_size * s * np.sqrt(r), base_size * s / np.sqrt(r)
            rows.append([c - w / 2, c - h / 2, c + w / 2, c + h / 2])
    return np.array(rows)


def anchors_scale_major(base_size, ratios, scales):
    c = base_size / 2
    rows = []
    for s in scales:
        for r in ratios:
            w, h = base_size * s / np.sqrt(r), base_size * s * np.sqrt(r)
            rows.append([c - w / 2, c - h / 2, c + w / 2, c + h / 2])
    return np.array(rows)


def grid_x_outer(base, feat_h, feat_w, stride):   # loops x outside y
    rows = []
    for x in range(feat_w):
        for y in range(feat_h):
            for a in range(len(base)):
                rows.append(base[a] + [x * stride, y * stride, x * stride, y * stride])
    return np.array(rows)


def encode_corners(ref, target, weights=(1.0, 1.0, 1.0, 1.0)):   # moves the top-left corner
    wa, ha = ref[:, 2] - ref[:, 0], ref[:, 3] - ref[:, 1]
    w, h = target[:, 2] - target[:, 0], target[:, 3] - target[:, 1]
    d = np.stack([(target[:, 0] - ref[:, 0]) / wa, (target[:, 1] - ref[:, 1]) / ha, np.log(w / wa), np.log(h / ha)], 1)
    return d * np.array(weights)


def decode_without_clamp(ref, deltas, weights=(1.0, 1.0, 1.0, 1.0)):
    d = deltas / np.array(weights)
    wa, ha = ref[:, 2] - ref[:, 0], ref[:, 3] - ref[:, 1]
    x, y = ref[:, 0] + wa / 2 + d[:, 0] * wa, ref[:, 1] + ha / 2 + d[:, 1] * ha
    w, h = np.exp(d[:, 2]) * wa, np.exp(d[:, 3]) * ha
    return np.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], 1)


def nms_greater_equal(b, scores, thr):        # >= where torchvision has >
    iou = boxes.box_iou(b, b)
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if all(iou[i, k] < thr for k in keep):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def nms_reversed_ties(b, scores, thr):        # argsort()[::-1] visits equal scores from the back
    iou = boxes.box_iou(b, b)
    keep = []
    for i in np.argsort(scores, kind="stable")[::-1]:
        if all(iou[i, k] <= thr for k in keep):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def nms_suppressed_boxes_suppress(b, scores, thr):
    iou = boxes.box_iou(b, b)
    order = np.argsort(-scores, kind="stable")
    keep = [int(i) for n, i in enumerate(order) if all(iou[i, k] <= thr for k in order[:n])]
    return np.array(keep, dtype=np.int64)


def smooth_l1_sigma_not_squared(pred, target, weights, sigma=1.0, normalizer=1.0):   # zone |d| < 1 / sigma
    d = weights * (pred - target)
    small = np.abs(d) < 1.0 / sigma
    f = np.where(small, 0.5 * sigma ** 2 * d ** 2, np.abs(d) - 0.5 / sigma ** 2)
    g = np.where(small, sigma ** 2 * d, np.sign(d))
    return f.sum() / normalizer, weights * g / normalizer


def smooth_l1_grad_without_weights(pred, target, weights, sigma=1.0, normalizer=1.0):
    loss, _ = ops.smooth_l1(pred, target, weights, sigma=sigma, normalizer=normalizer)
    d = weights * (pred - target)
    s2 = sigma ** 2
    return loss, np.where(np.abs(d) < 1 / s2, s2 * d, np.sign(d)) / normalizer


def sce_backward_not_normalised(logits, labels, normalizer=None):    # the sum, not the mean
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    keep = labels >= 0
    p[np.arange(len(labels))[keep], labels[keep]] -= 1
    p[~keep] = 0
    return p if normalizer is None else p / normalizer


def sce_backward_minus_one_as_a_class(logits, labels, normalizer=None):   # forgets the ignored rows
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(labels)), labels] -= 1
    return p / (len(labels) if normalizer is None else normalizer)


def roi_pool_with_np_round(feat, rois, output_size=(7, 7), spatial_scale=1 / 16):   # np.round: 2.5 -> 2
    N, C, H, W = feat.shape
    PH, PW = output_size
    out = np.zeros((len(rois), C, PH, PW))
    for k, (b, *xyxy) in enumerate(rois):
        x1, y1, x2, y2 = (int(np.round(v * spatial_scale)) for v in xyxy)
        rw, rh = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        for ph in range(PH):
            for pw in range(PW):
                h0 = min(max(math.floor(ph * rh / PH) + y1, 0), H)
                h1 = min(max(math.ceil((ph + 1) * rh / PH) + y1, 0), H)
                w0 = min(max(math.floor(pw * rw / PW) + x1, 0), W)
                w1 = min(max(math.ceil((pw + 1) * rw / PW) + x1, 0), W)
                if h1 > h0 and w1 > w0:
                    out[k, :, ph, pw] = feat[int(b), :, h0:h1, w0:w1].max(axis=(1, 2))
    return out


def roi_pool_max_from_zero(feat, rois, output_size=(7, 7), spatial_scale=1 / 16):   # running max starts at 0
    return np.maximum(library_roi_pool(feat, rois, output_size, spatial_scale), 0)


def conv_backward_loops(dout, x, w, stride=1, pad=0, overwrite=False, crop=True):
    """Convolution gradients as a student might loop them; overwrite=True or crop=False is a slip."""
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxpad, dw = np.zeros_like(xpad), np.zeros_like(w)
    kh, kw = w.shape[2:]
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            win = (slice(None), slice(None), slice(i * stride, i * stride + kh), slice(j * stride, j * stride + kw))
            contribution = np.tensordot(dout[:, :, i, j], w, axes=([1], [0]))
            if overwrite:
                dxpad[win] = contribution
            else:
                dxpad[win] += contribution
            dw += np.tensordot(dout[:, :, i, j], xpad[win], axes=([0], [0]))
    H, W = x.shape[2:]
    dx = dxpad[:, :, pad:pad + H, pad:pad + W] if crop else dxpad
    return dx, dw, dout.sum(axis=(0, 2, 3))


def conv_backward_no_crop(dout, x, w, stride=1, pad=0):   # returns the padded gradient
    return conv_backward_loops(dout, x, w, stride, pad, crop=False)


def conv_backward_overwrites(dout, x, w, stride=1, pad=0):   # = instead of += where windows overlap
    return conv_backward_loops(dout, x, w, stride, pad, overwrite=True)


def conv_backward_db_mean(dout, x, w, stride=1, pad=0):
    dx, dw, _ = library_conv_backward(dout, x, w, stride, pad)
    return dx, dw, dout.mean(axis=(0, 2, 3))


WRONG = [
    ("check_iou", iou_plus_one, "no +1"),
    ("check_iou", iou_without_clamp, "not clamped at 0"),
    ("check_iou", iou_nan_for_zero_area, "NaN"),
    ("check_anchors", anchors_w_over_h, "w and h are swapped"),
    ("check_anchors", anchors_scale_major, "ratio-major"),
    ("check_grid_anchors", grid_x_outer, "loop over y (rows) outside"),
    ("check_encode", encode_corners, "CENTRE"),
    ("check_decode", decode_without_clamp, "BBOX_XFORM_CLIP"),
    ("check_nms", nms_greater_equal, "IoU >= iou_threshold"),
    ("check_nms", nms_reversed_ties, "reverses ties"),
    ("check_nms", nms_suppressed_boxes_suppress, "suppresses nothing"),
    ("check_smooth_l1", smooth_l1_sigma_not_squared, "not 1 / sigma"),
    ("check_smooth_l1", smooth_l1_grad_without_weights, "multiply by the weights"),
    ("check_softmax_cross_entropy_backward", sce_backward_not_normalised, "not normalised"),
    ("check_softmax_cross_entropy_backward", sce_backward_minus_one_as_a_class, "LAST class"),
    ("check_roi_pool", roi_pool_with_np_round, "half AWAY from zero"),
    ("check_roi_pool", roi_pool_max_from_zero, "-inf"),
    ("check_conv_backward", conv_backward_no_crop, "crop the padding"),
    ("check_conv_backward", conv_backward_overwrites, "+="),
    ("check_conv_backward", conv_backward_db_mean, "not a mean"),
]


# ---- 09-13: each written the way a student might, with a `slip` switch for the known slips

def named(function, name, **switch):
    """function with its slip switched on, under a name of its own (the test id)."""
    def wrong(*args, **kwargs):
        return function(*args, **kwargs, **switch)
    wrong.__name__ = name
    return wrong


def label_anchors_student(anchors, gt_boxes, image_size, positive_iou=0.7, negative_iou=0.3, allowed_border=0,
                          slip=None):
    H, W = image_size
    if slip == "w_h":                                   # reads image_size as (W, H)
        W, H = image_size
    b = allowed_border
    A = len(anchors)
    labels = np.full(A, -1, dtype=np.int64)
    matched = np.full(A, -1, dtype=np.int64)
    inside = [a for a in range(A) if slip == "no_border"
              or (anchors[a, 0] >= -b and anchors[a, 1] >= -b and anchors[a, 2] <= W + b and anchors[a, 3] <= H + b)]
    inside = np.array(inside, dtype=np.int64)
    if len(gt_boxes) == 0:
        labels[inside] = 0
        return labels, matched
    iou_all = boxes.box_iou(anchors, gt_boxes)
    iou = iou_all[inside]
    best_iou = iou.max(axis=1)
    best_gt = iou.argmax(axis=1)
    negative = best_iou <= negative_iou if slip == "neg_le" else best_iou < negative_iou
    positive = best_iou > positive_iou if slip == "pos_gt" else best_iou >= positive_iou
    lab = np.full(len(inside), -1, dtype=np.int64)
    if slip != "clobber":
        lab[negative] = 0
    best_for = {}                                       # inside position -> a gt it is best for
    for g in range(len(gt_boxes)):
        top = (iou_all[:, g] if slip == "best_over_all" else iou[:, g]).max()
        if top == 0 and slip != "zero_best":
            continue
        winners = [int(np.argmax(iou[:, g]))] if slip == "one_argmax" else np.flatnonzero(iou[:, g] == top)
        for w in winners:
            if iou[w, g] == top:
                best_for.setdefault(int(w), g)
    if slip != "no_best":
        for w in best_for:
            lab[w] = 1
    lab[positive] = 1
    if slip == "clobber":
        lab[negative] = 0
    labels[inside] = lab
    for k, a in enumerate(inside):
        if lab[k] == 1:
            matched[a] = best_for[k] if slip == "gt_it_is_best_for" and k in best_for and not positive[k] else best_gt[k]
        elif slip == "matched_everywhere":
            matched[a] = best_gt[k]
    return labels, matched


def sample_anchors_student(labels, rng, batch_size=256, positive_fraction=0.5, slip=None):
    out = labels.copy()

    def pick(candidates, k):
        if len(candidates) <= k and slip != "always_draw":
            return candidates
        if slip == "permutation":                         # another (valid) draw
            return np.sort(rng.permutation(candidates)[:k])
        return np.sort(rng.choice(candidates, size=min(k, len(candidates)), replace=False))

    pos = np.flatnonzero(labels == 1)
    n_pos = batch_size if slip == "no_cap" else int(batch_size * positive_fraction)
    if slip == "negatives_first":
        keep_neg = pick(np.flatnonzero(labels == 0), batch_size - min(len(pos), n_pos))
        keep_pos = pick(pos, n_pos)
        out[(labels == 0)] = -1
        out[keep_neg] = 0
    else:
        keep_pos = pick(pos, n_pos)
    out[pos] = 0 if slip == "dropped_to_zero" else -1
    out[keep_pos] = 1
    if slip != "negatives_first":
        neg = np.flatnonzero(out == 0)
        room = {"quota_half": batch_size - n_pos, "quota_all": batch_size}.get(slip, batch_size - len(keep_pos))
        keep_neg = pick(neg, room)
        out[neg] = -1
        out[keep_neg] = 0
    return out


def proposal_layer_student(anchors, objectness, deltas, image_size, pre_nms_top_n=6000, post_nms_top_n=300,
                           nms_threshold=0.7, min_size=16.0, slip=None):
    H, W = image_size
    if slip == "w_h":
        W, H = image_size
    b = boxes.decode(anchors, deltas)
    s = objectness

    def clip(b):
        if slip == "no_clip":
            return b
        b = b.copy()
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, W)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, H)
        return b

    def big(b, s):
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        keep = (w > min_size) & (h > min_size) if slip == "strict_size" else (w >= min_size) & (h >= min_size)
        return b[keep], s[keep]

    def best(b, s, n):
        order = np.argsort(s)[::-1] if slip == "argsort_reversed" else np.argsort(-s, kind="stable")
        if n:
            order = order[:n]
        return b[order], s[order]

    if slip == "size_before_clip":
        b, s = big(b, s)
        b = clip(b)
    else:
        b = clip(b)
        if slip == "topn_before_size":
            b, s = best(b, s, pre_nms_top_n)
        b, s = big(b, s)
    if slip == "nms_on_all":
        b, s = best(b, s, None)
    else:
        b, s = best(b, s, pre_nms_top_n)
    if slip == "post_topn_first":
        b, s = b[:post_nms_top_n], s[:post_nms_top_n]
    keep = boxes.nms(b, s, nms_threshold)
    if post_nms_top_n and slip != "no_post_topn":
        keep = keep[:post_nms_top_n]
    return b[keep], s[keep]


def roi_targets_student(proposals, gt_boxes, gt_labels, num_classes, rng, batch_size=128, fg_fraction=0.25,
                        fg_iou=0.5, bg_iou_hi=0.5, bg_iou_lo=0.1, stds=(0.1, 0.1, 0.2, 0.2), slip=None):
    rois = proposals if slip == "no_gt_candidates" else np.concatenate([proposals, gt_boxes])
    if len(gt_boxes):
        iou = boxes.box_iou(rois, gt_boxes)
        m, g = iou.max(axis=1), iou.argmax(axis=1)
        low = 0.0 if slip == "no_lower_bound" else bg_iou_lo
        bg_ok = (m >= low) & (m < bg_iou_hi)
    else:
        m, g = np.zeros(len(rois)), np.zeros(len(rois), dtype=np.int64)
        bg_ok = np.zeros(len(rois), dtype=bool) if slip == "no_gt_no_rows" else np.ones(len(rois), dtype=bool)
    fg_ok = m > fg_iou if slip == "fg_gt" else m >= fg_iou

    def pick(c, k):
        if len(c) <= k:
            return c
        chosen = c[rng.choice(len(c), size=k, replace=False)]
        return chosen if slip == "unsorted" else np.sort(chosen)

    n_fg = batch_size if slip == "no_fg_cap" else round(fg_fraction * batch_size)
    fg = pick(np.flatnonzero(fg_ok), n_fg)
    bg = pick(np.flatnonzero(bg_ok), batch_size if slip == "bg_fills_batch" else batch_size - len(fg))
    keep = np.concatenate([bg, fg] if slip == "bg_first" else [fg, bg]).astype(np.int64)
    out_rois = rois[keep]
    labels = np.zeros(len(keep), dtype=np.int64)
    targets = np.zeros((len(keep), 4 * (num_classes + 1)))
    weights = np.zeros_like(targets)
    for row, r in enumerate(keep):
        if not fg_ok[r]:
            continue
        c = int(g[r]) + 1 if slip == "index_as_class" else int(gt_labels[g[r]])
        labels[row] = c
        t = boxes.encode(rois[r:r + 1], gt_boxes[g[r]:g[r] + 1])[0]
        t = {"no_stds": t, "times_stds": t * np.array(stds)}.get(slip, t / np.array(stds))
        start = {"columns_0": 0, "columns_c_minus_1": 4 * (c - 1)}.get(slip, 4 * c)
        targets[row, start:start + 4] = t
        weights[row, start:start + 4] = 1
    return out_rois, labels, targets, weights


def rpn_loss_student(logits, deltas, labels, bbox_targets, feat_size, batch_size=256, lam=10.0, sigma=3.0, slip=None):
    n, r, _ = logits.shape
    H, W = feat_size
    y = labels.reshape(-1)
    if slip == "ignored_as_background":
        y = np.maximum(y, 0)
    images = 1 if slip == "one_image_normalisers" else n
    n_cls = max(int((labels >= 0).sum()), 1) if slip == "n_cls_sampled" else images * batch_size
    n_reg = {"n_reg_256": images * batch_size, "n_reg_anchors": images * r,
             "n_reg_positives": max(int((labels == 1).sum()), 1)}.get(slip, images * H * W)
    cls_loss, dlogits = ops.softmax_cross_entropy(logits.reshape(-1, 2), y, normalizer=n_cls)
    p_star = {"regress_sampled": labels >= 0, "regress_all": labels >= -1}.get(slip, labels == 1)
    w = np.repeat(p_star.reshape(-1, 1).astype(np.float64), 4, axis=1)
    s = 1.0 if slip == "sigma_1" else sigma
    reg, dd = ops.smooth_l1(deltas.reshape(-1, 4), bbox_targets.reshape(-1, 4), w, sigma=s, normalizer=n_reg)
    lam_loss = 1.0 if slip == "no_lambda" else lam
    lam_grad = 1.0 if slip in ("no_lambda", "lambda_not_in_gradient") else lam
    return cls_loss, lam_loss * reg, dlogits.reshape(logits.shape), lam_grad * dd.reshape(deltas.shape)


def head_loss_student(scores, deltas, labels, bbox_targets, bbox_weights, lam=1.0, sigma=1.0, slip=None):
    S = len(labels)
    cls_loss, dscores = ops.softmax_cross_entropy(scores, labels, normalizer=128 if slip == "divide_by_128" else S)
    n_reg = max(int((labels > 0).sum()), 1) if slip == "divide_by_fg" else S
    w = np.ones_like(bbox_weights) if slip == "all_columns" else bbox_weights
    reg, dd = ops.smooth_l1(deltas, bbox_targets, w, sigma=3.0 if slip == "sigma_3" else sigma, normalizer=n_reg)
    lam_loss = 1.0 if slip == "no_lambda" else lam
    lam_grad = 1.0 if slip in ("no_lambda", "lambda_not_in_gradient") else lam
    return cls_loss, lam_loss * reg, dscores, lam_grad * dd


def voc_ap_student(det_image, det_scores, det_boxes, gt_boxes, gt_difficult, iou_threshold=0.5, method="area",
                   slip=None):
    order = range(len(det_scores)) if slip == "unsorted" else np.argsort(-det_scores, kind="stable")
    used = [np.zeros(len(g), dtype=bool) for g in gt_boxes]
    flags = []                                          # 1 TP, 0 FP, None ignored
    for d in order:
        img = det_image[d]
        if len(gt_boxes[img]) == 0:
            flags.append(0)
            continue
        iou = boxes.box_iou(det_boxes[d:d + 1], gt_boxes[img])[0]
        if slip == "best_free_gt":
            iou[used[img]] = -1
        g = int(np.argmax(iou))
        ok = iou[g] > iou_threshold if slip == "iou_gt" else iou[g] >= iou_threshold
        if not ok:
            flags.append(0)
        elif gt_difficult[img][g] and slip != "difficult_as_normal":
            flags.append(0 if slip == "difficult_fp" else None)
        elif used[img][g] and slip != "match_many":
            flags.append(0)
        else:
            used[img][g] = True
            flags.append(1)
    flags = np.array([f for f in flags if f is not None], dtype=np.float64)
    n_gt = sum(len(d) if slip == "difficult_in_recall" else int(np.sum(~d)) for d in gt_difficult)
    tp = np.cumsum(flags)
    fp = np.cumsum(1 - flags)
    recall = tp / n_gt
    precision = tp / np.maximum(tp + fp, 1)
    if (method == "voc07") != (slip == "other_method"):
        points = [k / 10 for k in range(11)] if slip == "k_over_10" else np.arange(0, 1.1, 0.1)
        ap = 0.0
        for t in points:
            if np.any(recall >= t):
                ap += precision[recall >= t][0] if slip == "first_precision" else precision[recall >= t].max()
        return ap / 11
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    if slip != "no_envelope":
        for i in range(len(p) - 2, -1, -1):
            p[i] = max(p[i], p[i + 1])
    return float(sum((r[i + 1] - r[i]) * p[i + 1] for i in range(len(r) - 1) if r[i + 1] != r[i]))


WRONG += [
    ("check_label_anchors", named(label_anchors_student, "labels_without_best_anchor", slip="no_best"), "condition (i)"),
    ("check_label_anchors", named(label_anchors_student, "labels_positive_iou_strict", slip="pos_gt"), "not > 0.7"),
    ("check_label_anchors", named(label_anchors_student, "labels_negative_iou_inclusive", slip="neg_le"), "IoU < 0.3, strictly"),
    ("check_label_anchors", named(label_anchors_student, "labels_border_not_ignored", slip="no_border"), "cross the image border"),
    ("check_label_anchors", named(label_anchors_student, "labels_best_over_all_anchors", slip="best_over_all"), "INSIDE the image only"),
    ("check_label_anchors", named(label_anchors_student, "labels_negative_rule_last", slip="clobber"), "positives win"),
    ("check_label_anchors", named(label_anchors_student, "labels_one_argmax_per_gt", slip="one_argmax"), "all of them are positive"),
    ("check_label_anchors", named(label_anchors_student, "labels_gt_without_overlap", slip="zero_best"), "condition IoU > 0"),
    ("check_label_anchors", named(label_anchors_student, "labels_image_size_w_h", slip="w_h"), "image_size is (H, W)"),
    ("check_label_anchors", named(label_anchors_student, "labels_matched_to_gt_it_is_best_for", slip="gt_it_is_best_for"), "overlaps MOST"),
    ("check_label_anchors", named(label_anchors_student, "labels_matched_on_every_anchor", slip="matched_everywhere"), "is -1 for every anchor"),
    ("check_sample_anchors", named(sample_anchors_student, "sample_without_positive_cap", slip="no_cap"), "At most int(batch_size * positive_fraction)"),
    ("check_sample_anchors", named(sample_anchors_student, "sample_negatives_fill_half", slip="quota_half"), "positives you KEPT"),
    ("check_sample_anchors", named(sample_anchors_student, "sample_negatives_fill_batch", slip="quota_all"), "what the positives left"),
    ("check_sample_anchors", named(sample_anchors_student, "sample_dropped_positives_to_zero", slip="dropped_to_zero"), "never 0"),
    ("check_sample_anchors", named(sample_anchors_student, "sample_draws_when_it_fits", slip="always_draw"), "do NOT call the generator"),
    ("check_sample_anchors", named(sample_anchors_student, "sample_negatives_first", slip="negatives_first"), "positives first, then the negatives"),
    ("check_sample_anchors", named(sample_anchors_student, "sample_with_permutation", slip="permutation"), "not the anchors the library's draw picks"),
    ("check_proposal_layer", named(proposal_layer_student, "proposals_nms_before_topn", slip="nms_on_all"), "BEFORE NMS"),
    ("check_proposal_layer", named(proposal_layer_student, "proposals_post_topn_before_nms", slip="post_topn_first"), "cut comes after NMS"),
    ("check_proposal_layer", named(proposal_layer_student, "proposals_topn_before_size", slip="topn_before_size"), "before the top-N"),
    ("check_proposal_layer", named(proposal_layer_student, "proposals_size_before_clip", slip="size_before_clip"), "Clip first, then measure"),
    ("check_proposal_layer", named(proposal_layer_student, "proposals_not_clipped", slip="no_clip"), "Clip the decoded boxes"),
    ("check_proposal_layer", named(proposal_layer_student, "proposals_image_size_w_h", slip="w_h"), "image_size is (H, W)"),
    ("check_proposal_layer", named(proposal_layer_student, "proposals_min_size_strict", slip="strict_size"), "exactly min_size"),
    ("check_proposal_layer", named(proposal_layer_student, "proposals_reversed_ties", slip="argsort_reversed"), "reverses ties"),
    ("check_proposal_layer", named(proposal_layer_student, "proposals_no_post_topn", slip="no_post_topn"), "first post_nms_top_n"),
    ("check_roi_targets", named(roi_targets_student, "rois_without_gt_boxes", slip="no_gt_candidates"), "Add the gt boxes"),
    ("check_roi_targets", named(roi_targets_student, "rois_fg_iou_strict", slip="fg_gt"), "exactly fg_iou"),
    ("check_roi_targets", named(roi_targets_student, "rois_bg_without_lower_bound", slip="no_lower_bound"), "below 0.1 are left out"),
    ("check_roi_targets", named(roi_targets_student, "rois_no_fg_fraction", slip="no_fg_cap"), "round(fg_fraction * batch_size)"),
    ("check_roi_targets", named(roi_targets_student, "rois_bg_fills_batch", slip="bg_fills_batch"), "minus the foreground rows kept"),
    ("check_roi_targets", named(roi_targets_student, "rois_targets_not_normalised", slip="no_stds"), "Divide the deltas by the stds"),
    ("check_roi_targets", named(roi_targets_student, "rois_targets_times_stds", slip="times_stds"), "don't multiply"),
    ("check_roi_targets", named(roi_targets_student, "rois_targets_in_columns_0", slip="columns_0"), "class-specific"),
    ("check_roi_targets", named(roi_targets_student, "rois_targets_in_columns_c_minus_1", slip="columns_c_minus_1"), "not 4(c-1):4c"),
    ("check_roi_targets", named(roi_targets_student, "rois_gt_index_as_class", slip="index_as_class"), "CLASS of its best gt"),
    ("check_roi_targets", named(roi_targets_student, "rois_background_first", slip="bg_first"), "Foreground rows first"),
    ("check_roi_targets", named(roi_targets_student, "rois_none_without_gt", slip="no_gt_no_rows"), "without gt boxes"),
    ("check_roi_targets", named(roi_targets_student, "rois_drawn_unsorted", slip="unsorted"), "increasing index order"),
    ("check_rpn_loss", named(rpn_loss_student, "rpn_n_reg_is_256", slip="n_reg_256"), "not the sample size"),
    ("check_rpn_loss", named(rpn_loss_student, "rpn_n_reg_is_anchors", slip="n_reg_anchors"), "not the H * W * A anchors"),
    ("check_rpn_loss", named(rpn_loss_student, "rpn_n_reg_is_positives", slip="n_reg_positives"), "not the number of positives"),
    ("check_rpn_loss", named(rpn_loss_student, "rpn_n_cls_is_sampled", slip="n_cls_sampled"), "even when fewer anchors"),
    ("check_rpn_loss", named(rpn_loss_student, "rpn_normalisers_of_one_image", slip="one_image_normalisers"), "multiplied by N"),
    ("check_rpn_loss", named(rpn_loss_student, "rpn_without_lambda", slip="no_lambda"), "Multiply the regression term by lambda"),
    ("check_rpn_loss", named(rpn_loss_student, "rpn_lambda_not_in_gradient", slip="lambda_not_in_gradient"), "so its gradient ddeltas is too"),
    ("check_rpn_loss", named(rpn_loss_student, "rpn_regresses_negatives", slip="regress_sampled"), "POSITIVE anchors only"),
    ("check_rpn_loss", named(rpn_loss_student, "rpn_regresses_every_anchor", slip="regress_all"), "Only positive anchors"),
    ("check_rpn_loss", named(rpn_loss_student, "rpn_sigma_1", slip="sigma_1"), "Pass sigma"),
    ("check_rpn_loss", named(rpn_loss_student, "rpn_ignored_as_background", slip="ignored_as_background"), "not counted as background"),
    ("check_head_loss", named(head_loss_student, "head_reg_over_fg", slip="divide_by_fg"), "not by the foreground count"),
    ("check_head_loss", named(head_loss_student, "head_divided_by_128", slip="divide_by_128"), "actually given"),
    ("check_head_loss", named(head_loss_student, "head_without_lambda", slip="no_lambda"), "Multiply the regression term by lambda"),
    ("check_head_loss", named(head_loss_student, "head_lambda_not_in_gradient", slip="lambda_not_in_gradient"), "so its gradient ddeltas is too"),
    ("check_head_loss", named(head_loss_student, "head_sigma_3", slip="sigma_3"), "Pass sigma"),
    ("check_head_loss", named(head_loss_student, "head_every_column", slip="all_columns"), "Weight the smooth L1 by bbox_weights"),
    ("check_voc_ap", named(voc_ap_student, "ap_other_method", slip="other_method"), "11-point"),
    ("check_voc_ap", named(voc_ap_student, "ap_difficult_in_recall", slip="difficult_in_recall"), "no false negative"),
    ("check_voc_ap", named(voc_ap_student, "ap_difficult_as_fp", slip="difficult_fp"), "neither TP nor FP"),
    ("check_voc_ap", named(voc_ap_student, "ap_difficult_as_normal", slip="difficult_as_normal"), "ignored, not a true positive"),
    ("check_voc_ap", named(voc_ap_student, "ap_gt_matched_many_times", slip="match_many"), "matched once"),
    ("check_voc_ap", named(voc_ap_student, "ap_best_free_gt", slip="best_free_gt"), "COCO's rule"),
    ("check_voc_ap", named(voc_ap_student, "ap_iou_strict", slip="iou_gt"), "exactly iou_threshold"),
    ("check_voc_ap", named(voc_ap_student, "ap_unsorted", slip="unsorted"), "decreasing score"),
    ("check_voc_ap", named(voc_ap_student, "ap_without_envelope", slip="no_envelope"), "precision envelope"),
    ("check_voc_ap", named(voc_ap_student, "ap_points_k_over_10", slip="k_over_10"), "to the last bit"),
    ("check_voc_ap", named(voc_ap_student, "ap_first_precision", slip="first_precision"), "HIGHEST precision"),
]


STUDENT_STYLE = [("check_label_anchors", label_anchors_student), ("check_sample_anchors", sample_anchors_student),
                 ("check_proposal_layer", proposal_layer_student), ("check_roi_targets", roi_targets_student),
                 ("check_rpn_loss", rpn_loss_student), ("check_head_loss", head_loss_student),
                 ("check_voc_ap", voc_ap_student)]


@pytest.mark.parametrize("name, function", STUDENT_STYLE, ids=[f.__name__ for _, f in STUDENT_STYLE])
def test_the_student_style_functions_pass_without_their_slip(name, function, capsys):
    """The wrong functions of 09-13 are these with one slip switched on: without it they are right."""
    assert getattr(classroom, name)(function).passed, capsys.readouterr().out
    assert getattr(classroom, name)(function, hidden=True).passed, capsys.readouterr().out


@pytest.mark.parametrize("name, wrong, hint", WRONG, ids=[w.__name__ for _, w, _ in WRONG])
def test_a_subtly_wrong_implementation_fails_with_its_hint(name, wrong, hint, capsys):
    assert getattr(classroom, name)(wrong).passed is False
    out = capsys.readouterr().out
    assert "FAIL" in out and "Hint:" in out
    assert hint in out.replace("\n", " ").replace("  ", " ") or hint in " ".join(out.split()), out


def iou_transposed(a, b):                     # (M, N): result[j, i] instead of result[i, j]
    return boxes.box_iou(b, a)


def smooth_l1_grad_wrong_sign(pred, target, weights, sigma=1.0, normalizer=1.0):   # d = target - pred
    d = weights * (target - pred)
    s2 = sigma ** 2
    small = np.abs(d) < 1 / s2
    f = np.where(small, 0.5 * s2 * d ** 2, np.abs(d) - 0.5 / s2)
    return f.sum() / normalizer, weights * np.where(small, s2 * d, np.sign(d)) / normalizer


def nms_keeps_only_the_best(b, scores, thr):  # stops after the first kept box
    return np.argsort(-scores, kind="stable")[:1].astype(np.int64)


# a bug that matches a known slip on one case by coincidence must not be told it has that slip
MISLEAD = [
    ("check_iou", iou_transposed, "transpose", "need their own answer"),
    ("check_smooth_l1", smooth_l1_grad_wrong_sign, "opposite sign", "not 1 / sigma"),
    ("check_nms", nms_keeps_only_the_best, "only the best box", "IoU >= iou_threshold"),
]


@pytest.mark.parametrize("name, wrong, hint, misleading", MISLEAD, ids=[w.__name__ for _, w, _, _ in MISLEAD])
def test_a_bug_gets_its_own_hint_not_a_coincidental_one(name, wrong, hint, misleading, capsys):
    assert not getattr(classroom, name)(wrong)
    out = " ".join(capsys.readouterr().out.split())
    assert hint in out and misleading not in out, out


def test_a_check_shows_no_true_or_false_under_its_feedback_in_jupyter(capsys):
    """The value a check returns ends the notebook cell: IPython must display nothing for it."""
    from IPython.core.formatters import DisplayFormatter

    show = DisplayFormatter()
    assert show.format(True)[0] == {"text/plain": "True"}          # what a bare bool would show
    passed, failed = classroom.check_iou(boxes.box_iou), classroom.check_iou(iou_transposed)
    assert show.format(passed)[0] == {} and show.format(failed)[0] == {}
    assert passed and not failed and passed == True and failed == False   # noqa: E712 (behaves as the bool)
    assert (passed.passed, failed.passed) == (True, False)
    assert "CheckResult(passed=False, 5 of 9 cases)" == repr(failed)


def test_decode_and_encode_slips_are_caught_by_the_pair_check(capsys):
    assert classroom.check_encode_decode(boxes.encode, decode_without_clamp).passed is False
    assert classroom.check_encode_decode(encode_corners, boxes.decode).passed is False


def test_an_exception_is_shown_with_the_students_line_not_raised(capsys):
    def iou(a, b):
        union = np.zeros((len(a), len(b)))
        return 1 // 0 + union                      # a bug

    assert classroom.check_iou(iou).passed is False
    out = capsys.readouterr().out
    assert "ZeroDivisionError" in out
    assert "in iou(), line" in out and "1 // 0" in out


def test_forgetting_return_is_explained(capsys):
    def nms(b, s, t):
        keep = []                                  # noqa: F841 (the student forgot `return keep`)

    assert classroom.check_nms(nms).passed is False
    assert "did you forget to `return" in capsys.readouterr().out


def test_a_wrong_shape_and_a_wrong_tuple_are_explained(capsys):
    assert classroom.check_iou(lambda a, b: boxes.box_iou(a, b).T).passed is False
    assert "expected shape (3, 2), got shape (2, 3)" in capsys.readouterr().out
    assert classroom.check_smooth_l1(lambda *a, **k: ops.smooth_l1(*a, **k)[1]).passed is False
    assert "expected 2 things, (loss, dpred)" in capsys.readouterr().out


def test_float_indices_from_nms_are_explained(capsys):
    assert classroom.check_nms(lambda b, s, t: boxes.nms(b, s, t).astype(np.float64)).passed is False
    assert "should be integers" in capsys.readouterr().out


def test_what_the_students_function_prints_stays_beside_its_case(capsys):
    def iou(a, b):
        print("debug:", a.shape, b.shape)
        return boxes.box_iou(a, b)

    assert classroom.check_iou(iou).passed is True
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:5] == ["debug: (1, 4) (1, 4)", "  PASS  overlapping boxes",
                          "debug: (1, 4) (1, 4)", "  PASS  identical boxes"]


def test_a_function_that_writes_into_its_inputs_does_not_spoil_the_checks(capsys):
    def iou(a, b):
        result = boxes.box_iou(a, b)
        a[:] = 0                                   # vandalises its input
        b[:] = 0
        return result

    assert classroom.check_iou(iou).passed is True
    assert classroom.check_iou(boxes.box_iou).passed is True


def test_python_m_minifrcnn_classroom_runs_every_check_on_the_library(capsys):
    from minifrcnn.classroom.__main__ import main

    assert main() == 0
    assert "FAIL" not in capsys.readouterr().out


def test_the_known_slips_with_every_switch_off_are_the_library(capsys):
    """The hints compare a student's answer with these variants: by default they must be right."""
    assert classroom.check_iou(exercises._iou_variant)
    assert classroom.check_anchors(exercises._anchors_variant)
    assert classroom.check_encode(exercises._encode_variant)
    assert classroom.check_decode(exercises._decode_variant)
    assert classroom.check_nms(exercises._nms_variant)
    assert classroom.check_smooth_l1(exercises._smooth_l1_variant)
    assert classroom.check_softmax_cross_entropy_backward(exercises._sce_backward_variant)
    assert classroom.check_roi_pool(exercises._roi_pool_variant)
    assert classroom.check_conv_backward(exercises._conv_backward_variant)
    assert classroom.check_label_anchors(detector_exercises._label_anchors_variant)
    assert classroom.check_sample_anchors(detector_exercises._sample_variant)
    assert classroom.check_proposal_layer(detector_exercises._proposal_variant)
    assert classroom.check_roi_targets(detector_exercises._roi_targets_variant)
    assert classroom.check_rpn_loss(detector_exercises._rpn_loss_variant)
    assert classroom.check_head_loss(detector_exercises._head_loss_variant)
    assert classroom.check_voc_ap(detector_exercises._voc_ap_variant)


# ------------------------------------------------------------------------- the notebooks

# notebook -> the checks its cells call, with the functions it defines
NOTEBOOK_CHECKS = {
    "01_iou": [("check_iou", ["iou"])],
    "02_anchors": [("check_anchors", ["generate_anchors"]), ("check_grid_anchors", ["grid_anchors"])],
    "03_box_encode_decode": [("check_encode", ["encode"]), ("check_decode", ["decode"])],
    "04_nms": [("check_nms", ["nms"])],
    "05_smooth_l1": [("check_smooth_l1", ["smooth_l1"])],
    "06_softmax_cross_entropy_backward": [("check_softmax_cross_entropy_backward",
                                           ["softmax_cross_entropy_backward"])],
    "07_roi_pool": [("check_roi_pool", ["roi_pool"])],
    "08_conv_backward": [("check_conv_backward", ["conv_backward"])],
    "09_anchor_targets": [("check_label_anchors", ["label_anchors"]), ("check_sample_anchors", ["sample_anchors"])],
    "10_proposal_layer": [("check_proposal_layer", ["proposal_layer"])],
    "11_roi_sampling": [("check_roi_targets", ["roi_targets"])],
    "12_multitask_loss": [("check_rpn_loss", ["rpn_loss"]), ("check_head_loss", ["head_loss"])],
    "13_voc_ap": [("check_voc_ap", ["voc_ap"])],
    "14_capstone": [("check_capstone", ["label_anchors", "sample_anchors", "proposal_layer", "roi_targets",
                                        "rpn_loss", "head_loss", "voc_ap"])],
}
DETECTOR_STEPS = [stem for stem in sorted(NOTEBOOK_CHECKS) if stem >= "09"]   # 09-14: with questions and answers
# 01-08 given questions, answer cells and a link to their walkthrough (issue 17, items 3 and 4)
BUILDING_BLOCKS = ["01_iou", "02_anchors", "03_box_encode_decode", "04_nms", "05_smooth_l1",
                   "06_softmax_cross_entropy_backward", "07_roi_pool", "08_conv_backward"]
WALKTHROUGHS = {"01_iou": ["01_data_and_boxes"], "02_anchors": ["03_anchors"],
                "03_box_encode_decode": ["03_anchors", "04_region_proposal_network", "06_fast_rcnn_head_and_loss"],
                "04_nms": ["04_region_proposal_network"],
                "05_smooth_l1": ["02_building_blocks_and_backprop", "04_region_proposal_network",
                                 "06_fast_rcnn_head_and_loss"],
                "06_softmax_cross_entropy_backward": ["02_building_blocks_and_backprop", "04_region_proposal_network",
                                                      "06_fast_rcnn_head_and_loss"],
                "07_roi_pool": ["05_roi_pooling"], "08_conv_backward": ["02_building_blocks_and_backprop"]}
DRAW_BOXES = {"01_iou", "02_anchors", "04_nms", "07_roi_pool", "09_anchor_targets", "10_proposal_layer",
              "11_roi_sampling", "14_capstone"}          # the exercises whose figures show boxes


def code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_every_exercise_has_a_solution_and_a_student_version():
    names = sorted(p.stem for p in SOLUTIONS.glob("*.ipynb"))
    assert names == sorted(NOTEBOOK_CHECKS)
    assert sorted(p.stem for p in STUDENT.glob("*.ipynb")) == names
    assert len(names) == 14


@pytest.mark.parametrize("stem", sorted(NOTEBOOK_CHECKS))
def test_the_solution_notebook_passes_its_checks(stem, capsys):
    """Run the solution notebook's imports and solution cells, then its checks on what they define."""
    cells = code_cells(SOLUTIONS / f"{stem}.ipynb")
    namespace = {}
    exec(compile(cells[0].source, f"{stem}[imports]", "exec"), namespace)
    solution_cells = [c for c in cells if "### BEGIN SOLUTION" in c.source]
    assert solution_cells, f"{stem} has no solution block"
    for cell in solution_cells:
        exec(compile(cell.source, f"{stem}[solution]", "exec"), namespace)
    sources = "\n".join(c.source for c in cells)
    for check, functions in NOTEBOOK_CHECKS[stem]:
        assert f"{check}({', '.join(functions)})" in sources, f"{stem} never calls {check}"
        assert getattr(classroom, check)(*[namespace[f] for f in functions]).passed is True, capsys.readouterr().out


@pytest.mark.parametrize("stem", sorted(NOTEBOOK_CHECKS))
def test_the_solution_notebook_is_saved_executed_and_clean(stem):
    path = SOLUTIONS / f"{stem}.ipynb"
    assert path.stat().st_size < 1_500_000
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    texts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is not None, f"{stem}: a cell was not executed"
        for out in cell.outputs:
            assert out.output_type != "error", f"{stem}: {out.get('ename')}"
            assert not (out.output_type == "stream" and out.name == "stderr"), f"{stem}: stderr {out.text[:200]}"
            texts.append(out.get("text", ""))
    text = "".join(texts)
    assert "FAIL" not in text and "not implemented" not in text
    assert text.count("passed. Well done!") == len(NOTEBOOK_CHECKS[stem])


@pytest.mark.parametrize("stem", sorted(NOTEBOOK_CHECKS))
def test_the_student_notebook_has_stubs_check_calls_and_no_solutions(stem):
    cells = code_cells(STUDENT / f"{stem}.ipynb")
    source = "\n".join(c.source for c in cells)
    assert "### BEGIN SOLUTION" not in source and "### END SOLUTION" not in source
    for check, functions in NOTEBOOK_CHECKS[stem]:
        assert f"{check}({', '.join(functions)})" in source
        for f in functions:
            (definition,) = [c.source for c in cells if f"def {f}(" in c.source]
            assert 'raise NotImplementedError("your code here")' in definition
    assert all(c.outputs == [] and c.execution_count is None for c in cells)


@pytest.mark.parametrize("stem", BUILDING_BLOCKS + DETECTOR_STEPS)
def test_the_questions_are_answered_in_the_solution_only(stem):
    """1-3 questions, each answered in an answer cell right after it, that the student version lacks;
    the notebook ends with a Summary and a Next that names the walkthrough of the step."""
    script = load_script()
    solution = nbformat.read(SOLUTIONS / f"{stem}.ipynb", as_version=4)
    student = nbformat.read(STUDENT / f"{stem}.ipynb", as_version=4)
    answers = [i for i, c in enumerate(solution.cells) if script.is_answer(c)]
    assert 1 <= len(answers) <= 3
    for i in answers:
        question = solution.cells[i - 1]
        assert solution.cells[i].cell_type == question.cell_type == "markdown" and not script.is_answer(question)
        assert solution.cells[i].source.startswith("**Answer.**") and "?" in question.source
    assert not any(script.is_answer(c) for c in student.cells)
    assert len(student.cells) == len(solution.cells) - len(answers)
    texts = {c.source for c in student.cells}
    assert all(solution.cells[i].source not in texts for i in answers)
    end = solution.cells[-1].source
    assert "## Summary" in end and "## Next" in end and "notebooks/0" in end


@pytest.mark.parametrize("stem", BUILDING_BLOCKS)
def test_a_building_block_links_to_its_walkthrough(stem):
    """Near the top, one line names the walkthrough notebooks (and sections) that explain the step,
    linked from the exercise's folder (09-14 name theirs in their Next instead)."""
    nb = nbformat.read(SOLUTIONS / f"{stem}.ipynb", as_version=4)
    (line,) = [l for l in nb.cells[0].source.splitlines() if l.startswith("Walkthrough: this step is explained in ")]
    for name in WALKTHROUGHS[stem]:
        assert f"[../../{name}.ipynb](../../{name}.ipynb), section" in line, line
        assert (SOLUTIONS / ".." / ".." / f"{name}.ipynb").is_file()


@pytest.mark.parametrize("stem", sorted(NOTEBOOK_CHECKS))
def test_an_exercise_draws_its_boxes_with_plotting(stem):
    """Boxes are drawn by minifrcnn.plotting (issue 17, item 6), not by the notebook's own patches."""
    nb = nbformat.read(SOLUTIONS / f"{stem}.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "matplotlib.patches" not in code
    if stem in DRAW_BOXES:
        assert "from minifrcnn import plotting" in code and "plotting.draw_" in code


def test_the_student_notebooks_are_in_sync_with_the_solutions(tmp_path):
    """Regenerate them into a temporary folder: cell by cell they must equal the committed ones."""
    script = load_script()
    assert script.main(["--solutions", str(SOLUTIONS), "--out", str(tmp_path)]) == 0
    for path in sorted(SOLUTIONS.glob("*.ipynb")):
        fresh = nbformat.read(tmp_path / path.name, as_version=4)
        committed = nbformat.read(STUDENT / path.name, as_version=4)
        assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in fresh.cells], \
            f"{path.name} is out of date: run python scripts/make_student_notebooks.py"
    assert script.main(["--solutions", str(SOLUTIONS), "--out", str(STUDENT), "--check"]) == 0


def test_the_script_is_deterministic_and_check_mode_sees_a_stale_file(tmp_path, capsys):
    script = load_script()
    first, second = tmp_path / "a", tmp_path / "b"
    script.main(["--out", str(first)])
    script.main(["--out", str(second)])
    for path in first.glob("*.ipynb"):
        assert path.read_bytes() == (second / path.name).read_bytes()
    assert script.main(["--out", str(first), "--check"]) == 0
    stale = sorted(first.glob("*.ipynb"))[0]
    nb = nbformat.read(stale, as_version=4)
    nb.cells[0].source += "\nedited by hand"
    nbformat.write(nb, stale)
    assert script.main(["--out", str(first), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err


def test_strip_solutions_keeps_the_indentation_and_rejects_unmatched_markers():
    script = load_script()
    source = ("def f(x):\n    \"\"\"doc\"\"\"\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n"
              "    ### END SOLUTION\n\n\nprint(f)")
    stripped, blocks = script.strip_solutions(source)
    assert blocks == 1
    assert stripped == ('def f(x):\n    """doc"""\n    raise NotImplementedError("your code here")\n\n\nprint(f)')
    nested = "    ### BEGIN SOLUTION\n        ### BEGIN SOLUTION\n"
    for bad in ("x = 1\n### END SOLUTION", "### BEGIN SOLUTION\nx = 1", nested):
        with pytest.raises(script.MarkerError):
            script.strip_solutions(bad)


def test_answer_cells_stay_with_the_teacher():
    """A markdown cell marked {"minifrcnn": {"answer": true}} is left out of the student version."""
    script = load_script()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("**Question.** Why?"),
                nbformat.v4.new_markdown_cell("**Answer.** Because.", metadata={"minifrcnn": {"answer": True}}),
                nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION")]
    assert script.add_metadata(nb) == 3
    assert script.metadata_problems(nb) == []
    assert nb.cells[1].metadata["nbgrader"]["grade_id"] == "answer-01"
    student = script.make_student_notebook(nb)
    assert [c.source for c in student.cells] == ["**Question.** Why?",
                                                 'def f():\n    raise NotImplementedError("your code here")']
    assert [c.source for c in nb.cells][1] == "**Answer.** Because."          # the solution keeps it
    nb.cells[2].metadata["minifrcnn"] = {"answer": True}                      # only markdown can be an answer
    assert any("must be a markdown cell" in p for p in script.metadata_problems(nb))
