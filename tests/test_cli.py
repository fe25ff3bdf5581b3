"""The command line: every user mistake is one line naming the file, image or argument, exit 2."""
import csv
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


# --- users' own data (issue 16): every split checked before training, nothing silently wrong ---
TRAIN = ("--iters", "1", "--no-progress")


def voc_folder(root, train=6, test=4, train_without=None, test_without=None, classes_txt=True):
    """A VOC folder of 64 px shapes images; *_without: a class name no object of that split has."""
    def split(name, n, without):
        samples = shapes.make_split(name, n, size=64)
        for s in samples:
            keep = np.array([shapes.CLASS_NAMES[k - 1] != without for k in s["labels"]], dtype=bool)
            s["boxes"], s["labels"], s["difficult"] = s["boxes"][keep], s["labels"][keep], None
        shapes.write_voc(samples, str(root), name)
    split("train", train, train_without)
    split("test", test, test_without)
    if not classes_txt:
        os.remove(os.path.join(root, "classes.txt"))
    return str(root)


def split_ids(root, split):
    return open(os.path.join(root, "ImageSets", "Main", f"{split}.txt")).read().split()


def edit_xml(root, image_id, pattern, new):
    """Replace the first match of the regular expression `pattern` in Annotations/<id>.xml."""
    import re
    path = os.path.join(root, "Annotations", f"{image_id}.xml")
    text, n = re.subn(pattern, new, open(path).read(), count=1, flags=re.S)
    assert n == 1, pattern
    open(path, "w").write(text)


def nothing_trained(run_dir):
    return not any(os.path.exists(os.path.join(run_dir, f)) for f in ("losses.jsonl", "model.npz"))


def test_the_test_split_is_numbered_by_the_training_classes(capsys, tmp_path):
    """No classes.txt and no --dataset voc, a test split without stars: label k of the test split
    is still the training split's class k, in train and in evaluate."""
    root = voc_folder(tmp_path / "voc", train=12, test_without="star", classes_txt=False)
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, "train", "--data-dir", root, "--out", str(run_dir), *TRAIN)
    assert code == 0, err
    ap = json.load(open(run_dir / "eval.json"))["ap"]
    assert ap["star"] is None and ap["triangle"] is not None      # no star in the test split
    code, _, err = run(capsys, "evaluate", "--checkpoint", str(run_dir / "model.npz"),
                       "--data-dir", root, "--json", str(tmp_path / "e.json"))
    assert code == 0, err
    assert json.load(open(tmp_path / "e.json"))["ap"] == ap


def test_problems_in_the_test_split_stop_the_run_before_training(capsys, tmp_path):
    root = voc_folder(tmp_path / "stars", test=6, train_without="star", classes_txt=False)
    one_line_error(*run(capsys, "train", "--data-dir", root, "--out", str(tmp_path / "r1"),
                        *TRAIN)[::2], "Annotations", "unknown class name 'star', not one of "
                   "the classes given (by the command line: the training split's")
    assert nothing_trained(tmp_path / "r1")
    root = voc_folder(tmp_path / "unreadable")
    first = split_ids(root, "test")[0]
    open(os.path.join(root, "JPEGImages", f"{first}.png"), "wb").write(b"not a png")
    one_line_error(*run(capsys, "train", "--data-dir", root, "--out", str(tmp_path / "r2"),
                        *TRAIN)[::2], f"{first}.png", "cannot read it")
    assert nothing_trained(tmp_path / "r2")


@pytest.mark.parametrize("split", ["train", "test"])
def test_images_too_small_for_the_backbone_are_named_before_training(capsys, checkpoint, tmp_path,
                                                                      split):
    from PIL import Image
    root = voc_folder(tmp_path / "voc")
    tiny = split_ids(root, split)[-1]                  # not the first batch's
    Image.new("RGB", (3, 3)).save(os.path.join(root, "JPEGImages", f"{tiny}.png"))
    edit_xml(root, tiny, r"<width>64</width>\s*<height>64</height>", "<width>3</width><height>3</height>")
    edit_xml(root, tiny, r"<object>.*</object>", "")                 # its objects go
    one_line_error(*run(capsys, "train", "--data-dir", root, "--out", str(tmp_path / "r"),
                        *TRAIN)[::2], f"{tiny}.png", "3x3 px is too small", "at least 4 px")
    assert nothing_trained(tmp_path / "r")
    one_line_error(*run(capsys, "evaluate", "--checkpoint", checkpoint, "--data-dir", root,
                        "--split", split)[::2], f"{tiny}.png", "3x3 px is too small")


