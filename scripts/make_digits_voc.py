"""A second synthetic detection set, of another kind than shapes: printed digits in clutter.

The default detector's settings must not be tuned to the shapes data alone (issue 15: "the
defaults are also judged on data you do not have"). This set differs from shapes in every way
that matters to a detector:

    classes      10 ("zero" .. "nine"), thin strokes with holes, some alike (3/8, 1/7, 6/9
                 when slanted), instead of 4 filled convex-ish shapes
    images       non-square, each side drawn from 100..200 px (shapes: 128 x 128)
    objects      1..6 digits, glyph height 14..64 px, any colour far from the background,
                 a slant of -15..15 degrees, a stroke of 0..2 px (0 below 16 px)
    clutter      letters that are not classes (A, K, X, W, ...) drawn like the digits, smooth
                 colour gradient, random rectangles, lines, Gaussian noise and sometimes blur:
                 the detector must tell a digit from a letter, not an object from a flat field
    boxes        the tight box of each digit's visible pixels (continuous, no +1), after
                 later digits and letters painted over it; no glyph may hide more than 40%
                 of one drawn before it, and every glyph lies wholly inside the image

It writes a PASCAL VOC folder (the format users bring their own data in), so the command line
trains on it as on any user's folder:

    python scripts/make_digits_voc.py --out data-digits            # 500 train + 200 test
    python -m minifrcnn train --dataset voc --data-dir data-digits --out runs/digits

Same seed, same bytes: image i of a split is drawn from default_rng([seed, crc32(split), i]).
Needs Pillow >= 10.1 (ImageFont.load_default(size=...) gives a scalable font).
"""
import argparse
import os
import sys
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from minifrcnn.data.shapes import write_voc  # noqa: E402  (the repository's package)

CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DISTRACTORS = "AKXWHMNRTVY"          # letters drawn as clutter: never a class
MIN_SIDE, MAX_SIDE = 100, 200        # image width and height, px
MIN_HEIGHT, MAX_HEIGHT = 14, 64      # glyph height, px
MAX_OBJECTS = 6
MAX_HIDDEN = 0.4                     # a digit keeps >= 60% of its pixels visible
MIN_CONTRAST = 110.0                 # RGB distance between a glyph and the background under it


def background(rng, h, w):
    """(h, w, 3) float: a colour gradient, a few flat rectangles and thin lines."""
    c0, c1 = rng.uniform(30, 225, 3), rng.uniform(30, 225, 3)
    t = np.linspace(0, 1, w)[None, :, None] * rng.uniform(0, 1) + \
        np.linspace(0, 1, h)[:, None, None] * rng.uniform(0, 1)
    image = c0 + (c1 - c0) * (t / max(t.max(), 1e-6))                      # (h, w, 3)
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(rng.integers(0, 4)):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        x1, y1 = x0 + rng.uniform(10, w / 2), y0 + rng.uniform(10, h / 2)
        draw.rectangle([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.uniform(30, 225, 3)))
    for _ in range(rng.integers(0, 4)):
        draw.line([tuple(rng.uniform(0, [w, h])), tuple(rng.uniform(0, [w, h]))],
                  fill=tuple(int(v) for v in rng.uniform(0, 255, 3)), width=int(rng.integers(1, 3)))
    return np.asarray(pil, dtype=np.float64)


