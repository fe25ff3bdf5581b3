"""The training loop: optimiser steps over JointTraining steps (paper, section 3.2), checkpoints, exact resume.

One iteration:
    1. take the next `images_per_batch` samples (a seeded permutation per epoch), resize,
       randomly flip, normalise, pad into one batch (N, 3, H, W);
    2. JointTraining.forward -> four loss terms (rpn_cls, rpn_reg, head_cls, head_reg);
    3. JointTraining.backward sums the RPN's and the head's gradients on the shared feature map;
    4. the optimiser step (cfg.optimizer: the paper's SGD with momentum, or AdamW for the small
       preset), the learning rate from optim.lr_for(cfg, it) (warm-up, then lr_gamma at lr_steps).

Everything random in iteration `it` comes from numpy.random.default_rng([seed, it]) and the
epoch order from default_rng([seed, epoch, 1]); so a run resumed from a checkpoint computes
exactly the losses an uninterrupted run would (same machine, same thread count).

The run folder holds:
    checkpoint.npz   the model file plus the optimiser state and iteration (written atomically every
                     `checkpoint_every` iterations, on Ctrl-C or SIGTERM, and at the end)
    model.npz        the final model (FasterRCNN.load)
    losses.jsonl     one line per iteration with every loss term and the learning rate
    loss_curve.png   the loss terms against the iteration
    map_curve.csv    with eval_every: the test mAP@0.5 every eval_every iterations, with the
    map_curve.png    training seconds so far (the evaluations' own time is not counted in them)
    .lock            while a run trains there: the process holding the folder (run_folder_lock)

Ctrl-C (SIGINT) and SIGTERM (what kill, Slurm and docker stop send) finish the current
iteration, save the checkpoint, say so and raise TrainingInterrupted, a KeyboardInterrupt whose
exit_code (130, 143: 128 + the signal's number) the command line returns. A NaN or inf loss
stops the run with TrainingDiverged naming the iteration; the last checkpoint (written before
the bad step) is left untouched.

    python -m minifrcnn train --dataset shapes --out runs/shapes
"""
import contextlib
import csv
import json
import math
import os
import signal
import time

import numpy as np

from .backend import to_device, to_numpy
from .data.transforms import prepare_batch
from .detect import predict_dataset
from .evaluate import evaluate_detections, ground_truths
from .joint_training import PARTS, JointTraining
from .model import FasterRCNN, config_from_checkpoint, weights_in_checkpoint
from .npz import read_npz
from .optim import lr_for, make_optimizer
from .run_folder import run_folder_lock

LOSS_TERMS = ("rpn_cls", "rpn_reg", "head_cls", "head_reg", "total")
# The signals that stop a run cleanly, and how the message says it.
STOP_SIGNALS = {signal.SIGINT: "interrupted",              # Ctrl-C
                signal.SIGTERM: "stopped by SIGTERM"}      # kill, Slurm, docker stop


class TrainingDiverged(RuntimeError):
    """A loss became NaN or inf; the message names the iteration."""


class CheckpointMismatch(ValueError):
    """--resume found a checkpoint made with another config."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run after it saved its checkpoint.

    exit_code is 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), what a shell
    reports for a program that the signal ended; the command line exits with it.
    """

    def __init__(self, signum):
        super().__init__(STOP_SIGNALS[signum])
        self.exit_code = 128 + signum


def batch_indices(num_samples, batch_size, iteration, seed):
    """Indices of the samples of `iteration`: consecutive slices of a seeded per-epoch permutation."""
    out = []
    for k in range(batch_size):
        pos = iteration * batch_size + k
        epoch, offset = divmod(pos, num_samples)
        perm = np.random.default_rng([seed, epoch, 1]).permutation(num_samples)
        out.append(int(perm[offset]))
    return out


def save_checkpoint(path, model, optimizer, iteration):
    """The model file (weights and config, FasterRCNN.save) plus the optimiser's state (SGD's
    momentum buffers, or AdamW's moments and step counts) and the number of finished
    iterations: everything an exact resume needs."""
    extra = {f"optim/{n}": to_numpy(v) for n, v in optimizer.state_dict().items()}
    extra["iteration"] = np.array(iteration)
    model.save(path, extra=extra)


def config_differences(saved, current, ignore=()):
    """'field: checkpoint X vs now Y, ...' for the fields (up to 5) where two Configs differ;
    '' when they agree. Compared through JSON, which is how checkpoints keep them."""
    saved = json.loads(json.dumps(saved.to_dict()))
    current = json.loads(json.dumps(current.to_dict()))
    differ = sorted(k for k in set(saved) | set(current)
                    if k not in ignore and saved.get(k) != current.get(k))
    return ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}"
                     for k in differ[:5])


