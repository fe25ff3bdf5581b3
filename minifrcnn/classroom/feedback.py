"""How a classroom check runs: its cases, the comparisons, and the feedback it prints.

A check (minifrcnn/classroom/exercises.py) builds a list of Case objects, each with the library's
answer, and hands it to run_check with a function that calls the student's code on copies of the
inputs, a comparison, and the known slips (same_as predicates with a hint each). run_check prints
PASS or FAIL for each case, and for a failing case its inputs, the difference and a hint; it
returns True when every case passes, else False, and never raises.
"""
import math
import os
import textwrap
import traceback

import numpy as np

MAX_DETAILS = 3          # failing cases shown in full; later failures get one line each


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
    """Copies of arrays (so a function that writes into its inputs cannot spoil the next case)."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (tuple, list)):
        return type(value)(copied(v) for v in value)
    return value


def _fmt(value):
    """A short readable string for a number or an array."""
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
        else:
            text = _fmt(value).replace("\n", "\n" + " " * (len(name) + 3))
            lines.append(f"{name} = {text}")
    return lines


def calling(function):
    """call(case) for run_check: the student's function on copies of the case's inputs."""
    return lambda case: function(*copied(case.args), **copied(case.kwargs))


def run_check(title, cases, call, compare, names, mistakes=(), signature=None):
    """Run every case, print PASS / FAIL lines and details, return True if all passed.

    title: what is checked, e.g. "iou(a, b)"; signature: the function named when a stub still
    raises NotImplementedError (default: title).
    call(case) -> what the student's function returned (called with copies of the inputs).
    compare(expected, got) -> None, or a list of lines describing the difference.
    mistakes: (predicate(case, got) -> bool, hint) pairs: a known slip recognised in `got`.
    """
    signature = title if signature is None else signature
    print(f"Checking {title}: {len(cases)} cases")
    passed = 0
    failed = 0
    for case in cases:
        hint = case.hint
        try:
            with np.errstate(all="ignore"):            # NaN and inf are reported below, not warned
                got = call(case)
        except NotImplementedError:
            print(f"  not implemented yet: {signature} still raises NotImplementedError.")
            print("  Replace the line `raise NotImplementedError(...)` with your code, run that cell,")
            print("  then run this check again.")
            return False
        except Exception as exc:                        # a student's bug: show it, do not crash
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            problem = [f"your function raised {type(exc).__name__}" + (f": {message}" if message else "")]
            where = _where_in_student_code(exc)
            if where:
                problem.append(where)
        else:
            problem = compare(case.expected, got)
            if problem:
                for predicate, mistake_hint in mistakes:
                    try:
                        with np.errstate(all="ignore"):
                            hit = predicate(case, got)
                    except Exception:
                        hit = False
                    if hit:
                        hint = mistake_hint
                        break
        if not problem:
            passed += 1
            print(f"  PASS  {case.name}")
            continue
        failed += 1
        print(f"  FAIL  {case.name}")
        if failed > MAX_DETAILS:
            continue
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
        return True
    print(f"{passed} of {len(cases)} cases passed. Start with the first FAIL above, fix your function,")
    print("run its cell again, then this one.")
    return False


def same_as(variant, compare, **switch):
    """A mistake predicate: got matches what `variant` (a known slip) returns on the case's inputs.

    switch: keyword arguments passed to `variant` besides the case's own, e.g. plus_one=True to
    flip one switch of an exercise's `_..._variant`.
    """
    def predicate(case, got):
        return compare(variant(*copied(case.args), **copied(case.kwargs), **switch), got) is None
    return predicate
