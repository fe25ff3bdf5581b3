"""The capstone (minifrcnn/classroom/capstone.py): exercises 09-13's functions plugged into the
detector, and its check.

The solution notebooks' functions plugged in train like the library (to float precision; to the
bit where they compute as the library does); a wrong function changes the losses; the library's
steps come back on leaving, also through an exception; the check passes the solutions, names a
wrong step, and gives a stub nothing. Tiny configs and a few iterations (the check's own budget is
made smaller here; the capstone notebook runs it at full size under nbval).
"""
import functools
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from minifrcnn import joint_training
from minifrcnn import model as model_module
from minifrcnn.classroom import capstone
from minifrcnn.classroom import detector_exercises as ex
from minifrcnn.config import Config
from minifrcnn.data import shapes
from minifrcnn.evaluate import evaluate_detections
from test_train import tiny_config as train_tiny_config

SOLUTIONS = Path(__file__).resolve().parent.parent / "notebooks" / "exercises" / "solutions"
EXERCISES = ("09_anchor_targets", "10_proposal_layer", "11_roi_sampling", "12_multitask_loss", "13_voc_ap")
FUNCTIONS = capstone.STEPS + ("voc_ap",)
LIBRARY_NAMES = [(joint_training, "anchor_targets"), (joint_training, "proposal_targets"),
                 (joint_training, "rpn_loss"), (joint_training, "fast_rcnn_loss"),
                 (model_module, "proposal_layer")]


@pytest.fixture(scope="module")
def solutions():
    """The functions of the solution notebooks 09-13: their imports cell, then their solution cells."""
    namespace = {}
    for stem in EXERCISES:
        cells = [c for c in nbformat.read(SOLUTIONS / f"{stem}.ipynb", as_version=4).cells if c.cell_type == "code"]
        exec(compile(cells[0].source, f"{stem}[imports]", "exec"), namespace)
        for cell in cells:
            if "### BEGIN SOLUTION" in cell.source:
                exec(compile(cell.source, f"{stem}[solution]", "exec"), namespace)
    return {name: namespace[name] for name in FUNCTIONS}


def tiny_config(**overrides):
    """test_train's tiny detector, with the preset's lr, 5 iterations and no jittered gt RoIs."""
    return train_tiny_config(**{"iters": 5, "lr": Config.small().lr, "roi_gt_jitter": 0, **overrides})


@pytest.fixture(scope="module")
def data():
    return shapes.make_split("train", 10, size=48)


def losses(cfg, data, **plugged):
    with capstone.students_detector(**plugged):
        return capstone.train_detector(cfg, data)[1]


def steps(functions):
    return {name: functions[name] for name in capstone.STEPS}


def assert_close(expected, got, rtol=1e-5):
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        for term in e:
            assert g[term] == pytest.approx(e[term], rel=rtol, abs=1e-7), (term, e, g)


# ------------------------------------------------------------------------- plugged in, training

def test_the_library_steps_plugged_in_are_the_library_to_the_bit(data):
    cfg = tiny_config()
    assert losses(cfg, data, **capstone.LIBRARY_STEPS) == losses(cfg, data)


def test_the_solution_functions_train_like_the_library(data, solutions):
    cfg = tiny_config()
    library = losses(cfg, data)
    assert_close(library, losses(cfg, data, **steps(solutions)))
    # every step but roi_targets computes as the library does, to the bit (roi_targets divides
    # its float32 deltas by float64 stds, the library by float32 ones)
    assert losses(cfg, data, **{**steps(solutions), "roi_targets": None}) == library


def test_with_jittered_gt_rois_the_reference_is_the_library_steps_plugged_in(data, solutions):
    """roi_gt_jitter > 0: the jittered copies join the proposals, so the draws pick other rows
    than the library's; the library's steps plugged in the same way are the reference."""
    cfg = tiny_config(roi_gt_jitter=2)
    reference = losses(cfg, data, **capstone.LIBRARY_STEPS)
    assert reference != losses(cfg, data)
    assert_close(reference, losses(cfg, data, **steps(solutions)))


