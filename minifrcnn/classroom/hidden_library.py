"""While a check runs the student's function, the library's own answer is out of reach.

check_iou compares the student's `iou` with minifrcnn.boxes.box_iou. If `iou` could call
box_iou, `def iou(a, b): return box_iou(a, b)` would pass every case. So while the student's
function runs, every name bound to one of the hidden library functions calls a stand-in that
raises LibraryHidden instead:

    - attributes of every loaded minifrcnn module   (boxes.box_iou, minifrcnn.ops.roi_pool_forward)
    - global names of the student's function        (the notebook's `from minifrcnn.boxes import box_iou`)
    - the student's function's default arguments    (def iou(a, b, f=box_iou))
    - the variables it closes over                  (f = box_iou; iou = lambda a, b: f(a, b), in a function)

and a student's function that *is* a hidden library function (iou = box_iou) raises at once.
Everything is put back when the call returns. The checks compute their expected answers before
(Case.expected), so they never need the hidden functions meanwhile.

`python -m minifrcnn.classroom` checks the library with its own functions: it runs inside
library_allowed(), where nothing is hidden.
"""
import sys
from contextlib import contextmanager

_allowed = [False]            # True inside library_allowed(): nothing is hidden


class LibraryHidden(RuntimeError):
    """Raised by a hidden library function called while a check runs the student's code."""


def _stand_in(name):
    def hidden(*args, **kwargs):
        raise LibraryHidden(f"{name} is not available while your function is checked: "
                            f"the exercise is to write it yourself")
    return hidden


@contextmanager
def library_allowed():
    """Inside: checks call library functions freely (the library's self-check)."""
    _allowed[0] = True
    try:
        yield
    finally:
        _allowed[0] = False


@contextmanager
def library_hidden(function, hidden):
    """Inside: `function` (the student's) cannot reach any of `hidden` (library functions).

    function: what the check will call. hidden: the library functions its answer comes from.
    Yields the function to call (a stand-in that raises when function is itself hidden).
    """
    if _allowed[0] or not hidden:
        yield function
        return
    names = {id(f): f"{f.__module__}.{f.__qualname__}" for f in hidden}
    if id(function) in names:
        yield _stand_in(names[id(function)])
        return
    undo = []                                      # (namespace dict, key, original value)
    namespaces = [vars(m) for name, m in list(sys.modules.items())
                  if m is not None and (name == "minifrcnn" or name.startswith("minifrcnn."))]
    namespaces.append(getattr(function, "__globals__", {}))
    for space in namespaces:
        for key, value in list(space.items()):
            if id(value) in names:
                undo.append((space, key, value))
                space[key] = _stand_in(names[id(value)])
    defaults = getattr(function, "__defaults__", None)
    if defaults and any(id(d) in names for d in defaults):
        function.__defaults__ = tuple(_stand_in(names[id(d)]) if id(d) in names else d for d in defaults)
    cells = []                                     # (closure cell, original value)
    for cell in getattr(function, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:                         # a cell not filled yet
            continue
        if id(value) in names:
            cells.append((cell, value))
            cell.cell_contents = _stand_in(names[id(value)])
    try:
        yield function
    finally:
        for space, key, value in reversed(undo):
            space[key] = value
        if defaults is not None:
            function.__defaults__ = defaults
        for cell, value in cells:
            cell.cell_contents = value