def load_checkpoint(path, model, optimizer):
    """Restore what save_checkpoint wrote; returns the iteration to continue from.

    A checkpoint made with another config is a CheckpointMismatch naming the fields.
    """
    f = read_npz(path, "checkpoint")
    if "config_json" not in f or "iteration" not in f:
        raise ValueError(f"checkpoint {path}: not a minifrcnn training checkpoint")
    differ = config_differences(config_from_checkpoint(f, path), model.cfg, ignore=("iters",))
    if differ:
        raise CheckpointMismatch(f"checkpoint {path} was made with another config ({differ}); "
                                 "resume with the flags the run was started with")
    model.load_state_dict(weights_in_checkpoint(f))
    optimizer.load_state_dict({k[6:]: v for k, v in f.items() if k.startswith("optim/")})
    return int(f["iteration"])


def train(cfg, dataset, out_dir, device="cpu", resume=False, checkpoint_every=250,
          progress=True, model=None, log=print, parts=PARTS, proposer=None,
          eval_every=None, eval_set=None, class_names=None, processes=1):
    """Train a FasterRCNN on `dataset` (a sequence of sample dicts); returns the model.

    cfg.iters iterations of cfg.images_per_batch images. With resume=True and a
    checkpoint.npz in out_dir, continue from it (same config required).
    parts, proposer: which losses to train and whose RPN proposes (see
    joint_training.JointTraining); the defaults are approximate joint training. Frozen
    parameters (requires_grad False) are never updated.
    The run holds out_dir's lock throughout (run_folder_lock); Ctrl-C or SIGTERM saves the
    checkpoint and raises TrainingInterrupted.
    eval_every: every that many iterations (and after the last) the model is evaluated on
    eval_set (samples; class_names their K names): a row of map_curve.csv (MapCurve).
    Every losses.jsonl record holds "train_seconds", the training time so far without the
    evaluations, so a resumed run goes on counting where the checkpoint left off.
    processes > 1: data-parallel training, each batch's images split over that many processes
    with one BLAS thread each (data_parallel.py; joint training on the CPU only). The model is
    then a function of (seed, processes); the command line's default is
    data_parallel.default_processes.
    """
    if len(dataset) == 0:
        raise ValueError("training set is empty: nothing to train on")
    if processes > 1 and (device != "cpu" or tuple(parts) != PARTS or proposer is not None
                          or cfg.loss_normalization != "paper"):
        raise ValueError(f"processes {processes}: data-parallel training is for joint training "
                         "on the CPU with the paper's loss normalisation")
    ckpt_path = os.path.join(out_dir, "checkpoint.npz")
    log_path = os.path.join(out_dir, "losses.jsonl")
    with run_folder_lock(out_dir, log):
        model = FasterRCNN(cfg) if model is None else model
        model.to(device)
        optimizer = make_optimizer(model.parameters(), cfg)
        start, previous = 0, []          # previous: the log records kept by a resume
        if resume:
            if not os.path.exists(ckpt_path):
                raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
            start = load_checkpoint(ckpt_path, model, optimizer)
            previous = _truncate_log(log_path, start, log)
            log(f"resumed from {ckpt_path} at iteration {start}")
        elif os.path.exists(log_path):
            os.remove(log_path)

        curve = MapCurve(out_dir, start) if eval_every else None
        train_seconds = previous[-1].get("train_seconds", 0.0) if previous else 0.0
        bar = _progress(range(start, cfg.iters), progress, start, cfg.iters)
        it = start
        workers = None
        try:
            if processes > 1:
                from .data_parallel import DataParallel
                if not all(p.requires_grad for p in model.parameters()):
                    raise ValueError(f"processes {processes}: the model has frozen parameters; "
                                     "data-parallel training trains every parameter")
                t0 = time.perf_counter()
                workers = DataParallel(model, optimizer, dataset, cfg, processes)
                train_seconds += time.perf_counter() - t0        # starting them is training time
            with stop_requests() as stop, open(log_path, "a") as log_file:
                for it in bar:
                    t0 = time.perf_counter()
                    if workers:
                        terms = workers.step(it)
                    else:
                        terms = train_step(model, optimizer, dataset, cfg, it, parts, proposer)
                    if not all(math.isfinite(v) for v in terms.values()):
                        raise TrainingDiverged(
                            f"loss became {terms['total']} at iteration {it} "
                            f"({', '.join(f'{k}={v:.4g}' for k, v in terms.items())}); the last "
                            f"good checkpoint is {ckpt_path}" + (
                                "" if os.path.exists(ckpt_path) else " (none written yet)"))
                    train_seconds += time.perf_counter() - t0
                    record = {"iter": it, "lr": lr_for(cfg, it), **terms, "time": time.time(),
                              "train_seconds": round(train_seconds, 3)}
                    log_file.write(json.dumps(record) + "\n")
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix({k: f"{v:.3f}" for k, v in terms.items()}, refresh=False)
                    done = it + 1
                    save = done % checkpoint_every == 0 or done == cfg.iters or stop["signal"]
                    evaluate = curve and (done % eval_every == 0 or done == cfg.iters)
                    t0 = time.perf_counter()
                    if workers and (save or evaluate):
                        workers.copy_state_to(model, optimizer)    # the weights live there
                    if save:
                        log_file.flush()
                        save_checkpoint(ckpt_path, model, optimizer, done)
                    train_seconds += time.perf_counter() - t0   # copy and save: in the next record
                    if evaluate:
                        curve.add(model, eval_set, class_names, done, train_seconds)
                    if stop["signal"]:
                        raise TrainingInterrupted(stop["signal"])
        except TrainingInterrupted as e:
            log(f"\n{e}: saved {ckpt_path} at iteration {it + 1}; "
                f"continue with the same command and --resume")
            raise
        finally:
            if workers:
                workers.close()
            if hasattr(bar, "close"):
                bar.close()
        model.save(os.path.join(out_dir, "model.npz"))
        plot_losses(log_path, os.path.join(out_dir, "loss_curve.png"))
        if curve:
            curve.plot()
    return model


