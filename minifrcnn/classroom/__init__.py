"""The classroom checks: each exercise notebook (notebooks/exercises/) calls one on the student's code.

    from minifrcnn.classroom import check_iou
    check_iou(iou)        # prints PASS / FAIL per case with hints; returns a CheckResult (true if all passed)

exercises.py holds exercises 01-08 (the table of signatures, checks and the library functions
they are compared with is its docstring) and the known slips its hints recognise;
detector_exercises.py holds 09-13, the detector's own steps (anchor labels and sampling, the
proposal layer, RoI sampling, the multi-task loss, VOC AP), the same way; capstone.py is exercise
14, the capstone: students_detector plugs the student's 09-12 into the detector, and
check_capstone trains it with them; feedback.py runs a check's cases and prints the feedback;
hidden_library.py keeps the library's answer out of the student's function while it is checked;
grading.py is `python -m minifrcnn grade` (runs submitted notebooks, scores their graded cells).
Not part of the detector: the detector never imports it (only the command line's `grade`).
"""
from . import detector_exercises, exercises
from .capstone import check_capstone  # noqa: F401
from .detector_exercises import (  # noqa: F401
    check_head_loss, check_label_anchors, check_proposal_layer, check_roi_targets, check_rpn_loss,
    check_sample_anchors, check_voc_ap,
)
from .exercises import (  # noqa: F401
    check_anchors, check_conv_backward, check_decode, check_encode, check_encode_decode,
    check_grid_anchors, check_iou, check_nms, check_roi_pool, check_smooth_l1,
    check_softmax_cross_entropy_backward,
)

__all__ = list(exercises.__all__) + list(detector_exercises.__all__) + ["check_capstone"]
