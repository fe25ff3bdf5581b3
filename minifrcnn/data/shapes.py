"""A synthetic detection data set made from a seed: coloured shapes on busy backgrounds.

Why: PASCAL VOC needs a download and a GPU to be fun. "shapes" is made on the spot, in a
few seconds, and it is hard enough that a detector must learn what a circle, a square, a
triangle and a star look like (colour alone never tells, the backgrounds are not flat).

One image (``make_image``)::

    background = smooth colour gradient + 2 soft colour blobs (+ faint stripes, sometimes)
                 + 0..4 thin random lines
    objects    = 0..5 shapes (about 10% of the images have none), each of class
                 circle | square | triangle | star, a random colour far from the background
                 under it, a random rotation, a size (circumscribed diameter) drawn
                 log-uniformly from 14..84 px at 128 px (scaled with the image size)
    noise      = Gaussian pixel noise, sigma 2..10, over everything

Rules that keep the ground truth meaningful:
  * a shape may be cut by the image border by at most about 20% of its extent; if the part
    left inside is tiny (under 40% of the shape, or under 6 px wide or high) it is dropped;
  * shapes may overlap, but a new shape is rejected if it would hide more than 40% of the
    pixels of a shape already drawn (so every object keeps at least 60% of itself visible);
  * the gt box is the tight box of the shape's *visible pixels* (after clipping to the image
    and after later shapes painted over it), in the project's convention: continuous pixel
    coordinates, no +1, so a shape covering pixel columns 3..10 has x1 = 3, x2 = 11.
    The boxes are therefore whole numbers, and survive a PASCAL VOC round trip exactly.

Same seed, same bytes: every image is drawn from its own ``numpy.random.default_rng`` seeded
with ``[*seed, index]``, so image i does not depend on how many images you ask for.
``make_split("train", ...)`` and ``make_split("test", ...)`` mix the split name into the
seed, so the two splits never share an image.

    >>> from minifrcnn.data.shapes import make_split, write_voc, CLASS_NAMES
    >>> train = make_split("train", 200, seed=0)
    >>> train[0]["image"].shape, train[0]["boxes"].dtype, train[0]["labels"].dtype
    ((128, 128, 3), dtype('float32'), dtype('int64'))
    >>> write_voc(train, "data/shapes", "train")    # a PASCAL VOC folder any tool can read

Host-side code (NumPy and PIL only): data sets are made on the CPU.
"""
import os
import zlib
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES = ("circle", "square", "triangle", "star")   # label k -> CLASS_NAMES[k - 1]

# Sizes below are for a 128 px image and scale with the image size.
_BASE_SIZE = 128
_MIN_DIAMETER = 14.0          # circumscribed diameter of a shape, px
_MAX_DIAMETER = 84.0
_MAX_OBJECTS = 5
_EMPTY_FRACTION = 0.10        # share of images with no object at all
_BORDER_MARGIN = 0.3          # a centre lies at least 0.3 * diameter inside the image
_MIN_VISIBLE_FRACTION = 0.4   # border cut: keep a shape only if >= 40% of it is inside
_MIN_SIDE = 6.0               # ... and its visible box is at least 6 px wide and high
_MAX_HIDDEN_FRACTION = 0.4    # occlusion: every shape keeps >= 60% of its pixels visible
_MIN_CONTRAST = 100.0         # Euclidean RGB distance between a shape and the background
_PLACEMENT_TRIES = 20
_NOISE_SIGMA = (2.0, 10.0)    # pixel noise: sigma drawn uniformly from this range


# ----------------------------------------------------------------------------------------
# The background
# ----------------------------------------------------------------------------------------

