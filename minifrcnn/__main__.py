"""Command line: python -m minifrcnn make-shapes | train | pretrain | experiment | evaluate | detect | bench | grade

    python -m minifrcnn make-shapes --out data/shapes                 # a VOC folder, train + test
    python -m minifrcnn train --dataset shapes --out runs/shapes      # trains, then prints test mAP
    python -m minifrcnn pretrain --dataset shapes --out runs/backbone.npz   # backbone as a classifier
    python -m minifrcnn evaluate --checkpoint runs/shapes/model.npz --dataset shapes --split test
    python -m minifrcnn detect --checkpoint runs/shapes/model.npz img.png --out detections/
    python -m minifrcnn bench
    python -m minifrcnn grade submissions/ --csv grades.csv          # score exercise notebooks

Every error a user can cause (a bad file, a bad flag, no GPU) ends in one line naming the
file, image or argument, and exit code 2; never a traceback.
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

from .backend import DeviceError, resolve_device
from .backbones import start_weights
from .config import ITERS_FROM_PRETRAINED, Config
from .data.voc import MissingSplit
from .train import TrainingDiverged

SHAPES_TRAIN_IMAGES = 2000
SHAPES_TEST_IMAGES = 300


# --- data sets --------------------------------------------------------------------------------
def data_root(dataset, data_dir):
    """The VOC folder that --data-dir names (or the VOC2007 of a VOCdevkit folder it names);
    None for --dataset shapes without --data-dir: the shapes data made on the fly.

    Whatever --dataset says, a --data-dir is read (never a silent fallback to other data).
    """
    from .data.voc import find_voc_root
    if dataset == "shapes" and not data_dir:
        return None
    if not data_dir:
        raise ValueError(f"--data-dir: required for --dataset {dataset}")
    if not os.path.isdir(data_dir):
        raise ValueError(f"--data-dir {data_dir}: no such folder")
    return find_voc_root(data_dir, "--data-dir")


def split_names(root, train_split=None, test_split=None):
    """(training split, test split): the ones given, else VOC2007's protocol, "trainval" (or
    "train" where the folder has no trainval.txt) and "test". The shapes data made on the fly
    (root None) has the splits "train" and "test" only."""
    from .data.voc import default_train_split
    if root is None:
        if train_split or test_split:
            raise ValueError("--train-split, --test-split: only with --data-dir (the shapes "
                             "data made on the fly has the splits train and test)")
        return "train", "test"
    return train_split or default_train_split(root), test_split or "test"


def open_split(root, split, class_names=None, clip_boxes=False, data_seed=0, num_images=None):
    """(samples, class_names) of one split, its annotations checked.

    root None: the shapes data made from data_seed, the same every time (a list of
    num_images samples, by default 2000 for "train" and 300 otherwise). Otherwise a VOCDataset
    of the VOC folder root, which reads an image when it is indexed. class_names: those of
    the training split, so that label k means the same class in every split (a class the
    training split does not have is an error naming the xml).
    """
    from .data import shapes
    from .data.voc import VOCDataset
    if root is None:
        if num_images is None:
            num_images = SHAPES_TRAIN_IMAGES if split == "train" else SHAPES_TEST_IMAGES
        return shapes.make_split(split, num_images, seed=data_seed), tuple(shapes.CLASS_NAMES)
    ds = VOCDataset(root, split, class_names=class_names, clip_boxes=clip_boxes)
    return ds, tuple(ds.class_names)


def read_samples(split, num_images=None):
    """The first num_images samples (all when None) of an open split, as a list: images read."""
    n = len(split) if num_images is None else min(num_images, len(split))
    return [split[i] for i in range(n)]


def load_split(dataset, data_dir, split, data_seed=0, num_images=None, class_names=None,
               clip_boxes=False):
    """(samples, class_names) of one split of --dataset / --data-dir, every image read."""
    samples, class_names = open_split(data_root(dataset, data_dir), split, class_names,
                                      clip_boxes, data_seed, num_images)
    return read_samples(samples, num_images), class_names


# --- argument checks ----------------------------------------------------------------------------
def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def fraction(text):
    """argparse type: a number from 0 to 1 (NaN is refused: no score compares with it)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def _check_output_file(path, flag, kinds=None):
    """Before any work: path must name a file in an existing folder, of one of `kinds` (extensions)."""
    if path is None:
        return
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path}: is a folder, expected a file name")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise ValueError(f"{flag} {path}: the folder {folder} does not exist")
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if kinds is not None and ext not in kinds:
        raise ValueError(f"{flag} {path}: expected one of the file types {', '.join(sorted(kinds))}")


