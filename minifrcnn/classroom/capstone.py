"""The capstone: the student's functions of exercises 09-13 inside the detector.

Exercises 09-12 each ask for one step of Faster R-CNN with an exact signature; here they are
plugged into the real detector, which then trains and detects with them instead of the
library's own code:

    from minifrcnn.classroom.capstone import students_detector, train_detector

    with students_detector(label_anchors=label_anchors, sample_anchors=sample_anchors,
                           proposal_layer=proposal_layer, roi_targets=roi_targets,
                           rpn_loss=rpn_loss, head_loss=head_loss):
        model, losses = train_detector(cfg, train_set)        # or minifrcnn.train.train(...)
        detections = predict_dataset(model, test_set)         # inference: your proposal_layer
    mAP = students_map(voc_ap, detections, ground_truths(test_set), CLASS_NAMES)   # exercise 13

Any subset of the six may be given (None keeps the library's step). Inside the `with`, the
detector calls each given function through a small adapter, one per step, that maps the
library's call onto the exercise's signature and the answer back:

    the detector calls (library)          adapter                   the student's functions
    joint_training.anchor_targets         anchor_targets_from       label_anchors, sample_anchors (09)
    model.proposal_layer                  proposal_layer_from       proposal_layer (10)
    joint_training.proposal_targets       proposal_targets_from     roi_targets (11)
    joint_training.rpn_loss               rpn_loss_from             rpn_loss (12)
    joint_training.fast_rcnn_loss         fast_rcnn_loss_from       head_loss (12)

On leaving the `with` (also through an exception) the library's functions are back. Where an
exercise's answer lacks something the detector needs, the adapter computes it from the
student's answer with an earlier exercise's library function: the RPN's regression targets
beside the labels (encode, exercise 03). The exercises are NumPy: on a GPU the adapters copy
the inputs to the host and the answers back; everywhere they hand the student's function
copies, so a function that writes into its inputs cannot change the detector's arrays.

Not in the exercises: the small preset's jittered copies of the gt boxes (roi_gt_jitter, 4 in
the default config; the paper has none). The RoI adapter draws them with the library's
jittered_gt_boxes, from the same generator at the same point, and hands them to roi_targets as extra
proposals, after the real ones; the library puts them after the gt boxes, so the same random
numbers pick other rows: the same kind of sample, not the library's to the bit. So the
detector the student's is compared with is LIBRARY_STEPS plugged in the same way: the library's
own steps in the exercises' signatures (detector_exercises' library versions). With
roi_gt_jitter = 0 that is exactly the library's detector, to the bit (tests/test_capstone.py).

check_capstone(label_anchors, sample_anchors, proposal_layer, roi_targets, rpn_loss, head_loss,
voc_ap) is the capstone notebook's graded check: it trains the library's detector for a short
fixed budget and, before each update, runs the same iteration with the student's functions (each
alone, then all of them), comparing the losses and the gradients; then the detections and the
mAP by voc_ap (details in its docstring).
"""
import contextlib
import io
import sys
import traceback
from pathlib import Path

import numpy as np

from .. import joint_training as _joint_training
from .. import model as _model
from ..backend import get_array_module, to_numpy
from ..boxes import encode
from ..config import config_for_data
from ..data import CLASS_NAMES, make_split
from ..detect import predict_dataset
from ..evaluate import class_inputs, evaluate_detections, ground_truths, prepare_inputs
from ..model import FasterRCNN
from ..optim import make_optimizer
from ..proposal_targets import jittered_gt_boxes
from ..proposals import proposal_layer as _library_proposal_layer
from ..train import train_step
from . import detector_exercises as _ex
from .feedback import Case, run_check
from .hidden_library import library_hidden

__all__ = ["students_detector", "train_detector", "students_map", "check_capstone", "LIBRARY_STEPS",
           "anchor_targets_from", "proposal_layer_from", "proposal_targets_from", "rpn_loss_from",
           "fast_rcnn_loss_from"]

STEPS = ("label_anchors", "sample_anchors", "proposal_layer", "roi_targets", "rpn_loss", "head_loss")

# the library's own steps in the exercises' signatures: students_detector(**LIBRARY_STEPS) is the
# detector the student's functions are compared with (the module docstring says why)
LIBRARY_STEPS = {"label_anchors": _ex._library_label_anchors, "sample_anchors": _ex._library_sample_anchors,
                 "proposal_layer": _library_proposal_layer, "roi_targets": _ex._library_roi_targets,
                 "rpn_loss": _ex._library_rpn_loss, "head_loss": _ex._library_head_loss}


