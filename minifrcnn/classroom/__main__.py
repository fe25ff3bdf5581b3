"""python -m minifrcnn.classroom: every exercise check run on the library's own functions.

Runs inside hidden_library.library_allowed() (here the library's functions are what is
checked), on the shown cases and on the grader's hidden ones (hidden=True).
Exits 0 when they all pass (a quick way to see that the checks and the library agree).
"""
import sys

import numpy as np

from .. import anchors as _anchors
from .. import boxes as _boxes
from .. import ops as _ops
from .. import proposals as _proposals
from . import capstone as _capstone
from . import detector_exercises as _detector
from .capstone import check_capstone
from .detector_exercises import (check_head_loss, check_label_anchors, check_proposal_layer, check_roi_targets,
                                 check_rpn_loss, check_sample_anchors, check_voc_ap)
from .exercises import (check_anchors, check_conv_backward, check_encode_decode, check_grid_anchors, check_iou,
                        check_nms, check_roi_pool, check_smooth_l1, check_softmax_cross_entropy_backward)
from .hidden_library import library_allowed


def _library_conv_backward(dout, x, w, stride=1, pad=0):
    return _ops.conv2d_backward(dout, _ops.conv2d_forward(x, w, np.zeros(w.shape[0]), stride, pad)[1])


def main():
    with library_allowed():           # the library's own functions are what is checked here
        return _check_the_library()


def _check_the_library():
    """Every check, on its shown cases and on the grader's hidden ones."""
    results = []
    for hidden in (False, True):
        results += [
            check_iou(_boxes.box_iou, hidden=hidden),
            check_anchors(_anchors.generate_base_anchors, hidden=hidden),
            check_grid_anchors(_anchors.grid_anchors, hidden=hidden),
            check_encode_decode(_boxes.encode, _boxes.decode, hidden=hidden),
            check_nms(_boxes.nms, hidden=hidden),
            check_smooth_l1(_ops.smooth_l1, hidden=hidden),
            check_softmax_cross_entropy_backward(
                lambda z, y, normalizer=None: _ops.softmax_cross_entropy(z, y, normalizer)[1], hidden=hidden),
            check_roi_pool(lambda f, r, output_size=(7, 7), spatial_scale=1 / 16:
                           _ops.roi_pool_forward(f, r, output_size, spatial_scale)[0], hidden=hidden),
            check_conv_backward(_library_conv_backward, hidden=hidden),
            # 09-13: the library's functions in the exercises' signatures (detector_exercises.py)
            check_label_anchors(_detector._library_label_anchors, hidden=hidden),
            check_sample_anchors(_detector._library_sample_anchors, hidden=hidden),
            check_proposal_layer(_proposals.proposal_layer, hidden=hidden),
            check_roi_targets(_detector._library_roi_targets, hidden=hidden),
            check_rpn_loss(_detector._library_rpn_loss, hidden=hidden),
            check_head_loss(_detector._library_head_loss, hidden=hidden),
            check_voc_ap(_detector._library_voc_ap, hidden=hidden),
            # 14, the capstone: the library's steps in the detector (a few seconds: it trains)
            check_capstone(*_capstone.LIBRARY_STEPS.values(), _detector._library_voc_ap, hidden=hidden),
        ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
