"""The paper's main experiments in miniature, on the shapes data, over several seeds.

    python -m minifrcnn experiment schemes     # joint vs 4-step alternating (same and 3x iterations)
    python -m minifrcnn experiment anchors     # 1x1, 1x3, 3x1, 3x3 scales x ratios (Table 8)
    python -m minifrcnn experiment lambda      # lambda in {0.1, 1, 10, 100} (Table 9)
    python -m minifrcnn experiment proposals   # 50/100/300/1000 test proposals, NMS or not (Table 2)
    python -m minifrcnn experiment sharing     # shared vs unshared conv features
    python -m minifrcnn experiment pretrain    # random weights vs the shipped backbone vs this set's crops
    ... --seeds 2 --iters 1500 --out runs/experiments     (--quick: 1 seed, 150 iterations)
        (every detector starts as the command line's train does: the backbone from the shipped
        data/small4_backbone.npz and 1500 iterations (config.ITERS_FROM_PRETRAINED);
        --backbone-weights none: random weights and the preset's 3000 iterations)
    ... --jobs 2      the seeds in 2 processes at once (the default on a CPU: min(seeds, cores))

Each writes <out>/<name>.md (a markdown table: mean and standard deviation over seeds),
<name>.json (every run) and <name>.png (a bar chart with the spread), and prints the table.
Every variant trains on the same data with the same seeds; only the setting under study
changes. mAP is VOC mAP@0.5 (all-point) on the shapes test split.
"""
import copy
import json
import os
import time

import numpy as np

from ..backbones import load_backbone_weights, start_weights
from ..backend import one_blas_thread_in_new_processes, to_device
from ..config import ITERS_FROM_PRETRAINED, Config, config_for_data
from ..data import shapes
from ..data.transforms import prepare_batch
from ..evaluate import evaluate_detections
from ..train import TrainingDiverged, train

NAMES = ("schemes", "anchors", "lambda", "proposals", "sharing", "pretrain")


def _map(dets, test):
    gts = [{"boxes": s["boxes"], "labels": s["labels"]} for s in test]
    return float(evaluate_detections(dets, gts, shapes.CLASS_NAMES)["map"])


def _detect_all(model, test, batch_size=8, test_changes=None, proposer=None):
    """model.detect over the test set.

    test_changes: Config fields changed for testing only (the number of test proposals,
    the proposal layer's NMS: Table 2). proposer: another model whose RPN proposes on its
    own features (unshared features: two networks).
    """
    if test_changes:
        model = copy.copy(model)          # the same layers and weights, another config
        model.cfg = model.cfg.replace(**test_changes)
    out = []
    for start in range(0, len(test), batch_size):
        images, sizes, _, _, scales = prepare_batch(test[start:start + batch_size], model.cfg,
                                                    train=False)
        images = to_device(images, model.device())                       # (B, 3, H, W)
        if proposer is None:
            out.extend(model.detect(images, sizes, scales))
        else:
            rois, counts = proposer.propose(proposer.backbone.forward_inference(images), sizes,
                                            scales)
            feat = model.backbone.forward_inference(images)
            out.extend(model.detect_in_rois(feat, rois, counts, sizes))
    return out


def _variants(name):
    """(label, config overrides, how to train, how to test) for each variant of an experiment."""
    if name == "schemes":
        # the paper compares at unequal budgets (py-faster-rcnn: 80k+40k+80k+40k alternating
        # iterations against 70k joint ones), hence a third variant with 3x the iterations
        return [("joint", {}, "joint", {}), ("alternating", {}, "alternating", {}),
                ("alternating, 3x iterations", {"iters_factor": 3}, "alternating", {})]
    if name == "anchors":
        return [("1 scale x 1 ratio", {"anchor_scales": (4,), "anchor_ratios": (1.0,)}, "joint", {}),
                ("1 scale x 3 ratios", {"anchor_scales": (4,)}, "joint", {}),
                ("3 scales x 1 ratio", {"anchor_ratios": (1.0,)}, "joint", {}),
                ("3 scales x 3 ratios", {}, "joint", {})]
    if name == "lambda":
        return [(f"lambda = {lam:g}", {"rpn_lambda": lam}, "joint", {}) for lam in (0.1, 1, 10, 100)]
    if name == "proposals":
        # one trained model per seed, tested with different proposal settings
        # (an NMS threshold of 1.0 keeps every box: IoU > 1 never happens)
        return ([(f"{n} proposals, NMS", {}, "joint",
                  {"test_changes": {"rpn_post_nms_top_n_test": n}}) for n in (50, 100, 300, 1000)]
                + [("1000 proposals, no NMS", {}, "joint",
                    {"test_changes": {"rpn_post_nms_top_n_test": 1000, "rpn_nms_threshold": 1.0}})])
    if name == "sharing":
        return [("shared (4-step)", {}, "alternating", {}),
                ("unshared (steps 1-2)", {}, "alternating", {"unshared": True})]
    if name == "pretrain":
        # the experiment's start (by default the shipped backbone, pre-trained on a third set)
        # against random weights and against a backbone pre-trained on this set's own crops
        return [("random weights", {}, "random", {}),
                ("pre-trained on a third set (the start)", {}, "joint", {}),
                ("pre-trained on this set's crops", {}, "pretrained", {})]
    raise ValueError(f"experiment {name!r}: expected one of {', '.join(NAMES)}")