def _host(*arrays):
    """NumPy copies of arrays (from the GPU, or of the detector's own NumPy arrays)."""
    return [to_numpy(a).copy() for a in arrays]


# ======================================================================================
# the adapters: one per step of the detector
# ======================================================================================

def anchor_targets_from(label_anchors, sample_anchors):
    """anchor_targets.anchor_targets made of exercise 09's label_anchors and sample_anchors.

    The library returns (labels, bbox_targets, matched_gt) after the sample; the exercise's
    functions give the labels and each positive's gt, so the regression targets of the sampled
    positives are encoded here: encode(anchor, its matched gt box) (exercise 03), 0 elsewhere.
    """
    def adapter(anchors, gt_boxes, image_size, rng, positive_iou=0.7, negative_iou=0.3, batch_size=256,
                positive_fraction=0.5, allowed_border=0):
        # the detector hands this step NumPy arrays, on a GPU too (joint_training.py)
        labels, matched_gt = label_anchors(*_host(anchors, gt_boxes), tuple(image_size), positive_iou=positive_iou,
                                           negative_iou=negative_iou, allowed_border=allowed_border)
        labels = np.asarray(sample_anchors(*_host(labels), rng, batch_size=batch_size,
                                           positive_fraction=positive_fraction))             # (A,)
        positive = labels == 1
        matched_gt = np.where(positive, matched_gt, -1)               # (A,) the sampled positives' gt
        bbox_targets = np.zeros_like(anchors)                         # (A, 4)
        bbox_targets[positive] = encode(anchors[positive], gt_boxes[matched_gt[positive]])
        return labels, bbox_targets, matched_gt
    return adapter


def proposal_layer_from(proposal_layer):
    """proposals.proposal_layer by exercise 10's proposal_layer: the same signature and answer."""
    def adapter(anchors, objectness, deltas, image_size, pre_nms_top_n=6000, post_nms_top_n=300,
                nms_threshold=0.7, min_size=16.0):
        xp = get_array_module(anchors)                 # NumPy, or CuPy on a GPU
        boxes, scores = proposal_layer(*_host(anchors, objectness, deltas), tuple(image_size),
                                       pre_nms_top_n=pre_nms_top_n, post_nms_top_n=post_nms_top_n,
                                       nms_threshold=nms_threshold, min_size=min_size)
        return xp.asarray(boxes, dtype=anchors.dtype), xp.asarray(scores)   # (R, 4), (R,)
    return adapter


def proposal_targets_from(roi_targets):
    """proposal_targets.proposal_targets by exercise 11's roi_targets.

    The library returns a dict; the detector reads its "rois", "labels", "bbox_targets" and
    "bbox_weights", the exercise's four answers. gt_jitter > 0 (not in the exercise): the
    jittered gt copies join the proposals (the module docstring says what that changes).
    """
    def adapter(proposals, gt_boxes, gt_labels, num_classes, rng, batch_size=128, fg_fraction=0.25,
                fg_iou=0.5, bg_iou_hi=0.5, bg_iou_lo=0.1, stds=(0.1, 0.1, 0.2, 0.2), gt_jitter=0):
        xp = get_array_module(proposals)
        proposals_np, gt_np, gt_labels_np = _host(proposals, gt_boxes, gt_labels)
        if gt_jitter > 0 and len(gt_np) > 0:           # not in exercise 11: extra proposals
            jittered = jittered_gt_boxes(gt_np, gt_jitter, rng).astype(proposals_np.dtype)
            proposals_np = np.concatenate([proposals_np, jittered])
        rois, labels, bbox_targets, bbox_weights = roi_targets(
            proposals_np, gt_np, gt_labels_np, num_classes, rng, batch_size=batch_size, fg_fraction=fg_fraction,
            fg_iou=fg_iou, bg_iou_hi=bg_iou_hi, bg_iou_lo=bg_iou_lo, stds=tuple(stds))
        return {"rois": xp.asarray(rois, dtype=proposals.dtype), "labels": xp.asarray(labels),
                "bbox_targets": xp.asarray(bbox_targets), "bbox_weights": xp.asarray(bbox_weights)}
    return adapter


