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

from minifrcnn import anchors, boxes, classroom, ops
from minifrcnn.classroom import exercises
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
        assert name in exercises.__doc__, f"{name} is missing from the module docstring's table"


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
    ("check_iou", iou_without_clamp, "np.maximum(..., 0)"),
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
    ("check_iou", iou_transposed, "transpose", "divide by 1 instead"),
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
}


def code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_there_are_eight_exercises_with_solutions_and_student_versions():
    names = sorted(p.stem for p in SOLUTIONS.glob("*.ipynb"))
    assert names == sorted(NOTEBOOK_CHECKS)
    assert sorted(p.stem for p in STUDENT.glob("*.ipynb")) == names


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
