"""Approximate joint training (paper, section 3.2): the sampling, the four loss terms and the
backward pass of one training step of a FasterRCNN.

    images, ground truth
      -> backbone -> feat (N, C, h, w) -> RPN -> logits (N, R, 2), deltas (N, R, 4)
      -> anchor targets (anchor_targets.py, on the host)      -> rpn_loss (rpn.py)
      -> proposals (the RPN's, no gradient) -> 128 sampled RoIs per image (proposal_targets.py)
      -> Fast R-CNN head on the RoIs                          -> fast_rcnn_loss (fast_rcnn.py)
    backward: the RPN's and the head's gradients on the shared feature map are summed there
    and sent on through the backbone. The proposal boxes are treated as constants: no
    gradient flows through their coordinates (that is what makes it "approximate").

The network itself (model.py) knows nothing of this: like chainercv's FasterRCNNTrainChain,
a JointTraining wraps a model and keeps the loss gradients between forward and backward.

    step = JointTraining(model)
    model.zero_grad()                      # backward adds into .grad
    terms, samples = step.forward(images, sizes, gt_boxes, gt_labels, rng)
    step.backward()                        # every parameter's .grad now holds dL/dW

The paper's 4-step alternating scheme (paper/alternating.py) trains one part at a time:
parts=("rpn",) or ("head",), and in its step 2 the head learns on the proposals of another
model's RPN (proposer=).
"""
import numpy as np

from .anchor_targets import anchor_target_settings, anchor_targets
from .backend import get_array_module, to_numpy
from .fast_rcnn import fast_rcnn_loss
from .proposal_targets import proposal_target_settings, proposal_targets
from .rpn import rpn_loss

PARTS = ("rpn", "head")


