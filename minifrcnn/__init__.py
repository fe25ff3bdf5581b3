"""minifrcnn: Faster R-CNN (Ren et al., 2015) from scratch in NumPy, running unchanged on CuPy.

Start with the README, then the notebooks; docs/DESIGN.md is the map for contributors. The
modules are named after the steps of the paper: backend (NumPy/CuPy), ops (layers with
hand-written backward passes), layers and optim (parameters and SGD), backbones, boxes, anchors,
anchor_targets, proposals, proposal_targets, rpn, fast_rcnn, model (the network, predict,
save/load), joint_training (sampling, losses and backward of one training step), train (the
loop), run_folder, evaluate, detect, data (shapes, VOC folders, transforms). Apart from the
detector: paper/ (alternating training, pre-training, the experiments), classroom/ (the
exercises' checks), testing/ (the strict test device).
"""
__version__ = "0.1.0"

from . import backend, ops  # noqa: F401  (so `from minifrcnn import ops` works)