def run_experiment(name, out_dir, seeds=2, iters=None, train_images=1000, test_images=200,
                   device="cpu", log=print, jobs=1, config_changes=None, backbone_weights=None):
    """Run every variant of experiment `name` for each seed; write and return the results.

    jobs > 1: the seeds run in that many worker processes at once, each with one BLAS thread
    (on 2 CPU cores two single-threaded trainings do about 1.5 times the work of one training
    with two threads: most of a step is too small to keep two threads busy). A run is the same
    function of its seed either way, given the BLAS thread count.
    backbone_weights: where every detector's backbone starts, as `train --backbone-weights`
    (backbones.start_weights): None, the shipped pre-trained backbone (the command line's
    default); "none", random weights; or an npz file.
    iters: training iterations per detector; None: the command line's schedule for that start
    (1500 from a pre-trained backbone, config.ITERS_FROM_PRETRAINED; 3000 from random weights,
    Config.small().iters): near the joint detector's plateau for that start (docs/EXPERIMENTS.md).
    config_changes: Config fields changed in every variant (the tests train a tiny model).
    """
    variants = _variants(name)                                  # a ValueError for a bad name, now
    backbone = (config_changes or {}).get("backbone", Config.small().backbone)
    start = start_weights(backbone_weights, backbone)            # a file, or None: random weights
    if name == "pretrain" and start is None:
        raise ValueError("experiment pretrain: it compares a pre-trained start with random "
                         "weights; give it a start (not --backbone-weights none)")
    if iters is None:
        iters = ITERS_FROM_PRETRAINED if start else Config.small().iters
    os.makedirs(out_dir, exist_ok=True)
    settings = {"experiment": name, "seeds": seeds, "iters": iters, "train_images": train_images,
                "test_images": test_images,
                "start": os.path.basename(start) if start else "random weights"}
    partial = os.path.join(out_dir, f"{name}.partial.json")   # the runs finished so far
    tasks = [(name, seed, out_dir, iters, train_images, test_images, device, config_changes, start)
             for seed in range(seeds)]
    try:
        if jobs <= 1:
            runs = []
            for task in tasks:
                runs += run_seed(*task, log=log, finished=lambda done: _write_json(
                    partial, dict(settings, runs=runs + done)))
        else:
            runs = [run for seed_runs in _in_worker_processes(run_seed, tasks, jobs) for run in seed_runs]
    except (KeyboardInterrupt, TrainingDiverged):
        where = partial if jobs <= 1 else os.path.join(out_dir, f"{name}.partial.seed<k>.json")
        log(f"\n{name}: stopped; the runs finished so far are in {where} (none if it does not exist)")
        raise
    summary = summarise(runs, [v[0] for v in variants])
    result = dict(settings, runs=runs, summary=summary)
    _write_json(os.path.join(out_dir, f"{name}.json"), result)
    for path in [partial] + [os.path.join(out_dir, f"{name}.partial.seed{seed}.json") for seed in range(seeds)]:
        if os.path.exists(path):
            os.remove(path)
    table = format_table(name, summary, seeds, iters, settings["start"])
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(table + "\n")
    plot_summary(name, summary, os.path.join(out_dir, f"{name}.png"))
    log(table)
    return result


def run_seed(name, seed, out_dir, iters, train_images, test_images, device, config_changes=None,
             start=None, log=print, finished=None):
    """Every variant of experiment `name` with one seed: the list of its runs, in variant order.

    Variants that train the same thing (the proposals experiment tests one model five ways)
    train once. finished(runs so far) is called after each run (the partial results file);
    in a worker process (jobs > 1) each seed writes <out>/<name>.partial.seed<k>.json instead.
    """
    variants = _variants(name)
    data = shapes.make_split("train", train_images)
    test = shapes.make_split("test", test_images)
    if finished is None:                                         # a worker process
        path = os.path.join(out_dir, f"{name}.partial.seed{seed}.json")
        finished = lambda done: _write_json(path, {"experiment": name, "seed": seed, "runs": done})  # noqa: E731
    trained = {}                       # (overrides, scheme) -> (model, seconds, extra)
    runs = []
    for label, overrides, scheme, test_args in variants:
        overrides = dict(overrides, **(config_changes or {}))
        key = (json.dumps(overrides, sort_keys=True), scheme)
        if key not in trained:
            trained[key] = _train_variant(name, label, overrides, scheme, data, out_dir,
                                          seed, iters, device, start)
        model, seconds, extra = trained[key]
        test_args = dict(test_args)
        if test_args.pop("unshared", False):
            # the step-2 detector with the step-1 RPN: two networks, no shared convs
            model, test_args["proposer"] = extra["step2"], extra["step1"]
        m = _map(_detect_all(model, test, **test_args), test)
        runs.append({"variant": label, "seed": seed, "map": m, "train_seconds": seconds})
        log(f"{name} | seed {seed} | {label}: mAP {m:.4f}, trained in {seconds:.0f} s")
        finished(runs)
    return runs