def rpn_loss_from(rpn_loss):
    """rpn.rpn_loss by exercise 12's rpn_loss: the config's batch size, lambda and sigma go in as
    arguments; the two terms come back as the library's dict of 0-d arrays.
    Exercise 12 is the paper's normalisation (Config's loss_normalization "paper")."""
    def adapter(logits, deltas, labels, bbox_targets, feat_size, cfg):
        if cfg.loss_normalization != "paper":
            raise ValueError("exercise 12's rpn_loss is the paper's normalisation: "
                             f"loss_normalization must be 'paper', got {cfg.loss_normalization!r}")
        xp = get_array_module(logits)
        cls_loss, reg_loss, dlogits, ddeltas = rpn_loss(
            *_host(logits, deltas, labels, bbox_targets), tuple(feat_size), batch_size=cfg.rpn_batch_size,
            lam=cfg.rpn_lambda, sigma=cfg.rpn_sigma)
        terms = {"rpn_cls": xp.asarray(cls_loss, dtype=logits.dtype),
                 "rpn_reg": xp.asarray(reg_loss, dtype=logits.dtype)}
        return terms, xp.asarray(dlogits, dtype=logits.dtype), xp.asarray(ddeltas, dtype=deltas.dtype)
    return adapter


def fast_rcnn_loss_from(head_loss):
    """fast_rcnn.fast_rcnn_loss by exercise 12's head_loss: lambda and sigma from the config;
    the two terms come back as the library's dict of 0-d arrays."""
    def adapter(scores, deltas, labels, bbox_targets, bbox_weights, cfg):
        xp = get_array_module(scores)
        cls_loss, reg_loss, dscores, ddeltas = head_loss(
            *_host(scores, deltas, labels, bbox_targets, bbox_weights), lam=cfg.head_lambda, sigma=cfg.head_sigma)
        terms = {"head_cls": xp.asarray(cls_loss, dtype=scores.dtype),
                 "head_reg": xp.asarray(reg_loss, dtype=scores.dtype)}
        return terms, xp.asarray(dscores, dtype=scores.dtype), xp.asarray(ddeltas, dtype=deltas.dtype)
    return adapter


@contextlib.contextmanager
def students_detector(label_anchors=None, sample_anchors=None, proposal_layer=None, roi_targets=None,
                      rpn_loss=None, head_loss=None):
    """Inside the `with`, the detector's training and inference use the given functions
    (exercises 09-12, their exact signatures) instead of the library's; None keeps the library's.

    Given one of label_anchors / sample_anchors only, the other is the library's
    (detector_exercises' library versions in the exercise's signature). Everything is put back
    on leaving, also through an exception. The module docstring has the table of adapters.
    """
    replacements = []                                  # (module, name, adapter)
    if label_anchors is not None or sample_anchors is not None:
        replacements.append((_joint_training, "anchor_targets", anchor_targets_from(
            label_anchors or _ex._library_label_anchors, sample_anchors or _ex._library_sample_anchors)))
    if proposal_layer is not None:
        replacements.append((_model, "proposal_layer", proposal_layer_from(proposal_layer)))
    if roi_targets is not None:
        replacements.append((_joint_training, "proposal_targets", proposal_targets_from(roi_targets)))
    if rpn_loss is not None:
        replacements.append((_joint_training, "rpn_loss", rpn_loss_from(rpn_loss)))
    if head_loss is not None:
        replacements.append((_joint_training, "fast_rcnn_loss", fast_rcnn_loss_from(head_loss)))
    originals = [(module, name, getattr(module, name)) for module, name, _ in replacements]
    try:
        for module, name, adapter in replacements:
            setattr(module, name, adapter)
        yield
    finally:
        for module, name, original in reversed(originals):
            setattr(module, name, original)


# ======================================================================================
# training, evaluation
# ======================================================================================

def train_detector(cfg, train_set, model=None):
    """Train a FasterRCNN for cfg.iters iterations (train.train_step, the loop `train` runs,
    without its run folder). Returns (model, losses: one dict of the loss terms per iteration)."""
    model = FasterRCNN(cfg) if model is None else model
    optimizer = make_optimizer(model.parameters(), cfg)
    losses = [train_step(model, optimizer, train_set, cfg, it) for it in range(cfg.iters)]
    return model, losses


