"""The proposal layer: turn the RPN's per-anchor outputs into a few hundred object proposals
(paper 3.1 and 3.3, py-faster-rcnn's proposal_layer).

For one image, with the anchors, the RPN's objectness score s_a and its deltas t_a per anchor:

    1. decode:    box_a = decode(anchor_a, t_a)                   apply (tx, ty, tw, th), no weights
    2. clip:      box_a = clip_boxes(box_a, (H, W))               into the image
    3. drop tiny: keep boxes with w >= min_size and h >= min_size
    4. top-N:     the pre_nms_top_n highest-scoring boxes         (12000 train / 6000 test)
    5. NMS:       nms(boxes, scores, nms_threshold)               (0.7)
    6. top-N:     the first post_nms_top_n survivors              (2000 train / 300 test)

No gradient flows back through this layer. In approximate joint training (paper 3.2) the
proposal coordinates are treated as constants: the RPN learns its deltas from its own
regression loss on the anchors, and the head's loss is not differentiated with respect to the
RoI boxes (that derivative, through RoI pooling's box coordinates, is what the paper calls
non-approximate joint training, which it leaves out).

    proposals, scores = proposal_layer(anchors, fg_prob, deltas, (H, W), **proposal_settings(cfg, training=True))
"""
from .boxes import clip_boxes, decode, nms, remove_small_boxes, score_order
from .ops.checks import check_array, check_same_device


def proposal_layer(anchors, objectness, deltas, image_size, pre_nms_top_n=6000, post_nms_top_n=300,
                   nms_threshold=0.7, min_size=16.0):
    """Proposals for one image: decode, clip, drop tiny, top-N, NMS, top-N (module docstring).

    anchors: (A_total, 4) from grid_anchors. objectness: (A_total,) the RPN's object score per
    anchor, a foreground probability or a logit (only the order matters). deltas: (A_total, 4)
    the RPN's (tx, ty, tw, th) per anchor, same anchor order. image_size: (H, W) of the input
    image as the network sees it (after resizing).
    pre_nms_top_n, post_nms_top_n: how many boxes go into NMS and come out (None or <= 0: all).
    min_size: smallest allowed width and height, in pixels of the network's input image:
        pass the config's rpn_min_size (pixels at the original scale) times the image's
        resize factor, as proposal_settings() does.
    Returns (proposals (R, 4), scores (R,)), sorted by decreasing score, R <= post_nms_top_n.
    R can be 0 (for example when every box is smaller than min_size).
    """
    check_array(anchors, "anchors", ndim=2, shape=(None, 4))
    check_array(objectness, "objectness", ndim=1, shape=(anchors.shape[0],))
    check_array(deltas, "deltas", ndim=2, shape=(anchors.shape[0], 4))
    check_same_device(("anchors", anchors), ("objectness", objectness), ("deltas", deltas))

    boxes = clip_boxes(decode(anchors, deltas), image_size)          # (A_total, 4)
    keep = remove_small_boxes(boxes, min_size)                       # (A_big,)
    boxes, scores = boxes[keep], objectness[keep]                    # (A_big, 4), (A_big,)

    order = score_order(scores)                                      # (A_big,) best first
    if pre_nms_top_n is not None and pre_nms_top_n > 0:
        order = order[:pre_nms_top_n]                                # (pre,)
    boxes, scores = boxes[order], scores[order]                      # (pre, 4), (pre,)

    max_output = post_nms_top_n if post_nms_top_n is not None and post_nms_top_n > 0 else None
    keep = nms(boxes, scores, nms_threshold, max_output=max_output)  # (R,) still best first
    return boxes[keep], scores[keep]                                 # (R, 4), (R,)


def proposal_settings(cfg, training, image_scale=1.0):
    """The keyword arguments of proposal_layer from a Config, for training or for testing.

        training=True:  rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train
        training=False: rpn_pre_nms_top_n_test,  rpn_post_nms_top_n_test
        always:         nms_threshold = rpn_nms_threshold,
                        min_size = rpn_min_size * image_scale (the image's resize factor)
    """
    if training:
        pre, post = cfg.rpn_pre_nms_top_n_train, cfg.rpn_post_nms_top_n_train
    else:
        pre, post = cfg.rpn_pre_nms_top_n_test, cfg.rpn_post_nms_top_n_test
    return dict(pre_nms_top_n=pre, post_nms_top_n=post, nms_threshold=cfg.rpn_nms_threshold,
                min_size=cfg.rpn_min_size * image_scale)
