"""data_parallel.py: the processes train what the in-process reference computes, a run with
processes resumes exactly after a checkpoint or Ctrl-C, a failing process is an error (not a
hang), and the number of processes the command line chooses."""
import math
import multiprocessing
import os
import signal

import numpy as np
import pytest

from minifrcnn import data_parallel
from minifrcnn.__main__ import main
from minifrcnn.data import shapes
from minifrcnn.data.transforms import prepare_batch
from minifrcnn.data_parallel import (
    DataParallel, default_processes, flat_gradients, images_of_process, reference_gradients,
    reference_step, share_forward)
from minifrcnn.joint_training import JointTraining
from minifrcnn.model import FasterRCNN
from minifrcnn.optim import make_optimizer
from minifrcnn.train import (
    LOSS_TERMS, TrainingInterrupted, batch_forward, batch_indices, read_log, train)
from test_train import tiny_config

QUIET = {"progress": False, "log": lambda *_: None, "checkpoint_every": 100}


@pytest.fixture(scope="module")
def data():
    return shapes.make_split("train", 8, size=48)


def losses(run_dir):
    return [(r["iter"], r["total"]) for r in read_log(os.path.join(run_dir, "losses.jsonl"))]


@pytest.mark.parametrize("images, processes", [(2, 2), (4, 2)])
def test_processes_train_what_the_in_process_reference_computes(tmp_path, data, images, processes):
    """The processes, the shared buffer and the barriers compute what reference_step computes
    in one process (the same share functions): the plumbing. The maths is the next test's."""
    cfg = tiny_config(images_per_batch=images)
    model = train(cfg, data, str(tmp_path), processes=processes, **QUIET)
    reference = FasterRCNN(cfg)                               # the same seeded start
    optimizer = make_optimizer(reference.parameters(), cfg)
    expected = [reference_step(reference, optimizer, data, cfg, it, processes)["total"]
                for it in range(cfg.iters)]
    got = [total for _, total in losses(str(tmp_path))]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value, rtol=1e-4, atol=1e-6,
                                   err_msg=name)


def test_the_log_of_a_run_with_processes_has_the_schedule_s_learning_rate(tmp_path, data):
    cfg = tiny_config(lr_warmup_iters=2)                       # warm-up, then a step at 4
    train(cfg, data, str(tmp_path / "one"), processes=1, **QUIET)
    train(cfg, data, str(tmp_path / "two"), processes=2, **QUIET)
    lrs = [[r["lr"] for r in read_log(str(tmp_path / run / "losses.jsonl"))] for run in ("one", "two")]
    assert lrs[0] == lrs[1] and len(set(lrs[0])) >= 3


def test_the_processes_compute_the_whole_batch_loss_and_gradient(data):
    """The mean of the processes' rows is the loss and the gradient of the whole batch, as
    train_step defines them (the RPN: a mean over images; the head: a mean over every RoI of
    the batch), given the same samples: the shares' anchors and RoIs put together. Few
    proposals, so that the shares sample different numbers of RoIs (13 and 11)."""
    cfg = tiny_config(flip=False, images_per_batch=4,     # 48 px images: no padding, no flip
                      rpn_post_nms_top_n_train=4)
    it = 1
    model = FasterRCNN(cfg)
    indices = batch_indices(len(data), cfg.images_per_batch, it, cfg.seed)
    mean = reference_gradients(model, data, cfg, it, 2)                    # (5 + n,)
    samples = []
    for r in (0, 1):                     # each share's samples again (the same random numbers)
        step = JointTraining(model)
        rng = np.random.default_rng([cfg.seed, it, r])
        samples.append(batch_forward(step, data, images_of_process(indices, r, 2), cfg, rng)[1])
    assert [len(s["roi_labels"]) for s in samples] == [13, 11]
    order = images_of_process(indices, 0, 2) + images_of_process(indices, 1, 2)
    rois = []
    for r, s in enumerate(samples):      # batch index: the image's row in the whole batch
        share_rois = s["rois"].copy()
        share_rois[:, 0] += 2 * r
        rois.append(share_rois)
    whole = {"rpn_labels": np.concatenate([s["rpn_labels"] for s in samples]),
             "rpn_targets": np.concatenate([s["rpn_targets"] for s in samples]),
             "rois": np.concatenate(rois),
             **{k: np.concatenate([s[k] for s in samples])
                for k in ("roi_labels", "roi_targets", "roi_weights")}}
    images, sizes, boxes, labels, scales = prepare_batch([data[i] for i in order], cfg,
                                                         np.random.default_rng(0))
    step = JointTraining(model)
    model.zero_grad()
    terms, _ = step.forward(images, sizes, boxes, labels, None, scales=scales, samples=whole)
    step.backward()
    np.testing.assert_allclose(mean[:5], [float(terms[k]) for k in LOSS_TERMS], rtol=1e-5)
    np.testing.assert_allclose(mean[5:], flat_gradients(model.parameters()), rtol=1e-4,
                               atol=1e-7)


def test_resume_with_processes_gives_the_same_losses(tmp_path, data):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    train(tiny_config(), data, full, processes=2, **QUIET)
    train(tiny_config(iters=3), data, part, processes=2, **QUIET)        # stops after 3
    train(tiny_config(), data, part, resume=True, processes=2, **QUIET)
    assert losses(part) == losses(full)