def students_map(voc_ap, detections, ground_truths, class_names, iou_threshold=0.5, method="area"):
    """The mAP of `detections` with exercise 13's voc_ap computing each class's AP: the mean over
    the classes that have a gt that is not difficult (evaluate.evaluate_detections' "map").

    detections, ground_truths: one dict per image, as evaluate_detections takes them.
    """
    dets, gts = prepare_inputs(detections, ground_truths, num_classes=len(class_names))
    aps = []
    for k in range(1, len(class_names) + 1):
        det_image, det_scores, det_boxes, gt_boxes, gt_difficult = class_inputs(dets, gts, k)
        if sum(int((~d).sum()) for d in gt_difficult) == 0:
            continue                                   # no gt of this class: left out, like evaluate
        aps.append(float(voc_ap(det_image, det_scores, det_boxes, gt_boxes, gt_difficult,
                                iou_threshold=iou_threshold, method=method)))
    return float(np.mean(aps)) if aps else float("nan")


# ======================================================================================
# the check
# ======================================================================================

# the library functions each step's answer comes from: out of reach while the student's runs
_HIDDEN = {
    "label_anchors": ["anchor_targets.anchor_targets", "anchor_targets._label_inside_anchors",
                      "anchor_targets.inside_image"],
    "sample_anchors": ["anchor_targets.anchor_targets", "anchor_targets.random_subset"],
    "proposal_layer": ["proposals.proposal_layer", "boxes.clip_boxes", "boxes.remove_small_boxes"],
    "roi_targets": ["proposal_targets.proposal_targets", "anchor_targets.random_subset"],
    "rpn_loss": ["rpn.rpn_loss", "fast_rcnn.fast_rcnn_loss"],
    "head_loss": ["rpn.rpn_loss", "fast_rcnn.fast_rcnn_loss"],
    "voc_ap": ["evaluate.evaluate_detections", "evaluate.voc_tp_fp", "evaluate.voc_tp_fp_reference",
               "evaluate.voc_ap"],
}
LOSS_TOLERANCE = 1e-4       # relative, on each loss term of each iteration
GRAD_TOLERANCE = 1e-3       # relative (Frobenius norm), on each parameter's gradient
BOX_TOLERANCE = 1e-2        # pixels, on the detections' boxes; scores to 1e-4
MAP_TOLERANCE = 1e-4        # absolute, on the mAP
CHECK_ITERS = 8             # the short fixed budget of the whole detector
ALONE_ITERS = 2             # iterations with one function plugged in alone
CHECK_TEST_IMAGES = 16


def _library_function(dotted):
    module, name = dotted.split(".")
    return getattr(sys.modules[f"minifrcnn.{module}"], name)


def _out_of_reach(name, function):
    """function, calling which the library's own version of step `name` is hidden (hidden_library)."""
    library = [_library_function(d) for d in _HIDDEN[name]]

    def call(*args, **kwargs):
        with library_hidden(function, library) as f:
            return f(*args, **kwargs)
    return call


class _NoUpdate:
    """An optimiser that changes nothing: train_step with it computes the losses and gradients only."""

    def set_lr(self, lr):
        pass

    def step(self):
        pass


def _grads(model):
    return {name: to_numpy(p.grad).copy() for name, p in model.named_parameters()}


def _side_by_side(cfg, train_set, iters, plugged, test_set):
    """Train the library's detector (LIBRARY_STEPS) `iters` iterations. Before each update, run
    the same iteration (the same weights, the same random draws) with each entry of `plugged`
    ({key: (functions, iterations)}) and compare its loss terms and gradients with the library's.

    Returns ({key: ("returned", the first difference or None) or ("raised", exception)},
    {key: what it printed}, the library's detections on test_set, the model).
    """
    model = FasterRCNN(cfg)
    optimizer = make_optimizer(model.parameters(), cfg)
    outcome = {key: ("returned", None) for key in plugged}
    printed = {key: io.StringIO() for key in plugged}
    for it in range(iters):
        mine = {}
        for key, (functions, n) in plugged.items():
            if it >= n or outcome[key] != ("returned", None):
                continue
            try:
                with students_detector(**functions), contextlib.redirect_stdout(printed[key]), \
                        np.errstate(all="ignore"):
                    mine[key] = train_step(model, _NoUpdate(), train_set, cfg, it), _grads(model)
            except Exception as exc:                 # NotImplementedError too: replayed by the check
                outcome[key] = ("raised", exc)
        with students_detector(**LIBRARY_STEPS):
            terms = train_step(model, optimizer, train_set, cfg, it)  # the update: the library's
        grads = _grads(model)
        for key, (their_terms, their_grads) in mine.items():
            problem = _compare_losses(terms, their_terms, it) or _compare_grads(grads, their_grads, it)
            if problem:
                outcome[key] = ("returned", problem)
    with students_detector(**LIBRARY_STEPS):
        detections = predict_dataset(model, test_set)
    return outcome, {key: _at_most(p.getvalue()) for key, p in printed.items()}, detections, model


