"""proposals.py: decode, clip, drop tiny, top-N, NMS, top-N."""
import numpy as np
import pytest

from minifrcnn.anchors import generate_base_anchors, grid_anchors
from minifrcnn.boxes import clip_boxes, decode, nms_reference
from minifrcnn.config import Config
from minifrcnn.proposals import proposal_layer, proposal_settings

H, W = 64, 96
ANCHORS = grid_anchors(generate_base_anchors(8, (0.5, 1, 2), (2, 4, 8)), H // 8, W // 8, 8)   # (864, 4)


def rpn_outputs(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    scores = rng.random(len(ANCHORS)).astype(dtype)
    deltas = rng.normal(0, 0.3, (len(ANCHORS), 4)).astype(dtype)
    return scores, deltas


def proposal_layer_reference(anchors, scores, deltas, image_size, pre, post, thr, min_size):
    """The six steps spelled out one by one, with the O(N^2) NMS."""
    boxes = clip_boxes(decode(anchors, deltas), image_size)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    big = [i for i in range(len(boxes)) if w[i] >= min_size and h[i] >= min_size]
    boxes, scores = boxes[big], scores[big]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:pre]     # Python's sort is stable
    boxes, scores = boxes[order], scores[order]
    keep = nms_reference(boxes, scores, thr)[:post]
    return boxes[keep], scores[keep]


@pytest.mark.parametrize("pre,post,thr,min_size", [(300, 50, 0.7, 4.0), (100, 1000, 0.5, 10.0),
                                                   (0, 20, 0.3, 0.0)])
def test_matches_the_step_by_step_reference(pre, post, thr, min_size):
    scores, deltas = rpn_outputs(0)
    boxes, out_scores = proposal_layer(ANCHORS, scores, deltas, (H, W), pre_nms_top_n=pre,
                                       post_nms_top_n=post, nms_threshold=thr, min_size=min_size)
    ref_boxes, ref_scores = proposal_layer_reference(ANCHORS, scores, deltas, (H, W),
                                                     pre if pre > 0 else len(scores), post, thr, min_size)
    np.testing.assert_array_equal(boxes, ref_boxes)
    np.testing.assert_array_equal(out_scores, ref_scores)
    assert boxes.dtype == np.float32 and out_scores.dtype == np.float32


def test_top_n_min_size_clipping_and_order():
    scores, deltas = rpn_outputs(1)
    boxes, out_scores = proposal_layer(ANCHORS, scores, deltas, (H, W), pre_nms_top_n=200,
                                       post_nms_top_n=40, nms_threshold=0.7, min_size=12.0)
    assert boxes.shape == (40, 4) and out_scores.shape == (40,)
    assert (np.diff(out_scores) <= 0).all()                          # sorted, best first
    assert (boxes[:, 2] - boxes[:, 0] >= 12).all() and (boxes[:, 3] - boxes[:, 1] >= 12).all()
    assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= W).all()
    assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= H).all()
    # pre-NMS top-N: every proposal is among the 200 best boxes that survived the size filter
    all_boxes = clip_boxes(decode(ANCHORS, deltas), (H, W))
    big = (all_boxes[:, 2] - all_boxes[:, 0] >= 12) & (all_boxes[:, 3] - all_boxes[:, 1] >= 12)
    assert big.sum() > 200
    cutoff = np.sort(scores[big])[::-1][199]
    assert (out_scores >= cutoff).all()
    # fewer boxes than post_nms_top_n when NMS leaves fewer
    few, _ = proposal_layer(ANCHORS, scores, deltas, (H, W), pre_nms_top_n=30, post_nms_top_n=1000,
                            nms_threshold=0.7, min_size=12.0)
    assert 0 < len(few) <= 30


def test_min_size_can_remove_everything():
    scores, deltas = rpn_outputs(2)
    boxes, out_scores = proposal_layer(ANCHORS, scores, deltas, (H, W), min_size=1000.0)
    assert boxes.shape == (0, 4) and out_scores.shape == (0,)


def test_tiny_boxes_are_dropped_even_with_top_scores():
    scores, deltas = rpn_outputs(3)
    best = np.argsort(-scores)[:5]
    deltas[best, 2:] = -5.0                                   # shrink the 5 best boxes to almost nothing
    boxes, out_scores = proposal_layer(ANCHORS, scores, deltas, (H, W), min_size=2.0)
    assert not np.isin(scores[best], out_scores).any()
    assert np.isin(np.sort(scores)[::-1][5], out_scores)     # the next best survives


def test_settings_from_config():
    cfg = Config()
    assert proposal_settings(cfg, training=True) == dict(pre_nms_top_n=12000, post_nms_top_n=2000,
                                                         nms_threshold=0.7, min_size=16.0)
    assert proposal_settings(cfg, training=False, image_scale=1.5) == dict(
        pre_nms_top_n=6000, post_nms_top_n=300, nms_threshold=0.7, min_size=24.0)
    with pytest.raises(ValueError, match="deltas: expected shape"):
        proposal_layer(ANCHORS, np.zeros(len(ANCHORS)), np.zeros((len(ANCHORS), 5)), (H, W))
