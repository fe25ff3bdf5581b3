"""Watch the default detector learn: what limits the time to accuracy (issue 15, step 1).

Trains exactly as `python -m minifrcnn train` does (same config, data order, sampling and SGD:
the same losses iteration for iteration), and every --every iterations also measures, without
touching the training's random numbers:

    losses        the four loss terms (mean over the last --every iterations)
    grad norms    ||dL/dW|| of every layer's weight, averaged over those iterations
    fg fraction   the share of foreground among the sampled RoIs (target: 25%)
    RPN recall    of the ground truth of --probe test images: a gt counts as found when one
                  of the test-time proposals (the RPN + proposal layer) has IoU >= 0.5 with it
    head accuracy on the foreground RoIs of those images (sampled as in training): how often
                  the head's argmax is the RoI's class; and its accuracy on background RoIs
    mAP@0.5       on --probe test images (all-point)

It writes OUT/diagnostics.csv (one row per probe) and OUT/diagnostics.png (one panel each).

    python scripts/diagnose_training.py --dataset shapes --out runs/diag-shapes
    python scripts/make_digits_voc.py --out data-digits
    python scripts/diagnose_training.py --dataset voc --data-dir data-digits --out runs/diag-digits
"""
import argparse
import ast
import csv
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from minifrcnn.__main__ import load_split  # noqa: E402
from minifrcnn.backend import keep_freed_memory  # noqa: E402
from minifrcnn.boxes import box_iou  # noqa: E402
from minifrcnn.config import config_for_data  # noqa: E402
from minifrcnn.data.transforms import prepare_batch  # noqa: E402
from minifrcnn.detect import offscreen_figure, predict_dataset  # noqa: E402
from minifrcnn.evaluate import evaluate_detections, ground_truths  # noqa: E402
from minifrcnn.joint_training import JointTraining  # noqa: E402
from minifrcnn.model import FasterRCNN  # noqa: E402
from minifrcnn.ops import softmax  # noqa: E402
from minifrcnn.optim import lr_for, make_optimizer  # noqa: E402
from minifrcnn.proposal_targets import proposal_target_settings, proposal_targets  # noqa: E402
from minifrcnn.train import LOSS_TERMS, batch_indices  # noqa: E402


def layer_names(model):
    """The weight parameters, named by layer: backbone.0, rpn.conv, head.fc6, ..."""
    return [n[:-len(".weight")] for n, _ in model.named_parameters() if n.endswith(".weight")]


def probe(model, test, class_names):
    """RPN recall, head accuracy on fg / bg RoIs and mAP@0.5 on the images `test`."""
    cfg = model.cfg
    images, sizes, boxes, labels, scales = prepare_batch(test, cfg, train=False)
    feat = model.backbone.forward_inference(images)
    rois, counts = model.propose(feat, sizes, scales)
    found = total = 0
    fg_right = fg_all = bg_right = bg_all = 0
    rng = np.random.default_rng(0)                          # the probe's own random numbers
    start = 0
    for i, count in enumerate(counts):
        props = rois[start:start + count, 1:]
        start += count
        if len(boxes[i]):
            total += len(boxes[i])
            if len(props):
                found += int((box_iou(boxes[i], props).max(axis=1) >= 0.5).sum())
        t = proposal_targets(props, boxes[i], labels[i], cfg.num_classes, rng,
                             **proposal_target_settings(cfg))
        scores, _ = model.head.forward(feat[i:i + 1], model.with_batch_index(t["rois"], 0))
        guess = softmax(scores).argmax(axis=1)
        fg = t["labels"] > 0
        fg_right += int((guess[fg] == t["labels"][fg]).sum())
        fg_all += int(fg.sum())
        bg_right += int((guess[~fg] == 0).sum())
        bg_all += int((~fg).sum())
    model.drop_caches()
    m = evaluate_detections(predict_dataset(model, test), ground_truths(test), class_names)["map"]
    return {"rpn_recall": found / max(total, 1), "head_fg_acc": fg_right / max(fg_all, 1),
            "head_bg_acc": bg_right / max(bg_all, 1), "map50": m}


