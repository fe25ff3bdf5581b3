"""python -m minifrcnn grade: the solutions get every point, the untouched student versions none,
and a wrong, a pass-through, an edited or a gutted submission loses points with a reason."""
import csv
from pathlib import Path

import nbformat
import pytest
from minifrcnn.__main__ import main
from minifrcnn.classroom import grading

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "notebooks" / "exercises" / "solutions"
STUDENT = ROOT / "notebooks" / "exercises" / "student"


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def submit(tmp_path, name, edit):
    """A copy of the solution notebook `name` with edit(cells) applied: a student's submission."""
    nb = nbformat.read(SOLUTIONS / name, as_version=4)
    edit(nb.cells)
    folder = tmp_path / "submissions"
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / name)
    return folder / name


def cell_with(cells, text):
    (cell,) = [c for c in cells if text in c.source]
    return cell


# ------------------------------------------------------------------------- scoring, no kernel

def test_a_graded_cell_scores_its_share_of_passed_cases():
    records = [{"title": "iou(a, b)", "passed": 7, "total": 9, "first_failure": "disjoint boxes: expected 0"},
               {"title": "iou(a, b), hidden cases", "passed": 9, "total": 11, "first_failure": ""}]
    points, reason = grading._score(records, 10.0, "")
    assert points == round(10 * 16 / 20, 2)
    assert reason == "4 of 20 cases failed; first: disjoint boxes: expected 0"
    assert grading._score(records[:1] * 0, 10.0, "NameError: name 'iou' is not defined") == \
        (0.0, "the check did not run: NameError: name 'iou' is not defined")
    assert grading._score([{"passed": 3, "total": 3}], 5.0, "") == (5.0, "")


def test_locked_cells_get_the_teachers_text_back_and_missing_graded_cells_are_named():
    source = nbformat.read(SOLUTIONS / "01_iou.ipynb", as_version=4)
    submission = nbformat.read(STUDENT / "01_iou.ipynb", as_version=4)
    check = cell_with(submission.cells, "check_iou(")
    check.source = 'print("All 9 cases passed. Well done!")'           # an edited check cell
    restored, missing = grading.restore_locked_cells(submission, source)
    assert cell_with(restored.cells, "check_iou(").source == cell_with(source.cells, "check_iou(").source
    assert missing == []
    submission.cells.remove(check)
    _, missing = grading.restore_locked_cells(submission, source)
    assert missing == ["check_iou"]


# ------------------------------------------------------------------------- the command, with kernels

def test_the_solutions_get_every_point(tmp_path):
    out = tmp_path / "solutions.csv"
    assert main(["grade", str(SOLUTIONS), "--csv", str(out)]) == 0
    rows = read_rows(out)
    assert {r["notebook"] for r in rows} == {p.name for p in SOLUTIONS.glob("*.ipynb")}
    for r in rows:
        assert float(r["points"]) == float(r["max_points"]) > 0, r
        assert r["reason"] == ""


def test_the_untouched_student_versions_get_nothing(tmp_path):
    out = tmp_path / "students.csv"
    assert main(["grade", str(STUDENT), "--csv", str(out)]) == 0
    rows = read_rows(out)
    assert len(rows) == len(read_rows_of_solutions())
    for r in rows:
        assert float(r["points"]) == 0 and float(r["max_points"]) > 0, r
        assert "NotImplementedError" in r["reason"] or "not implemented" in r["reason"], r


def read_rows_of_solutions():
    return [c for p in sorted(SOLUTIONS.glob("*.ipynb"))
            for c in nbformat.read(p, as_version=4).cells if c.metadata.get("nbgrader", {}).get("grade")]


def test_a_pass_through_an_edited_check_and_a_deleted_check_lose_their_points(tmp_path):
    def pass_through(cells):
        cell_with(cells, "def iou(").source = "def iou(a, b):\n    return box_iou(a, b)\n"

    def edited_check(cells):
        cell_with(cells, "def iou(").source = "def iou(a, b):\n    return a[:, None, 0] * 0\n"
        cell_with(cells, "check_iou(").source = 'print("All 9 cases passed. Well done!")'

    def deleted_check(cells):
        cells.remove(cell_with(cells, "check_iou("))

    rows = {}
    for label, edit in [("pass", pass_through), ("edit", edited_check), ("delete", deleted_check)]:
        path = submit(tmp_path / label, "01_iou.ipynb", edit)
        out = tmp_path / f"{label}.csv"
        assert main(["grade", str(path), "--csv", str(out)]) == 0
        (rows[label],) = read_rows(out)
    assert float(rows["pass"]["points"]) == 0 and "box_iou is not available" in rows["pass"]["reason"]
    # the zeros are right where the IoU is 0 (4 of the 18 shown and hidden cases): partial points
    assert 0 < float(rows["edit"]["points"]) < 10 and "cases failed; first: overlapping boxes" in rows["edit"]["reason"]
    assert float(rows["delete"]["points"]) == 0 and "deleted" in rows["delete"]["reason"]