def _check_output_folder(path, flag):
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path}: is a file, expected a folder")


RUN_FILES = ("model.npz", "checkpoint.npz", "losses.jsonl", "loss_curve.png", "eval.json",
             "pr_curves.png", "map_curve.csv", "map_curve.png")   # what a training run leaves
EVAL_FILES = ("eval.json", "pr_curves.png")     # the evaluation of the model a run ends with


# --- commands ---------------------------------------------------------------------------------
def cmd_make_shapes(args):
    from .data import shapes
    _check_output_folder(args.out, "--out")
    held = sorted(os.listdir(args.out)) if os.path.isdir(args.out) else []
    if held and not args.overwrite:
        raise ValueError(f"--out {args.out}: is not empty ({', '.join(held[:4])}"
                         f"{', ...' if len(held) > 4 else ''}); choose a new or empty folder, or "
                         "--overwrite to write into it (its split files and classes.txt are "
                         "replaced)")
    for split, n in (("train", args.train_images), ("test", args.test_images)):
        shapes.write_voc(shapes.make_split(split, n, seed=args.data_seed), args.out, split)
    print(f"wrote {args.train_images} train and {args.test_images} test images to {args.out}")


def open_run_splits(args):
    """What `train` reads: (training samples, the test split (None with --no-eval), the class
    names, the data's description). The splits are split_names' (--train-split, --test-split);
    the test split is numbered by the training split's classes; every annotation is checked."""
    root = data_root(args.dataset, args.data_dir)
    train_split, test_split = split_names(root, args.train_split, args.test_split)
    train_set, class_names = open_split(root, train_split, None, args.clip_boxes, args.data_seed,
                                        args.train_images)
    test_set = None
    if not args.no_eval:
        try:
            test_set = open_split(root, test_split, class_names, args.clip_boxes,
                                  args.data_seed)[0]
        except MissingSplit as e:
            raise MissingSplit(f"{e}; name the test split with --test-split, or train "
                               "without a test evaluation with --no-eval") from None
    source = (f"{args.dataset} images" if root is None else f"images of split {train_split!r} "
              f"of {root}" + ("" if args.no_eval else f" (test split {test_split!r})"))
    return read_samples(train_set, args.train_images), test_set, class_names, source


def cmd_train(args):
    from .run_folder import run_folder_lock
    device = resolve_device(args.device)
    _check_output_folder(args.out, "--out")
    if args.eval_every and args.no_eval:
        raise ValueError("--eval-every: it evaluates the test split, which --no-eval leaves "
                         "out; drop one of the two")
    # One run per folder, from the first look into it to the last file written: a second
    # command into the same --out refuses at once, naming the process that holds it (train()
    # takes the same lock again: it is re-entrant).
    with run_folder_lock(args.out):
        _train_in_locked_folder(args, device)


