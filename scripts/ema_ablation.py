"""Would averaging the weights reach the test mAP sooner? An ablation for issue 15.

Trains exactly as `python -m minifrcnn train --processes 1` does (same config, data order,
sampling and optimiser: train.train_step) and keeps, beside the trained weights w_t, an
exponential moving average of them for each --decays d (Polyak averaging):

    ema_0 = w_0,    ema_t = d_t * ema_{t-1} + (1 - d_t) * w_t,    d_t = min(d, (1 + t) / (10 + t))

(d_t: the usual warm-up of the decay, so that the average forgets the random initial weights
within the first iterations). Every --every iterations it evaluates the trained weights and
each average on the test split (mAP@0.5, all-point). The averages never touch the training, so
one run answers "how much sooner would each average be" with the same trajectory for all.

    python scripts/ema_ablation.py --out runs/ema-shapes
    python scripts/ema_ablation.py --dataset voc --data-dir /tmp/digits --out runs/ema-digits

Writes OUT/ema_curve.csv (iter, train_seconds, then map50 of "weights" and of each "ema_<d>";
train_seconds counts the training steps only, not the averaging or the evaluations) and
OUT/ema_curve.png (those mAPs against the iteration).
"""
import argparse
import csv
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from minifrcnn.__main__ import load_split  # noqa: E402
from minifrcnn.config import config_for_data  # noqa: E402
from minifrcnn.detect import offscreen_figure, predict_dataset  # noqa: E402
from minifrcnn.evaluate import evaluate_detections, ground_truths  # noqa: E402
from minifrcnn.model import FasterRCNN  # noqa: E402
from minifrcnn.optim import make_optimizer  # noqa: E402
from minifrcnn.train import train_step  # noqa: E402


def map_on(model, test, class_names):
    """mAP@0.5 (all-point) of model on the samples `test`."""
    return evaluate_detections(predict_dataset(model, test), ground_truths(test), class_names,
                               method="area")["map"]


def plot_curve(rows, png_path, title):
    """The test mAP of the weights and of each average against the iteration."""
    fig, ax = offscreen_figure((6, 3.8))
    iters = [r["iter"] for r in rows]
    for k in rows[0]:
        if k not in ("iter", "train_seconds"):
            ax.plot(iters, [r[k] for r in rows], "o-" if k == "weights" else ".--",
                    label="trained weights" if k == "weights" else f"average, decay {k[4:]}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("test mAP@0.5")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="shapes")
    p.add_argument("--data-dir")
    p.add_argument("--out", required=True)
    p.add_argument("--iters", type=int, help="the schedule's length (default: the config's)")
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--decays", default="0.99,0.995,0.998")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-flip", action="store_true")
    args = p.parse_args()
    decays = [float(d) for d in args.decays.split(",")]
    os.makedirs(args.out, exist_ok=True)

    samples, class_names = load_split(args.dataset, args.data_dir, "train")
    test, _ = load_split(args.dataset, args.data_dir, "test", class_names=class_names)
    cfg = config_for_data(samples, class_names, seed=args.seed, flip=not args.no_flip)
    if args.iters:
        cfg = cfg.with_iters(args.iters)
    model = FasterRCNN(cfg)
    optimizer = make_optimizer(model.parameters(), cfg)
    params = [p for _, p in model.named_parameters()]
    averages = {d: [p.data.copy() for p in params] for d in decays}
    shadow = FasterRCNN(cfg)                       # holds an average while it is evaluated
    shadow_params = [p for _, p in shadow.named_parameters()]

    columns = ["iter", "train_seconds", "weights"] + [f"ema_{d}" for d in decays]
    rows, train_seconds = [], 0.0
    print(f"{args.dataset}: {len(samples)} training, {len(test)} test images; "
          f"{cfg.iters} iterations; decays {decays}", flush=True)
    for it in range(cfg.iters):
        t0 = time.perf_counter()
        train_step(model, optimizer, samples, cfg, it)
        train_seconds += time.perf_counter() - t0
        for d, average in averages.items():
            d_t = min(d, (1 + it) / (10 + it))
            for a, p in zip(average, params):
                a *= d_t
                a += (1 - d_t) * p.data
        done = it + 1
        if done % args.every == 0 or done == cfg.iters:
            row = {"iter": done, "train_seconds": round(train_seconds, 2),
                   "weights": round(map_on(model, test, class_names), 4)}
            for d, average in averages.items():
                for s, a in zip(shadow_params, average):
                    s.data[...] = a
                row[f"ema_{d}"] = round(map_on(shadow, test, class_names), 4)
            rows.append(row)
            print(row, flush=True)
            with open(os.path.join(args.out, "ema_curve.csv"), "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=columns)
                w.writeheader()
                w.writerows(rows)
            plot_curve(rows, os.path.join(args.out, "ema_curve.png"),
                       f"{args.data_dir or args.dataset}: weight averages")


if __name__ == "__main__":
    main()
