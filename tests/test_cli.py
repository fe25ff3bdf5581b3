"""The command line: every user mistake is one line naming the file, image or argument, exit 2."""
import json
import os

import numpy as np
import pytest

from minifrcnn import backend
from minifrcnn.__main__ import main
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


def one_line_error(code, err, *names):
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for name in names:
        assert name in err, (name, err)


def test_damaged_checkpoints_are_one_line_naming_the_file(capsys, checkpoint, tmp_path):
    data = open(checkpoint, "rb").read()
    (tmp_path / "cut.npz").write_bytes(data[:2000])
    (tmp_path / "zero.npz").write_bytes(b"")
    for name in ("cut.npz", "zero.npz"):
        path = str(tmp_path / name)
        one_line_error(*run(capsys, "evaluate", "--checkpoint", path)[::2], name)
        one_line_error(*run(capsys, "detect", "--checkpoint", path, path, "--out",
                            str(tmp_path / "o"))[::2], name)


def test_bad_numbers_are_refused_by_the_parser(capsys):
    for argv in (["train", "--out", "r", "--iters", "0"],
                 ["train", "--out", "r", "--checkpoint-every", "0"],
                 ["train", "--out", "r", "--min-size", "-10"],
                 ["train", "--out", "r", "--scheme", "alternating", "--step-iters", "1", "0", "1", "1"],
                 ["bench", "--repeat", "0"],
                 ["pretrain", "--out", "w.npz", "--iters", "0"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert "expected a positive integer" in capsys.readouterr().err


def test_train_does_not_overwrite_an_earlier_run(capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "losses.jsonl").write_text('{"iter": 0}\n')
    code, _, err = run(capsys, "train", "--out", str(run_dir), "--iters", "1", "--no-eval",
                       "--train-images", "2", "--no-progress")
    one_line_error(code, err, "--out", "already holds a training run", "--resume", "--overwrite")
    assert (run_dir / "losses.jsonl").read_text() == '{"iter": 0}\n'
    code, _, err = run(capsys, "train", "--out", str(run_dir), "--iters", "1", "--no-eval",
                       "--train-images", "2", "--no-progress", "--overwrite")
    assert code == 0, err
    assert [json.loads(line)["iter"] for line in open(run_dir / "losses.jsonl")] == [0]
    assert "lr" in json.loads((run_dir / "losses.jsonl").read_text())
    FasterRCNN.load(str(run_dir / "model.npz"))


def test_out_and_output_files_are_checked_before_any_work(capsys, checkpoint, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    one_line_error(*run(capsys, "train", "--out", str(a_file), "--iters", "1")[::2],
                   "--out", "is a file")
    one_line_error(*run(capsys, "detect", "--checkpoint", checkpoint, str(a_file),
                        "--out", str(a_file))[::2], "--out", "is a file")
    one_line_error(*run(capsys, "evaluate", "--checkpoint", checkpoint,
                        "--json", str(tmp_path))[::2], "--json", "is a folder")
    one_line_error(*run(capsys, "evaluate", "--checkpoint", checkpoint,
                        "--pr-curves", str(tmp_path / "pr.unknownext"))[::2], "--pr-curves")
    one_line_error(*run(capsys, "evaluate", "--checkpoint", checkpoint,
                        "--json", str(tmp_path / "no" / "such" / "e.json"))[::2], "--json")
    assert a_file.read_text() == "keep me"


def test_detect_never_overwrites_an_input_image(capsys, checkpoint, tmp_path):
    from PIL import Image
    img = shapes.make_split("x", 1, size=64)[0]["image"]
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        Image.fromarray(img).save(tmp_path / folder / "a.png")
    before = (tmp_path / "one" / "a.png").read_bytes()
    one_line_error(*run(capsys, "detect", "--checkpoint", checkpoint, str(tmp_path / "one" / "a.png"),
                        "--out", str(tmp_path / "one"))[::2], "would overwrite the input image")
    assert (tmp_path / "one" / "a.png").read_bytes() == before
    one_line_error(*run(capsys, "detect", "--checkpoint", checkpoint, str(tmp_path / "one" / "a.png"),
                        str(tmp_path / "two" / "a.png"), "--out", str(tmp_path / "d"))[::2],
                   "would both be drawn to")
    assert not (tmp_path / "d").exists()


def test_an_image_too_small_for_the_model_is_named(capsys, checkpoint, tmp_path):
    from PIL import Image
    Image.fromarray(np.zeros((1, 1, 3), dtype=np.uint8)).save(tmp_path / "dot.png")
    one_line_error(*run(capsys, "detect", "--checkpoint", checkpoint, str(tmp_path / "dot.png"),
                        "--out", str(tmp_path / "o"))[::2], "dot.png", "too small")


def test_a_data_dir_is_never_ignored(capsys, checkpoint, voc_dir, tmp_path):
    one_line_error(*run(capsys, "train", "--out", str(tmp_path / "r"), "--data-dir",
                        str(tmp_path / "nowhere"))[::2], "--data-dir", "nowhere")
    one_line_error(*run(capsys, "evaluate", "--checkpoint", checkpoint, "--dataset", "shapes",
                        "--data-dir", voc_dir, "--split", "val")[::2], "val.txt", "splits there")
    one_line_error(*run(capsys, "evaluate", "--checkpoint", checkpoint, "--dataset", "voc")[::2],
                   "--data-dir")


def test_bench_names_an_unknown_group(capsys):
    one_line_error(*run(capsys, "bench", "--only", "nonexistent")[::2], "nonexistent", "conv")


def test_overwrite_also_clears_the_steps_of_alternating_training(capsys, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "step1").mkdir(parents=True)
    (run_dir / "step1" / "model.npz").write_bytes(b"an earlier run's step")
    code, _, err = run(capsys, "train", "--out", str(run_dir), "--iters", "1", "--no-eval",
                       "--train-images", "2", "--no-progress", "--overwrite")
    assert code == 0, err
    assert not (run_dir / "step1").exists()


def test_pretrain_checks_its_out_before_training(capsys, tmp_path):
    one_line_error(*run(capsys, "pretrain", "--out", str(tmp_path))[::2], "--out", "is a folder")
    one_line_error(*run(capsys, "pretrain", "--out", str(tmp_path / "no" / "w.npz"))[::2],
                   "--out", "does not exist")


def test_bench_only_needs_a_group(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--only"])


def test_eval_json_is_strict_json(capsys, checkpoint, tmp_path):
    """A class without ground truth has AP NaN: written as null, which every JSON reader takes."""
    from minifrcnn.__main__ import _evaluate_and_print
    samples = shapes.make_split("test", 10, size=64)
    for s in samples:                                    # only class 1 keeps its objects
        keep = s["labels"] == 1
        s["boxes"], s["labels"] = s["boxes"][keep], s["labels"][keep]
        s.pop("difficult", None)
    out_json = tmp_path / "e.json"
    _evaluate_and_print(FasterRCNN.load(checkpoint), samples, shapes.CLASS_NAMES, str(out_json))
    ap = json.loads(out_json.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))["ap"]
    assert ap[shapes.CLASS_NAMES[1]] is None and ap[shapes.CLASS_NAMES[0]] is not None
    # and with no ground truth at all, the mAPs themselves are null
    for s in samples:
        s["boxes"], s["labels"] = s["boxes"][:0], s["labels"][:0]
    _evaluate_and_print(FasterRCNN.load(checkpoint), samples, shapes.CLASS_NAMES, str(out_json))
    assert json.loads(out_json.read_text())["map"] is None
