"""Make the student versions of the exercise notebooks from the solution notebooks.

    python scripts/make_student_notebooks.py            # writes notebooks/exercises/student/*.ipynb
    python scripts/make_student_notebooks.py --check    # exit 1 if the student versions are out of date

As nbgrader does, every block of a code cell between a line `### BEGIN SOLUTION` and a line
`### END SOLUTION` (markers included) is replaced by one line, indented like the BEGIN marker:

    raise NotImplementedError("your code here")

Outputs and execution counts are cleared, and only the kernelspec and the language name are kept in
the notebook's metadata, so the result depends on the solution notebooks' cells alone: running the
script twice gives byte-identical files (tests/test_exercises.py checks that the committed student
versions are in sync). Teachers edit the solution notebooks, never the student versions, then run
this script.
"""
import argparse
import copy
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "notebooks" / "exercises" / "solutions"
STUDENT = ROOT / "notebooks" / "exercises" / "student"

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = 'raise NotImplementedError("your code here")'


class MarkerError(ValueError):
    """A BEGIN / END SOLUTION marker without its partner (the message names notebook and cell)."""


def strip_solutions(source, where="cell"):
    """source with every BEGIN ... END SOLUTION block replaced by an indented NotImplementedError stub.

    Returns (new_source, number_of_blocks). Raises MarkerError for an unmatched marker.
    """
    out = []
    inside = False
    blocks = 0
    for number, line in enumerate(source.split("\n"), start=1):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise MarkerError(f"{where}, line {number}: {BEGIN} inside another solution block")
            inside = True
            blocks += 1
            indent = line[:len(line) - len(line.lstrip())]
            out.append(indent + STUB)
        elif marker == END:
            if not inside:
                raise MarkerError(f"{where}, line {number}: {END} without a {BEGIN} before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MarkerError(f"{where}: {BEGIN} without an {END} after it")
    return "\n".join(out), blocks


def make_student_notebook(solution, name="notebook"):
    """The student version of a solution notebook (a new NotebookNode; the input is unchanged)."""
    nb = copy.deepcopy(solution)
    nb.metadata = nbformat.NotebookNode({
        "kernelspec": solution.metadata.get(
            "kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"}),
        "language_info": {"name": "python"},
    })
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
    args = parser.parse_args(argv)

    paths = solution_notebooks(args.solutions)
    if not paths:
        print(f"no notebooks in {args.solutions}", file=sys.stderr)
        return 2
    stale = []
    if not args.check:
        args.out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        solution = nbformat.read(path, as_version=4)
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
