"""Make the student versions of the exercise notebooks from the solution notebooks.

    python scripts/make_student_notebooks.py            # writes notebooks/exercises/student/*.ipynb
    python scripts/make_student_notebooks.py --check    # exit 1 if the student versions are out of date

As nbgrader does, every block of a code cell between a line `### BEGIN SOLUTION` and a line
`### END SOLUTION` (markers included) is replaced by one line, indented like the BEGIN marker:

    raise NotImplementedError("your code here")

and every block between `### BEGIN HIDDEN TESTS` and `### END HIDDEN TESTS` (in a graded cell:
the checks the grader runs that the student never sees) is removed.

A cell whose metadata has `"minifrcnn": {"answer": true}` is an answer to a question asked in
the notebook (a markdown cell, in the solution notebook only): it is left out of the student
version altogether.

The cells carry nbgrader's metadata (schema 3), in the solution notebooks and copied unchanged
into the student versions: a cell with a solution block is {"solution": true, "grade": false,
"locked": false}, a cell that calls a check is graded ({"grade": true, "points": POINTS,
"locked": true}), every other cell is locked; each has a unique grade_id. `--add-metadata`
writes what is missing into the solution notebooks (a new exercise); the other modes refuse a
solution notebook whose metadata does not match its cells (minifrcnn/classroom/grading.py and
nbgrader both rely on it).

Outputs and execution counts are cleared, and only the kernelspec and the language name are kept in
the notebook's metadata, so the result depends on the solution notebooks' cells alone: running the
script twice gives byte-identical files (tests/test_exercises.py checks that the committed student
versions are in sync). Teachers edit the solution notebooks, never the student versions, then run
this script.
"""
import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "notebooks" / "exercises" / "solutions"
STUDENT = ROOT / "notebooks" / "exercises" / "student"

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = 'raise NotImplementedError("your code here")'
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
POINTS = 10                      # points of a graded cell that --add-metadata marks


class MarkerError(ValueError):
    """A BEGIN / END SOLUTION marker without its partner (the message names notebook and cell)."""


def strip_solutions(source, where="cell"):
    """source with every BEGIN ... END SOLUTION block replaced by an indented NotImplementedError
    stub, and every BEGIN ... END HIDDEN TESTS block removed.

    Returns (new_source, number_of_solution_blocks). Raises MarkerError for an unmatched marker.
    """
    out = []
    inside = None                                     # None, or the END marker awaited
    blocks = 0
    for number, line in enumerate(source.split("\n"), start=1):
        marker = line.strip()
        if marker in (BEGIN, BEGIN_HIDDEN):
            if inside:
                raise MarkerError(f"{where}, line {number}: {marker} inside another marked block")
            inside = END if marker == BEGIN else END_HIDDEN
            if marker == BEGIN:
                blocks += 1
                indent = line[:len(line) - len(line.lstrip())]
                out.append(indent + STUB)
        elif marker in (END, END_HIDDEN):
            if inside != marker:
                begin = BEGIN if marker == END else BEGIN_HIDDEN
                raise MarkerError(f"{where}, line {number}: {marker} without a {begin} before it")
            inside = None
        elif not inside:
            out.append(line)
    if inside:
        begin = BEGIN if inside == END else BEGIN_HIDDEN
        raise MarkerError(f"{where}: {begin} without an {inside} after it")
    return "\n".join(out), blocks


# --------------------------------------------------------------------------- nbgrader metadata

def is_answer(cell):
    """True for an answer cell: metadata {"minifrcnn": {"answer": true}}, left out of the student version."""
    return bool((cell.get("metadata", {}).get("minifrcnn") or {}).get("answer"))


def cell_role(cell):
    """"solution" (has a BEGIN SOLUTION block), "graded" (a code cell calling a check_ function:
    `check_iou(iou)`) or "locked" (anything else)."""
    if cell.cell_type == "code" and BEGIN in cell.source:
        return "solution"
    if cell.cell_type == "code" and re.search(r"^check_\w+\(", cell.source, re.MULTILINE):
        return "graded"
    return "locked"


def expected_metadata(cell, grade_id, points=POINTS):
    """The nbgrader metadata (schema 3) a cell of this role has."""
    role = cell_role(cell)
    meta = {"grade": role == "graded", "grade_id": grade_id, "locked": role != "solution",
            "schema_version": 3, "solution": role == "solution"}
    if role == "graded":
        meta["points"] = points
    return meta


def _new_grade_id(cell, index, taken):
    """A readable unique id: the function a solution cell defines, the check a graded cell
    calls, else cell-NN."""
    role = cell_role(cell)
    found = re.search(r"^def (\w+)\(" if role == "solution" else r"^(check_\w+)\(", cell.source,
                      re.MULTILINE) if role != "locked" else None
    base = found.group(1) if found else f"answer-{index:02d}" if is_answer(cell) else f"cell-{index:02d}"
    grade_id, n = base, 2
    while grade_id in taken:
        grade_id, n = f"{base}-{n}", n + 1
    return grade_id


