"""minifrcnn: Faster R-CNN (Ren et al., 2015) from scratch in NumPy, running unchanged on CuPy.

Start with the README, then the notebooks. The modules are named after the steps of the paper:
backend (NumPy/CuPy), ops (layers with hand-written backward passes), layers and optim
(parameters and SGD), boxes, anchors, anchor_targets, proposals, proposal_targets, model, train,
evaluate.
"""
__version__ = "0.1.0"

from . import backend, ops  # noqa: F401  (so `from minifrcnn import ops` works)
