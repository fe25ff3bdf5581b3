"""How a classroom check runs: its cases, the comparisons, and the feedback it prints.

A check (minifrcnn/classroom/exercises.py) builds a list of Case objects, each with the library's
answer, and hands it to run_check with a function that calls the student's code on copies of the
inputs, a comparison, and the known slips (same_as predicates with a hint each). run_check prints
PASS or FAIL for each case, and for a failing case its inputs, the difference and a hint; it
returns a CheckResult, true when every case passes, else false, and never raises.

A failing case gets the hint of the known slip that best explains all the student's answers, not
just that case's (_known_slip_hint): a different bug can match a slip on one case by
coincidence (an NMS that keeps only the best box returns [0] where `>=` would); without a slip
that fits, the case's own hint is shown.
"""
import contextlib
import copy
import io
import json
import math
import os
import sys
import textwrap
import traceback

import numpy as np

from .hidden_library import LibraryHidden, library_hidden

MAX_DETAILS = 3          # failing cases shown in full; later failures get one line each


class CheckResult:
    """What a check returns: true when every case passed, false otherwise.

    It works where the bool would (`if check_iou(iou): ...`, `all(results)`, `== True`), and
    `passed` is that bool. Jupyter shows nothing for it when it ends a cell: the check has
    printed its feedback already, and a bare True or False under it would only be noise.
    """

    def __init__(self, passed, n_passed, n_cases):
        self.passed = bool(passed)         # every case passed
        self.n_passed = int(n_passed)      # how many cases passed
        self.n_cases = int(n_cases)        # how many cases the check has

    def __bool__(self):
        return self.passed

    def __eq__(self, other):
        if isinstance(other, CheckResult):
            return self.passed == other.passed
        if isinstance(other, (bool, np.bool_)):
            return self.passed == bool(other)
        return NotImplemented

    def __hash__(self):
        return hash(self.passed)

    def __repr__(self):
        return f"CheckResult(passed={self.passed}, {self.n_passed} of {self.n_cases} cases)"

    def _ipython_display_(self):
        """IPython and Jupyter call this instead of showing the repr: show nothing."""


class Case:
    """One call of the student's function: its name, its inputs, the library's answer, a hint."""

    def __init__(self, name, args, kwargs=None, expected=None, hint="", note=""):
        self.name = name
        self.args = tuple(args)            # positional arguments, in the documented order
        self.kwargs = dict(kwargs or {})   # keyword arguments, by their documented names
        self.expected = expected           # what the library returns for these inputs
        self.hint = hint                   # general hint shown when this case fails
        self.note = note                   # shown instead of big arrays, e.g. "seeded random"