def metadata_problems(nb, name="notebook"):
    """Lines naming every cell whose nbgrader metadata does not match its role (empty: all good)."""
    problems, seen = [], set()
    for index, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader")
        if not meta or "grade_id" not in meta:
            problems.append(f"{name}, cell {index}: no nbgrader metadata")
            continue
        if meta["grade_id"] in seen:
            problems.append(f"{name}, cell {index}: grade_id {meta['grade_id']!r} used twice")
        seen.add(meta["grade_id"])
        want = expected_metadata(cell, meta["grade_id"], meta.get("points", POINTS))
        if dict(meta) != want:
            problems.append(f"{name}, cell {index} ({cell_role(cell)}): nbgrader metadata {dict(meta)} "
                            f"should be {want}")
        if want["grade"] and not (isinstance(meta.get("points"), (int, float)) and meta["points"] > 0):
            problems.append(f"{name}, cell {index}: a graded cell needs points > 0")
        if is_answer(cell) and cell.cell_type != "markdown":
            problems.append(f"{name}, cell {index}: an answer cell (minifrcnn.answer) must be a markdown cell")
    return problems


def add_metadata(nb):
    """Give every cell without nbgrader metadata the metadata of its role (in place); returns how
    many cells got some. Cells that have it keep theirs (a teacher's points stay)."""
    taken = {c.metadata["nbgrader"]["grade_id"] for c in nb.cells
             if "grade_id" in c.metadata.get("nbgrader", {})}
    added = 0
    for index, cell in enumerate(nb.cells):
        if "grade_id" in cell.metadata.get("nbgrader", {}):
            continue
        grade_id = _new_grade_id(cell, index, taken)
        taken.add(grade_id)
        cell.metadata["nbgrader"] = expected_metadata(cell, grade_id)
        added += 1
    return added


def make_student_notebook(solution, name="notebook"):
    """The student version of a solution notebook (a new NotebookNode; the input is unchanged)."""
    nb = copy.deepcopy(solution)
    nb.metadata = nbformat.NotebookNode({
        "kernelspec": solution.metadata.get(
            "kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"}),
        "language_info": {"name": "python"},
    })
    nb.cells = [cell for cell in nb.cells if not is_answer(cell)]       # the answers stay with the teacher
    for index, cell in enumerate(nb.cells):
        cell.metadata = nbformat.NotebookNode(
            {k: v for k, v in cell.metadata.items() if k not in ("execution", "collapsed", "scrolled")})
        if cell.cell_type != "code":
            if BEGIN in cell.source or END in cell.source:
                raise MarkerError(f"{name}, cell {index}: solution markers belong in code cells")
            continue
        cell.source, _ = strip_solutions(cell.source, where=f"{name}, cell {index}")
        cell.outputs = []
        cell.execution_count = None
    return nb


def solution_notebooks(solutions_dir=SOLUTIONS):
    """The solution notebooks, sorted by name."""
    return sorted(Path(solutions_dir).glob("*.ipynb"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--solutions", type=Path, default=SOLUTIONS, help="folder of solution notebooks")
    parser.add_argument("--out", type=Path, default=STUDENT, help="folder for the student notebooks")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a student notebook is missing or differs")
    parser.add_argument("--add-metadata", action="store_true",
                        help="first give the solution notebooks' cells the nbgrader metadata they lack")
    args = parser.parse_args(argv)

    paths = solution_notebooks(args.solutions)
    if not paths:
        print(f"no notebooks in {args.solutions}", file=sys.stderr)
        return 2
    if args.add_metadata and not args.check:
        for path in paths:
            solution = nbformat.read(path, as_version=4)
            if add_metadata(solution):
                nbformat.write(solution, path)
                print(f"added nbgrader metadata to {path}")
    stale = []
    if not args.check:
        args.out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        solution = nbformat.read(path, as_version=4)
        problems = metadata_problems(solution, name=path.name)
        if problems:
            print("error: " + "\n       ".join(problems), file=sys.stderr)
            print("run: python scripts/make_student_notebooks.py --add-metadata (cells without any), "
                  "or fix the cells named", file=sys.stderr)
            return 2
        try:
            student = make_student_notebook(solution, name=path.name)
        except MarkerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        text = nbformat.writes(student) + "\n"
        target = args.out / path.name
        if args.check:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                stale.append(target)
            continue
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}")
    if args.check:
        expected = {p.name for p in paths}
        extra = sorted(p for p in args.out.glob("*.ipynb") if p.name not in expected)
        for p in stale:
            print(f"out of date: {p}", file=sys.stderr)
        for p in extra:
            print(f"no solution notebook for: {p}", file=sys.stderr)
        if stale or extra:
            print("run: python scripts/make_student_notebooks.py", file=sys.stderr)
            return 1
        print(f"{len(paths)} student notebooks are in sync with the solutions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
