"""experiments.py: every experiment's runner produces its table, JSON and plot (tiny settings)."""
import json
import os

import pytest

from minifrcnn.paper import experiments
from minifrcnn.paper.experiments import NAMES, run_experiment


# A tiny model so that each runner finishes in seconds; the runner's logic is unchanged.
TINY = {"backbone": "tiny", "head_hidden": 16, "roi_output_size": 3, "rpn_batch_size": 32,
        "roi_batch_size": 16}


@pytest.fixture(scope="module")
def tiny_start(tmp_path_factory):
    """Weights for the tiny backbone: the start the experiments load (the shipped one is small4's)."""
    import numpy as np
    from minifrcnn.backbones import build_backbone
    path = str(tmp_path_factory.mktemp("start") / "tiny_backbone.npz")
    np.savez(path, **build_backbone("tiny", np.random.default_rng(7)).state_dict())
    return path


@pytest.mark.parametrize("name", NAMES)
def test_runner_writes_its_table(name, tmp_path, tiny_start):
    result = run_experiment(name, str(tmp_path), seeds=1, iters=2, train_images=6,
                            test_images=4, log=lambda *_: None, config_changes=TINY,
                            backbone_weights=tiny_start)
    assert result["start"] == "tiny_backbone.npz"
    labels = [s["variant"] for s in result["summary"]]
    assert len(labels) == len(experiments._variants(name)) and len(set(labels)) == len(labels)
    for s in result["summary"]:
        assert 0.0 <= s["map_mean"] <= 1.0 and s["n"] == 1
    table = open(tmp_path / f"{name}.md").read()
    assert all(label in table for label in labels)
    assert json.load(open(tmp_path / f"{name}.json"))["experiment"] == name
    assert os.path.getsize(tmp_path / f"{name}.png") > 1000


def test_unknown_experiment():
    with pytest.raises(ValueError, match="experiment 'nope'"):
        run_experiment("nope", "/tmp/unused")


def test_a_stopped_experiment_keeps_the_finished_runs(tmp_path, monkeypatch):
    """The second variant diverges: the first one's result is on disk, in name.partial.json."""
    from minifrcnn.train import TrainingDiverged
    real, calls = experiments._train_variant, []

    def train_variant(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise TrainingDiverged("loss became nan at iteration 1")
        return real(*args, **kwargs)

    monkeypatch.setattr(experiments, "_train_variant", train_variant)
    with pytest.raises(TrainingDiverged):
        run_experiment("lambda", str(tmp_path), seeds=1, iters=2, train_images=6,
                       test_images=4, log=lambda *_: None, config_changes=TINY)
    partial = json.load(open(tmp_path / "lambda.partial.json"))
    assert [r["variant"] for r in partial["runs"]] == [calls[0]]
    assert not (tmp_path / "lambda.json").exists()


def test_seeds_in_worker_processes_give_every_run_in_order(tmp_path):
    """jobs=2: two spawned processes, one seed each; the results come back in seed order and
    the per-seed partial files are gone."""
    result = run_experiment("lambda", str(tmp_path), seeds=2, iters=2, train_images=6,
                            test_images=4, log=lambda *_: None, jobs=2, config_changes=TINY)
    labels = [v[0] for v in experiments._variants("lambda")]
    assert [(r["seed"], r["variant"]) for r in result["runs"]] == [(s, v) for s in (0, 1) for v in labels]
    assert all(s["n"] == 2 for s in result["summary"])
    assert sorted(os.listdir(tmp_path)) == ["lambda", "lambda.json", "lambda.md", "lambda.png"]


def test_the_command_line_does_not_replace_earlier_results(tmp_path, capsys):
    from minifrcnn.__main__ import main
    (tmp_path / "lambda.json").write_text("{}")
    assert main(["experiment", "lambda", "--out", str(tmp_path), "--quick"]) == 2
    err = capsys.readouterr().err
    assert "lambda.json" in err and "--overwrite" in err
    assert (tmp_path / "lambda.json").read_text() == "{}"


def test_every_detector_starts_from_the_experiments_start(tmp_path, tiny_start, monkeypatch):
    """The start's weights are in every variant's backbone when its training begins (random
    weights only where the variant says so), and the pretrain experiment needs a start."""
    import numpy as np
    from minifrcnn.npz import read_npz
    start = read_npz(tiny_start, "backbone weights")
    began = []
    real_train = experiments.train

    def train_and_look(cfg, data, folder, model=None, **kwargs):
        state = model.backbone.state_dict()
        began.append(all(np.array_equal(state[k], start[k]) for k in start))
        return real_train(cfg, data, folder, model=model, **kwargs)
    monkeypatch.setattr(experiments, "train", train_and_look)
    result = run_experiment("pretrain", str(tmp_path), seeds=1, iters=2, train_images=6,
                            test_images=4, log=lambda *_: None, config_changes=TINY,
                            backbone_weights=tiny_start)
    assert [r["variant"] for r in result["runs"]] == [v[0] for v in experiments._variants("pretrain")]
    assert began == [False, True, False]        # random weights; the start; this set's crops
    began.clear()
    run_experiment("lambda", str(tmp_path / "l"), seeds=1, iters=2, train_images=6,
                   test_images=4, log=lambda *_: None, config_changes=TINY,
                   backbone_weights=tiny_start)
    assert began == [True] * 4
    with pytest.raises(ValueError, match="pretrain"):
        run_experiment("pretrain", str(tmp_path / "p"), seeds=1, iters=2, log=lambda *_: None,
                       config_changes=TINY, backbone_weights="none")
