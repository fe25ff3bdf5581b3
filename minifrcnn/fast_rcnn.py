"""The Fast R-CNN detection head (Girshick 2015, used as stage 2 of Faster R-CNN) and its loss.

Every sampled RoI is max-pooled (or RoIAligned) to a fixed 7x7 grid of the shared feature map,
then classified into K+1 classes and given one box refinement per class:

    feat (N, C, H, W), rois (S, 5) -> RoI pool -> (S, C, 7, 7) -> flatten (S, C*49)
        -> fc + ReLU -> fc + ReLU -> (S, D)
        -> cls fc -> scores (S, K+1)         softmax over background + K classes
        -> reg fc -> deltas (S, 4(K+1))      class c's deltas in columns 4c:4c+4

Loss (Fast R-CNN, equation 1) over the S sampled RoIs:

    L = 1/S sum_i L_cls(p_i, u_i)  +  lambda 1/S sum_i [u_i >= 1] L_reg(t_i^{u_i}, v_i)

with the smooth-L1 of sigma 1 and regression targets divided by the stds (0.1, 0.1, 0.2, 0.2)
(proposal_targets.py), lambda = config.head_lambda (1 in the paper).
"""
from . import ops
from .layers import Linear, Module, ReLU, check_cache


class FastRCNNHead(Module):
    """RoI pooling + two fc layers + class scores + class-specific box deltas.

    Initialisation. In the paper fc6 and fc7 come pre-trained with VGG-16 / ZF; only the
    class and box layers are new (Gaussian, std 0.01 and 0.001, as in py-faster-rcnn). We
    have no pre-trained weights, so fc6 and fc7 get He initialisation like the backbone: with
    std 0.01 on fc6's thousands of inputs (C * P * P: 6272 at 7 x 7, 2048 at the small preset's
    4 x 4) and fc7's 256 the signal shrinks layer by layer and the
    head barely learns for the first thousand iterations (measured on the shapes data).
    """

    def __init__(self, in_channels, num_classes, cfg, spatial_scale, rng, dtype="float32"):
        super().__init__()
        self.num_classes = num_classes                       # K, without the background
        self.pool_size = (cfg.roi_output_size, cfg.roi_output_size)
        self.spatial_scale = spatial_scale
        self.roi_op = cfg.roi_op
        self.sampling_ratio = cfg.roi_align_sampling_ratio
        if self.roi_op not in ("pool", "align"):
            raise ValueError(f"roi_op {self.roi_op!r}: expected 'pool' or 'align'")
        d_in = in_channels * cfg.roi_output_size * cfg.roi_output_size
        hidden = cfg.head_hidden
        self.fc6 = Linear(d_in, hidden, init="he", rng=rng, dtype=dtype)
        self.relu6 = ReLU()
        self.fc7 = Linear(hidden, hidden, init="he", rng=rng, dtype=dtype)
        self.relu7 = ReLU()
        self.cls = Linear(hidden, num_classes + 1, init="gaussian", std=cfg.head_cls_std, rng=rng,
                          dtype=dtype)
        self.reg = Linear(hidden, 4 * (num_classes + 1), init="gaussian", std=cfg.head_reg_std, rng=rng,
                          dtype=dtype)
        self.cache = None                  # (RoI pooling's cache, pooled shape) of the last forward

    def pool(self, feat, rois):
        """feat (N, C, H, W), rois (S, 5) -> pooled (S, C, P, P), cache."""
        if self.roi_op == "pool":
            return ops.roi_pool_forward(feat, rois, self.pool_size, self.spatial_scale)
        return ops.roi_align_forward(feat, rois, self.pool_size, self.spatial_scale,
                                     self.sampling_ratio)

    def unpool(self, dpooled, cache):
        """dpooled (S, C, P, P) -> dfeat (N, C, H, W)."""
        if self.roi_op == "pool":
            return ops.roi_pool_backward(dpooled, cache)
        return ops.roi_align_backward(dpooled, cache)

    def forward(self, feat, rois):
        """feat (N, C, H, W), rois (S, 5) -> scores (S, K+1), deltas (S, 4(K+1))."""
        pooled, pool_cache = self.pool(feat, rois)                     # (S, C, P, P)
        self.cache = (pool_cache, pooled.shape)
        h = self.relu6.forward(self.fc6.forward(pooled.reshape(pooled.shape[0], -1)))  # (S, D)
        h = self.relu7.forward(self.fc7.forward(h))                   # (S, D)
        return self.cls.forward(h), self.reg.forward(h)

    def backward(self, dscores, ddeltas):
        """dscores (S, K+1), ddeltas (S, 4(K+1)) -> dfeat (N, C, H, W)."""
        check_cache(self)
        pool_cache, pooled_shape = self.cache
        dh = self.cls.backward(dscores) + self.reg.backward(ddeltas)  # (S, D)
        dh = self.fc7.backward(self.relu7.backward(dh))
        dpooled = self.fc6.backward(self.relu6.backward(dh))          # (S, C*P*P)
        return self.unpool(dpooled.reshape(pooled_shape), pool_cache)


def fast_rcnn_loss(scores, deltas, labels, bbox_targets, bbox_weights, cfg):
    """The head's multi-task loss and its gradients.

    scores (S, K+1), deltas (S, 4(K+1)): head outputs.
    labels (S,) int in 0..K; bbox_targets, bbox_weights (S, 4(K+1)) from proposal_targets
    (weights are 1 on the 4 columns of a foreground RoI's own class, 0 elsewhere).

    Returns (terms, dscores, ddeltas) with terms = {"head_cls", "head_reg"} as 0-d arrays.
    """
    s = max(int(labels.shape[0]), 1)
    cls_loss, dscores = ops.softmax_cross_entropy(scores, labels, normalizer=s)
    reg_loss, ddeltas = ops.smooth_l1(deltas, bbox_targets, bbox_weights, sigma=cfg.head_sigma,
                                      normalizer=s)
    lam = cfg.head_lambda
    return {"head_cls": cls_loss, "head_reg": lam * reg_loss}, dscores, lam * ddeltas