def copied(value):
    """Copies of arrays (so a function that writes into its inputs cannot spoil the next case), and
    of random generators (so every call of a case draws the same numbers: the student's function,
    the library and each known slip each get a generator in the case's starting state)."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, np.random.Generator):
        return copy.deepcopy(value)
    if isinstance(value, (tuple, list)):
        return type(value)(copied(v) for v in value)
    return value


def _fmt(value):
    """A short readable string for a number or an array."""
    if isinstance(value, np.random.Generator):
        return "a seeded numpy Generator (every call of this case gets it in the same state)"
    with np.printoptions(precision=4, suppress=True, floatmode="maxprec", linewidth=88):
        if isinstance(value, np.ndarray):
            if value.size == 0:
                return f"empty array of shape {value.shape}"
            return np.array2string(value, separator=", ")
        if isinstance(value, (float, np.floating)):
            text = f"{float(value):.6g}"
            return text if any(ch in text for ch in ".ein") else text + ".0"
        return repr(value)


def _fmt_index(idx):
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def _as_float_array(got, what):
    """got as a float64 array, or (None, problem lines)."""
    if got is None:
        return None, [f"{what} is None: did you forget to `return` it?"]
    try:
        arr = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return None, [f"{what} should be an array of numbers, got a {type(got).__name__}"]
    return arr, None


def compare_array(expected, got, what="the result", rtol=1e-6, atol=1e-8):
    """None if got matches expected, else a list of lines that say how they differ."""
    arr, problem = _as_float_array(got, what)
    if problem:
        return problem
    exp = np.asarray(expected, dtype=np.float64)
    if arr.shape != exp.shape:
        return [f"{what}: expected shape {exp.shape}, got shape {arr.shape}"]
    nan = np.isnan(arr) & ~np.isnan(exp)
    if nan.any():
        idx = tuple(np.argwhere(nan)[0])
        return [f"{what} contains NaN, e.g. at index {_fmt_index(idx)} where {_fmt(exp[idx])} was expected",
                "(NaN comes from 0 / 0, inf - inf or inf * 0, or from exp() of a huge number)"]
    bad = ~np.isclose(arr, exp, rtol=rtol, atol=atol, equal_nan=True)
    if not bad.any():
        return None
    idx = tuple(np.argwhere(bad)[0])
    lines = []
    if exp.ndim <= 2 and exp.size <= 40:
        lines += [f"expected {what}:", _fmt(exp), "got:", _fmt(arr)]
    elif exp.ndim > 2 and exp[idx[:-2]].size <= 49:       # the 2-D slice that holds the first difference
        at = _fmt_index(idx[:-2])[:-1] + ", :, :]"
        lines += [f"expected {what}{at}:", _fmt(exp[idx[:-2]]), "got:", _fmt(arr[idx[:-2]])]
    where = f"at index {_fmt_index(idx)}: " if exp.ndim else ""
    lines.append(f"{int(bad.sum())} of {exp.size} values differ; the first {where}"
                 f"expected {_fmt(exp[idx])}, got {_fmt(arr[idx])}")
    return lines


def compare_scalar(expected, got, what="the loss", rtol=1e-6, atol=1e-10):
    arr, problem = _as_float_array(got, what)
    if problem:
        return problem
    if arr.size != 1:
        return [f"{what} should be one number, got an array of shape {arr.shape}"]
    value = float(arr.reshape(()))
    if math.isnan(value):
        return [f"{what} is NaN (expected {_fmt(float(expected))}): a 0 / 0, or exp() of a huge number?"]
    if not math.isclose(value, float(expected), rel_tol=rtol, abs_tol=atol):
        return [f"expected {what} {_fmt(float(expected))}, got {_fmt(value)}"]
    return None


def compare_tuple(expected, got, names, comparers):
    """For functions that return several things, e.g. (loss, dpred) or (dx, dw, db)."""
    n = len(names)
    if not isinstance(got, (tuple, list)) or len(got) != n:
        what = f"a {type(got).__name__}" if not isinstance(got, (tuple, list)) else f"{len(got)} things"
        return [f"expected {n} things, ({', '.join(names)}), got {what}",
                f"end your function with:  return {', '.join(names)}"]
    for name, cmp, e, g in zip(names, comparers, expected, got):
        problem = cmp(e, g, name)
        if problem:
            return problem
    return None


def _where_in_student_code(exc):
    """'line N of your code: <source>' for the deepest frame outside NumPy and this subpackage."""
    frames = traceback.extract_tb(exc.__traceback__)
    here = os.path.dirname(__file__)                   # this subpackage: the checks and this machinery
    numpy_dir = np.__file__.rsplit("/", 1)[0]
    mine = [f for f in frames if not f.filename.startswith(numpy_dir) and os.path.dirname(f.filename) != here]
    if not mine:
        return None
    f = mine[-1]
    code = f" `{f.line.strip()}`" if f.line else ""
    return f"in {f.name}(), line {f.lineno}:{code}"


def _describe_inputs(case, names):
    """Lines that show the case's inputs: small arrays in full, big ones by shape."""
    values = list(zip(names, case.args)) + list(case.kwargs.items())
    lines = []
    for name, value in values:
        if isinstance(value, np.ndarray) and (value.size > 24 or value.ndim > 2):
            lines.append(f"{name} = array of shape {value.shape}" + (f" ({case.note})" if case.note else ""))
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, np.ndarray) for v in value):
            if sum(v.size for v in value) > 24:     # a list of arrays, e.g. one per image: their shapes
                shapes = ", ".join(str(v.shape) for v in value)
                lines.append(f"{name} = a list of {len(value)} arrays of shapes {shapes}"
                             + (f" ({case.note})" if case.note else ""))
            else:
                text = "[" + ",\n ".join(_fmt(v).replace("\n", "\n ") for v in value) + "]"
                lines.append(f"{name} = " + text.replace("\n", "\n" + " " * (len(name) + 3)))
        else:
            text = _fmt(value).replace("\n", "\n" + " " * (len(name) + 3))
            lines.append(f"{name} = {text}")
    return lines


