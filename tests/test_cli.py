"""The command line: every user mistake is one line naming the file, image or argument, exit 2."""
import json
import os

import numpy as np
import pytest

from minifrcnn import backend
from minifrcnn.__main__ import config_for_data, main
from minifrcnn.config import Config
from minifrcnn.data import shapes
from minifrcnn.model import FasterRCNN


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = Config.small(backbone="tiny", num_classes=4, class_names=shapes.CLASS_NAMES,
                       head_hidden=16, score_threshold=0.0)
    path = str(tmp_path_factory.mktemp("ckpt") / "model.npz")
    FasterRCNN(cfg).save(path)
    return path


@pytest.fixture(scope="module")
def voc_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("voc"))
    shapes.write_voc(shapes.make_split("train", 6, size=64), root, "train")
    shapes.write_voc(shapes.make_split("test", 4, size=64), root, "test")
    return root


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_writes_json(capsys, checkpoint, voc_dir, tmp_path):
    out_json = str(tmp_path / "eval.json")
    code, out, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--dataset", "voc",
                         "--data-dir", voc_dir, "--split", "test", "--json", out_json)
    assert code == 0, err
    result = json.load(open(out_json))
    assert set(result["ap"]) == set(shapes.CLASS_NAMES)
    assert 0.0 <= result["map"] <= 1.0 and 0.0 <= result["coco_map"] <= 1.0
    assert "mAP@0.5 (area)" in out


def test_cuda_without_gpu_is_one_line(capsys, checkpoint, monkeypatch):
    monkeypatch.setattr(backend, "_cupy_module", lambda: None)
    code, _, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--device", "cuda")
    assert code == 2
    assert err.startswith("error: argument device=cuda") and err.count("\n") == 1


def test_unreadable_image_is_named(capsys, checkpoint, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    code, _, err = run(capsys, "detect", "--checkpoint", checkpoint, str(bad), "--out",
                       str(tmp_path / "out"))
    assert code == 2 and "broken.jpg" in err
    assert not (tmp_path / "out").exists()       # nothing written before every image is read


def test_detect_draws(capsys, checkpoint, tmp_path):
    from PIL import Image
    img = shapes.make_split("x", 1, size=64)[0]["image"]
    Image.fromarray(img).save(tmp_path / "a.png")
    code, out, err = run(capsys, "detect", "--checkpoint", checkpoint, str(tmp_path / "a.png"),
                         "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert os.path.exists(tmp_path / "out" / "a.png")


def test_malformed_xml_is_named(capsys, checkpoint, voc_dir, tmp_path):
    import shutil
    root = str(tmp_path / "voc")
    shutil.copytree(voc_dir, root)
    first = open(os.path.join(root, "ImageSets", "Main", "test.txt")).readline().strip()
    with open(os.path.join(root, "Annotations", first + ".xml"), "w") as f:
        f.write("<annotation><object>")
    code, _, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--dataset", "voc",
                       "--data-dir", root, "--split", "test")
    assert code == 2 and f"{first}.xml" in err


def test_empty_split_is_named(capsys, voc_dir, tmp_path):
    import shutil
    root = str(tmp_path / "voc")
    shutil.copytree(voc_dir, root)
    open(os.path.join(root, "ImageSets", "Main", "train.txt"), "w").close()
    code, _, err = run(capsys, "train", "--dataset", "voc", "--data-dir", root, "--out",
                       str(tmp_path / "run"), "--iters", "1")
    assert code == 2 and "train.txt" in err


def test_checkpoint_for_other_classes_is_refused(capsys, voc_dir, tmp_path):
    cfg = Config.small(backbone="tiny", num_classes=2, class_names=("cat", "dog"), head_hidden=8)
    path = str(tmp_path / "other.npz")
    FasterRCNN(cfg).save(path)
    code, _, err = run(capsys, "evaluate", "--checkpoint", path, "--dataset", "voc",
                       "--data-dir", voc_dir, "--split", "test")
    assert code == 2 and "other.npz" in err and "cat" in err


def test_voc_requires_data_dir(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--dataset", "voc", "--out", str(tmp_path))
    assert code == 2 and "--data-dir" in err


def test_config_is_sized_to_the_data():
    small = [{"image": np.zeros((96, 128, 3), np.uint8)}] * 3
    cfg = config_for_data(small, ("a",))
    assert cfg.image_min_size == 96 and not cfg.allow_upscale     # no blowing up to 600 px
    assert cfg.anchor_sizes() == (12, 24, 48)                      # scaled with the image
    big = [{"image": np.zeros((480, 640, 3), np.uint8)}]
    assert config_for_data(big, ("a",)).image_min_size == 480
    assert config_for_data(big, ("a",), min_size=300).image_min_size == 300
