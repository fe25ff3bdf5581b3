"""Grading exercise notebooks: `python -m minifrcnn grade PATH... --csv OUT`.

The exercise notebooks carry nbgrader's cell metadata (schema 3), so they also work in nbgrader;
this module is a small grader of our own for a class without an nbgrader installation.

    cell metadata "nbgrader"                       what it means here
    {"solution": true,  "grade_id": "iou", ...}    the student writes this cell (### BEGIN/END
                                                   SOLUTION in the teacher's copy)
    {"grade": true, "points": 3, "locked": true,   a graded cell: it calls a check, e.g.
     "grade_id": "check_iou", ...}                 check_iou(iou); worth `points`
    {"locked": true, "grade_id": ...}              read-only text or code

How a submission is graded (the steps nbgrader's autograde takes, too):
1. Every locked cell of the submission gets back the source of the teacher's copy (the
   solution notebook of the same file name): an edited check cannot pass, and the teacher's
   graded cells hold hidden tests (### BEGIN/END HIDDEN TESTS, stripped from the student
   version) that the student never saw. A graded cell missing from the submission scores 0.
2. The notebook runs top to bottom in a fresh kernel, in its own folder; a cell that raises
   does not stop the run (later exercises still count), a cell that runs longer than `timeout`
   seconds stops it (the exercises after it score 0).
3. While it runs, every check appends one JSON line to the file named by the environment
   variable MINIFRCNN_GRADE_LOG (feedback.run_check): cases passed, cases run, the first
   failure. A graded cell scores

       points = max_points * (cases passed) / (cases run)      over all checks the cell ran,

   rounded to 2 decimals, and 0 if it ran no check (the reason names the error it raised).

Rows (one per notebook and graded cell): notebook, exercise (the grade_id), points,
max_points, reason (empty when every point was earned).
"""
import csv
import json
import os
import tempfile
from pathlib import Path

import nbformat

GRADE_LOG = "MINIFRCNN_GRADE_LOG"        # the environment variable the checks append to
COLUMNS = ("notebook", "exercise", "points", "max_points", "reason")
DEFAULT_TIMEOUT = 120                    # seconds a cell may run before the run is stopped


class GradingError(ValueError):
    """A submission or source that cannot be graded (the message names the file)."""


def nbgrader_meta(cell):
    """The cell's nbgrader metadata (a dict, empty when the cell has none)."""
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def graded_cells(nb):
    """[(grade_id, points)] of the notebook's graded cells, in order."""
    return [(m["grade_id"], float(m.get("points", 0))) for m in map(nbgrader_meta, nb.cells)
            if m.get("grade")]


def read_notebook(path):
    """nbformat.read, with a GradingError naming the file instead of a traceback."""
    try:
        return nbformat.read(str(path), as_version=4)
    except (OSError, ValueError, KeyError, TypeError) as exc:   # unreadable, not JSON, not a notebook
        raise GradingError(f"{path}: not a readable notebook ({type(exc).__name__}: {exc})") from None


def restore_locked_cells(submission, source):
    """A copy of `submission` in which every locked cell has the source's text again.

    Cells are matched by grade_id. Returns (notebook, missing): missing lists the grade_ids of
    the source's graded cells that the submission no longer has (they score 0).
    """
    locked = {m["grade_id"]: cell for cell in source.cells
              if (m := nbgrader_meta(cell)).get("locked") and "grade_id" in m}
    nb = nbformat.from_dict(json.loads(json.dumps(submission)))      # a deep copy
    seen = set()
    for cell in nb.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id in locked:
            cell.source = locked[grade_id].source
            cell.metadata["nbgrader"] = dict(nbgrader_meta(locked[grade_id]))
            seen.add(grade_id)
    missing = [grade_id for grade_id, _ in graded_cells(source) if grade_id not in seen]
    return nb, missing


