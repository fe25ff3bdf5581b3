"""4-step alternating training (paper, section 3.2, "Sharing features for RPN and Fast R-CNN").

The paper's first way to make the RPN and Fast R-CNN share their conv layers:

    step 1  train an RPN, starting from the (pre-trained) backbone;
    step 2  train a *separate* Fast R-CNN detector, with its own copy of the starting
            backbone, on the proposals of the step-1 RPN (the two nets share nothing yet);
    step 3  initialise the RPN's training from the step-2 detector's backbone, *freeze* those
            shared convs and fine-tune only the RPN's own layers;
    step 4  keep the shared convs frozen and fine-tune only the Fast R-CNN head, on the
            proposals of the step-3 RPN.

The result is one FasterRCNN: backbone from step 2, RPN layers from step 3, head from step 4.
Each step is an ordinary train() run in its own folder (out/step1 ... out/step4, each with its
checkpoint, losses and model), so every step can be resumed and inspected; out/model.npz is the
final detector.

    python -m minifrcnn train --scheme alternating --dataset shapes --out runs/alt
"""
import copy
import os

from ..model import FasterRCNN
from ..npz import read_npz
from ..run_folder import run_folder_lock
from ..train import CheckpointMismatch, config_differences, train

STEPS = ("step1", "step2", "step3", "step4")


def train_alternating(cfg, dataset, out_dir, step_iters=None, device="cpu", resume=False,
                      checkpoint_every=250, progress=True, log=print, start_model=None):
    """Run the 4 steps; returns the final FasterRCNN (also saved as out_dir/model.npz).

    step_iters: iterations of steps 1-4. Default: cfg.iters split 2:1:2:1, the ratio of
        the paper's 80k / 40k / 80k / 40k, so both schemes run the same number of iterations.
    start_model: a FasterRCNN whose backbone is the starting point of steps 1 and 2
        (for example one with pre-trained backbone weights); default FasterRCNN(cfg).
    resume: steps whose model.npz exists are loaded instead of retrained, and the step in
        progress continues from its checkpoint.
    """
    if step_iters is None:
        step_iters = [max(1, round(cfg.iters * f)) for f in (2 / 6, 1 / 6, 2 / 6, 1 / 6)]
    step_iters = [int(n) for n in step_iters]
    if len(step_iters) != 4:
        raise ValueError(f"step_iters: expected 4 numbers, got {step_iters}")
    start = FasterRCNN(cfg) if start_model is None else start_model

    def run(step, model, parts, proposer=None):
        folder = os.path.join(out_dir, step)
        done = os.path.join(folder, "model.npz")
        n = step_iters[STEPS.index(step)]
        if resume and os.path.exists(done):
            # a finished step is reused only if it was made by this run: the same config
            # (the model keeps the run's config) and the same number of iterations
            trained = FasterRCNN.load(done, device=device)
            differ = config_differences(trained.cfg, cfg, ignore=("iters", "lr_steps"))
            ckpt = os.path.join(folder, "checkpoint.npz")
            ran = int(read_npz(ckpt, "checkpoint")["iteration"]) if os.path.exists(ckpt) else None
            if not differ and ran is not None and ran != n:
                differ = f"iterations: checkpoint {ran} vs now {n}"
            if differ:
                raise CheckpointMismatch(f"{done}: {step} was trained with another config "
                                         f"({differ}); start again without --resume")
            log(f"{step}: already trained, loading {done}")
            model.load_state_dict(trained.state_dict())
            return model
        log(f"{step}: training {'+'.join(parts)} for {n} iterations")
        resuming = resume and os.path.exists(os.path.join(folder, "checkpoint.npz"))
        return train(cfg.with_iters(n), dataset, folder,
                     device=device, resume=resuming, checkpoint_every=checkpoint_every,
                     progress=progress, model=model, log=log, parts=parts, proposer=proposer)

    # One run per folder: out/model.npz is this run's (train() locks each step's folder too).
    with run_folder_lock(out_dir, log):
        # Each step freezes what it does not train, so weight decay cannot touch it either.
        # Step 1: the RPN alone, from the starting backbone.
        rpn_model = copy.deepcopy(start)
        rpn_model.head.freeze()
        rpn_model = run("step1", rpn_model, ("rpn",))
        # Step 2: a separate detector with its own copy of the starting backbone, trained on the
        # step-1 RPN's proposals (the step-1 model only proposes: nothing of it is updated).
        detector = copy.deepcopy(start)
        detector.rpn.freeze()
        detector = run("step2", detector, ("head",), proposer=rpn_model)
        # Step 3: the detector's backbone, frozen, under the step-1 RPN layers; fine-tune the RPN.
        shared = copy.deepcopy(rpn_model)
        shared.backbone = copy.deepcopy(detector.backbone)
        shared.backbone.freeze()
        shared = run("step3", shared, ("rpn",))
        # Step 4: the same frozen backbone and the step-3 RPN (now frozen too) with the step-2
        # head; fine-tune the head on the step-3 RPN's proposals.
        shared.head = copy.deepcopy(detector.head)
        shared.head.unfreeze()
        shared.rpn.freeze()
        shared = run("step4", shared, ("head",))
        shared.unfreeze()                        # a finished model is an ordinary model again
        shared.save(os.path.join(out_dir, "model.npz"))
    return shared