def _compare_losses(expected, got, it):
    """None, or a line naming the term that differs at iteration `it`."""
    for term, value in expected.items():
        if term != "total" and not np.isclose(got[term], value, rtol=LOSS_TOLERANCE, atol=1e-7):
            return [f"iteration {it}: {term} expected {value:.6g}, got {got[term]:.6g}"
                    + (f" (iterations 0-{it - 1} agree)" if it else "")]
    return None


def _compare_grads(expected, got, it):
    worst = None
    for name, e in expected.items():
        err = np.linalg.norm(got[name] - e) / max(np.linalg.norm(e), 1e-20)
        if err > GRAD_TOLERANCE and (worst is None or err > worst[1]):
            worst = (name, err)
    if worst:
        return [f"iteration {it}: the losses agree, but the gradient of {worst[0]} differs from the "
                f"library's (relative difference {worst[1]:.3g})"]
    return None


def _compare_detections(expected, got):
    for i, (e, g) in enumerate(zip(expected, got)):
        if len(e["scores"]) != len(g["scores"]):
            return [f"test image {i}: expected {len(e['scores'])} detections, got {len(g['scores'])}"]
        if not (np.array_equal(e["labels"], g["labels"])
                and np.allclose(e["scores"], g["scores"], rtol=0, atol=1e-4)
                and np.allclose(e["boxes"], g["boxes"], rtol=0, atol=BOX_TOLERANCE)):
            return [f"test image {i}: the detections (boxes, scores or classes) differ from the library's"]
    return None


def _shipped_detections(test_set):
    """The shipped model's detections on test_set (data/shapes_model.npz), or None without it."""
    path = Path(__file__).resolve().parents[2] / "data" / "shapes_model.npz"
    if not path.is_file():
        return None
    return predict_dataset(FasterRCNN.load(path), test_set)


def _at_most(text, lines=12):
    """text, cut to its first `lines` lines."""
    rows = text.splitlines()
    if len(rows) > lines:
        rows = rows[:lines] + [f"... ({len(rows) - lines} more lines printed)"]
    return "".join(row + "\n" for row in rows)