@contextlib.contextmanager
def stop_requests():
    """Within the `with`, Ctrl-C (SIGINT) and SIGTERM do not stop the program at once: the
    signal's number is put in the yielded dict's "signal", so that the training loop can finish
    its iteration and save first. The previous handlers come back when the `with` ends.

        with stop_requests() as stop:
            for it in ...:
                ...
                if stop["signal"]: ... save, then stop
    """
    stop = {"signal": None}

    def note(signum, frame):
        stop["signal"] = signum

    with stop_signals_handled_by(note):
        yield stop


@contextlib.contextmanager
def stop_signals_handled_by(handler):
    """Within the `with`, Ctrl-C (SIGINT) and SIGTERM (STOP_SIGNALS) go to handler: a function
    (signum, frame), or signal.SIG_IGN to ignore them. The previous handlers come back when the
    `with` ends. Python delivers signals to the main thread only and sets handlers there only,
    so elsewhere nothing is installed."""
    previous = {}
    if _in_main_thread():
        previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, earlier in previous.items():
            if earlier is not None:            # None: a handler not set from Python
                signal.signal(s, earlier)


class MapCurve:
    """The test mAP during training: out_dir/map_curve.csv, one row per evaluation,

        iter, train_seconds, eval_seconds, map50 (VOC all-point), map50_voc07

    and map_curve.png, mAP@0.5 against the iteration and against the training seconds (the
    evaluations' own time, eval_seconds, is not in train_seconds). Resuming at iteration
    `start` keeps the rows of the iterations up to it.
    """

    COLUMNS = ("iter", "train_seconds", "eval_seconds", "map50", "map50_voc07")

    def __init__(self, out_dir, start=0):
        self.csv_path = os.path.join(out_dir, "map_curve.csv")
        self.png_path = os.path.join(out_dir, "map_curve.png")
        self.rows = [r for r in self.read(self.csv_path) if r["iter"] <= start] if start else []
        self._write()

    @staticmethod
    def read(csv_path):
        """The rows of a map_curve.csv as dicts of numbers ([] if there is no file)."""
        if not os.path.exists(csv_path):
            return []
        with open(csv_path) as f:
            return [{k: (int(v) if k == "iter" else float(v)) for k, v in row.items()}
                    for row in csv.DictReader(f)]

    def add(self, model, samples, class_names, iteration, train_seconds):
        """Evaluate model on samples now and append the row (written at once)."""
        t0 = time.perf_counter()
        dets = predict_dataset(model, samples)
        gts = ground_truths(samples)
        area = evaluate_detections(dets, gts, class_names, method="area")["map"]
        voc07 = evaluate_detections(dets, gts, class_names, method="voc07")["map"]
        self.rows.append({"iter": iteration, "train_seconds": round(train_seconds, 2),
                          "eval_seconds": round(time.perf_counter() - t0, 2),
                          "map50": round(area, 4), "map50_voc07": round(voc07, 4)})
        self._write()

    def _write(self):
        with open(self.csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.COLUMNS)
            w.writeheader()
            w.writerows(self.rows)

    def plot(self):
        """mAP@0.5 against the iteration (left) and against the training seconds (right)."""
        from .detect import offscreen_figure
        if not self.rows:
            return
        fig, ax = offscreen_figure((10, 3.8))
        ax.remove()
        for k, x in enumerate(("iter", "train_seconds")):
            a = fig.add_subplot(1, 2, k + 1)
            xs = [r[x] for r in self.rows]
            a.plot(xs, [r["map50"] for r in self.rows], "o-", label="all-point")
            a.plot(xs, [r["map50_voc07"] for r in self.rows], "s--", ms=3, label="11-point")
            a.set_xlabel("iteration" if x == "iter" else "training seconds")
            a.set_ylabel("test mAP@0.5")
            a.set_ylim(0, 1)
            a.grid(alpha=0.3)
            a.legend(loc="lower right", fontsize=8)
        fig.suptitle("test mAP during training")
        fig.tight_layout()
        fig.savefig(self.png_path, dpi=100)