def test_clip_boxes_flag_for_boxes_past_the_image(capsys, tmp_path):
    root = voc_folder(tmp_path / "voc")
    image_id = next(i for i in split_ids(root, "train")
                    if "<object>" in open(os.path.join(root, "Annotations", f"{i}.xml")).read())
    edit_xml(root, image_id, r"<xmax>\d+</xmax>", "<xmax>70</xmax>")        # past the 64 px image
    one_line_error(*run(capsys, "train", "--data-dir", root, "--out", str(tmp_path / "r"),
                        *TRAIN)[::2], f"{image_id}.xml", "object 0", "correct this object in the xml",
                   "--clip-boxes")
    code, _, err = run(capsys, "train", "--data-dir", root, "--out", str(tmp_path / "r"),
                       "--clip-boxes", "--no-eval", *TRAIN)
    assert code == 0, err
    model = str(tmp_path / "r" / "model.npz")
    one_line_error(*run(capsys, "evaluate", "--checkpoint", model, "--data-dir", root,
                        "--split", "train")[::2], f"{image_id}.xml", "--clip-boxes")
    code, _, err = run(capsys, "evaluate", "--checkpoint", model, "--data-dir", root,
                       "--split", "train", "--clip-boxes")
    assert code == 0, err


def test_overwrite_removes_the_old_evaluation_and_curves(capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for f in ("eval.json", "pr_curves.png", "loss_curve.png"):
        (run_dir / f).write_text("an earlier run's")
    one_line_error(*run(capsys, "train", "--out", str(run_dir), "--no-eval", "--train-images", "2",
                        *TRAIN)[::2], "already holds a training run", "eval.json")
    code, _, err = run(capsys, "train", "--out", str(run_dir), "--overwrite", "--no-eval",
                       "--train-images", "2", *TRAIN)
    assert code == 0, err
    assert not (run_dir / "eval.json").exists() and not (run_dir / "pr_curves.png").exists()
    assert (run_dir / "loss_curve.png").read_bytes().startswith(b"\x89PNG")      # the new one


def test_score_threshold_is_a_number_from_0_to_1(capsys, checkpoint, tmp_path):
    for value in ("nan", "-0.1", "1.5", "half", "inf"):
        with pytest.raises(SystemExit) as e:
            main(["detect", "--checkpoint", checkpoint, "a.png", "--out", str(tmp_path),
                  "--score-threshold", value])
        assert e.value.code == 2
        assert f"--score-threshold: expected a number from 0 to 1, got '{value}'" in capsys.readouterr().err


def test_a_repeated_id_in_a_split_file_is_refused(capsys, tmp_path):
    root = voc_folder(tmp_path / "voc")
    first = split_ids(root, "train")[0]
    with open(os.path.join(root, "ImageSets", "Main", "train.txt"), "a") as f:
        f.write(first + "\n")
    one_line_error(*run(capsys, "train", "--data-dir", root, "--out", str(tmp_path / "r"),
                        *TRAIN)[::2], "train.txt", f"image id '{first}' twice", "lines 1 and 7")
    assert nothing_trained(tmp_path / "r")


def test_make_shapes_refuses_a_folder_that_is_not_empty(capsys, tmp_path):
    out = tmp_path / "shapes"
    train_txt = out / "ImageSets" / "Main" / "train.txt"
    small = ("--train-images", "4", "--test-images", "2")
    assert run(capsys, "make-shapes", "--out", str(out), *small)[0] == 0
    before = train_txt.read_text()
    one_line_error(*run(capsys, "make-shapes", "--out", str(out), "--train-images", "3",
                        "--test-images", "2")[::2], "--out", "is not empty", "--overwrite")
    assert train_txt.read_text() == before
    code, _, err = run(capsys, "make-shapes", "--out", str(out), "--train-images", "3",
                       "--test-images", "2", "--overwrite")
    assert code == 0, err
    assert len(train_txt.read_text().split()) == 3


def test_voc_protocol_splits_and_a_vocdevkit_folder(capsys, tmp_path):
    devkit = tmp_path / "VOCdevkit"
    root = voc_folder(devkit / "VOC2007")
    main_dir = os.path.join(root, "ImageSets", "Main")
    os.rename(os.path.join(main_dir, "train.txt"), os.path.join(main_dir, "trainval.txt"))
    run_dir = str(tmp_path / "run")
    code, out, err = run(capsys, "train", "--data-dir", str(devkit), "--out", run_dir, *TRAIN)
    assert code == 0, err
    assert f"images of split 'trainval' of {root} (test split 'test')" in out
    open(os.path.join(main_dir, "val.txt"), "w").write("".join(
        i + "\n" for i in split_ids(root, "test")[:2]))
    code, out, err = run(capsys, "train", "--data-dir", root, "--train-split", "val",
                         "--test-split", "val", "--out", run_dir, "--overwrite", *TRAIN)
    assert code == 0, err
    assert "training on 2 images of split 'val'" in out
    assert json.load(open(os.path.join(run_dir, "eval.json")))["num_images"] == 2
    code, _, err = run(capsys, "evaluate", "--checkpoint", os.path.join(run_dir, "model.npz"),
                       "--data-dir", str(devkit), "--split", "test", "--json", str(tmp_path / "e.json"))
    assert code == 0, err
    assert json.load(open(tmp_path / "e.json"))["num_images"] == 4
    one_line_error(*run(capsys, "train", "--data-dir", str(tmp_path), "--out", run_dir + "2",
                        *TRAIN)[::2], f"--data-dir {tmp_path}: not a VOC folder",
                   f"point --data-dir at {root}")
    one_line_error(*run(capsys, "train", "--out", run_dir + "2", "--train-split", "trainval",
                        *TRAIN)[::2], "--train-split", "only with --data-dir")


def test_eval_every_writes_the_map_curve_and_keeps_its_time_apart(capsys, tmp_path):
    """Issue 15 item 3: --eval-every N evaluates the test split every N iterations and after the
    last; map_curve.csv has one row each (mAP, training seconds without the evaluations, the
    evaluation's own seconds) and map_curve.png plots it; a resume keeps the rows before it."""
    root = voc_folder(tmp_path / "voc")
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", "--data-dir", root, "--out", str(run_dir), "--iters", "5",
                         "--eval-every", "2", "--no-progress")
    assert code == 0, err
    rows = list(csv.DictReader(open(run_dir / "map_curve.csv")))
    assert [int(r["iter"]) for r in rows] == [2, 4, 5]
    seconds = [float(r["train_seconds"]) for r in rows]
    assert 0 < seconds[0] < seconds[1] < seconds[2]
    assert all(float(r["eval_seconds"]) > 0 and 0 <= float(r["map50"]) <= 1 for r in rows)
    assert (run_dir / "map_curve.png").read_bytes().startswith(b"\x89PNG")
    logged = [json.loads(line)["train_seconds"] for line in open(run_dir / "losses.jsonl")]
    assert logged == sorted(logged) and f"trained in {logged[-1]:.1f} s (the evaluations" in out
    # a longer run resumed from the checkpoint at 5 keeps the rows up to 5 and goes on counting
    code, _, err = run(capsys, "train", "--data-dir", root, "--out", str(run_dir), "--iters", "6",
                       "--eval-every", "2", "--no-progress", "--resume")
    assert code == 0, err
    again = list(csv.DictReader(open(run_dir / "map_curve.csv")))
    assert again[:3] == rows and [int(r["iter"]) for r in again] == [2, 4, 5, 6]
    assert float(again[3]["train_seconds"]) > seconds[2]
    one_line_error(*run(capsys, "train", "--data-dir", root, "--out", str(tmp_path / "r2"),
                        "--eval-every", "2", "--no-eval", *TRAIN)[::2], "--eval-every", "--no-eval")