def calling(function, library=()):
    """call(case) for run_check: the student's function on copies of the case's inputs.

    library: the library functions the check compares with; while the student's function runs
    they are out of its reach (hidden_library.library_hidden), so a pass-through fails.
    """
    def call(case):
        with library_hidden(function, library) as student_function:
            return student_function(*copied(case.args), **copied(case.kwargs))
    return call


def _call_capturing_prints(call, case):
    """Run call(case) and keep what it prints: (kind, value, printed).

    kind "returned" (value: what the function returned), "raised" (value: the exception) or
    "not implemented". run_check shows `printed` just before the case's PASS / FAIL line, where
    a student's debugging prints would have appeared had the case run there. A KeyboardInterrupt
    (or another BaseException) shows what was printed, then goes on up.
    """
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), np.errstate(all="ignore"):   # NaN and inf: reported, not warned
            got = call(case)
    except NotImplementedError:
        return "not implemented", None, printed.getvalue()
    except Exception as exc:                            # a student's bug: show it, do not crash
        return "raised", exc, printed.getvalue()
    except BaseException:
        sys.stdout.write(printed.getvalue())
        raise
    return "returned", got, printed.getvalue()


def _is_slip(predicate, case, answer):
    """True if the slip's predicate recognises `answer` to `case` (False if it raises)."""
    try:
        with np.errstate(all="ignore"):
            return bool(predicate(case, answer))
    except Exception:
        return False


def _known_slip_hint(mistakes, cases, answers, index):
    """The hint of the known slip that best explains the student's answers, or None.

    answers[j]: what the student's function returned for cases[j], or None where it raised.
    The candidates are the slips that recognise the answer to cases[index]; the one that
    recognises the answers to the most cases wins (the first in `mistakes` on a tie). A bug that
    matches a slip on one case by coincidence rarely matches it on the others, while a real slip
    shows wherever it changes the answer.
    """
    best_hint, best_count = None, 0
    for predicate, hint in mistakes:
        if not _is_slip(predicate, cases[index], answers[index]):
            continue
        count = sum(_is_slip(predicate, case, got) for case, got in zip(cases, answers) if got is not None)
        if count > best_count:
            best_hint, best_count = hint, count
    return best_hint


def run_check(title, cases, call, compare, names, mistakes=(), signature=None, hidden=False):
    """Run every case, print PASS / FAIL lines and details, return a CheckResult (true if all passed).

    hidden=True (the grader's hidden cases): the same run, but only one line is printed, how many
    cases passed; the cases' inputs and the feedback stay out of the notebook.
    Every check also appends its result to the grader's log when there is one (report_to_grader).

    title: what is checked, e.g. "iou(a, b)"; signature: the function named when a stub still
    raises NotImplementedError (default: title).
    call(case) -> what the student's function returned (called with copies of the inputs).
    compare(expected, got) -> None, or a list of lines describing the difference.
    mistakes: (predicate(case, got) -> bool, hint) pairs: a known slip recognised in `got`; the
    one that best explains the answers to all the cases replaces a failing case's hint
    (_known_slip_hint), so every case runs before the first line of feedback is printed.
    """
    if not hidden:
        result, first_failure = _run_and_print(title, cases, call, compare, names, mistakes, signature)
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            result, first_failure = _run_and_print(title, cases, call, compare, names, mistakes, signature)
        print(f"Hidden cases of {title}: {result.n_passed} of {result.n_cases} passed.")
    report_to_grader(title + (", hidden cases" if hidden else ""), result, first_failure)
    return result


