"""train.py: exact resume, divergence, Ctrl-C and SIGTERM, checkpoints made with another config,
one run per folder (the lock), a torn loss log, a full disk."""
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from minifrcnn import train as train_mod
from minifrcnn.__main__ import main
from minifrcnn.config import Config
from minifrcnn.data import shapes
from minifrcnn.data.transforms import prepare_batch
from minifrcnn.model import FasterRCNN
from minifrcnn.train import (
    CheckpointMismatch, TrainingDiverged, TrainingInterrupted, read_log, train)
from minifrcnn.run_folder import RunFolderLocked, run_folder_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = {"progress": False, "log": lambda *_: None}


def tiny_config(**overrides):
    values = dict(backbone="tiny", num_classes=4, class_names=shapes.CLASS_NAMES, head_hidden=16,
                  roi_output_size=3, rpn_batch_size=32, roi_batch_size=16,
                  image_min_size=48, image_max_size=48,
                  rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50,
                  rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=30,
                  iters=6, lr_steps=(4,), lr=0.01, lr_warmup_iters=0)
    values.update(overrides)
    return Config.small(**values)


@pytest.fixture(scope="module")
def data():
    return shapes.make_split("train", 8, size=48)


def losses(run_dir):
    return [(r["iter"], r["total"], r["lr"]) for r in read_log(os.path.join(run_dir, "losses.jsonl"))]


def record_iterations(monkeypatch):
    """Patch train_step to note each iteration it runs; returns the list it fills."""
    done, real_step = [], train_mod.train_step

    def step(model, optimizer, dataset, cfg, it, *args):
        done.append(it)
        return real_step(model, optimizer, dataset, cfg, it, *args)

    monkeypatch.setattr(train_mod, "train_step", step)
    return done


def test_run_folder_contents(tmp_path, data):
    train(tiny_config(), data, str(tmp_path), progress=False, checkpoint_every=3, log=lambda *_: None)
    for name in ("checkpoint.npz", "model.npz", "losses.jsonl", "loss_curve.png"):
        assert (tmp_path / name).exists(), name
    records = read_log(tmp_path / "losses.jsonl")
    assert [r["iter"] for r in records] == list(range(6))
    assert {"rpn_cls", "rpn_reg", "head_cls", "head_reg", "total", "lr"} <= set(records[0])
    assert records[3]["lr"] == pytest.approx(0.01) and records[4]["lr"] == pytest.approx(0.001)
    FasterRCNN.load(tmp_path / "model.npz")


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path, data, monkeypatch):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    quiet = {"progress": False, "log": lambda *_: None}
    train(tiny_config(), data, full, checkpoint_every=100, **quiet)
    train(tiny_config(iters=3), data, part, checkpoint_every=100, **quiet)   # stops after 3
    done = record_iterations(monkeypatch)
    train(tiny_config(), data, part, resume=True, checkpoint_every=100, **quiet)
    assert done == [3, 4, 5]          # continued from the checkpoint, not retrained from 0
    assert losses(part) == losses(full)
    a, b = FasterRCNN.load(os.path.join(full, "model.npz")), FasterRCNN.load(os.path.join(part, "model.npz"))
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


def test_resume_with_another_config_is_refused(tmp_path, data):
    train(tiny_config(iters=2), data, str(tmp_path), progress=False, log=lambda *_: None)
    with pytest.raises(CheckpointMismatch, match=r"checkpoint.*another config.*head_hidden"):
        train(tiny_config(head_hidden=32), data, str(tmp_path), resume=True, progress=False,
              log=lambda *_: None)


def test_resume_without_checkpoint_names_the_path(tmp_path, data):
    with pytest.raises(FileNotFoundError, match="checkpoint.npz"):
        train(tiny_config(), data, str(tmp_path), resume=True, progress=False)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data, monkeypatch):
    real_step = train_mod.train_step

    def step(model, optimizer, dataset, cfg, it, *args):
        terms = real_step(model, optimizer, dataset, cfg, it, *args)
        if it == 4:
            terms = dict(terms, head_reg=float("nan"), total=float("nan"))
        return terms

    monkeypatch.setattr(train_mod, "train_step", step)
    with pytest.raises(TrainingDiverged, match="iteration 4"):
        train(tiny_config(), data, str(tmp_path), checkpoint_every=2, progress=False)
    with np.load(tmp_path / "checkpoint.npz") as f:
        assert int(f["iteration"]) == 4            # written after iteration 3, untouched since
        assert all(np.isfinite(f[k]).all() for k in f.files if k.startswith("param/"))
    assert not (tmp_path / "model.npz").exists()