def _train_in_locked_folder(args, device):
    """cmd_train's work, with the run folder's lock held."""
    from .config import config_for_data
    from .data.transforms import check_images
    from .paper.alternating import STEPS
    from .train import train
    earlier = [f for f in RUN_FILES + STEPS if os.path.exists(os.path.join(args.out, f))]
    if earlier and not (args.resume or args.overwrite):
        raise ValueError(f"--out {args.out}: already holds a training run ({', '.join(earlier)}); "
                         "continue it with --resume, start it again with --overwrite, or "
                         "choose another folder")
    samples, test_set, class_names, source = open_run_splits(args)
    if not samples:
        raise ValueError(f"training split of {args.data_dir or args.dataset} is empty")
    cfg = config_for_data(samples, class_names, seed=args.seed, min_size=args.min_size,
                          max_size=args.max_size, flip=not args.no_flip)
    start = start_weights(args.backbone_weights, cfg.backbone)     # a file, or None: random
    if args.iters is not None:
        cfg = cfg.with_iters(args.iters)        # the lr step moves with it, to 80%
    elif start is not None:
        cfg = cfg.with_iters(ITERS_FROM_PRETRAINED)
    for flag, value in (("--min-size", args.min_size), ("--max-size", args.max_size)):
        if value is not None and value < cfg.feat_stride:
            raise ValueError(f"{flag} {value}: at least {cfg.feat_stride} px (the backbone's "
                             "stride: smaller images have no feature-map cell)")
    if args.max_size is not None and cfg.image_max_size < cfg.image_min_size:
        raise ValueError(f"--max-size {args.max_size}: at least the shorter side "
                         f"({cfg.image_min_size} px, --min-size or the data's)")
    check_images(samples, cfg)        # every image of every split the run uses is readable and
    check_images(test_set or (), cfg)     # big enough for the backbone, before any training
    start_model = None                          # a FasterRCNN whose backbone is loaded
    if start:                                   # (a resume then loads its checkpoint over it)
        from .backbones import load_backbone_weights
        from .model import FasterRCNN
        start_model = FasterRCNN(cfg)
        load_backbone_weights(start_model.backbone, start)
    if args.overwrite and not args.resume:             # start again: the old run's files go
        for f in RUN_FILES:
            if os.path.exists(os.path.join(args.out, f)):
                os.remove(os.path.join(args.out, f))
        for step in STEPS:                                       # alternating training's steps
            if os.path.isdir(os.path.join(args.out, step)):
                shutil.rmtree(os.path.join(args.out, step))
    processes = _training_processes(args, cfg, device)
    schedule = (f"{cfg.iters} iterations" if args.scheme == "joint" else
                f"4-step alternating training ({'/'.join(map(str, args.step_iters)) if args.step_iters else f'{cfg.iters} iterations split 2:1:2:1'})")
    print(f"training on {len(samples)} {source}, {cfg.num_classes} classes, "
          f"{schedule} of {cfg.images_per_batch} images, device {device}"
          + (f", {processes} processes (data-parallel)" if processes > 1 else "")
          + ("; resuming from the run's checkpoint" if args.resume else
             f"; backbone from {os.path.relpath(start)}" if start else
             "; every weight random (from scratch)"))
    for f in EVAL_FILES:          # they evaluated the model that this training replaces
        if os.path.exists(os.path.join(args.out, f)):
            os.remove(os.path.join(args.out, f))
    test_samples = read_samples(test_set) if args.eval_every else None   # read once, used twice
    t0 = time.time()
    if args.scheme == "alternating":
        from .paper.alternating import train_alternating
        model = train_alternating(cfg, samples, args.out, step_iters=args.step_iters,
                                  device=device, resume=args.resume,
                                  checkpoint_every=args.checkpoint_every,
                                  progress=not args.no_progress, start_model=start_model)
    else:
        model = train(cfg, samples, args.out, device=device, resume=args.resume,
                      checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
                      model=start_model, eval_every=args.eval_every, eval_set=test_samples,
                      class_names=class_names, processes=processes)
    seconds, evaluating = time.time() - t0, ""
    if args.eval_every:              # the training time without the evaluations, from the log
        from .train import read_log
        seconds = read_log(os.path.join(args.out, "losses.jsonl"))[-1]["train_seconds"]
        evaluating = (f" (the evaluations every {args.eval_every} iterations not counted: "
                      f"{os.path.join(args.out, 'map_curve.csv')}, map_curve.png)")
    print(f"trained in {seconds:.1f} s{evaluating}; model saved to "
          f"{os.path.join(args.out, 'model.npz')}")
    if args.no_eval:
        return
    _evaluate_and_print(model, test_samples or read_samples(test_set), class_names,
                        os.path.join(args.out, "eval.json"), os.path.join(args.out, "pr_curves.png"))


def _training_processes(args, cfg, device):
    """--processes, checked; by default data_parallel.default_processes (joint training)."""
    from .data_parallel import default_processes
    if args.processes is None:
        return default_processes(cfg, device) if args.scheme == "joint" else 1
    if args.processes > 1 and (device != "cpu" or args.scheme != "joint"):
        raise ValueError(f"--processes {args.processes}: data-parallel training is for joint "
                         "training on the CPU")
    if cfg.images_per_batch % args.processes:
        raise ValueError(f"--processes {args.processes}: must divide the batch's "
                         f"{cfg.images_per_batch} images")
    return args.processes


