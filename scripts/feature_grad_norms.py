"""Which loss drives the shared features? The norm of the gradient the RPN and the head each
send into the feature map, every iteration of a normal `train` run.

    python scripts/feature_grad_norms.py OUT.csv TRAIN ARGUMENTS...
    python scripts/feature_grad_norms.py norms.csv --dataset voc --data-dir data-digits --out runs/g --iters 1000

JointTraining.backward is wrapped: it asks the RPN and the head for their d(features)
separately, records both norms, and sends their sum on through the backbone as the library
does, so the training is the normal one (in this one process: --processes 1). Every 50 iterations it prints the means.
"""
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import minifrcnn.joint_training as joint_training  # noqa: E402
from minifrcnn.__main__ import main  # noqa: E402

rows = []          # per iteration: ||dfeat_rpn||, ||dfeat_head||, mean |dfeat_rpn|, mean |dfeat_head|


def backward(self):
    """JointTraining.backward, with the two parts' d(features) measured before they are summed."""
    model = self.model
    d_rpn = model.rpn.backward(*self.grads["rpn"])                   # (N, C, h, w)
    d_head = model.head.backward(*self.grads["head"])                # (N, C, h, w)
    rows.append((float(np.linalg.norm(d_rpn)), float(np.linalg.norm(d_head)),
                 float(np.abs(d_rpn).mean()), float(np.abs(d_head).mean())))
    model.backbone.backward(d_rpn + d_head)
    if len(rows) % 50 == 0:
        last = np.array(rows[-50:])
        print(f"iteration {len(rows)}: ||dfeat_rpn|| {last[:, 0].mean():.4g}  "
              f"||dfeat_head|| {last[:, 1].mean():.4g}  head / rpn {np.mean(last[:, 1] / last[:, 0]):.2f}",
              flush=True)


if __name__ == "__main__":
    joint_training.JointTraining.backward = backward       # joint training only (both parts)
    try:
        main(["train", "--processes", "1"] + sys.argv[2:])   # the wrapped backward runs here
    finally:
        with open(sys.argv[1], "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["iteration", "norm_rpn", "norm_head", "meanabs_rpn", "meanabs_head"])
            out.writerows([i + 1, *r] for i, r in enumerate(rows))