def run(cfg, train_set, test, class_names, every, out_dir, log=print):
    model = FasterRCNN(cfg)
    step = JointTraining(model)
    optimizer = make_optimizer(model.parameters(), cfg)
    names = layer_names(model)
    params = dict(model.named_parameters())
    rows, acc = [], {}
    t0 = time.time()
    for it in range(cfg.iters):                             # train.train_step, opened up
        rng = np.random.default_rng([cfg.seed, it])
        idx = batch_indices(len(train_set), cfg.images_per_batch, it, cfg.seed)
        images, sizes, boxes, labels, scales = prepare_batch([train_set[i] for i in idx], cfg, rng)
        optimizer.set_lr(lr_for(cfg, it))
        model.zero_grad()
        terms, samples = step.forward(images, sizes, boxes, labels, rng, scales=scales)
        step.backward()
        for k in LOSS_TERMS:
            acc.setdefault(k, []).append(float(terms[k]))
        for n in names:
            acc.setdefault("grad " + n, []).append(float(np.linalg.norm(params[n + ".weight"].grad)))
        acc.setdefault("fg_fraction", []).append(float((samples["roi_labels"] > 0).mean()))
        optimizer.step()
        if (it + 1) % every == 0 or it + 1 == cfg.iters:
            seconds = time.time() - t0
            row = {"iter": it + 1, "train_seconds": round(seconds, 1)}
            row.update({k: float(np.mean(v)) for k, v in acc.items()})
            row.update(probe(model, test, class_names))
            rows.append(row)
            acc = {}
            log(f"it {it + 1}: " + ", ".join(f"{k} {row[k]:.3f}" for k in
                                            ("total", "head_cls", "fg_fraction", "rpn_recall",
                                             "head_fg_acc", "map50")))
            t0 = time.time() - seconds                      # probe time is not training time
    with open(os.path.join(out_dir, "diagnostics.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, names, os.path.join(out_dir, "diagnostics.png"))
    return rows


def plot(rows, names, path):
    """Four panels against the iteration: losses; gradient norms; sampling and RPN; head."""
    its = [r["iter"] for r in rows]
    fig, axes = offscreen_figure((13, 8.5))
    for ax in axes.flat if hasattr(axes, "flat") else [axes]:
        ax.remove()
    grid = [fig.add_subplot(2, 2, k + 1) for k in range(4)]
    for k in LOSS_TERMS:
        grid[0].plot(its, [r[k] for r in rows], label=k, lw=2 if k == "total" else 1)
    grid[0].set_yscale("log")
    grid[0].set_title("loss terms (mean per interval)")
    for n in names:
        grid[1].plot(its, [r["grad " + n] for r in rows], label=n,
                     ls="-" if n.startswith("head") else ("--" if n.startswith("rpn") else ":"))
    grid[1].set_yscale("log")
    grid[1].set_title("||dL/dW|| per layer (head solid, RPN dashed, backbone dotted)")
    grid[2].plot(its, [r["fg_fraction"] for r in rows], label="fg fraction of sampled RoIs")
    grid[2].plot(its, [r["rpn_recall"] for r in rows], label="RPN recall of gt (IoU 0.5)")
    grid[2].axhline(0.25, color="grey", lw=0.5)
    grid[2].set_ylim(0, 1.02)
    grid[2].set_title("sampling and proposals")
    grid[3].plot(its, [r["head_fg_acc"] for r in rows], label="head accuracy, fg RoIs")
    grid[3].plot(its, [r["head_bg_acc"] for r in rows], label="head accuracy, bg RoIs")
    grid[3].plot(its, [r["map50"] for r in rows], label="test mAP@0.5", lw=2)
    grid[3].set_ylim(0, 1.02)
    grid[3].set_title("the head and the detector")
    for ax in grid:
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=["shapes", "voc"], default="shapes")
    p.add_argument("--data-dir")
    p.add_argument("--out", required=True)
    p.add_argument("--iters", type=int, help="default: the config's (5000)")
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--probe", type=int, default=100, help="test images per probe")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="config changes for an ablation, e.g. lr=0.02 roi_batch_size=64")
    args = p.parse_args(argv)
    keep_freed_memory()
    os.makedirs(args.out, exist_ok=True)
    train_set, class_names = load_split(args.dataset, args.data_dir, "train")
    test, _ = load_split(args.dataset, args.data_dir, "test", class_names=class_names
                         if args.dataset == "voc" else None)
    changes = {k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = config_for_data(train_set, class_names, **changes)
    if args.iters:
        cfg = cfg.with_iters(args.iters)
    print(f"{len(train_set)} training images, {cfg.iters} iterations, changes {changes}")
    run(cfg, train_set, test[:args.probe], class_names, args.every, args.out)


if __name__ == "__main__":
    main()
