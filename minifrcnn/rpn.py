"""The Region Proposal Network (paper, section 3.1): its layers and its loss.

Layers. A 3x3 conv slides over the shared feature map; at every cell a 1x1 conv scores A
anchors as object / not object (2 numbers each, a softmax) and a second 1x1 conv regresses
4 box deltas for each anchor:

    feat (N, C, H, W) -> conv3x3 + ReLU -> mid (N, M, H, W)
        -> cls 1x1 -> (N, 2A, H, W) -> logits (N, H*W*A, 2)     [background, object]
        -> reg 1x1 -> (N, 4A, H, W) -> deltas (N, H*W*A, 4)     (tx, ty, tw, th)

The reshape puts the anchor axis fastest, the same order as anchors.grid_anchors:
row i = (y * W + x) * A + a, and channel a * 2 + c of the cls map is class c of anchor a.

Loss (paper, equation 1), for one mini-batch:

    L = 1/N_cls sum_i L_cls(p_i, p_i*)  +  lambda 1/N_reg sum_i p_i* L_reg(t_i, t_i*)

L_cls is the 2-class log loss over the sampled anchors (label 1 or 0; -1 is ignored),
L_reg the smooth-L1 loss (sigma 3, py-faster-rcnn) on the positives only. The paper uses
N_cls = 256 (the sample size), N_reg = the number of anchor locations (H*W, ~2400 at
600 px) and lambda = 10, so both terms weigh about the same; config.loss_normalization =
"py-faster-rcnn" divides both terms by the number of sampled anchors with lambda = 1.
With N images in the batch every normaliser is multiplied by N: the loss is a mean over images.
"""
from . import ops
from .layers import Conv2d, Module, ReLU, check_cache


class RPNHead(Module):
    """conv3x3(C -> mid) + ReLU, then 1x1 convs to 2A objectness logits and 4A deltas.

    New layers, so Gaussian std 0.01 initialisation, as in the paper.
    """

    def __init__(self, in_channels, mid_channels, num_anchors, rng, dtype="float32"):
        super().__init__()
        self.num_anchors = num_anchors
        self.conv = Conv2d(in_channels, mid_channels, 3, pad=1, init="gaussian", std=0.01,
                           rng=rng, dtype=dtype)
        self.relu = ReLU()
        self.cls = Conv2d(mid_channels, 2 * num_anchors, 1, init="gaussian", std=0.01,
                          rng=rng, dtype=dtype)
        self.reg = Conv2d(mid_channels, 4 * num_anchors, 1, init="gaussian", std=0.01,
                          rng=rng, dtype=dtype)
        self.cache = None                  # (H, W) of the last forward's feature map

    def forward(self, feat):
        """feat (N, C, H, W) -> logits (N, H*W*A, 2), deltas (N, H*W*A, 4)."""
        n, _, h, w = feat.shape
        mid = self.relu.forward(self.conv.forward(feat))          # (N, M, H, W)
        cls_map = self.cls.forward(mid)                             # (N, 2A, H, W)
        reg_map = self.reg.forward(mid)                             # (N, 4A, H, W)
        self.cache = (h, w)
        logits = cls_map.transpose(0, 2, 3, 1).reshape(n, h * w * self.num_anchors, 2)
        deltas = reg_map.transpose(0, 2, 3, 1).reshape(n, h * w * self.num_anchors, 4)
        return logits, deltas

    def backward(self, dlogits, ddeltas):
        """dlogits (N, H*W*A, 2), ddeltas (N, H*W*A, 4) -> dfeat (N, C, H, W)."""
        check_cache(self)
        h, w = self.cache
        n = dlogits.shape[0]
        dcls = dlogits.reshape(n, h, w, 2 * self.num_anchors).transpose(0, 3, 1, 2)   # (N, 2A, H, W)
        dreg = ddeltas.reshape(n, h, w, 4 * self.num_anchors).transpose(0, 3, 1, 2)   # (N, 4A, H, W)
        dmid = self.cls.backward(dcls) + self.reg.backward(dreg)                    # (N, M, H, W)
        return self.conv.backward(self.relu.backward(dmid))


def rpn_loss(logits, deltas, labels, bbox_targets, feat_size, cfg):
    """The RPN's multi-task loss and its gradients.

    logits (N, R, 2), deltas (N, R, 4): RPNHead outputs, R = H*W*A anchors per image.
    labels (N, R) int: 1 object, 0 background, -1 ignored (anchor_targets.anchor_targets).
    bbox_targets (N, R, 4): encoded gt of each positive anchor (rows of non-positives unused).
    feat_size: (H, W) of the feature map, for N_reg = H*W in the paper's normalisation.

    Returns (terms, dlogits, ddeltas): terms = {"rpn_cls": 0-d array, "rpn_reg": 0-d array}
    (already multiplied by their weights, so the total is their sum), gradients shaped like
    logits and deltas.
    """
    n, r, _ = logits.shape
    labels = labels.reshape(n * r)                                    # (N*R,)
    positives = (labels == 1).astype(deltas.dtype)                    # (N*R,)
    if cfg.loss_normalization == "paper":
        n_cls = n * cfg.rpn_batch_size
        n_reg = n * feat_size[0] * feat_size[1]
        lam = cfg.rpn_lambda
    elif cfg.loss_normalization == "py-faster-rcnn":
        sampled = int((labels >= 0).sum())                      # anchors in the sample
        n_cls = n_reg = max(sampled, 1)
        lam = 1.0
    else:
        raise ValueError(f"loss_normalization {cfg.loss_normalization!r}: "
                         "expected 'paper' or 'py-faster-rcnn'")
    cls_loss, dlogits = ops.softmax_cross_entropy(logits.reshape(n * r, 2), labels,
                                                  normalizer=n_cls)
    weights = positives[:, None].repeat(4, axis=1)                  # (N*R, 4) p_i*
    reg_loss, ddeltas = ops.smooth_l1(deltas.reshape(n * r, 4), bbox_targets.reshape(n * r, 4),
                                      weights, sigma=cfg.rpn_sigma, normalizer=n_reg)
    terms = {"rpn_cls": cls_loss, "rpn_reg": lam * reg_loss}
    return terms, dlogits.reshape(n, r, 2), (lam * ddeltas).reshape(n, r, 4)
