"""train.py: exact resume, divergence, Ctrl-C, and checkpoints made with another config."""
import json
import os
import signal

import numpy as np
import pytest

from minifrcnn import train as train_mod
from minifrcnn.config import Config
from minifrcnn.data import shapes
from minifrcnn.data.transforms import prepare_batch
from minifrcnn.model import FasterRCNN
from minifrcnn.train import CheckpointMismatch, TrainingDiverged, read_log, train


def tiny_config(**overrides):
    values = dict(backbone="tiny", num_classes=4, class_names=shapes.CLASS_NAMES, head_hidden=16,
                  roi_output_size=3, rpn_batch_size=32, roi_batch_size=16,
                  image_min_size=48, image_max_size=48,
                  rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50,
                  rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=30,
                  iters=6, lr_steps=(4,), lr=0.01)
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


def test_ctrl_c_saves_and_resumes_exactly(tmp_path, data, monkeypatch):
    full, run = str(tmp_path / "full"), str(tmp_path / "run")
    quiet = {"progress": False, "log": lambda *_: None, "checkpoint_every": 100}
    train(tiny_config(), data, full, **quiet)
    real_step = train_mod.train_step

    def step(model, optimizer, dataset, cfg, it, *args):
        if it == 2:
            os.kill(os.getpid(), signal.SIGINT)      # what Ctrl-C sends, mid-iteration
        return real_step(model, optimizer, dataset, cfg, it, *args)

    monkeypatch.setattr(train_mod, "train_step", step)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), data, run, **quiet)
    with np.load(os.path.join(run, "checkpoint.npz")) as f:
        assert int(f["iteration"]) == 3               # iteration 2 finished, then saved
    monkeypatch.setattr(train_mod, "train_step", real_step)
    done = record_iterations(monkeypatch)
    train(tiny_config(), data, run, resume=True, **quiet)
    assert done == [3, 4, 5]
    assert losses(run) == losses(full)


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