def test_ctrl_c_with_processes_saves_and_resumes_exactly(tmp_path, data, monkeypatch):
    full, run = str(tmp_path / "full"), str(tmp_path / "run")
    train(tiny_config(), data, full, processes=2, **QUIET)
    real_step = DataParallel.step

    def step(self, it):
        if it == 2:
            os.kill(os.getpid(), signal.SIGINT)      # Ctrl-C: the worker processes ignore it
        return real_step(self, it)

    monkeypatch.setattr(DataParallel, "step", step)
    with pytest.raises(TrainingInterrupted):
        train(tiny_config(), data, run, processes=2, **QUIET)
    with np.load(os.path.join(run, "checkpoint.npz")) as f:
        assert int(f["iteration"]) == 3
    monkeypatch.setattr(DataParallel, "step", real_step)
    train(tiny_config(), data, run, resume=True, processes=2, **QUIET)
    assert losses(run) == losses(full)


def test_a_failing_process_is_an_error_naming_it(tmp_path, data):
    broken = [dict(s, image=None) for s in data]                # prepare_batch fails on it
    with pytest.raises(RuntimeError, match="data-parallel training: process [01] failed"):
        train(tiny_config(), broken, str(tmp_path), processes=2, **QUIET)
    assert not os.path.exists(tmp_path / ".lock")               # the folder is free again


def test_the_failing_process_is_the_one_named(tmp_path, data):
    """Only process 1's image is broken: process 0 then sees the barrier break, and the error
    names process 1 with its own traceback."""
    cfg = tiny_config()
    second = batch_indices(len(data), cfg.images_per_batch, 0, cfg.seed)[1]   # process 1's image
    broken = [dict(s, image=None) if i == second else s for i, s in enumerate(data)]
    with pytest.raises(RuntimeError, match="process 1 failed") as e:
        train(cfg, broken, str(tmp_path), processes=2, **QUIET)
    assert "BrokenBarrierError" not in str(e.value)
    assert multiprocessing.active_children() == []


def test_every_process_holds_the_same_weights_bit_for_bit(data):
    """The docstring's claim: the same mean gradient and the same optimiser step on the same
    weights keep the P copies equal; copy_state_to reads process 0 only, so compare them all."""
    cfg = tiny_config()
    model = FasterRCNN(cfg)
    with DataParallel(model, make_optimizer(model.parameters(), cfg), data, cfg, 2) as workers:
        for it in range(3):
            workers.step(it)
        states = []
        for rank, conn in enumerate(workers.conns):
            conn.send(("state",))
            states.append(workers._receive(rank, "state")[1])
    assert states[0].keys() == states[1].keys()
    assert all(np.array_equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(np.array_equal(states[0][k], model.state_dict()[k]) for k in states[0])


def test_a_killed_process_is_an_error_not_a_wait(data):
    cfg = tiny_config()
    model = FasterRCNN(cfg)
    workers = DataParallel(model, make_optimizer(model.parameters(), cfg), data, cfg, 2)
    try:
        workers.step(0)
        os.kill(workers.workers[0].pid, signal.SIGTERM)      # ignored: the main process decides
        os.kill(workers.workers[0].pid, signal.SIGINT)
        workers.step(1)
        os.kill(workers.workers[1].pid, signal.SIGKILL)      # the out-of-memory killer, say
        with pytest.raises(RuntimeError, match="process 1 failed:\nit ended unexpectedly "
                                               "\\(killed by signal 9\\)"):
            workers.step(2)
    finally:
        workers.close()
    assert multiprocessing.active_children() == []


def test_ctrl_c_while_the_processes_start_is_ignored_by_them(data, monkeypatch):
    """Ctrl-C reaches the whole process group, the workers too, possibly while they still
    import the package: they ignore it from their first instruction (the main process stops
    the run), so it neither kills them nor prints their tracebacks."""
    context = multiprocessing.get_context("spawn")
    real_start = context.Process.start

    def start_then_ctrl_c(self):
        real_start(self)
        os.kill(self.pid, signal.SIGINT)                # before it has imported anything

    monkeypatch.setattr(context.Process, "start", start_then_ctrl_c)
    cfg = tiny_config()
    model = FasterRCNN(cfg)
    before = signal.getsignal(signal.SIGINT)     # SIG_IGN itself where the suite runs in the background
    with DataParallel(model, make_optimizer(model.parameters(), cfg), data, cfg, 2) as workers:
        assert signal.getsignal(signal.SIGINT) is before             # ours is back
        assert math.isfinite(workers.step(0)["total"])
    assert multiprocessing.active_children() == []


def test_frozen_parameters_are_refused_with_processes(tmp_path, data):
    model = FasterRCNN(tiny_config())
    model.backbone.freeze()
    with pytest.raises(ValueError, match="frozen parameters"):
        train(tiny_config(), data, str(tmp_path), model=model, processes=2, **QUIET)


def test_processes_need_joint_training_on_the_cpu(tmp_path, data):
    with pytest.raises(ValueError, match="joint training on the CPU"):
        train(tiny_config(), data, str(tmp_path), processes=2, parts=("rpn",), **QUIET)


@pytest.mark.parametrize("cores, images, device, expected", [
    (2, 2, "cpu", 2), (8, 2, "cpu", 2), (1, 2, "cpu", 1), (2, 3, "cpu", 1), (4, 4, "cpu", 4),
    (3, 4, "cpu", 2), (2, 2, "cuda", 1)])
def test_default_processes(monkeypatch, cores, images, device, expected):
    monkeypatch.setattr(data_parallel, "usable_cores", lambda: cores)
    assert default_processes(tiny_config(images_per_batch=images), device) == expected


def test_processes_that_do_not_divide_the_batch_are_one_line(capsys, tmp_path):
    code = main(["train", "--out", str(tmp_path / "run"), "--train-images", "4", "--min-size",
                 "48", "--no-eval", "--no-progress", "--processes", "3"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "error: --processes 3: must divide the batch's 2 images\n"