def cmd_pretrain(args):
    from .config import config_for_data
    from .paper.pretrain import pretrain_backbone
    device = resolve_device(args.device)
    _check_output_file(args.out, "--out")
    split = split_names(data_root(args.dataset, args.data_dir), args.train_split)[0]
    samples, class_names = load_split(args.dataset, args.data_dir, split, args.data_seed,
                                      args.train_images, clip_boxes=args.clip_boxes)
    cfg = config_for_data(samples, class_names, seed=args.seed, backbone=args.backbone)
    pretrain_backbone(cfg, samples, args.out, iters=args.iters, device=device)


def cmd_experiment(args):
    from .paper.experiments import run_experiment
    device = resolve_device(args.device)
    _check_output_folder(args.out, "--out")
    earlier = os.path.join(args.out, f"{args.name}.json")
    if os.path.exists(earlier) and not args.overwrite:
        raise ValueError(f"--out {args.out}: already holds the results of this experiment "
                         f"({earlier}); choose another folder, or --overwrite to replace them")
    seeds, iters = (1, 150) if args.quick else (args.seeds, args.iters)
    jobs = args.jobs or (1 if device == "cuda" else min(seeds, os.cpu_count() or 1))
    if device == "cuda" and jobs > 1:
        raise ValueError(f"--jobs {jobs}: the seeds share one GPU; use --jobs 1 with --device cuda")
    run_experiment(args.name, args.out, seeds=seeds, iters=iters, train_images=args.train_images,
                   test_images=args.test_images, device=device, jobs=jobs,
                   backbone_weights=args.backbone_weights)


def cmd_evaluate(args):
    from matplotlib.backend_bases import FigureCanvasBase
    from .data.transforms import check_images
    from .model import FasterRCNN
    device = resolve_device(args.device)
    _check_output_file(args.json, "--json")
    _check_output_file(args.pr_curves, "--pr-curves", FigureCanvasBase.get_supported_filetypes())
    root = data_root(args.dataset, args.data_dir)
    model = FasterRCNN.load(args.checkpoint, device=device)
    trained = tuple(model.cfg.class_names)
    if root is not None:
        # The data's own names first, so a checkpoint for other classes is named as such.
        try:
            data_names = open_split(root, args.split, clip_boxes=args.clip_boxes)[1]
        except MissingSplit as e:
            raise MissingSplit(f"{e}; name the split to evaluate with --split") from None
        if not set(data_names) <= set(trained):
            raise ValueError(f"--checkpoint {args.checkpoint}: trained for classes {list(trained)}, "
                             f"but {root} has {sorted(set(data_names) - set(trained))}")
    samples, class_names = load_split(args.dataset, args.data_dir, args.split, args.data_seed,
                                      class_names=trained if root else None,
                                      clip_boxes=args.clip_boxes)
    if tuple(class_names) != trained:
        raise ValueError(f"--checkpoint {args.checkpoint}: trained for classes {list(trained)}, "
                         f"but the data has {list(class_names)}")
    check_images(samples, model.cfg)                  # every image, before predicting any
    _evaluate_and_print(model, samples, class_names, args.json, args.pr_curves)


def _evaluate_and_print(model, samples, class_names, json_path=None, png_path=None):
    from .evaluate import (coco_map, evaluate_detections, format_ap_table, ground_truths,
                           plot_pr_curves)
    from .detect import predict_dataset
    t0 = time.time()
    dets = predict_dataset(model, samples)
    seconds = time.time() - t0
    gts = ground_truths(samples)
    voc = evaluate_detections(dets, gts, class_names, method="area")
    voc07 = evaluate_detections(dets, gts, class_names, method="voc07")
    coco = coco_map(dets, gts, class_names)
    print(format_ap_table(voc, class_names))
    print(f"mAP@0.5 (area) {voc['map']:.4f} | mAP@0.5 (voc07 11-point) {voc07['map']:.4f} | "
          f"COCO mAP@[.5:.95] {coco['map']:.4f} | {len(samples)} images, "
          f"{len(samples) / seconds:.1f} images/s")
    if json_path:
        out = {"map": voc["map"], "ap": voc["ap"], "map_voc07": voc07["map"],
               "coco_map": coco["map"], "coco_map50": coco["map50"], "coco_map75": coco["map75"],
               "num_images": len(samples), "images_per_second": len(samples) / seconds}
        with open(json_path, "w") as f:
            json.dump(_nan_to_null(out), f, indent=2)
    if png_path:
        plot_pr_curves(voc, png_path)
    return voc


