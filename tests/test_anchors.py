"""anchors.py: the base anchors of one cell and their grid over the feature map."""
import math

import numpy as np
import pytest

from minifrcnn.anchors import base_anchors_from_config, generate_base_anchors, grid_anchors, grid_anchors_reference
from minifrcnn.config import Config


def sizes(boxes):
    return boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]


def test_the_nine_default_anchors_exactly():
    base = generate_base_anchors(16, (0.5, 1.0, 2.0), (8, 16, 32), dtype=np.float64)
    assert base.shape == (9, 4)
    # ratio-major: rows 0-2 ratio 0.5, rows 3-5 ratio 1, rows 6-8 ratio 2; scales 8, 16, 32 inside
    expected = []
    for r in (0.5, 1.0, 2.0):
        for side in (128, 256, 512):
            w, h = side / math.sqrt(r), side * math.sqrt(r)
            expected.append([8 - w / 2, 8 - h / 2, 8 + w / 2, 8 + h / 2])
    np.testing.assert_allclose(base, expected, rtol=1e-12)
    # spelled-out values of a few: the square 128 px anchor, and the wide/tall 128 px ones
    np.testing.assert_allclose(base[3], [-56, -56, 72, 72])
    w, h = sizes(base)
    np.testing.assert_allclose(w[0], 128 * math.sqrt(2))      # h/w = 0.5: wide, 181.02 x 90.51
    np.testing.assert_allclose(h[0], 128 / math.sqrt(2))
    np.testing.assert_allclose(w[6], 128 / math.sqrt(2))      # h/w = 2: tall
    np.testing.assert_allclose(h[6], 128 * math.sqrt(2))


@pytest.mark.parametrize("base_size,ratios,scales", [(16, (0.5, 1, 2), (8, 16, 32)),
                                                     (8, (0.5, 1, 2), (2, 4, 8)),
                                                     (10, (0.25, 3.0), (1.5,))])
def test_areas_ratios_and_centres(base_size, ratios, scales):
    base = generate_base_anchors(base_size, ratios, scales, dtype=np.float64)
    assert base.shape == (len(ratios) * len(scales), 4)
    w, h = sizes(base)
    want_ratio = np.repeat(ratios, len(scales))                  # ratio-major
    want_area = np.tile([(base_size * s) ** 2 for s in scales], len(ratios))
    np.testing.assert_allclose(h / w, want_ratio, rtol=1e-12)
    np.testing.assert_allclose(w * h, want_area, rtol=1e-12)
    np.testing.assert_allclose((base[:, 0] + base[:, 2]) / 2, base_size / 2)
    np.testing.assert_allclose((base[:, 1] + base[:, 3]) / 2, base_size / 2)


def test_dtype_config_and_bad_arguments():
    assert generate_base_anchors().dtype == np.float32
    base = base_anchors_from_config(Config.small())
    w, h = sizes(base)
    np.testing.assert_allclose(np.sqrt(w * h)[3:6], [16, 32, 64], rtol=1e-6)   # ratio-1 row
    with pytest.raises(ValueError, match="ratios"):
        generate_base_anchors(16, (0.5, -1), (8,))
    with pytest.raises(ValueError, match="base: expected shape"):
        grid_anchors(np.zeros((9, 3), dtype=np.float32), 2, 2, 16)


def test_grid_matches_the_plain_loops_and_the_index_formula():
    base = generate_base_anchors(8, (0.5, 1, 2), (2, 4, 8))
    feat_h, feat_w, stride, A = 3, 5, 8, 9
    anchors = grid_anchors(base, feat_h, feat_w, stride)
    assert anchors.shape == (feat_h * feat_w * A, 4) and anchors.dtype == np.float32
    np.testing.assert_array_equal(anchors, grid_anchors_reference(base, feat_h, feat_w, stride))
    # index = (y * feat_w + x) * A + a: x moves before y
    y, x, a = 2, 1, 4
    shift = np.array([x * stride, y * stride, x * stride, y * stride])
    np.testing.assert_array_equal(anchors[(y * feat_w + x) * A + a], base[a] + shift)
    np.testing.assert_array_equal(anchors[(0 * feat_w + 1) * A + 0], base[0] + np.array([8, 0, 8, 0], dtype=np.float32))


def test_anchors_are_centred_on_their_cell_when_base_size_equals_stride():
    stride = 16
    anchors = grid_anchors(generate_base_anchors(16), 4, 6, stride).reshape(4, 6, 9, 4)
    cx = (anchors[..., 0] + anchors[..., 2]) / 2                # (H, W, A)
    cy = (anchors[..., 1] + anchors[..., 3]) / 2
    np.testing.assert_allclose(cx, (np.arange(6) * stride + stride / 2)[None, :, None] + 0 * cx)
    np.testing.assert_allclose(cy, (np.arange(4) * stride + stride / 2)[:, None, None] + 0 * cy)
