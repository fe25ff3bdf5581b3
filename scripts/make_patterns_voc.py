"""A third synthetic detection set, for pre-training the backbone only: patterned patches.

The paper starts its shared convs from a network trained on ImageNet; minifrcnn's small
preset starts from a backbone pre-trained once on this set (data/small4_backbone.npz, see
data/README.md). It is of a third kind, so that shapes and the digits set
(scripts/make_digits_voc.py) both stay held-out checks of the detector's defaults:

    classes      10 textures: what an object is, is its pattern, never its outline
                 ("hstripes", "vstripes", "diagonal", "zigzag", "checker", "dots", "grid",
                 "rings", "waves", "speckle"); every one is its own mirror image's class, so
                 the horizontal flips of training keep the labels true
    outlines     any: an ellipse, a rotated rectangle or a convex polygon of 5..8 corners,
                 16..72 px high, width/height 0.6..1.6, rotated by any angle
    patterns     two colours far apart, a period of 3..9 px, a random phase, turned by
                 -12..12 degrees (stripes, checker, grid, ...), so no filter fits one pixel grid
    images       each side drawn from 96..192 px; 1..5 patches; the digits set's background
                 (colour gradient, flat rectangles, thin lines), Gaussian noise, sometimes blur
    boxes        the tight box of each patch's visible pixels (continuous, no +1), after later
                 patches painted over it; no patch may hide more than 40% of one drawn before it

    python scripts/make_patterns_voc.py --out data-patterns          # 1000 train + 200 test
    OMP_NUM_THREADS=1 python -m minifrcnn pretrain --dataset voc --data-dir data-patterns \\
        --iters 6000 --out data/small4_backbone.npz

Same seed, same bytes: image i of a split is drawn from default_rng([seed, crc32(split), i]).
"""
import numpy as np
from PIL import Image, ImageDraw

from make_digits_voc import MAX_HIDDEN, background, far_colour, noisy, write_set  # same folder

CLASS_NAMES = ("hstripes", "vstripes", "diagonal", "zigzag", "checker", "dots", "grid",
               "rings", "waves", "speckle")
MIN_SIDE, MAX_SIDE = 96, 192         # image width and height, px
MIN_HEIGHT, MAX_HEIGHT = 16, 72      # patch height, px
MAX_OBJECTS = 5


def pattern(name, rng, h, w, centre):
    """A boolean (h, w) texture: True where the first colour goes.

    u, v are the pixel coordinates turned by a small random angle (the object's own grid),
    p the period in px; each class is one formula of them."""
    p = rng.uniform(3, 9)
    angle = np.deg2rad(rng.uniform(-12, 12))
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)                         # (h, w) each
    y, x = y - centre[1], x - centre[0]
    u = x * np.cos(angle) + y * np.sin(angle) + rng.uniform(0, p)       # along the object's rows
    v = -x * np.sin(angle) + y * np.cos(angle) + rng.uniform(0, p)      # along its columns
    if name == "hstripes":
        return np.sin(2 * np.pi * v / p) > 0
    if name == "vstripes":
        return np.sin(2 * np.pi * u / p) > 0
    if name == "diagonal":            # both diagonals crossed: its own mirror image
        return (np.sin(2 * np.pi * (u + v) / p) > 0) ^ (np.sin(2 * np.pi * (u - v) / p) > 0)
    if name == "zigzag":              # chevrons: v shifted by a triangle wave of u
        return np.sin(2 * np.pi * (v + np.abs((u % (2 * p)) - p)) / p) > 0
    if name == "checker":
        return (np.floor(u / p) + np.floor(v / p)) % 2 == 0
    if name == "dots":
        du, dv = (u % p) - p / 2, (v % p) - p / 2
        return du ** 2 + dv ** 2 < (0.3 * p) ** 2
    if name == "grid":
        return ((u % p) < 1.5) | ((v % p) < 1.5)
    if name == "rings":
        return np.sin(2 * np.pi * np.hypot(x, y) / p) > 0
    if name == "waves":
        return np.sin(2 * np.pi * (v + 0.4 * p * np.sin(2 * np.pi * u / (3 * p))) / p) > 0
    if name == "speckle":             # random cells of about p/2 px, on or off
        cell = max(1.0, p / 2)
        cells = rng.random((int(h / cell) + 2, int(w / cell) + 2)) < 0.5
        return cells[(np.arange(h) / cell).astype(int)][:, (np.arange(w) / cell).astype(int)]
    raise ValueError(f"unknown pattern {name!r}")


def outline(rng, h, w):
    """A boolean (h, w) mask of one patch's outline at a random place; None if it does not fit."""
    height = np.exp(rng.uniform(np.log(MIN_HEIGHT), np.log(MAX_HEIGHT)))
    width = height * rng.uniform(0.6, 1.6)
    if height + 2 > h or width + 2 > w:
        return None
    kind = rng.integers(0, 3)
    if kind == 0:                                                       # ellipse
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif kind == 1:                                                     # rectangle
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    else:                                                               # convex polygon
        t = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 9))))
        pts = np.stack([np.cos(t), np.sin(t)], axis=1)
    pts = pts * [width / 2, height / 2]                                 # (n, 2) x, y
    a = rng.uniform(0, np.pi)
    pts = pts @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])   # rotated
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    if (hi - lo)[0] + 2 > w or (hi - lo)[1] + 2 > h:
        return None
    pts = pts - lo + [rng.uniform(1, w - 1 - (hi - lo)[0]), rng.uniform(1, h - 1 - (hi - lo)[1])]
    layer = Image.new("L", (w, h), 0)
    ImageDraw.Draw(layer).polygon([tuple(p) for p in pts], fill=255)
    mask = np.asarray(layer) > 127
    return mask if mask.sum() >= 40 else None


def make_image(rng):
    """One image: (image (h, w, 3) uint8, boxes (G, 4) float32, labels (G,) int64 in 1..10)."""
    h, w = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, 2))
    image = background(rng, h, w)                                      # (h, w, 3) float
    masks, labels = [], []
    for label in rng.integers(1, len(CLASS_NAMES) + 1, int(rng.integers(1, MAX_OBJECTS + 1))):
        for _ in range(20):                                             # a few tries to place it
            mask = outline(rng, h, w)
            if mask is None or any((m & mask).sum() > MAX_HIDDEN * m.sum() for m in masks):
                continue
            ys, xs = np.nonzero(mask)
            texture = pattern(CLASS_NAMES[label - 1], rng, h, w, (xs.mean(), ys.mean()))
            first = far_colour(rng, image[mask].mean(axis=0))
            second = far_colour(rng, first)
            image[mask & texture] = first
            image[mask & ~texture] = second
            masks = [m & ~mask for m in masks] + [mask]                 # later patches hide
            labels.append(int(label))
            break
    boxes, kept = [], []
    for mask, label in zip(masks, labels):
        ys, xs = np.nonzero(mask)
        if len(ys) < 40 or xs.max() - xs.min() < 6 or ys.max() - ys.min() < 6:
            continue                                                    # a sliver left
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        kept.append(label)
    return (noisy(rng, image), np.array(boxes, dtype=np.float32).reshape(-1, 4),
            np.array(kept, dtype=np.int64))


def main(argv=None):
    write_set(argv, __doc__.split("\n")[0], CLASS_NAMES, make_image, train_images=1000)


if __name__ == "__main__":
    main()