# One wrong submission per exercise of 09-14: (the solution cell's grade_id, (the start of a line of
# the solution, the line that replaces it: a known slip), the graded cell that loses points, the
# failing case its reason names)
WRONG_SUBMISSIONS = {
    "09_anchor_targets.ipynb": ("label_anchors", ("    lab[is_best] = 1", "    pass"),
                                "check_label_anchors", "the best anchor of a gt is positive"),
    "10_proposal_layer.ipynb": ("proposal_layer", ("        order = order[:pre_nms_top_n]", "        pass"),
                                "check_proposal_layer", "the pre-NMS top-N comes before NMS"),
    "11_roi_sampling.ipynb": ("roi_targets", ("    rois_all = np.concatenate([proposals, gt_boxes])",
                                              "    rois_all = proposals"),
                              "check_roi_targets", "IoU >= 0.5: foreground with its gt's class"),
    "12_multitask_loss.ipynb": ("rpn_loss", ("    n_reg = N * H * W", "    n_reg = n_cls"),
                                "check_rpn_loss", "one image, 3 x 4 locations"),
    "13_voc_ap.ipynb": ("voc_ap", ("    n_gt = sum(", "    n_gt = sum(len(d) for d in gt_difficult)"),
                        "check_voc_ap", "detecting a difficult gt is neither TP nor FP"),
    "14_capstone.ipynb": ("label_anchors", ("    lab[is_best] = 1", "    pass"),
                          "check_capstone", "label_anchors in the detector"),
}


@pytest.fixture(scope="module")
def wrong_submissions_graded(tmp_path_factory):
    """Every wrong submission, graded in one call of the command: {notebook: {exercise: row}}."""
    folder = tmp_path_factory.mktemp("wrong")
    for name, (solution_id, (line, slip), _, _) in WRONG_SUBMISSIONS.items():
        nb = nbformat.read(SOLUTIONS / name, as_version=4)
        (cell,) = [c for c in nb.cells if c.metadata["nbgrader"]["grade_id"] == solution_id]
        lines = cell.source.split("\n")
        (at,) = [i for i, text in enumerate(lines) if text.startswith(line)]   # the line, comment and all
        lines[at] = slip
        cell.source = "\n".join(lines)
        nbformat.write(nb, folder / name)
    out = folder / "grades.csv"
    assert main(["grade", str(folder), "--csv", str(out)]) == 0
    rows = {}
    for r in read_rows(out):
        rows.setdefault(r["notebook"], {})[r["exercise"]] = r
    return rows


@pytest.mark.parametrize("name", sorted(WRONG_SUBMISSIONS))
def test_a_wrong_detector_step_loses_points_with_a_reason(name, wrong_submissions_graded):
    _, _, check, case = WRONG_SUBMISSIONS[name]
    rows = wrong_submissions_graded[name]
    assert float(rows[check]["points"]) < float(rows[check]["max_points"]), rows[check]
    assert "cases failed; first: " + case in rows[check]["reason"], rows[check]
    for exercise, r in rows.items():             # the notebook's other checks keep their points
        if exercise != check:
            assert float(r["points"]) == float(r["max_points"]) and r["reason"] == "", r


def test_bad_paths_are_one_line_errors(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "nothing"), "--csv", str(tmp_path / "g.csv")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    stray = tmp_path / "99_mine.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), stray)
    assert main(["grade", str(stray), "--csv", str(tmp_path / "g.csv")]) == 2
    assert "no teacher's copy" in capsys.readouterr().err
    broken = tmp_path / "01_iou.ipynb"
    broken.write_text("{not json", encoding="utf-8")
    assert main(["grade", str(broken), "--csv", str(tmp_path / "g.csv")]) == 2
    err = capsys.readouterr().err
    assert "01_iou.ipynb: not a readable notebook" in err and "Traceback" not in err