@pytest.mark.parametrize("name, wrong", [
    ("label_anchors", functools.partial(ex._label_anchors_variant, best_rule=False)),
    ("sample_anchors", functools.partial(ex._sample_variant, neg_quota="all")),
    ("proposal_layer", functools.partial(ex._proposal_variant, clip=False)),
    ("roi_targets", functools.partial(ex._roi_targets_variant, add_gt=False)),
    ("rpn_loss", functools.partial(ex._rpn_loss_variant, n_reg="batch")),
    ("head_loss", functools.partial(ex._head_loss_variant, reg_norm="fg")),
])
def test_a_wrong_function_changes_the_losses(data, solutions, name, wrong):
    cfg = tiny_config()
    right = losses(cfg, data, **steps(solutions))
    got = losses(cfg, data, **{**steps(solutions), name: wrong})
    assert any(not np.isclose(g[t], r[t], rtol=1e-3) for r, g in zip(right, got) for t in r)


def test_one_function_alone_replaces_its_step_only(data, solutions):
    originals = {name: getattr(module, name) for module, name in LIBRARY_NAMES}
    with capstone.students_detector(rpn_loss=solutions["rpn_loss"]):
        changed = {name for module, name in LIBRARY_NAMES if getattr(module, name) is not originals[name]}
    assert changed == {"rpn_loss"}
    with capstone.students_detector(sample_anchors=solutions["sample_anchors"]):   # label_anchors: the library's
        changed = {name for module, name in LIBRARY_NAMES if getattr(module, name) is not originals[name]}
    assert changed == {"anchor_targets"}
    cfg = tiny_config()
    assert losses(cfg, data, sample_anchors=solutions["sample_anchors"]) == losses(cfg, data)


def test_everything_is_put_back_on_leaving_also_after_an_exception(data, solutions):
    originals = [(module, name, getattr(module, name)) for module, name in LIBRARY_NAMES]
    with capstone.students_detector(**steps(solutions)):
        assert all(getattr(module, name) is not original for module, name, original in originals)
    assert all(getattr(module, name) is original for module, name, original in originals)

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a student's bug")

    with pytest.raises(ZeroDivisionError, match="a student's bug"):
        with capstone.students_detector(**{**steps(solutions), "head_loss": broken}):
            capstone.train_detector(tiny_config(), data)
    assert all(getattr(module, name) is original for module, name, original in originals)
    with pytest.raises(KeyError):
        with capstone.students_detector(**steps(solutions)):
            raise KeyError("anything")
    assert all(getattr(module, name) is original for module, name, original in originals)


def test_inference_runs_the_students_proposal_layer_with_the_test_settings(data, solutions):
    cfg = tiny_config(iters=1)
    model, _ = capstone.train_detector(cfg, data)
    calls = []

    def recording(anchors, objectness, deltas, image_size, pre_nms_top_n=6000, post_nms_top_n=300,
                  nms_threshold=0.7, min_size=16.0):
        calls.append((pre_nms_top_n, post_nms_top_n, type(anchors)))
        return solutions["proposal_layer"](anchors, objectness, deltas, image_size, pre_nms_top_n,
                                           post_nms_top_n, nms_threshold, min_size)

    expected = model.predict([s["image"] for s in data[:3]])
    with capstone.students_detector(proposal_layer=recording):
        got = model.predict([s["image"] for s in data[:3]])
    assert calls == [(cfg.rpn_pre_nms_top_n_test, cfg.rpn_post_nms_top_n_test, np.ndarray)] * 3
    for e, g in zip(expected, got):
        for key in ("boxes", "scores", "labels"):
            np.testing.assert_allclose(g[key], e[key], rtol=1e-6, atol=1e-5)


def test_a_function_that_writes_into_its_inputs_cannot_change_the_detectors_arrays(data, solutions):
    def scribbling(anchors, gt_boxes, image_size, **options):
        answer = solutions["label_anchors"](anchors, gt_boxes, image_size, **options)
        anchors[:] = 0
        gt_boxes[:] = 0
        return answer

    cfg = tiny_config()
    assert_close(losses(cfg, data), losses(cfg, data, label_anchors=scribbling))


# ------------------------------------------------------------------------- the mAP with voc_ap

