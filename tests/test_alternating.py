"""alternating.py: the paper's 4 steps hand each other what they should, and frozen means frozen."""
import json
import os

import numpy as np
import pytest

from minifrcnn.config import Config
from minifrcnn.data import shapes
from minifrcnn.model import FasterRCNN
from minifrcnn.paper.alternating import train_alternating
from minifrcnn.run_folder import RunFolderLocked, run_folder_lock
from minifrcnn.train import CheckpointMismatch


def tiny_config(**overrides):
    values = dict(backbone="tiny", num_classes=4, class_names=shapes.CLASS_NAMES, head_hidden=16,
                  roi_output_size=3, rpn_batch_size=32, roi_batch_size=16,
                  image_min_size=48, image_max_size=48,
                  rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50,
                  rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=30, iters=12)
    values.update(overrides)
    return Config.small(**values)


def weights(model, part):
    return {n: p.data.copy() for n, p in getattr(model, part).named_parameters()}


def same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("alt"))
    data = shapes.make_split("train", 8, size=48)
    start = FasterRCNN(tiny_config())
    start_w = {part: weights(start, part) for part in ("backbone", "rpn", "head")}
    final = train_alternating(tiny_config(), data, out, step_iters=(3, 3, 3, 3), progress=False,
                              log=lambda *_: None, start_model=start)
    steps = {s: FasterRCNN.load(os.path.join(out, s, "model.npz"))
             for s in ("step1", "step2", "step3", "step4")}
    return out, data, start_w, final, steps


def test_every_step_keeps_its_checkpoint(run):
    out, *_ = run
    for step in ("step1", "step2", "step3", "step4"):
        for name in ("checkpoint.npz", "model.npz", "losses.jsonl"):
            assert os.path.exists(os.path.join(out, step, name)), (step, name)
    assert os.path.exists(os.path.join(out, "model.npz"))


def test_steps_train_what_the_paper_says(run):
    _, _, start, final, s = run
    w = {k: {part: weights(m, part) for part in ("backbone", "rpn", "head")} for k, m in s.items()}
    # step 1 trains backbone + RPN; its head is untouched
    assert not same(w["step1"]["backbone"], start["backbone"])
    assert not same(w["step1"]["rpn"], start["rpn"])
    assert same(w["step1"]["head"], start["head"])
    # step 2 starts again from the starting backbone, trains backbone + head, not the RPN
    assert not same(w["step2"]["backbone"], w["step1"]["backbone"])
    assert not same(w["step2"]["head"], start["head"])
    assert same(w["step2"]["rpn"], start["rpn"])
    # step 3: the step-2 backbone, frozen (bit-identical); the step-1 RPN fine-tuned
    assert same(w["step3"]["backbone"], w["step2"]["backbone"])
    assert not same(w["step3"]["rpn"], w["step1"]["rpn"])
    # step 4: shared convs and RPN frozen (bit-identical across steps 3 and 4); head tuned
    assert same(w["step4"]["backbone"], w["step3"]["backbone"])
    assert same(w["step4"]["rpn"], w["step3"]["rpn"])
    assert not same(w["step4"]["head"], w["step2"]["head"])
    # the final model is step 4's, with nothing left frozen
    assert same(weights(final, "head"), w["step4"]["head"])
    assert all(p.requires_grad for p in final.parameters())


def test_each_step_logs_only_its_losses(run):
    out, *_ = run
    import json
    first = {s: json.loads(open(os.path.join(out, s, "losses.jsonl")).readline())
             for s in ("step1", "step2", "step3", "step4")}
    assert "rpn_cls" in first["step1"] and "head_cls" not in first["step1"]
    assert "head_cls" in first["step2"] and "rpn_cls" not in first["step2"]
    assert "rpn_cls" in first["step3"] and "head_cls" in first["step4"]


def test_resume_skips_finished_steps(run, tmp_path):
    out, data, _, final, _ = run
    again = train_alternating(tiny_config(), data, out, step_iters=(3, 3, 3, 3), progress=False,
                              log=lambda *_: None, resume=True)
    assert same(weights(again, "backbone"), weights(final, "backbone"))


def test_step_iters_validated(tmp_path):
    with pytest.raises(ValueError, match="step_iters"):
        train_alternating(tiny_config(), [], str(tmp_path), step_iters=(1, 2))


def test_resume_refuses_finished_steps_of_another_run(run, tmp_path):
    """A finished step is reused by --resume only when it was made with this run's config and
    iteration count; otherwise the resume stops, naming the step (audit 2026-11-26)."""
    out, data, *_ = run
    with pytest.raises(CheckpointMismatch, match=r"step1.*iterations: checkpoint 3 vs now 4"):
        train_alternating(tiny_config(), data, out, step_iters=(4, 3, 3, 3), progress=False,
                          log=lambda *_: None, resume=True)
    with pytest.raises(CheckpointMismatch, match=r"step1.*another config.*seed"):
        train_alternating(tiny_config(seed=1), data, out, step_iters=(3, 3, 3, 3),
                          progress=False, log=lambda *_: None, resume=True)


def test_the_run_folder_is_locked_and_every_lock_is_gone_at_the_end(tmp_path):
    """The command line holds the run folder's lock around train_alternating, which takes it
    again (re-entrant) and train() takes each step's; afterwards no lock is left anywhere."""
    out, data = str(tmp_path / "alt"), shapes.make_split("train", 4, size=48)
    with run_folder_lock(out):
        train_alternating(tiny_config(), data, out, step_iters=(1, 1, 1, 1), progress=False,
                          log=lambda *_: None)
    assert [f for _, _, files in os.walk(out) for f in files if f == ".lock"] == []
    with open(os.path.join(out, ".lock"), "w") as f:            # another machine's run
        json.dump({"pid": 1, "host": "another-machine"}, f)
    with pytest.raises(RunFolderLocked, match=r"alt: another training run.*another-machine"):
        train_alternating(tiny_config(), data, out, step_iters=(1, 1, 1, 1), progress=False,
                          log=lambda *_: None, resume=True)