def _glyph_mask(rng, char, h, w):
    """A boolean (h, w) mask of one glyph at a random place, size, slant and stroke; None if
    it does not fit."""
    height = np.exp(rng.uniform(np.log(MIN_HEIGHT), np.log(MAX_HEIGHT)))
    font = ImageFont.load_default(size=max(8, int(round(height * 1.35))))   # cap height ~ 0.74 em
    stroke = int(rng.integers(0, 1 + min(2, int(height // 16))))       # thin for small glyphs
    layer = Image.new("L", (2 * int(height) + 20, 2 * int(height) + 20), 0)
    ImageDraw.Draw(layer).text((10, 5), char, fill=255, font=font, stroke_width=stroke,
                               stroke_fill=255)
    layer = layer.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR, expand=True)
    glyph = np.asarray(layer) > 127
    ys, xs = np.nonzero(glyph)
    if len(ys) == 0:
        return None
    glyph = glyph[ys.min():ys.max() + 1, xs.min():xs.max() + 1]                # tight crop
    gh, gw = glyph.shape
    if gh + 2 > h or gw + 2 > w:
        return None
    y0, x0 = int(rng.integers(0, h - gh + 1)), int(rng.integers(0, w - gw + 1))
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y0 + gh, x0:x0 + gw] = glyph
    return mask


def far_colour(rng, other):
    """An RGB colour at least MIN_CONTRAST from `other` (a few tries)."""
    colour = rng.uniform(0, 255, 3)
    for _ in range(20):
        if np.linalg.norm(colour - other) >= MIN_CONTRAST:
            break
        colour = rng.uniform(0, 255, 3)
    return colour


def make_image(rng):
    """One image: (image (h, w, 3) uint8, boxes (G, 4) float32, labels (G,) int64 in 1..10)."""
    h, w = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, 2))
    image = background(rng, h, w)
    masks, labels = [], []                   # every glyph drawn, digits and letters alike
    n_digits = int(rng.integers(1, MAX_OBJECTS + 1))
    n_letters = int(rng.integers(0, 3))
    chars = [str(d) for d in rng.integers(0, 10, n_digits)] + \
        [DISTRACTORS[i] for i in rng.integers(0, len(DISTRACTORS), n_letters)]
    for char in (chars[i] for i in rng.permutation(len(chars))):
        for _ in range(20):                                   # a few tries to place it
            mask = _glyph_mask(rng, char, h, w)
            if mask is None:
                continue
            if any((m & mask).sum() > MAX_HIDDEN * m.sum() for m in masks):
                continue                                      # would hide too much of one
            image[mask] = far_colour(rng, image[mask].mean(axis=0))   # from the colour under it
            masks = [m & ~mask for m in masks] + [mask]       # later glyphs hide earlier ones
            labels.append(int(char) + 1 if char.isdigit() else 0)
            break
    boxes, kept = [], []
    for mask, label in zip(masks, labels):
        ys, xs = np.nonzero(mask)
        if label == 0 or len(ys) == 0 or xs.max() - xs.min() < 3 or ys.max() - ys.min() < 5:
            continue                                          # a letter, or a sliver left
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        kept.append(label)
    return (noisy(rng, image), np.array(boxes, dtype=np.float32).reshape(-1, 4),
            np.array(kept, dtype=np.int64))


def noisy(rng, image):
    """(h, w, 3) float -> uint8: Gaussian noise of a random strength, and 30% of the time a
    slight blur."""
    image = image + rng.normal(0, rng.uniform(2, 8), image.shape)
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    return np.asarray(pil, dtype=np.uint8)


def make_split(split, num_images, seed=0, make_image=make_image):
    """num_images samples {"image", "boxes", "labels", "difficult", "id"} of one split, each
    drawn by make_image(rng) -> (image, boxes, labels)."""
    samples = []
    for i in range(num_images):
        rng = np.random.default_rng([seed, zlib.crc32(split.encode()), i])
        image, boxes, labels = make_image(rng)
        samples.append({"image": image, "boxes": boxes, "labels": labels,
                        "difficult": np.zeros(len(labels), dtype=bool), "id": f"{split}{i:05d}"})
    return samples


def write_set(argv, description, class_names, make_image, train_images):
    """The command line of a synthetic set's script: --out, --train-images, --test-images, --seed."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", required=True, help="the VOC folder to write")
    p.add_argument("--train-images", type=int, default=train_images)
    p.add_argument("--test-images", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for split, n in (("train", args.train_images), ("test", args.test_images)):
        write_voc(make_split(split, n, args.seed, make_image), args.out, split,
                  class_names=class_names)
    print(f"wrote {args.train_images} train and {args.test_images} test images to {args.out}")


def main(argv=None):
    write_set(argv, __doc__.split("\n")[0], CLASS_NAMES, make_image, train_images=500)


if __name__ == "__main__":
    main()