def test_students_map_is_evaluate_detections_map(solutions):
    rng = np.random.default_rng(0)
    gts, dets = [], []
    for _ in range(6):
        n = int(rng.integers(1, 4))
        xy = rng.uniform(0, 60, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 30, (n, 2))], axis=1)
        labels = rng.integers(1, 4, n)                               # class 4 has no gt at all
        gts.append({"boxes": boxes, "labels": labels, "difficult": rng.uniform(size=n) < 0.2})
        k = int(rng.integers(0, 6))
        dets.append({"boxes": np.concatenate([boxes, boxes])[:k] + rng.normal(0, 2, (min(k, 2 * n), 4)),
                     "scores": rng.uniform(size=min(k, 2 * n)), "labels": rng.integers(1, 5, min(k, 2 * n))})
    names = shapes.CLASS_NAMES
    for method in ("area", "voc07"):
        expected = evaluate_detections(dets, gts, names, method=method)["map"]
        assert capstone.students_map(solutions["voc_ap"], dets, gts, names, method=method) == pytest.approx(expected)


# ------------------------------------------------------------------------- the check

@pytest.fixture
def small_check(monkeypatch):
    """check_capstone with a smaller budget (the notebook runs it at full size)."""
    monkeypatch.setattr(capstone, "CHECK_ITERS", 3)
    monkeypatch.setattr(capstone, "ALONE_ITERS", 2)
    monkeypatch.setattr(capstone, "CHECK_TEST_IMAGES", 3)


def check(functions, hidden=False):
    return capstone.check_capstone(*[functions[name] for name in FUNCTIONS], hidden=hidden)


def test_the_check_passes_the_solutions(small_check, solutions, capsys):
    result = check(solutions)
    out = capsys.readouterr().out
    assert result.passed is True and result.n_cases == 9, out
    assert "All 9 cases passed. Well done!" in out and "FAIL" not in out
    assert check(solutions, hidden=True).passed
    assert capsys.readouterr().out.strip() == "Hidden cases of your functions in the detector: 9 of 9 passed."


def test_the_check_names_the_wrong_step(small_check, solutions, capsys):
    wrong = {**solutions, "label_anchors": functools.partial(ex._label_anchors_variant, best_rule=False)}
    result = check(wrong)
    out = capsys.readouterr().out
    assert result.n_passed == 6 and not result.passed, out
    failed = [line for line in out.splitlines() if line.startswith("  FAIL")]
    assert len(failed) == 3 and "label_anchors in the detector" in failed[0] and "all six together" in failed[1]
    assert re.search(r"iteration \d: rpn_cls expected", out)
    assert "check_label_anchors(label_anchors) in notebook 09" in out


def test_a_wrong_gradient_is_caught_though_the_losses_agree(small_check, solutions, capsys):
    wrong = {**solutions, "rpn_loss": functools.partial(ex._rpn_loss_variant, lam_on="loss")}
    assert not check(wrong)
    assert "the losses agree, but the gradient of rpn.reg.weight differs" in capsys.readouterr().out


def test_a_wrong_voc_ap_fails_a_voc_ap_case_only(small_check, solutions, capsys):
    wrong = {**solutions, "voc_ap": functools.partial(ex._voc_ap_variant, sort=False)}
    result = check(wrong)
    out = capsys.readouterr().out
    assert not result.passed and "FAIL  voc_ap: the shipped model's mAP" in out, out
    assert [line for line in out.splitlines() if line.startswith("  PASS")][:6] == \
        [f"  PASS  {name} in the detector, the other steps the library's: iterations 0-1" for name in capstone.STEPS]
    assert "PASS  all six together" in out


def test_stubs_get_nothing_and_are_named(small_check, solutions, capsys):
    def label_anchors(anchors, gt_boxes, image_size, positive_iou=0.7, negative_iou=0.3, allowed_border=0):
        raise NotImplementedError("your code here")

    result = check({**solutions, "label_anchors": label_anchors})
    out = capsys.readouterr().out
    assert not result.passed and result.n_passed == 0
    assert "not implemented yet: label_anchors(...) still raises NotImplementedError" in out


def test_a_pass_through_to_the_library_fails(small_check, solutions, capsys):
    def roi_targets(*args, **kwargs):
        return ex._library_roi_targets(*args, **kwargs)

    assert not check({**solutions, "roi_targets": roi_targets})
    assert "minifrcnn.proposal_targets.proposal_targets is not available while your function is checked" \
        in capsys.readouterr().out