def test_a_real_nan_is_caught_before_the_weights_change(tmp_path, data):
    """Poison the weights: the loss is NaN at once and the step never updates anything."""
    model = FasterRCNN(tiny_config())
    model.head.cls.weight.data[...] = np.nan
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    with pytest.raises(TrainingDiverged, match="iteration 0.*none written yet"):
        train(tiny_config(), data, str(tmp_path), model=model, progress=False)
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, before[name], err_msg=name)   # NaN == NaN here


@pytest.mark.parametrize("signum, said, exit_code", [
    (signal.SIGINT, "interrupted", 130),              # Ctrl-C
    (signal.SIGTERM, "stopped by SIGTERM", 143),     # kill, Slurm, docker stop
], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_save_and_resume_exactly(tmp_path, data, monkeypatch, signum, said,
                                                    exit_code):
    full, run = str(tmp_path / "full"), str(tmp_path / "run")
    quiet = {"progress": False, "log": lambda *_: None, "checkpoint_every": 100}
    train(tiny_config(), data, full, **quiet)
    real_step = train_mod.train_step

    def step(model, optimizer, dataset, cfg, it, *args):
        if it == 2:
            os.kill(os.getpid(), signum)             # what Ctrl-C or kill sends, mid-iteration
        return real_step(model, optimizer, dataset, cfg, it, *args)

    def not_train(signum, frame):         # the handler train() must replace, then restore
        raise AssertionError(f"signal {signum} was not caught by train()")

    monkeypatch.setattr(train_mod, "train_step", step)
    said_lines = []
    before = {s: signal.signal(s, not_train) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(TrainingInterrupted) as e:
            train(tiny_config(), data, run, **dict(quiet, log=said_lines.append))
        assert {s: signal.getsignal(s) for s in before} == {s: not_train for s in before}
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    assert e.value.exit_code == exit_code
    assert said_lines[-1].strip() == (f"{said}: saved {run}/checkpoint.npz at iteration 3; "
                                      "continue with the same command and --resume")
    assert not os.path.exists(os.path.join(run, ".lock"))
    with np.load(os.path.join(run, "checkpoint.npz")) as f:
        assert int(f["iteration"]) == 3               # iteration 2 finished, then saved
    monkeypatch.setattr(train_mod, "train_step", real_step)
    done = record_iterations(monkeypatch)
    train(tiny_config(), data, run, resume=True, **quiet)
    assert done == [3, 4, 5]
    assert losses(run) == losses(full)


def train_command(run_dir, *more):
    """The argv of a small `python -m minifrcnn train` into run_dir."""
    return ["train", "--out", str(run_dir), "--train-images", "4", "--min-size", "48",
            "--no-eval", "--no-progress", *more]


def test_sigterm_to_the_command_line_saves_says_so_and_exits_143(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "minifrcnn",
                             *train_command(run_dir, "--iters", "1000", "--checkpoint-every", "1")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run_dir / "checkpoint.npz").exists():   # it is training: send what kill sends
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert err == ""                                          # no traceback
    iteration = len(read_log(run_dir / "losses.jsonl"))
    assert out.splitlines()[-1] == (f"stopped by SIGTERM: saved {run_dir}/checkpoint.npz at "
                                    f"iteration {iteration}; continue with the same command "
                                    "and --resume")
    with np.load(run_dir / "checkpoint.npz") as f:
        assert int(f["iteration"]) == iteration            # every logged iteration is saved
    assert not (run_dir / ".lock").exists()


def test_empty_training_set(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        train(tiny_config(), [], str(tmp_path), progress=False)


def test_difficult_objects_are_left_out_of_training():
    sample = {"image": np.zeros((48, 48, 3), np.uint8),
              "boxes": np.array([[1, 1, 20, 20], [5, 5, 30, 30]], np.float32),
              "labels": np.array([1, 2]), "difficult": np.array([False, True])}
    _, _, boxes, labels, _ = prepare_batch([sample], tiny_config(flip=False),
                                                     np.random.default_rng(0))
    assert labels[0].tolist() == [1] and boxes[0].shape == (1, 4)
    json.dumps(tiny_config().to_dict())   # the config must stay JSON-serialisable


def test_a_checkpoint_with_an_unknown_config_field_is_named(tmp_path, data):
    from minifrcnn.npz import read_npz, write_npz
    train(tiny_config(iters=1), data, str(tmp_path), progress=False, log=lambda *_: None)
    arrays = read_npz(tmp_path / "checkpoint.npz", "checkpoint")
    cfg = json.loads(str(arrays["config_json"]))
    arrays["config_json"] = np.array(json.dumps(dict(cfg, no_such_field=1)))
    write_npz(str(tmp_path / "checkpoint.npz"), arrays)
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoint\.npz: its config cannot be read.*no_such_field"):
        train(tiny_config(iters=2), data, str(tmp_path), resume=True, progress=False,
              log=lambda *_: None)


# --- one run per folder -------------------------------------------------------------------------

def hold_the_lock_in_another_process(run_dir):
    """A real second process holding run_dir's lock until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom minifrcnn.run_folder import run_folder_lock\n"
         "with run_folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()",
         str(run_dir)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def test_a_second_run_into_a_locked_folder_refuses_naming_the_lock_and_the_process(
        tmp_path, data, capsys):
    run_dir = tmp_path / "run"
    train(tiny_config(iters=1), data, str(run_dir), **QUIET)         # an earlier run to keep
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    holder = hold_the_lock_in_another_process(run_dir)
    try:
        where = f"process {holder.pid} on {socket.gethostname()}; lock file {run_dir}/.lock"
        with pytest.raises(RunFolderLocked, match=f"another training run.*{where}"):
            train(tiny_config(iters=1), data, str(run_dir), **QUIET)
        # the command line takes the lock before --overwrite deletes anything
        code = main(train_command(run_dir, "--iters", "1", "--overwrite"))
        _, err = capsys.readouterr()
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert where in err
        assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != ".lock"} == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert not (run_dir / ".lock").exists()                          # the holder removed it
    train(tiny_config(iters=1), data, str(run_dir), **QUIET)         # and the folder is free


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path, data):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()                                       # a pid that no longer runs on this host
    (tmp_path / ".lock").write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname()}))
    said = []
    train(tiny_config(iters=1), data, str(tmp_path), progress=False, log=said.append)
    assert said[0] == (f"note: {tmp_path}/.lock: taking over the lock of process {gone.pid} on "
                       f"{socket.gethostname()}, which no longer runs")
    assert not (tmp_path / ".lock").exists()


def test_a_lock_that_cannot_be_checked_is_refused_with_how_to_clear_it(tmp_path, data):
    lock = tmp_path / ".lock"
    lock.write_text(json.dumps({"pid": 1, "host": "another-machine"}))
    with pytest.raises(RunFolderLocked, match=rf"process 1 on another-machine.*"
                                              rf"if that run has ended, delete {lock}$"):
        train(tiny_config(iters=1), data, str(tmp_path), **QUIET)
    lock.write_text("")
    with pytest.raises(RunFolderLocked, match="unknown process: the lock file is empty"):
        train(tiny_config(iters=1), data, str(tmp_path), **QUIET)
    assert lock.read_text() == ""                      # another's lock is never removed


def test_the_lock_is_reentrant_and_removed_however_the_run_ends(tmp_path, data, monkeypatch):
    lock = tmp_path / ".lock"
    with run_folder_lock(str(tmp_path)):
        assert json.loads(lock.read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
        train(tiny_config(iters=1), data, str(tmp_path), **QUIET)    # the same process: allowed
        assert lock.exists()                                          # still the outer one's
    assert not lock.exists()

    def failing_step(*args):
        raise TrainingDiverged("a failing run")

    monkeypatch.setattr(train_mod, "train_step", failing_step)
    with pytest.raises(TrainingDiverged):
        train(tiny_config(iters=1), data, str(tmp_path), **QUIET)
    assert not lock.exists()


# --- a torn loss log ----------------------------------------------------------------------------

TORN = '{"iter": 5, "lr": 0.01, "rpn_cls": 0.69'      # a line cut short by a kill


def test_resume_drops_a_torn_last_line_and_the_lines_past_the_checkpoint(tmp_path, data):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    train(tiny_config(), data, full, checkpoint_every=100, **QUIET)
    train(tiny_config(iters=3), data, part, checkpoint_every=100, **QUIET)   # checkpoint at 3
    log_path = os.path.join(part, "losses.jsonl")
    with open(log_path, "a") as f:                   # then iterations 3 and 4 logged, 5 torn
        f.write(json.dumps({"iter": 3, "total": 1.0}) + "\n" + json.dumps({"iter": 4}) + "\n" + TORN)
    said = []
    train(tiny_config(), data, part, resume=True, checkpoint_every=100, progress=False,
          log=said.append)
    assert said[0] == (f"note: {log_path}: dropped 2 lines of iterations >= 3 and the torn last "
                       "line 6 (a write cut short); training goes on from the checkpoint at "
                       "iteration 3")
    assert losses(part) == losses(full)


def test_a_damaged_line_before_the_last_is_refused_naming_the_file_and_line(tmp_path, data):
    train(tiny_config(iters=3), data, str(tmp_path), **QUIET)
    log_path = tmp_path / "losses.jsonl"
    lines = log_path.read_text().splitlines(keepends=True)
    log_path.write_text(lines[0] + TORN + "\n" + lines[2])
    message = rf"{log_path} line 2: damaged, not a loss record \('{{\"iter\": 5, .*\); repair or delete that line$"
    with pytest.raises(ValueError, match=message):
        train(tiny_config(), data, str(tmp_path), resume=True, **QUIET)
    with pytest.raises(ValueError, match=message):
        read_log(log_path)
    log_path.write_text(lines[0] + lines[1] + TORN)
    with pytest.raises(ValueError, match=rf"{log_path} line 3: damaged"):
        read_log(log_path)                           # outside a resume, a torn end is named too


# --- a full disk --------------------------------------------------------------------------------

def test_a_full_disk_at_a_checkpoint_names_it_and_keeps_the_last_one(tmp_path, data, monkeypatch,
                                                                      capsys):
    real_savez, saves = np.savez, []

    def savez(f, **arrays):
        saves.append(int(arrays.get("iteration", -1)))      # -1: model.npz
        if saves[-1] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_savez(f, **arrays)

    monkeypatch.setattr(np, "savez", savez)
    run_dir = tmp_path / "run"
    code = main(train_command(run_dir, "--iters", "4", "--checkpoint-every", "1"))
    _, err = capsys.readouterr()
    assert code == 2
    assert err == (f"error: cannot write {run_dir}/checkpoint.npz: No space left on device; "
                   "the previous checkpoint.npz is untouched\n")
    with np.load(run_dir / "checkpoint.npz") as f:
        assert int(f["iteration"]) == 1                            # the last good one, whole
    assert sorted(os.listdir(run_dir)) == ["checkpoint.npz", "losses.jsonl"]   # no .tmp, no lock


def test_no_flip_trains_without_flips_and_a_resume_must_say_it_again(tmp_path, capsys):
    """--no-flip sets the config's flip to False (the model remembers it); a --resume of that
    run without --no-flip is another config: refused in one line naming the field."""
    from minifrcnn.model import FasterRCNN
    flipped, unflipped = tmp_path / "flip", tmp_path / "noflip"
    assert main(train_command(flipped, "--iters", "1")) == 0
    assert main(train_command(unflipped, "--iters", "2", "--checkpoint-every", "1",
                              "--no-flip")) == 0
    assert FasterRCNN.load(str(flipped / "model.npz")).cfg.flip is True
    assert FasterRCNN.load(str(unflipped / "model.npz")).cfg.flip is False
    capsys.readouterr()
    assert main(train_command(unflipped, "--iters", "3", "--resume")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "flip" in err and len(err.splitlines()) == 1


def test_the_feature_gradient_script_measures_a_normal_training(tmp_path):
    """scripts/feature_grad_norms.py (docs/time-to-accuracy: which loss drives the shared
    features) writes one row per iteration and trains exactly as `train --processes 1` does
    (the script measures inside this one process)."""
    normal, measured, norms = tmp_path / "normal", tmp_path / "measured", tmp_path / "norms.csv"
    assert main(train_command(normal, "--iters", "3", "--processes", "1")) == 0
    subprocess.run([sys.executable, os.path.join(REPO, "scripts", "feature_grad_norms.py"),
                    str(norms), *train_command(measured, "--iters", "3")[1:]],
                   cwd=REPO, check=True, capture_output=True)
    rows = norms.read_text().splitlines()
    assert rows[0] == "iteration,norm_rpn,norm_head,meanabs_rpn,meanabs_head" and len(rows) == 4
    assert all(float(v) > 0 for row in rows[1:] for v in row.split(",")[1:])
    assert losses(measured) == losses(normal)