def _nan_to_null(value):
    """NaN (the AP of a class without ground truth) as None, so the file is strict JSON."""
    if isinstance(value, dict):
        return {k: _nan_to_null(v) for k, v in value.items()}
    return None if isinstance(value, float) and value != value else value


def cmd_detect(args):
    from .detect import detect_files
    device = resolve_device(args.device)
    for path in detect_files(args.checkpoint, args.images, args.out, device=device,
                             score_threshold=args.score_threshold):
        print(path)


def cmd_bench(args):
    from .bench import CASES, run_bench
    unknown = sorted(set(args.only or ()) - set(CASES))
    if unknown:
        raise ValueError(f"--only {' '.join(unknown)}: unknown group; the groups are "
                         f"{', '.join(CASES)}")
    run_bench(args.device, repeat=args.repeat, only=args.only)


def cmd_grade(args):
    from .classroom.grading import grade
    grade(args.paths, args.csv, source_dir=args.source, timeout=args.timeout)


# --- argument parsing -------------------------------------------------------------------------
def add_data_arguments(s):
    """The flags that choose the data (train, pretrain, evaluate)."""
    s.add_argument("--dataset", choices=["shapes", "voc"], default="shapes")
    s.add_argument("--data-dir", help="a VOC folder, or a VOCdevkit folder holding VOC2007 "
                                      "(required for voc; for shapes: instead of making the data)")
    s.add_argument("--data-seed", type=int, default=0, help="seed of the generated shapes data")
    s.add_argument("--clip-boxes", action="store_true",
                   help="clamp boxes reaching past their image into it (default: an error)")


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minifrcnn", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("make-shapes", help="write the synthetic shapes data as a VOC folder")
    s.add_argument("--out", required=True, help="folder to write (VOC layout)")
    s.add_argument("--train-images", type=positive_int, default=SHAPES_TRAIN_IMAGES)
    s.add_argument("--test-images", type=positive_int, default=SHAPES_TEST_IMAGES)
    s.add_argument("--data-seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true",
                   help="write into a folder that is not empty (its split files are replaced)")
    s.set_defaults(func=cmd_make_shapes)

    s = sub.add_parser("train", help="approximate joint training, then test mAP")
    add_data_arguments(s)
    s.add_argument("--train-split", help="default: trainval if the VOC folder has "
                                         "ImageSets/Main/trainval.txt, else train")
    s.add_argument("--test-split", help="default: test")
    s.add_argument("--out", required=True, help="run folder: checkpoints, logs, model.npz")
    s.add_argument("--iters", type=positive_int,
                   help=f"iterations (default: {ITERS_FROM_PRETRAINED} from a pre-trained backbone, "
                        f"{Config.small().iters} from scratch)")
    s.add_argument("--device", choices=["cpu", "cuda"], help="default: $MINIFRCNN_DEVICE or cpu")
    s.add_argument("--scheme", choices=["joint", "alternating"], default="joint",
                   help="approximate joint training, or the paper's 4-step alternating training")
    s.add_argument("--step-iters", type=positive_int, nargs=4, metavar="N",
                   help="alternating: iterations of steps 1-4 (default: --iters split 2:1:2:1)")
    s.add_argument("--seed", type=int, default=0, help="seed of the weights and sampling")
    s.add_argument("--train-images", type=positive_int, help="use only the first N training images")
    s.add_argument("--min-size", type=positive_int, help="shorter image side (default: from the data)")
    s.add_argument("--max-size", type=positive_int, help="longest image side cap")
    s.add_argument("--no-flip", action="store_true",
                   help="no random horizontal flips while training: for objects whose mirror "
                        "image is another thing (digits, letters, arrows)")
    s.add_argument("--backbone-weights", metavar="NPZ",
                   help="start the backbone from this npz (see pretrain); default: the shipped "
                        "pre-trained data/small4_backbone.npz; none: random weights (from scratch)")
    s.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.npz")
    s.add_argument("--overwrite", action="store_true",
                   help="start again in an --out folder that holds an earlier run (its files go)")
    s.add_argument("--checkpoint-every", type=positive_int, default=250)
    s.add_argument("--no-eval", action="store_true", help="skip the test evaluation")
    s.add_argument("--eval-every", type=positive_int, metavar="N",
                   help="also evaluate the test split every N iterations: map_curve.csv and "
                        "map_curve.png (mAP against iterations and training seconds)")
    s.add_argument("--processes", type=positive_int, metavar="P",
                   help="split each batch's images over P processes with one BLAS thread each "
                        "(data-parallel; default: one per CPU core, at most one per image)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("pretrain", help="train the backbone as a classifier on object crops")
    add_data_arguments(s)
    s.add_argument("--train-split", help="default: as train's")
    s.add_argument("--out", required=True, help="npz file for the backbone weights")
    s.add_argument("--backbone", default="small4", choices=["tiny", "small4", "small", "zf", "vgg16"])
    s.add_argument("--iters", type=positive_int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--train-images", type=positive_int)
    s.add_argument("--device", choices=["cpu", "cuda"])
    s.set_defaults(func=cmd_pretrain)

    s = sub.add_parser("experiment", help="the paper's experiments in miniature (several seeds)")
    s.add_argument("name", choices=["schemes", "anchors", "lambda", "proposals", "sharing",
                                    "pretrain"])
    s.add_argument("--out", default="runs/experiments", help="folder for the tables and plots")
    s.add_argument("--seeds", type=positive_int, default=2)
    s.add_argument("--iters", type=positive_int,
                   help=f"training iterations per run (default: {ITERS_FROM_PRETRAINED} from a "
                        f"pre-trained backbone, {Config.small().iters} from scratch)")
    s.add_argument("--backbone-weights", metavar="NPZ",
                   help="every detector's backbone starts from this npz; default: the shipped "
                        "pre-trained one, as train's; none: random weights")
    s.add_argument("--train-images", type=positive_int, default=1000)
    s.add_argument("--test-images", type=positive_int, default=200)
    s.add_argument("--quick", action="store_true", help="1 seed, 150 iterations: a dry run")
    s.add_argument("--jobs", type=positive_int,
                   help="seeds trained at once, in processes with one BLAS thread each "
                        "(default: min(seeds, CPU cores); 1 with --device cuda)")
    s.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    s.add_argument("--device", choices=["cpu", "cuda"])
    s.set_defaults(func=cmd_experiment)

    s = sub.add_parser("evaluate", help="VOC and COCO mAP of a checkpoint on a split")
    s.add_argument("--checkpoint", required=True)
    add_data_arguments(s)
    s.add_argument("--split", default="test")
    s.add_argument("--device", choices=["cpu", "cuda"])
    s.add_argument("--json", help="write the results as JSON here")
    s.add_argument("--pr-curves", help="write precision-recall curves as a PNG here")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("detect", help="draw detections on images")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("images", nargs="+", help="image files")
    s.add_argument("--out", required=True, help="folder for the images with boxes drawn")
    s.add_argument("--device", choices=["cpu", "cuda"])
    s.add_argument("--score-threshold", type=fraction, default=0.5,
                   help="draw detections scoring at least this")
    s.set_defaults(func=cmd_detect)

    s = sub.add_parser("bench", help="time the ops and the detector "
                                     "(benchmarks/bench_vs_torch.py: PyTorch's beside them)")
    s.add_argument("--device", choices=["cpu", "cuda"])
    s.add_argument("--repeat", type=positive_int, default=10)
    s.add_argument("--only", nargs="+", help="groups to run (conv pool linear ...)")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("grade", help="run submitted exercise notebooks and score their checks "
                                     "(minifrcnn/classroom/grading.py)")
    s.add_argument("paths", nargs="+", help="notebooks, or folders of them")
    s.add_argument("--csv", required=True, help="write one row per notebook and exercise here")
    s.add_argument("--source", help="the teacher's copies (default: notebooks/exercises/solutions)")
    s.add_argument("--timeout", type=positive_int, default=120,
                   help="seconds a cell may run (default 120)")
    s.set_defaults(func=cmd_grade)
    return p


def main(argv=None):
    from .backend import keep_freed_memory
    args = build_parser().parse_args(argv)
    keep_freed_memory()           # big freed arrays stay in malloc for reuse: see its docstring
    try:
        args.func(args)
    except KeyboardInterrupt as e:        # train's TrainingInterrupted: 143 for SIGTERM
        return getattr(e, "exit_code", 130)
    except (ValueError, OSError, DeviceError, TrainingDiverged) as e:   # OSError names its file
        if os.environ.get("MINIFRCNN_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