def _in_worker_processes(function, tasks, jobs):
    """[function(*task) for task in tasks], run in `jobs` fresh processes with one BLAS thread
    each."""
    import multiprocessing
    with one_blas_thread_in_new_processes(), multiprocessing.get_context("spawn").Pool(jobs) as pool:
        return pool.starmap(function, tasks)


def _write_json(path, data):
    """json.dump to path + '.tmp', then rename: never half a file."""
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=2)
    os.replace(path + ".tmp", path)


def _train_variant(name, label, overrides, scheme, data, out_dir, seed, iters, device, start):
    """Train one variant: (model, training seconds, extra). start: the backbone's npz or None
    (random weights); the pretrain experiment's schemes choose their own start."""
    from ..model import FasterRCNN
    overrides = dict(overrides)
    iters = iters * overrides.pop("iters_factor", 1)      # a longer run for this variant
    cfg = config_for_data(data, shapes.CLASS_NAMES, seed=seed, **overrides).with_iters(iters)
    folder = os.path.join(out_dir, name, f"{label.replace(' ', '_')}_seed{seed}")
    quiet = {"progress": False, "log": lambda *_: None, "device": device,
             "checkpoint_every": max(iters, 1)}
    t0 = time.time()
    if scheme == "pretrained":                     # pre-trained here, on this set's own crops
        from .pretrain import pretrain_backbone
        os.makedirs(folder, exist_ok=True)
        start = os.path.join(folder, "backbone.npz")
        pretrain_backbone(cfg, data, start, iters=max(iters // 2, 1), device=device,
                          log=lambda *_: None)
    elif scheme == "random":
        start = None
    model = FasterRCNN(cfg)                       # random weights, unless a start is loaded
    if start:
        load_backbone_weights(model.backbone, start)
    extra = {}
    if scheme == "alternating":
        from .alternating import train_alternating
        model = train_alternating(cfg, data, folder, start_model=model, **quiet)
        extra["step1"] = FasterRCNN.load(os.path.join(folder, "step1", "model.npz"), device=device)
        extra["step2"] = FasterRCNN.load(os.path.join(folder, "step2", "model.npz"), device=device)
    else:
        model = train(cfg, data, folder, model=model, **quiet)
    return model, time.time() - t0, extra


def summarise(runs, labels):
    """Mean and standard deviation of mAP and training time per variant, in variant order."""
    out = []
    for label in labels:
        rows = [r for r in runs if r["variant"] == label]
        maps = np.array([r["map"] for r in rows])
        secs = np.array([r["train_seconds"] for r in rows])
        out.append({"variant": label, "map_mean": float(maps.mean()), "map_std": float(maps.std()),
                    "seconds_mean": float(secs.mean()), "n": len(rows)})
    return out


def format_table(name, summary, seeds, iters, start):
    """The markdown table of an experiment; start: where its backbones started (its JSON's "start")."""
    lines = [f"### {name} ({seeds} seed(s), {iters} iterations each, from {start})", "",
             "| variant | mAP@0.5 mean | std | train time (s) |", "|---|---:|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['variant']} | {s['map_mean']:.4f} | {s['map_std']:.4f} | "
                     f"{s['seconds_mean']:.0f} |")
    return "\n".join(lines)


def plot_summary(name, summary, path):
    """A bar per variant: mean mAP with the standard deviation over seeds as an error bar."""
    from ..detect import offscreen_figure
    fig, ax = offscreen_figure((max(5, 1.6 * len(summary)), 3.5))
    x = np.arange(len(summary))
    ax.bar(x, [s["map_mean"] for s in summary], yerr=[s["map_std"] for s in summary],
           capsize=4, color="tab:blue", label="mAP@0.5 (mean over seeds)")
    ax.set_xticks(x, [s["variant"] for s in summary], rotation=15, ha="right")
    ax.set_ylabel("mAP@0.5 on shapes test")
    ax.set_ylim(0, 1.12)                                # room above the bars for the legend
    ax.set_title(f"experiment: {name}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