def _error_of(cell):
    """'NameError: name 'iou' is not defined' for a cell whose outputs hold an error, else ''."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out.get('ename', 'Error')}: {out.get('evalue', '')}".strip()
    return ""


def _read_records(log_path, start):
    """The JSON lines the checks appended to the log after byte `start`; and the new end."""
    with open(log_path, encoding="utf-8") as f:
        f.seek(start)
        text = f.read()
        end = f.tell()
    return [json.loads(line) for line in text.splitlines() if line.strip()], end


def _score(records, max_points, error):
    """(points, reason) of one graded cell from the check records it produced."""
    total = sum(r["total"] for r in records)
    if not records or total == 0:
        return 0.0, ("the check did not run: " + error) if error else "the check did not run"
    passed = sum(r["passed"] for r in records)
    points = round(max_points * passed / total, 2)
    if passed == total:
        return points, ""
    first = next(r for r in records if r["passed"] < r["total"])
    reason = f"{total - passed} of {total} cases failed"
    if first.get("first_failure"):
        reason += f"; first: {first['first_failure']}"
    return points, reason


def execute_and_score(nb, folder, timeout=DEFAULT_TIMEOUT):
    """Run nb (locked cells already restored) in a fresh kernel; {grade_id: (points, reason)}."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    fd, log_path = tempfile.mkstemp(prefix="minifrcnn-grade-", suffix=".jsonl")
    os.close(fd)
    env = dict(os.environ, **{GRADE_LOG: log_path})
    client = NotebookClient(nb, timeout=timeout, allow_errors=True, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}})
    scores = {}
    stopped = ""                                   # why the run stopped early, if it did
    position = 0
    try:
        with client.setup_kernel(env=env):
            for index, cell in enumerate(nb.cells):
                meta = nbgrader_meta(cell)
                if stopped:
                    if meta.get("grade"):
                        scores[meta["grade_id"]] = (0.0, f"not run: {stopped}")
                    continue
                if cell.cell_type != "code":
                    continue
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError:
                    stopped = f"cell {index + 1} ran longer than {timeout} s"
                except DeadKernelError:
                    stopped = f"the kernel died in cell {index + 1}"
                records, position = _read_records(log_path, position)
                if meta.get("grade"):
                    error = stopped or _error_of(cell)
                    scores[meta["grade_id"]] = _score(records, float(meta.get("points", 0)), error)
    finally:
        os.remove(log_path)
    return scores


def grade_notebook(path, source, timeout=DEFAULT_TIMEOUT):
    """The rows (dicts with COLUMNS) for one submitted notebook against its teacher's copy."""
    submission = read_notebook(path)
    nb, missing = restore_locked_cells(submission, source)
    scores = execute_and_score(nb, Path(path).resolve().parent, timeout)
    rows = []
    for grade_id, max_points in graded_cells(source):
        if grade_id in missing:
            points, reason = 0.0, "the graded cell was deleted from the notebook"
        else:
            points, reason = scores.get(grade_id, (0.0, "the graded cell did not run"))
        rows.append({"notebook": Path(path).name, "exercise": grade_id, "points": points,
                     "max_points": max_points, "reason": reason})
    return rows


def default_source_dir():
    """notebooks/exercises/solutions of the repository the package was installed from."""
    return Path(__file__).resolve().parents[2] / "notebooks" / "exercises" / "solutions"


def submissions(paths):
    """The .ipynb files named by paths (files, or folders searched one level deep), sorted."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.glob("*.ipynb") if not q.name.startswith("."))
        elif p.is_file():
            found.append(p)
        else:
            raise GradingError(f"{p}: no such file or folder")
    if not found:
        raise GradingError(f"no .ipynb notebooks in {', '.join(map(str, paths))}")
    return found


def grade(paths, csv_path, source_dir=None, timeout=DEFAULT_TIMEOUT, log=print):
    """Grade every notebook in paths against the teacher's copies in source_dir; write csv_path.

    Returns the rows. A submission whose file name has no teacher's copy is a GradingError
    (nothing to grade it against); so is an unreadable notebook.
    """
    source_dir = Path(source_dir) if source_dir else default_source_dir()
    files = submissions(paths)
    rows = []
    for path in files:
        source_path = source_dir / path.name
        if not source_path.is_file():
            raise GradingError(f"{path}: no teacher's copy {source_path} to grade it against "
                               f"(the file name must be the exercise's, e.g. 01_iou.ipynb)")
        new = grade_notebook(path, read_notebook(source_path), timeout)
        got = sum(r["points"] for r in new)
        out_of = sum(r["max_points"] for r in new)
        log(f"{path}: {got:g} / {out_of:g} points")
        rows += new
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "points": f"{row['points']:g}", "max_points": f"{row['max_points']:g}"})
    log(f"wrote {csv_path}: {len(rows)} rows, {len(files)} notebooks")
    return rows