def test_a_resumed_run_without_evaluation_drops_the_old_one(capsys, tmp_path):
    """eval.json and pr_curves.png describe the model a run ended with: training it further
    with --no-eval must not leave them beside the new model."""
    root = voc_folder(tmp_path / "voc")
    run_dir = tmp_path / "run"
    assert run(capsys, "train", "--data-dir", root, "--out", str(run_dir), *TRAIN)[0] == 0
    assert (run_dir / "eval.json").exists()
    code, _, err = run(capsys, "train", "--data-dir", root, "--out", str(run_dir), "--iters", "2",
                       "--no-progress", "--resume", "--no-eval")
    assert code == 0, err
    assert not (run_dir / "eval.json").exists() and not (run_dir / "pr_curves.png").exists()


def test_a_second_train_into_a_busy_folder_is_told_about_the_lock_first(capsys, tmp_path):
    """The folder is locked before anything is looked at: a second command into a folder that
    a live run holds names the lock and the process (not 'already holds a run', whose advice,
    --resume or --overwrite, would only meet the lock), and it can never pass that check
    while the first run is still writing."""
    import subprocess
    import sys
    root = voc_folder(tmp_path / "voc")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "losses.jsonl").write_text("")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom minifrcnn.run_folder import run_folder_lock\n"
         "with run_folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()",
         str(run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        one_line_error(*run(capsys, "train", "--data-dir", root, "--out", str(run_dir), "--overwrite",
                            *TRAIN)[::2], "another training run", ".lock", f"process {holder.pid}")
        assert (run_dir / "losses.jsonl").exists()               # --overwrite deleted nothing
    finally:
        holder.communicate("")


def test_a_folder_without_the_test_split_says_which_flag_picks_one(capsys, tmp_path):
    """A VOC2012-style folder (train and val, no test): the line lists the splits there and
    says which flag chooses one (train: --test-split or --no-eval; evaluate: --split)."""
    root = voc_folder(tmp_path / "voc")
    main_dir = os.path.join(root, "ImageSets", "Main")
    os.rename(os.path.join(main_dir, "test.txt"), os.path.join(main_dir, "val.txt"))
    one_line_error(*run(capsys, "train", "--data-dir", root, "--out", str(tmp_path / "run"),
                        *TRAIN)[::2], "no split file", "splits there: train, val", "--test-split",
                   "--no-eval")
    assert not (tmp_path / "run").exists()              # nothing was made for a run that failed
    ckpt = str(tmp_path / "m.npz")
    FasterRCNN(Config.small(num_classes=4, class_names=shapes.CLASS_NAMES)).save(ckpt)
    one_line_error(*run(capsys, "evaluate", "--checkpoint", ckpt, "--data-dir", root)[::2],
                   "no split file", "--split")


def test_split_and_class_files_saved_with_a_byte_order_mark_are_read(capsys, tmp_path):
    """Windows editors start a UTF-8 text file with a byte-order mark: it is no part of the
    first id or class name."""
    root = voc_folder(tmp_path / "voc")
    for name in ("classes.txt", os.path.join("ImageSets", "Main", "train.txt")):
        path = os.path.join(root, name)
        text = open(path, encoding="utf-8").read()
        open(path, "w", encoding="utf-8-sig").write(text)
    code, _, err = run(capsys, "train", "--data-dir", root, "--out", str(tmp_path / "run"), *TRAIN)
    assert code == 0, err


def test_train_starts_from_the_shipped_backbone_unless_told_none(capsys, tmp_path, monkeypatch):
    """The command's default detector starts its backbone from data/small4_backbone.npz (the
    paper's ImageNet start, in miniature) and trains ITERS_FROM_PRETRAINED iterations;
    --backbone-weights none starts every weight at random and trains the preset's 3000."""
    from minifrcnn import train as train_module
    from minifrcnn.backbones import PRETRAINED
    from minifrcnn.config import ITERS_FROM_PRETRAINED, LR_STEP_AT
    from minifrcnn.npz import read_npz
    shipped = read_npz(PRETRAINED["small4"], "backbone weights")
    seen = {}

    def fake_train(cfg, samples, out_dir, model=None, **kwargs):     # records, trains nothing
        seen["cfg"], seen["model"] = cfg, model
        return model if model is not None else FasterRCNN(cfg)
    monkeypatch.setattr(train_module, "train", fake_train)
    root = voc_folder(tmp_path / "voc")
    code, out, err = run(capsys, "train", "--data-dir", root, "--out", str(tmp_path / "a"),
                         "--no-eval", "--no-progress")
    assert code == 0, err
    assert seen["cfg"].iters == ITERS_FROM_PRETRAINED
    assert seen["cfg"].lr_steps == (int(ITERS_FROM_PRETRAINED * LR_STEP_AT),)
    state = seen["model"].backbone.state_dict()
    assert set(state) == set(shipped)
    assert all(np.array_equal(state[k], shipped[k]) for k in shipped)
    assert "small4_backbone.npz" in out
    code, out, err = run(capsys, "train", "--data-dir", root, "--out", str(tmp_path / "b"),
                         "--no-eval", "--no-progress", "--backbone-weights", "none")
    assert code == 0, err
    assert seen["model"] is None and seen["cfg"].iters == Config.small().iters == 3000
    assert "from scratch" in out
    # --iters wins over both defaults
    run(capsys, "train", "--data-dir", root, "--out", str(tmp_path / "c"), "--no-eval",
        "--no-progress", "--iters", "7")
    assert seen["cfg"].iters == 7 and seen["model"] is not None
    # a missing shipped file is one line naming it
    monkeypatch.setitem(PRETRAINED, "small4", str(tmp_path / "gone.npz"))
    one_line_error(*run(capsys, "train", "--data-dir", root, "--out", str(tmp_path / "d"),
                        "--no-eval", "--no-progress")[::2], "gone.npz", "--backbone-weights none")
    # resuming needs the flags the run started with: a run from random weights says so
    monkeypatch.undo()                                             # the real train() from here
    code, _, err = run(capsys, "train", "--data-dir", root, "--out", str(tmp_path / "e"),
                       "--no-eval", "--no-progress", "--backbone-weights", "none", "--iters", "2")
    assert code == 0, err
    one_line_error(*run(capsys, "train", "--data-dir", root, "--out", str(tmp_path / "e"),
                        "--no-eval", "--no-progress", "--resume")[::2],
                   "lr_steps", "the flags the run was started with")