def _background(rng, size):
    """A (size, size, 3) float64 RGB background in [0, 255]: gradient + blobs (+ stripes).

    gradient(x, y) = c0 (1 - t) + c1 t,  t = projection of (x, y) on a random direction, in [0, 1]
    blob(x, y)     = a * exp(-|(x, y) - m|^2 / (2 s^2)),  a a random colour offset in [-60, 60]^3
    stripes(x, y)  = b * sin(2 pi (x cos phi + y sin phi) / period)   (30% of the images)
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)          # (size, size) each
    c0 = rng.uniform(30, 225, size=3)                              # (3,)
    c1 = rng.uniform(30, 225, size=3)                              # (3,)
    theta = rng.uniform(0, 2 * np.pi)
    proj = xx * np.cos(theta) + yy * np.sin(theta)                 # (size, size)
    t = (proj - proj.min()) / max(proj.max() - proj.min(), 1e-9)   # (size, size) in [0, 1]
    image = c0 * (1 - t[..., None]) + c1 * t[..., None]            # (size, size, 3)

    for _ in range(2):                                             # two soft colour blobs
        mx, my = rng.uniform(0, size, size=2)
        s = rng.uniform(size / 8, size / 3)
        amp = rng.uniform(-60, 60, size=3)                         # (3,)
        g = np.exp(-((xx - mx) ** 2 + (yy - my) ** 2) / (2 * s * s))   # (size, size)
        image = image + g[..., None] * amp                         # (size, size, 3)

    if rng.uniform() < 0.3:                                        # faint stripes: a texture
        phi = rng.uniform(0, np.pi)
        period = rng.uniform(6, 20) * size / _BASE_SIZE
        amp = rng.uniform(8, 20)
        wave = np.sin(2 * np.pi * (xx * np.cos(phi) + yy * np.sin(phi)) / period)
        image = image + amp * wave[..., None]                      # (size, size, 3)
    return np.clip(image, 0, 255)


def _draw_lines(rng, image, size):
    """Draw 0..4 thin random lines (distractors) on a uint8 (size, size, 3) image, in place."""
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(0, 5))):
        x0, y0, x1, y1 = rng.uniform(0, size, size=4)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 3)))
    image[...] = np.asarray(pil)


# ----------------------------------------------------------------------------------------
# One shape
# ----------------------------------------------------------------------------------------

def _shape_vertices(label, cx, cy, radius, angle):
    """Polygon vertices [(x, y), ...] of a square (2), triangle (3) or star (4).

    All shapes are inscribed in the circle of centre (cx, cy) and the given radius;
    vertex k of a regular n-gon sits at angle + 2 pi k / n. A star alternates an outer
    point (radius) and an inner one (0.45 radius), 5 of each.
    """
    name = CLASS_NAMES[label - 1]
    if name == "square":
        n, radii = 4, [radius]
    elif name == "triangle":
        n, radii = 3, [radius]
    elif name == "star":
        n, radii = 10, [radius, 0.45 * radius]
    else:
        raise ValueError(f"label {label} ({name}) is not a polygon")
    points = []
    for k in range(n):
        a = angle + 2 * np.pi * k / n
        r = radii[k % len(radii)]
        points.append((cx + r * np.cos(a), cy + r * np.sin(a)))
    return points


def _shape_mask(label, cx, cy, radius, angle, size, pad):
    """Rasterise one shape with PIL on a canvas padded by `pad` px on every side.

    Returns (full_area, mask): full_area is the number of pixels of the whole shape (also
    the part outside the image), mask the (size, size) bool pixels inside the image.
    """
    canvas = Image.new("L", (size + 2 * pad, size + 2 * pad), 0)
    draw = ImageDraw.Draw(canvas)
    px, py = cx + pad, cy + pad                      # centre in canvas coordinates
    if CLASS_NAMES[label - 1] == "circle":
        draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=255)
    else:
        draw.polygon(_shape_vertices(label, px, py, radius, angle), fill=255)
    big = np.asarray(canvas) > 0                     # (size + 2 pad, size + 2 pad)
    return int(big.sum()), big[pad:pad + size, pad:pad + size].copy()   # (size, size)


def _tight_box(mask):
    """Tight box (x1, y1, x2, y2) of the True pixels of a (H, W) mask; no +1 convention.

    Pixel column c covers [c, c + 1), so the box of columns c0..c1 is [c0, c1 + 1].
    """
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1)


def _pick_colour(rng, background_mean):
    """A random RGB colour far (>= _MIN_CONTRAST) from the background; the farthest of the tries."""
    best, best_dist = None, -1.0
    for _ in range(30):
        colour = rng.integers(0, 256, size=3).astype(np.float64)   # (3,)
        dist = float(np.linalg.norm(colour - background_mean))
        if dist > best_dist:
            best, best_dist = colour, dist
        if dist >= _MIN_CONTRAST:
            break
    return best


# ----------------------------------------------------------------------------------------
# Images and data sets
# ----------------------------------------------------------------------------------------

def make_image(rng, size=128):
    """One synthetic image and its ground truth.

    rng  : numpy.random.Generator (the only source of randomness)
    size : side of the square image in pixels (shape sizes scale with size / 128)

    Returns (image, boxes, labels):
      image  (size, size, 3) uint8 RGB
      boxes  (G, 4) float32 (x1, y1, x2, y2), continuous pixel coordinates, no +1,
             the tight box of each object's visible pixels, inside [0, size]
      labels (G,) int64 in 1..len(CLASS_NAMES)
    with G in 0..5.
    """
    image, boxes, labels, _masks = _make_image_and_masks(rng, size)
    return image, boxes, labels


def _make_image_and_masks(rng, size):
    """make_image, plus the (G, size, size) bool masks of the visible pixels (for the tests)."""
    size = int(size)
    if size < 32:
        raise ValueError(f"size: expected at least 32 pixels, got {size}")
    k = size / _BASE_SIZE
    canvas = _background(rng, size)                                # (size, size, 3) float64
    lined = np.round(canvas).astype(np.uint8)                      # (size, size, 3)
    _draw_lines(rng, lined, size)
    canvas = lined.astype(np.float64)                              # (size, size, 3)

    if rng.uniform() < _EMPTY_FRACTION:
        wanted = 0
    else:
        wanted = int(rng.integers(1, _MAX_OBJECTS + 1))
    pad = int(np.ceil(_MAX_DIAMETER * k))
    labels, visible, own_area = [], [], []   # per object: label, visible mask, area when placed
    for _ in range(wanted):
        for _try in range(_PLACEMENT_TRIES):
            label = int(rng.integers(1, len(CLASS_NAMES) + 1))
            diameter = float(np.exp(rng.uniform(np.log(_MIN_DIAMETER * k),
                                                np.log(_MAX_DIAMETER * k))))
            margin = _BORDER_MARGIN * diameter
            cx, cy = rng.uniform(margin, size - margin, size=2)
            angle = rng.uniform(0, 2 * np.pi)
            full_area, mask = _shape_mask(label, cx, cy, diameter / 2, angle, size, pad)
            area = int(mask.sum())
            if full_area == 0 or area < _MIN_VISIBLE_FRACTION * full_area:
                continue                                           # mostly outside: try again
            x1, y1, x2, y2 = _tight_box(mask)
            if x2 - x1 < _MIN_SIDE * k or y2 - y1 < _MIN_SIDE * k:
                continue                                           # a sliver: try again
            hides_too_much = any(
                (v & ~mask).sum() < (1 - _MAX_HIDDEN_FRACTION) * a
                for v, a in zip(visible, own_area))
            if hides_too_much:
                continue                                           # would bury an object
            colour = _pick_colour(rng, canvas[mask].mean(axis=0))  # (3,)
            canvas[mask] = colour                                  # paint the shape
            visible = [v & ~mask for v in visible]                 # it hides what lies below
            visible.append(mask)
            own_area.append(area)
            labels.append(label)
            break

    sigma = rng.uniform(*_NOISE_SIGMA)
    canvas = canvas + rng.normal(0.0, sigma, size=canvas.shape)    # (size, size, 3)
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)     # (size, size, 3)

    boxes = np.array([_tight_box(v) for v in visible], dtype=np.float32).reshape(-1, 4)  # (G, 4)
    masks = np.array(visible, dtype=bool).reshape(-1, size, size)  # (G, size, size)
    return image, boxes, np.array(labels, dtype=np.int64), masks   # labels (G,)


def _seed_entropy(seed):
    """seed as a list of non-negative ints for numpy.random.default_rng."""
    if isinstance(seed, (list, tuple)):
        return [int(s) for s in seed]
    return [int(seed)]


def make_dataset(num_images, seed, size=128, id_prefix="img"):
    """A list of `num_images` samples; image i is drawn from default_rng([*seed, i]).

    seed: an int or a tuple of ints (make_split passes (seed, code of the split name)).
    Each sample is a dict:
        "image"     (size, size, 3) uint8 RGB
        "boxes"     (G, 4) float32 x1, y1, x2, y2 (no +1)
        "labels"    (G,) int64 in 1..K
        "difficult" (G,) bool, all False (nothing here is hard to see on purpose)
        "id"        str, f"{id_prefix}_{i:05d}"
    """
    if int(num_images) < 0:
        raise ValueError(f"num_images: expected >= 0, got {num_images}")
    entropy = _seed_entropy(seed)
    samples = []
    for i in range(int(num_images)):
        rng = np.random.default_rng(entropy + [i])
        image, boxes, labels = make_image(rng, size)
        samples.append({
            "image": image,
            "boxes": boxes,
            "labels": labels,
            "difficult": np.zeros(len(labels), dtype=bool),
            "id": f"{id_prefix}_{i:05d}",
        })
    return samples


def split_seed(split, seed=0):
    """The seed of a split: (seed, crc32 of the split name), so train and test never coincide."""
    return (int(seed), zlib.crc32(str(split).encode("utf-8")))


def make_split(split, num_images, seed=0, size=128):
    """The shapes split `split` ("train", "test", or any name): ids look like "train_00042"."""
    return make_dataset(num_images, split_seed(split, seed), size=size, id_prefix=str(split))


# ----------------------------------------------------------------------------------------
# Writing a PASCAL VOC folder
# ----------------------------------------------------------------------------------------

def _voc_xml(sample, filename, class_names):
    """The VOC annotation of one sample as an ElementTree element.

    VOC boxes are 1-based and inclusive. Our reader maps them back with x1 = xmin - 1,
    x2 = xmax, so the exact inverse is xmin = x1 + 1, xmax = x2 (rounded to whole pixels:
    the VOC format stores integers; shapes boxes are whole numbers already).
    """
    h, w = sample["image"].shape[:2]
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(w)
    ET.SubElement(size, "height").text = str(h)
    ET.SubElement(size, "depth").text = str(sample["image"].shape[2])
    ET.SubElement(root, "segmented").text = "0"
    difficult = sample.get("difficult")
    for j, (box, label) in enumerate(zip(sample["boxes"], sample["labels"])):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = class_names[int(label) - 1]
        ET.SubElement(obj, "pose").text = "Unspecified"
        touches_border = x1 <= 0 or y1 <= 0 or x2 >= w or y2 >= h
        ET.SubElement(obj, "truncated").text = "1" if touches_border else "0"
        is_difficult = bool(difficult[j]) if difficult is not None else False
        ET.SubElement(obj, "difficult").text = "1" if is_difficult else "0"
        bnd = ET.SubElement(obj, "bndbox")
        ET.SubElement(bnd, "xmin").text = str(x1 + 1)
        ET.SubElement(bnd, "ymin").text = str(y1 + 1)
        ET.SubElement(bnd, "xmax").text = str(x2)
        ET.SubElement(bnd, "ymax").text = str(y2)
    return root


def write_voc(samples, out_dir, split, class_names=CLASS_NAMES):
    """Write samples as a PASCAL VOC folder and return out_dir.

        out_dir/JPEGImages/<id>.png        images, PNG (lossless; the folder keeps VOC's name,
                                           and our reader takes any format PIL reads)
        out_dir/Annotations/<id>.xml       VOC xml, boxes 1-based inclusive
        out_dir/ImageSets/Main/<split>.txt the ids of the split, one a line (overwritten)
        out_dir/classes.txt                the class names in label order, one a line

    classes.txt is not part of VOC; our reader uses it (when no class names are given) so
    that label k means the same class in every split, whatever classes a split happens to
    contain. Writing a second split into the same folder is the normal use.
    """
    main = os.path.join(out_dir, "ImageSets", "Main")
    images_dir = os.path.join(out_dir, "JPEGImages")
    ann_dir = os.path.join(out_dir, "Annotations")
    for d in (main, images_dir, ann_dir):
        os.makedirs(d, exist_ok=True)
    ids = []
    for sample in samples:
        sid = str(sample["id"])
        filename = sid + ".png"
        Image.fromarray(sample["image"]).save(os.path.join(images_dir, filename))
        root = _voc_xml(sample, filename, class_names)
        ET.indent(root)
        ET.ElementTree(root).write(os.path.join(ann_dir, sid + ".xml"), encoding="utf-8")
        ids.append(sid)
    with open(os.path.join(main, f"{split}.txt"), "w") as f:
        f.write("".join(i + "\n" for i in ids))
    with open(os.path.join(out_dir, "classes.txt"), "w") as f:
        f.write("".join(name + "\n" for name in class_names))
    return out_dir