def _capture(work):
    """(("returned", what work() returned) or ("raised", exception), what it printed)."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), np.errstate(all="ignore"):
            outcome = ("returned", work())
    except Exception as exc:                  # NotImplementedError included: replayed in the check
        outcome = ("raised", exc)
    return outcome, _at_most(printed.getvalue())


def check_capstone(label_anchors, sample_anchors, proposal_layer, roi_targets, rpn_loss, head_loss, voc_ap,
                   hidden=False):
    """Check exercises 09-13's functions inside the detector (the capstone notebook's graded check).

    The detector is the default one for the shapes data (config_for_data), trained CHECK_ITERS
    iterations on shapes images without the lr warm-up (so that the gradients move the weights
    at once) by the library's steps (LIBRARY_STEPS: the module docstring says why). Before each
    update the same iteration (the same weights, the same random draws) also runs with the
    student's functions plugged in (students_detector), and its four loss terms (relative
    tolerance LOSS_TOLERANCE) and the gradient of every parameter (GRAD_TOLERANCE) must be the
    library's. Iteration by iteration from the same weights, not two free runs: float rounding
    (a float64 division where the library's is float32) would otherwise grow from iteration to
    iteration. The cases:
      1-6. each of the six training functions plugged in alone: iterations 0 to ALONE_ITERS - 1;
      7.   voc_ap: the shipped model's mAP on CHECK_TEST_IMAGES test images, all-point and
           11-point, computed with it (students_map) against evaluate_detections (MAP_TOLERANCE);
      8.   all six together: every iteration, then the trained detector's detections on the test
           images with the student's proposal_layer (boxes to BOX_TOLERANCE px, scores to 1e-4);
      9.   those detections' mAP computed with voc_ap against the library's detections' mAP.
    hidden=True: the same cases with another seed (weights, images, draws).
    Prints PASS / FAIL per case, returns a CheckResult (true when all passed), never raises.
    """
    functions = dict(zip(STEPS + ("voc_ap",), (label_anchors, sample_anchors, proposal_layer, roi_targets,
                                               rpn_loss, head_loss, voc_ap)))
    reach = {name: _out_of_reach(name, f) for name, f in functions.items()}
    seed = 1 if hidden else 0
    train_set = make_split("capstone-train", 2 * CHECK_ITERS, seed=seed)
    test_set = make_split("capstone-test", CHECK_TEST_IMAGES, seed=seed)
    gts = ground_truths(test_set)
    cfg = config_for_data(train_set, CLASS_NAMES, seed=seed).with_iters(CHECK_ITERS).replace(lr_warmup_iters=0)
    plugged = {name: ({**LIBRARY_STEPS, name: reach[name]}, ALONE_ITERS) for name in STEPS}
    plugged["together"] = ({name: reach[name] for name in STEPS}, CHECK_ITERS)
    steps, printed, library_detections, model = _side_by_side(cfg, train_set, CHECK_ITERS, plugged, test_set)

    cases, outcomes = [], []
    for name in STEPS:
        cases.append(Case(f"{name} in the detector, the other steps the library's: iterations 0-{ALONE_ITERS - 1}",
                          (), hint=f"Run check_{name}({name}) in notebook {_NOTEBOOK[name]} again with this "
                          "very function. It passes there? Then look for what the detector's inputs have "
                          "that the check's had not: float32 arrays, images without gt boxes, many anchors."))
        outcomes.append((steps[name], printed[name]))

    shipped = _shipped_detections(test_set) or library_detections

    def map_of_shipped():
        for method in ("area", "voc07"):
            expected = evaluate_detections(shipped, gts, CLASS_NAMES, method=method)["map"]
            got = students_map(reach["voc_ap"], shipped, gts, CLASS_NAMES, method=method)
            if not abs(got - expected) <= MAP_TOLERANCE:
                return [f"method={method!r}: expected the mAP {expected:.6f}, got {got:.6f}"]
        return None
    cases.append(Case(f"voc_ap: the shipped model's mAP on {CHECK_TEST_IMAGES} test images", (),
                      hint="Run check_voc_ap(voc_ap) in notebook 13 again with this very function."))
    outcomes.append(_capture(map_of_shipped))

    mine = {}

    def detections():
        if steps["together"] != ("returned", None):
            return ["the training differs from the library's: no detections to compare"]
        with students_detector(proposal_layer=reach["proposal_layer"]):
            mine["detections"] = predict_dataset(model, test_set)
        return _compare_detections(library_detections, mine["detections"])
    together = _capture(detections) if steps["together"] == ("returned", None) else (steps["together"], "")
    cases.append(Case(f"all six together: {CHECK_ITERS} training iterations, then the detections on "
                      f"{CHECK_TEST_IMAGES} test images", (),
                      hint="Every function passed alone? Then either one of them goes wrong only on a "
                      "later iteration's inputs (run its own check again), or what one hands the next "
                      "is off: integer labels, the order of the rows, float32 boxes."))
    outcomes.append((together[0], printed["together"] + together[1]))

    def the_map():
        if "detections" not in mine:
            return ["the case above failed: no detections of yours to compare"]
        expected = evaluate_detections(library_detections, gts, CLASS_NAMES)["map"]
        got = students_map(reach["voc_ap"], mine["detections"], gts, CLASS_NAMES)
        if not abs(got - expected) <= MAP_TOLERANCE:
            return [f"expected the library's mAP {expected:.6f}, got {got:.6f}"]
        return None
    cases.append(Case("the mAP of those detections, by your voc_ap", (),
                      hint="The case above passed? Then the detections are right and voc_ap is not."))
    outcomes.append(_capture(the_map))

    replay = dict(zip(map(id, cases), outcomes))

    def call(case):
        (kind, value), text = replay[id(case)]
        sys.stdout.write(text)
        if kind == "raised":
            raise value
        return value
    stubs = [_raised_in(value) for (kind, value), _ in outcomes if kind == "raised"
             and isinstance(value, NotImplementedError)]
    return run_check("your functions in the detector", cases, call, lambda expected, problem: problem, names=(),
                     signature=stubs[0] if stubs else None, hidden=hidden)


def _raised_in(exc):
    """'label_anchors(...)': the function whose line raised exc (a stub's name)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].name}(...)" if frames else "one of your functions"


_NOTEBOOK = {"label_anchors": "09", "sample_anchors": "09", "proposal_layer": "10", "roi_targets": "11",
             "rpn_loss": "12", "head_loss": "12", "voc_ap": "13"}
