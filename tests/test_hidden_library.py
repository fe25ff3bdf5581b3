"""minifrcnn.classroom.hidden_library: a pass-through to the library fails while a check runs."""
import numpy as np
import pytest

import minifrcnn.boxes as boxes_module
from minifrcnn.boxes import box_iou
from minifrcnn.classroom.hidden_library import LibraryHidden, library_allowed, library_hidden

BOX = np.array([[0.0, 0.0, 10.0, 10.0]])


def through_global(a, b):
    return box_iou(a, b)                          # the notebook's `from minifrcnn.boxes import box_iou`


def through_module(a, b):
    return boxes_module.box_iou(a, b)             # import minifrcnn.boxes as B; B.box_iou


def through_default(a, b, f=box_iou):
    return f(a, b)


def closing_over(f):
    return lambda a, b: f(a, b)                   # the library function held in a closure


def written_out(a, b):
    """A real (if minimal) IoU: it needs no library function."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(w, 0) * np.maximum(h, 0)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])       # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


@pytest.mark.parametrize("student", [through_global, through_module, through_default, closing_over(box_iou), box_iou],
                         ids=["global name", "module attribute", "default argument", "closure", "the function itself"])
def test_a_pass_through_to_the_hidden_function_raises(student):
    with library_hidden(student, [box_iou]) as call:
        with pytest.raises(LibraryHidden, match="minifrcnn.boxes.box_iou is not available"):
            call(BOX, BOX)


def test_everything_is_put_back_afterwards():
    with library_hidden(through_default, [box_iou]) as call:
        with pytest.raises(LibraryHidden):
            call(BOX, BOX)
    assert boxes_module.box_iou is box_iou and globals()["box_iou"] is box_iou
    assert through_default.__defaults__ == (box_iou,)
    assert through_global(BOX, BOX)[0, 0] == 1.0


def test_a_function_written_out_runs_and_other_library_functions_stay():
    with library_hidden(written_out, [boxes_module.nms]) as call:
        assert boxes_module.box_iou is box_iou                 # only nms is hidden
        np.testing.assert_allclose(call(BOX, BOX), [[1.0]])
    with library_hidden(written_out, [box_iou]) as call:
        np.testing.assert_allclose(call(BOX, BOX), [[1.0]])


def test_library_allowed_hides_nothing():
    with library_allowed():
        with library_hidden(box_iou, [box_iou]) as call:
            np.testing.assert_allclose(call(BOX, BOX), [[1.0]])
    with library_hidden(box_iou, [box_iou]) as call:             # and hidden again after
        with pytest.raises(LibraryHidden):
            call(BOX, BOX)