class JointTraining:
    """The training-time half of Faster R-CNN for one model. See the module docstring.

    parts: the losses to compute, ("rpn", "head") for joint training; the alternating
        scheme trains ("rpn",) or ("head",) alone.
    proposer: another FasterRCNN whose RPN makes the proposals for the head (step 2 of the
        alternating scheme); None: the model's own RPN.
    """

    def __init__(self, model, parts=PARTS, proposer=None):
        unknown = sorted(set(parts) - set(PARTS))
        if unknown or not parts:
            raise ValueError(f"parts: expected some of {PARTS}, got {tuple(parts)}")
        self.model = model
        self.parts = tuple(parts)
        self.proposer = proposer
        self.grads = {}                    # the loss gradients of the last forward, by part

    def forward(self, images, image_sizes, gt_boxes, gt_labels, rng, scales=None, samples=None):
        """One forward pass; returns (terms, samples).

        images (N, 3, H, W) normalised float32, on the model's device.
        image_sizes: N (h, w) of the real (unpadded) image inside each row of the batch.
        gt_boxes: N arrays (G_i, 4) in the batch's pixel coordinates; gt_labels N arrays (G_i,).
        rng: numpy Generator for the anchor and RoI sampling.
        scales: N resize factors (only for the RPN's minimum proposal size); default 1.
        samples: the `samples` of an earlier call to reuse instead of sampling anew (the
            whole-model gradient check holds anchor labels and RoIs fixed this way).

        terms: {"rpn_cls", "rpn_reg", "head_cls", "head_reg", "total"} as 0-d arrays, only
        the terms of `parts` (and "total").
        """
        model, cfg = self.model, self.model.cfg
        n = images.shape[0]
        scales = [1.0] * n if scales is None else scales
        want_rpn, want_head = "rpn" in self.parts, "head" in self.parts
        feat = model.backbone.forward(images)                            # (N, C, h, w)
        feat_size = feat.shape[2:]
        logits = deltas = None
        if want_rpn or self.proposer is None:
            logits, deltas = model.rpn.forward(feat)                    # (N, R, 2), (N, R, 4)
        if samples is None:
            if self.proposer is None:
                prop_logits, prop_deltas = logits, deltas
            else:                                # the other model's RPN, on the same images
                proposer = self.proposer
                prop_logits, prop_deltas = proposer.rpn.forward(proposer.backbone.forward(images))
            samples = self.sample(feat_size, prop_logits, prop_deltas, image_sizes, gt_boxes,
                                  gt_labels, rng, scales)
        terms, self.grads = {}, {}
        if want_rpn:
            rpn_terms, dlogits, ddeltas = rpn_loss(logits, deltas, samples["rpn_labels"],
                                                   samples["rpn_targets"], feat_size, cfg)
            terms.update(rpn_terms)
            self.grads["rpn"] = (dlogits, ddeltas)
        if want_head:
            scores, head_deltas = model.head.forward(feat, samples["rois"])  # (S, K+1), (S, 4(K+1))
            head_terms, dscores, dhead = fast_rcnn_loss(
                scores, head_deltas, samples["roi_labels"], samples["roi_targets"],
                samples["roi_weights"], cfg)
            terms.update(head_terms)
            self.grads["head"] = (dscores, dhead)
        terms["total"] = sum(terms.values())
        return terms, samples

    def sample(self, feat_size, logits, deltas, image_sizes, gt_boxes, gt_labels, rng, scales):
        """Anchor targets for the RPN (if "rpn" in parts) and sampled RoIs with their targets
        (if "head" in parts).

        feat_size: (h, w) of the feature map. logits (N, R, 2), deltas (N, R, 4): the RPN
        outputs the proposals are made from. gt_boxes, gt_labels: N host (numpy) arrays, as
        data.transforms.prepare_batch gives them.

        The anchor targets depend only on the ground truth and the image size, never on the
        network, so they are computed on the host, where the ground truth is (py-faster-rcnn's
        anchor_target_layer ran on the CPU too), and go to the device stacked, in two uploads,
        like the images. On a GPU that saves about 90 small device operations and 4 host-device
        waits per image (scripts/count_device_ops.py); on the CPU it is the same computation.
        The proposals and their targets need the RPN's outputs, so they stay on the device.
        The random draws happen in the same order either way (image by image: anchors, RoIs).
        """
        model, cfg = self.model, self.model.cfg
        rpn, head = "rpn" in self.parts, "head" in self.parts
        xp = get_array_module(logits)
        host_anchors = model.anchors(feat_size[0], feat_size[1], np)    # (R, 4) numpy
        anchors = model.anchors(feat_size[0], feat_size[1], xp)         # (R, 4) on the device
        rpn_labels, rpn_targets, rois, roi_labels, roi_targets, roi_weights = [], [], [], [], [], []
        for i, (size, boxes, labels) in enumerate(zip(image_sizes, gt_boxes, gt_labels)):
            host_boxes = to_numpy(boxes).astype(model.dtype).reshape(-1, 4)   # (G, 4) numpy
            if rpn:
                lab, tgt = anchor_targets(host_anchors, host_boxes, size, rng,
                                          **anchor_target_settings(cfg))[:2]   # (R,), (R, 4)
                rpn_labels.append(lab)
                rpn_targets.append(tgt)
            if head:
                boxes = xp.asarray(host_boxes)                              # (G, 4) device
                labels = xp.asarray(labels).reshape(-1)                     # (G,)
                props = model.proposals(anchors, logits[i], deltas[i], size, scales[i], True)
                t = proposal_targets(props, boxes, labels, cfg.num_classes, rng,
                                     **proposal_target_settings(cfg))
                rois.append(model.with_batch_index(t["rois"], i))
                roi_labels.append(t["labels"])
                roi_targets.append(t["bbox_targets"])
                roi_weights.append(t["bbox_weights"])
        samples = {}
        if rpn:
            samples["rpn_labels"] = xp.asarray(np.stack(rpn_labels))                        # (N, R)
            samples["rpn_targets"] = xp.asarray(np.stack(rpn_targets).astype(model.dtype))  # (N, R, 4)
        if head:
            samples["rois"] = xp.concatenate(rois)                               # (S, 5)
            samples["roi_labels"] = xp.concatenate(roi_labels)                   # (S,)
            samples["roi_targets"] = xp.concatenate(roi_targets).astype(model.dtype)  # (S, 4(K+1))
            samples["roi_weights"] = xp.concatenate(roi_weights).astype(model.dtype)
        return samples

    def scale_head_loss(self, factor):
        """Multiply the last forward's head loss gradients by `factor` before backward() (the
        terms are the caller's to scale). Data-parallel training (data_parallel.py) uses it to
        normalise a share of the batch by the whole batch's RoIs instead of its own."""
        dscores, dhead = self.grads["head"]
        self.grads["head"] = (dscores * factor, dhead * factor)

    def backward(self):
        """Backpropagate the last forward's loss into every parameter's .grad.

        The RPN and the head each give a gradient on the shared feature map; they are summed
        there (approximate joint training) and sent on through the backbone. A frozen
        backbone (alternating training, steps 3 and 4) is skipped: nothing there would change.
        """
        model = self.model
        if not self.grads:
            raise RuntimeError("JointTraining.backward called before forward")
        dfeat = 0
        if "rpn" in self.grads:
            dfeat = dfeat + model.rpn.backward(*self.grads["rpn"])
        if "head" in self.grads:
            dfeat = dfeat + model.head.backward(*self.grads["head"])
        if any(p.requires_grad for p in model.backbone.parameters()):
            model.backbone.backward(dfeat)