def train_step(model, optimizer, dataset, cfg, it, parts=PARTS, proposer=None):
    """One optimiser iteration of JointTraining(model, parts, proposer); returns the loss terms as
    Python floats (the only host copies). A non-finite loss changes no weight."""
    indices = batch_indices(len(dataset), cfg.images_per_batch, it, cfg.seed)
    rng = np.random.default_rng([cfg.seed, it])
    optimizer.set_lr(lr_for(cfg, it))
    step = JointTraining(model, parts, proposer)
    values, _ = batch_forward(step, dataset, indices, cfg, rng)
    if all(math.isfinite(v) for v in values.values()):
        step.backward()
        optimizer.step()
    return values


def batch_forward(step, dataset, indices, cfg, rng):
    """Zero the gradients, then the forward pass of JointTraining `step` on the samples
    dataset[indices]: (its loss terms as Python floats, its samples); step.backward() follows.

    The samples are resized, flipped at random (rng), normalised and padded into one batch
    (N, 3, H, W); rng then draws the anchor and RoI samples.
    """
    model = step.model
    images, sizes, boxes, labels, scales = prepare_batch([dataset[i] for i in indices], cfg, rng)
    images = to_device(images, model.device())                           # (N, 3, H, W)
    model.zero_grad()
    terms, samples = step.forward(images, sizes, boxes, labels, rng, scales=scales)
    return {k: float(v) for k, v in terms.items()}, samples


def read_log(log_path):
    """The records of losses.jsonl as a list of dicts, one per iteration.

    A line that is not a whole record is a ValueError naming the file and the line number.
    """
    records, torn = _read_records(log_path)
    if torn is not None:
        raise ValueError(_damaged(log_path, *torn))
    return records


def _read_records(log_path):
    """(records, torn): the whole records of losses.jsonl, and (line number, text) of a last
    line that is not one (a write cut short by a kill), else None. A damaged line before the
    last is a ValueError naming the file and the line number."""
    with open(log_path, errors="replace") as f:          # a torn write may hold any bytes
        lines = [(n, line.strip()) for n, line in enumerate(f, start=1) if line.strip()]
    records = []
    for k, (n, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("iter"), int):
            if k < len(lines) - 1:
                raise ValueError(_damaged(log_path, n, line))
            return records, (n, line)
        records.append(record)
    return records, None


def _damaged(log_path, line_number, text):
    return (f"{log_path} line {line_number}: damaged, not a loss record ({text[:40]!r}"
            f"{'...' if len(text) > 40 else ''}); repair or delete that line")


def _truncate_log(log_path, iteration, log=print):
    """Before a resume from the checkpoint of `iteration`: keep the records of the iterations
    before it (the later ones are recomputed) and drop a torn last line, in one note.
    Returns the records kept."""
    if not os.path.exists(log_path):
        return []
    records, torn = _read_records(log_path)
    keep = [r for r in records if r["iter"] < iteration]
    dropped = []
    if len(keep) < len(records):
        dropped.append(f"{len(records) - len(keep)} lines of iterations >= {iteration}")
    if torn is not None:
        dropped.append(f"the torn last line {torn[0]} (a write cut short)")
    if dropped:
        log(f"note: {log_path}: dropped {' and '.join(dropped)}; training goes on from the "
            f"checkpoint at iteration {iteration}")
    with open(log_path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in keep)
    return keep


def plot_losses(log_path, png_path, smooth=20):
    """Loss terms against iteration (moving average over `smooth` iterations) as a PNG."""
    from .detect import offscreen_figure
    records = read_log(log_path)
    if not records:
        return
    its = np.array([r["iter"] for r in records])
    fig, ax = offscreen_figure((7, 4))
    for term in [t for t in LOSS_TERMS if t in records[0]]:
        v = np.array([r[term] for r in records], dtype=float)
        k = max(1, min(smooth, len(v)))
        ma = np.convolve(v, np.ones(k) / k, mode="valid")
        ax.plot(its[k - 1:], ma, label=term, lw=2 if term == "total" else 1)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"loss (moving average over {smooth} iterations)")
    ax.set_title("Faster R-CNN training losses")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)


def _progress(iterable, enabled, start, total):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, initial=start, total=total, desc="train", dynamic_ncols=True)


def _in_main_thread():
    import threading
    return threading.current_thread() is threading.main_thread()