def report_to_grader(title, result, first_failure):
    """Append {"title", "passed", "total", "first_failure"} as one JSON line to the file named by
    $MINIFRCNN_GRADE_LOG, if set: how `python -m minifrcnn grade` (grading.py) learns the result
    of every check a graded cell ran. Without the variable (a student's own run): nothing."""
    path = os.environ.get("MINIFRCNN_GRADE_LOG")
    if not path:
        return
    record = {"title": title, "passed": result.n_passed, "total": result.n_cases,
              "first_failure": first_failure}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _run_and_print(title, cases, call, compare, names, mistakes, signature):
    """run_check's work: (CheckResult, one line on the first failing case or "")."""
    signature = title if signature is None else signature
    print(f"Checking {title}: {len(cases)} cases")
    outcomes = []
    for case in cases:
        outcomes.append(_call_capturing_prints(call, case))
        if outcomes[-1][0] == "not implemented":
            break
    problems, answers = [], []
    for case, (kind, value, _) in zip(cases, outcomes):
        problem = None                                  # "not implemented": reported below
        if kind == "returned":
            problem = compare(case.expected, value)
        elif kind == "raised":
            message = str(value).strip().splitlines()[0] if str(value).strip() else ""
            problem = [f"your function raised {type(value).__name__}" + (f": {message}" if message else "")]
            where = _where_in_student_code(value)
            if where:
                problem.append(where)
        problems.append(problem)
        answers.append(value if kind == "returned" else None)
    passed = 0
    failed = 0
    for index, (case, (kind, _, printed), problem) in enumerate(zip(cases, outcomes, problems)):
        sys.stdout.write(printed)
        if kind == "not implemented":
            print(f"  not implemented yet: {signature} still raises NotImplementedError.")
            print("  Replace the line `raise NotImplementedError(...)` with your code, run that cell,")
            print("  then run this check again.")
            return CheckResult(False, passed, len(cases)), f"not implemented: {signature} raises NotImplementedError"
        if not problem:
            passed += 1
            print(f"  PASS  {case.name}")
            continue
        failed += 1
        if failed == 1:
            first_failure = f"{case.name}: {problem[0]}"
        print(f"  FAIL  {case.name}")
        if failed > MAX_DETAILS:
            continue
        hint = case.hint
        if kind == "returned":
            hint = _known_slip_hint(mistakes, cases, answers, index) or hint
        elif isinstance(outcomes[index][1], LibraryHidden):
            hint = ("Write the computation yourself, with NumPy: the library's function is the "
                    "answer yours is compared with.")
        indent = " " * 8
        for i, line in enumerate(_describe_inputs(case, names)):
            label = "inputs: " if i == 0 else " " * 8
            print(indent + label + line.replace("\n", "\n" + indent + " " * 8))
        for line in problem:
            print(indent + line.replace("\n", "\n" + indent))
        if hint:
            print(textwrap.fill("Hint: " + hint, width=100, initial_indent=indent,
                                subsequent_indent=indent + "      "))
    if failed == 0:
        print("Both cases passed. Well done!" if len(cases) == 2 else f"All {len(cases)} cases passed. Well done!")
        return CheckResult(True, passed, len(cases)), ""
    print(f"{passed} of {len(cases)} cases passed. Start with the first FAIL above, fix your function,")
    print("run its cell again, then this one.")
    return CheckResult(False, passed, len(cases)), first_failure


def same_as(variant, compare, **switch):
    """A mistake predicate: got matches what `variant` (a known slip) returns on the case's inputs.

    switch: keyword arguments passed to `variant` besides the case's own, e.g. plus_one=True to
    flip one switch of an exercise's `_..._variant`.
    """
    def predicate(case, got):
        return compare(variant(*copied(case.args), **copied(case.kwargs), **switch), got) is None
    return predicate
