"""Reading a PASCAL VOC folder: the data set format users bring their own data in.

A VOC folder (VOC2007, VOC2012, or anything a labelling tool exports as "Pascal VOC")::

    root/Annotations/<id>.xml          one xml per image (size, objects, boxes)
    root/JPEGImages/<id>.jpg           the image (any format PIL reads: .jpg, .png, ...)
    root/ImageSets/Main/<split>.txt    the ids of a split ("train", "val", "trainval", "test"),
                                       one a line (only the first word of a line is used)
    root/classes.txt                   optional, not VOC: the class names in label order

The id in the split file names the image, as in the VOC devkit: Annotations/<id>.xml and
JPEGImages/<id>.* (an xml whose <filename> names another image is an error). VOC's tar files
unpack to VOCdevkit/VOC2007: ``find_voc_root`` takes such a VOCdevkit folder for its VOC2007.
VOC2007's protocol trains on "trainval" and tests on "test" (``default_train_split``).

The xml boxes are 1-based and inclusive (xmin = 1 is the first pixel column, xmax = W the
last). In our convention (continuous pixel coordinates, no +1, width = x2 - x1)::

    x1 = xmin - 1,   y1 = ymin - 1,   x2 = xmax,   y2 = ymax

so a box covering the whole W x H image is (0, 0, W, H).

Class names, in this order of preference:
  1. given (``class_names=...``): an xml naming another class is an error;
  2. root/classes.txt, if present (``shapes.write_voc`` writes one);
  3. the sorted union of the names in this split's annotations.
  Case 3 depends on the split! Train on a split, then pass the training class names when
  you read the test split (the checkpoint's config keeps them), or label k of the test
  set may not mean label k of the model.

'difficult' objects (<difficult>1</difficult>; a missing tag means 0) are kept and
flagged by default, because the evaluation needs them (they count as neither right nor
wrong). Training samples should leave them out, as py-faster-rcnn does:
``VOCDataset(..., keep_difficult=False)`` or ``dataset.get(i, keep_difficult=False)``.

Bad input is a ``DatasetError`` (a ValueError) that names the file, the image id or the
argument: a missing root or split file, an empty split, an id listed twice, a missing or
unreadable image (or one in a pixel format without a known range, see data/images.py), a
malformed xml, a <filename> naming another image, an unknown class name, a box with
x2 <= x1 or y2 <= y1, and a box outside the image. Boxes are not silently clamped: a box
reaching past the image means the annotation and the image disagree (0-based coordinates,
say), and you should know. ``clip_boxes=True`` (``--clip-boxes``) clamps them instead (for
exports from tools that round outwards by a pixel).

    >>> ds = VOCDataset("data/shapes", "train")
    >>> len(ds), ds.class_names
    >>> sample = ds[0]          # {"image": (H, W, 3) uint8, "boxes": (G, 4) float32, ...}

Host-side code (NumPy, PIL, xml.etree): images are read on the CPU.
"""
import math
import os
import xml.etree.ElementTree as ET

import numpy as np

from .images import read_image

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)   # the 20 PASCAL VOC classes, for VOCDataset(root, split, class_names=VOC_CLASSES)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG", ".bmp", ".BMP")


class DatasetError(ValueError):
    """A data set folder or file is missing or malformed; the message names which."""


class MissingSplit(DatasetError):
    """ImageSets/Main/<split>.txt does not exist; the message lists the splits that do."""


def _text(node, tag):
    """Stripped text of node/<tag>, or None when the tag is missing or empty."""
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        return None
    return child.text.strip()


def _number(node, tag, where):
    """float(node/<tag>); a missing or non-numeric value is a DatasetError naming `where`."""
    text = _text(node, tag)
    if text is None:
        raise DatasetError(f"{where}: missing <{tag}>")
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{where}: <{tag}> is {text!r}, expected a number") from None
    if not math.isfinite(value):        # "nan" would pass every later comparison
        raise DatasetError(f"{where}: <{tag}> is {text!r}, expected a finite number")
    return value


def parse_voc_xml(path):
    """Parse one VOC annotation file.

    Returns a dict:
        "filename"  str or None (<filename>)
        "size"      (height, width) or None when <size> is missing or 0
        "names"     list of G class names
        "boxes"     (G, 4) float64 x1, y1, x2, y2 in our convention (x1 = xmin - 1, x2 = xmax)
        "difficult" (G,) bool (missing <difficult> means 0)
    Only the xml is checked here (parse errors, missing or non-numeric fields);
    the boxes are checked against the image size by VOCDataset.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"{path}: malformed xml ({e})") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the annotation ({e})") from None

    size = None
    size_node = root.find("size")
    if size_node is not None:
        w = _text(size_node, "width")
        h = _text(size_node, "height")
        try:
            w, h = int(float(w)), int(float(h))
        except (TypeError, ValueError):
            w = h = 0
        if w > 0 and h > 0:
            size = (h, w)

    names, boxes, difficult = [], [], []
    for j, obj in enumerate(root.findall("object")):
        name = _text(obj, "name")
        where = f"{path}: object {j} ({name})"
        if name is None:
            raise DatasetError(f"{path}: object {j} has no <name>")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DatasetError(f"{where}: missing <bndbox>")
        xmin = _number(bnd, "xmin", where)
        ymin = _number(bnd, "ymin", where)
        xmax = _number(bnd, "xmax", where)
        ymax = _number(bnd, "ymax", where)
        diff_text = _text(obj, "difficult")
        try:
            diff = bool(int(float(diff_text))) if diff_text is not None else False
        except ValueError:
            raise DatasetError(f"{where}: <difficult> is {diff_text!r}, expected 0 or 1") from None
        names.append(name)
        boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))    # 1-based inclusive -> ours
        difficult.append(diff)
    return {
        "filename": _text(root, "filename"),
        "size": size,
        "names": names,
        "boxes": np.array(boxes, dtype=np.float64).reshape(-1, 4),   # (G, 4)
        "difficult": np.array(difficult, dtype=bool),                 # (G,)
    }


def check_boxes(boxes, height, width, where, names=None, clip=False):
    """Check (G, 4) boxes against an image of (height, width); return them (clipped if clip).

    Errors (DatasetError naming `where` and the object): x2 <= x1 or y2 <= y1; a box
    outside [0, width] x [0, height] unless clip=True, which clamps it into the image
    (and still rejects a box left empty by the clamp). The command line's --clip-boxes
    passes clip=True.
    """
    def label(j):
        return f"object {j}" + (f" ({names[j]})" if names is not None else "")

    boxes = boxes.copy()
    for j, (x1, y1, x2, y2) in enumerate(boxes):
        if x2 <= x1 or y2 <= y1:
            raise DatasetError(
                f"{where}: {label(j)} has an empty box (VOC xmin={x1 + 1:g} ymin={y1 + 1:g} "
                f"xmax={x2:g} ymax={y2:g}): expected xmin <= xmax and ymin <= ymax")
        outside = x1 < 0 or y1 < 0 or x2 > width or y2 > height
        if outside and not clip:
            raise DatasetError(
                f"{where}: {label(j)} box (VOC xmin={x1 + 1:g} ymin={y1 + 1:g} xmax={x2:g} "
                f"ymax={y2:g}) lies outside the {width}x{height} image (VOC boxes are "
                f"1-based: 1 <= xmin <= xmax <= {width}, 1 <= ymin <= ymax <= {height}); "
                "correct this object in the xml, or clamp such boxes into the image with "
                "--clip-boxes (clip_boxes=True in Python)")
    if clip:
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)     # (G, 2)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)    # (G, 2)
        empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if empty.any():
            j = int(np.flatnonzero(empty)[0])
            raise DatasetError(f"{where}: {label(j)} lies entirely outside the "
                               f"{width}x{height} image")
    return boxes


def read_split_file(root, split):
    """The ids listed in root/ImageSets/Main/<split>.txt (first word of each non-blank line).

    An id listed twice is an error naming it: the image would weigh twice in training and its
    objects would count twice in the evaluation.
    """
    path = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(path):
        available = []
        main = os.path.join(root, "ImageSets", "Main")
        if os.path.isdir(main):
            available = sorted(f[:-4] for f in os.listdir(main)
                               if f.endswith(".txt") and "_" not in f)
        hint = f" (splits there: {', '.join(available)})" if available else ""
        raise MissingSplit(f"split {split!r}: no split file {path}{hint}")
    first_line = {}                                              # id -> its line number
    with open(path, encoding="utf-8-sig") as f:       # -sig: a Windows editor's byte-order mark
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            image_id = line.split()[0]
            if image_id in first_line:
                raise DatasetError(
                    f"split {split!r}: the split file {path} lists the image id {image_id!r} "
                    f"twice (lines {first_line[image_id]} and {number}); list each image once")
            first_line[image_id] = number
    if not first_line:
        raise DatasetError(f"split {split!r}: the split file {path} lists no image")
    return list(first_line)


def default_train_split(root):
    """The training split a VOC user expects: "trainval" when root has trainval.txt (VOC2007's
    protocol: train on trainval, test on test), else "train"."""
    has_trainval = os.path.isfile(os.path.join(root, "ImageSets", "Main", "trainval.txt"))
    return "trainval" if has_trainval else "train"


def is_voc_folder(path):
    """True when path holds Annotations/ or ImageSets/Main/ (what every VOC folder has)."""
    return any(os.path.isdir(os.path.join(path, d))
               for d in ("Annotations", os.path.join("ImageSets", "Main")))


def find_voc_root(path, name="root"):
    """The VOC folder to read for `path`: path itself when it is one; path/VOC2007 when path is
    a VOCdevkit folder (what VOC's tar files unpack) or VOC2007 is the only folder in it.
    Otherwise a DatasetError naming `name` and the VOC folders found one or two levels down.
    """
    if is_voc_folder(path):
        return path
    voc2007 = os.path.join(path, "VOC2007")
    inside = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    if is_voc_folder(voc2007) and (os.path.basename(os.path.abspath(path)) == "VOCdevkit"
                                   or inside == ["VOC2007"]):
        return voc2007
    below = [os.path.join(path, d) for d in inside]
    below += [os.path.join(d, e) for d in below for e in sorted(os.listdir(d))]
    found = [d for d in below if os.path.isdir(d) and is_voc_folder(d)]
    where = (f"point {name} at {' or '.join(found)}" if found else
             "expected Annotations/, JPEGImages/ and ImageSets/Main/ in it")
    raise DatasetError(f"{name} {path}: not a VOC folder (no Annotations/ or ImageSets/Main/); "
                       f"{where}")


class VOCDataset:
    """A PASCAL VOC split: len(ds) samples, ds[i] -> sample dict (see module docstring).

    Arguments:
        root           the VOC folder (the one holding Annotations/, JPEGImages/, ImageSets/)
        split          name of root/ImageSets/Main/<split>.txt
        class_names    the K class names in label order (label k -> class_names[k - 1]);
                       None: root/classes.txt if present, else the sorted names of the split
        keep_difficult True (default, for evaluation): difficult objects are kept, flagged
                       in sample["difficult"]; False (for training): they are left out
        clip_boxes     False (default): a box outside the image is an error; True: clamp it
        cache_images   keep decoded images in memory after the first read

    All annotations are read and checked when the data set is made (fast: xml is small);
    images are read lazily by __getitem__.

    A sample:
        "image"     (H, W, 3) uint8 RGB, upright (data.images.read_image: EXIF orientation
                    applied; grey, palette, 16-bit, transparent images converted)
        "boxes"     (G, 4) float32 x1, y1, x2, y2, our convention (no +1)
        "labels"    (G,) int64 in 1..K
        "difficult" (G,) bool
        "id"        the image id (str)
        "path"      the image file (errors name it)
    """

    def __init__(self, root, split, class_names=None, keep_difficult=True,
                 clip_boxes=False, cache_images=False):
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise DatasetError(f"root: no such folder {root!r}")
        self.root = root
        self.split = split
        self.keep_difficult = bool(keep_difficult)
        self.clip_boxes = bool(clip_boxes)
        self.cache_images = bool(cache_images)
        self._cache = {}
        self.ids = read_split_file(root, split)

        self._records = [self._read_record(i) for i in self.ids]
        self.class_names, source = self._resolve_class_names(class_names)
        index = {name: k + 1 for k, name in enumerate(self.class_names)}
        for rec in self._records:
            for name in rec["names"]:
                if name not in index:
                    raise DatasetError(
                        f"{rec['xml']}: unknown class name {name!r}, not one of {source}: "
                        f"{', '.join(self.class_names)}")
            rec["labels"] = np.array([index[n] for n in rec["names"]], dtype=np.int64)  # (G,)

    # --- reading and checking the annotations -------------------------------------------

    def _read_record(self, image_id):
        """Parse Annotations/<id>.xml and find the image file; check boxes if the size is known."""
        xml_path = os.path.join(self.root, "Annotations", f"{image_id}.xml")
        if not os.path.isfile(xml_path):
            raise DatasetError(f"image id {image_id!r}: no annotation file {xml_path}")
        rec = parse_voc_xml(xml_path)
        rec["xml"] = xml_path
        rec["id"] = image_id
        rec["image_path"] = self._find_image(image_id, rec["filename"], xml_path)
        if rec["size"] is not None:
            h, w = rec["size"]
            rec["boxes"] = check_boxes(rec["boxes"], h, w, xml_path, rec["names"],
                                       clip=self.clip_boxes)
            rec["checked"] = True
        else:
            rec["checked"] = False    # checked against the image when it is first read
        return rec

    def _find_image(self, image_id, filename, xml_path):
        """JPEGImages/<filename from the xml>, else JPEGImages/<id> + a known extension.

        The id from the split file names the image, as in the VOC devkit: an xml whose
        <filename> names another image is an error naming both (never boxes on the wrong image).
        """
        folder = os.path.join(self.root, "JPEGImages")
        tried = []
        if filename:
            base = os.path.basename(filename.replace("\\", "/"))     # a Windows path too
            if image_id not in (base, os.path.splitext(base)[0]):
                raise DatasetError(
                    f"{xml_path}: <filename> is {filename!r} but the image id is {image_id!r} "
                    f"(the split file's id names the image, JPEGImages/{image_id}.*); correct "
                    "<filename> or the id")
            tried.append(os.path.join(folder, base))
        tried += [os.path.join(folder, image_id + ext) for ext in IMAGE_EXTENSIONS]
        for path in tried:
            if os.path.isfile(path):
                return path
        raise DatasetError(
            f"image id {image_id!r} ({xml_path}): no image file; tried "
            + ", ".join(os.path.basename(p) for p in tried) + f" in {folder}")

    def _resolve_class_names(self, class_names):
        """(names, where they come from): class_names, else classes.txt, else the split's."""
        if class_names is not None:
            names = tuple(str(n) for n in class_names)
            source = "the classes given (by the command line: the training split's or the model's)"
        else:
            path = os.path.join(self.root, "classes.txt")
            if os.path.isfile(path):
                with open(path, encoding="utf-8-sig") as f:   # -sig: a byte-order mark is no name
                    names = tuple(line.strip() for line in f if line.strip())
                source = f"the classes in {path}"
            else:
                names = tuple(sorted({n for rec in self._records for n in rec["names"]}))
                source = f"the classes in the annotations of split {self.split!r}"
        if not names:
            raise DatasetError(f"{source}: none (and no object in the split)")
        if len(set(names)) != len(names):
            raise DatasetError(f"{source}: repeated names in {names}")
        return names, source

    # --- the samples ------------------------------------------------------------------

    @property
    def num_classes(self):
        """K, the number of object classes (labels are 1..K, 0 is background)."""
        return len(self.class_names)

    def __len__(self):
        return len(self.ids)

    def image_path(self, i):
        """The image file of sample i."""
        return self._records[i]["image_path"]

    def read_image(self, i):
        """The (H, W, 3) uint8 RGB image of sample i (checks its size against the xml)."""
        rec = self._records[i]
        if rec["id"] in self._cache:
            return self._cache[rec["id"]]
        path = rec["image_path"]
        try:
            image = read_image(path, f"image id {rec['id']!r} ({path})")   # (H, W, 3) uint8
        except ValueError as e:
            raise DatasetError(str(e)) from None
        h, w = image.shape[:2]
        if rec["size"] is not None and rec["size"] != (h, w):
            turned = (" (turned: the image's EXIF orientation is applied, as viewers do; the "
                      "boxes must be drawn on the upright view)" if rec["size"] == (w, h) else "")
            raise DatasetError(
                f"{rec['xml']}: <size> says {rec['size'][1]}x{rec['size'][0]} but the image "
                f"{path} is {w}x{h}{turned}")
        if not rec["checked"]:
            rec["boxes"] = check_boxes(rec["boxes"], h, w, rec["xml"], rec["names"],
                                       clip=self.clip_boxes)
            rec["checked"] = True
        if self.cache_images:
            self._cache[rec["id"]] = image
        return image

    def get(self, i, keep_difficult=None):
        """Sample i; keep_difficult None means the data set's setting."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a data set of {n} images")
        i = i % n
        if keep_difficult is None:
            keep_difficult = self.keep_difficult
        image = self.read_image(i)                     # (H, W, 3) uint8; checks the boxes
        rec = self._records[i]
        keep = np.ones(len(rec["names"]), dtype=bool) if keep_difficult else ~rec["difficult"]
        return {
            "image": image.copy() if self.cache_images else image,
            "boxes": rec["boxes"][keep].astype(np.float32),          # (G, 4)
            "labels": rec["labels"][keep].copy(),                    # (G,)
            "difficult": rec["difficult"][keep].copy(),              # (G,)
            "id": rec["id"],
            "path": rec["image_path"],
        }

    def __getitem__(self, i):
        return self.get(i)

    def __iter__(self):
        """The samples in order, each image read when its turn comes (none kept unless cached)."""
        return (self.get(i) for i in range(len(self)))

    def annotation(self, i, keep_difficult=None):
        """Sample i without reading the image: {"boxes", "labels", "difficult", "id"}.

        Boxes are checked against the xml's <size> when it has one (else not yet checked).
        """
        if keep_difficult is None:
            keep_difficult = self.keep_difficult
        rec = self._records[i]
        keep = np.ones(len(rec["names"]), dtype=bool) if keep_difficult else ~rec["difficult"]
        return {
            "boxes": rec["boxes"][keep].astype(np.float32),          # (G, 4)
            "labels": rec["labels"][keep].copy(),                    # (G,)
            "difficult": rec["difficult"][keep].copy(),              # (G,)
            "id": rec["id"],
        }

    def __repr__(self):
        return (f"VOCDataset(root={self.root!r}, split={self.split!r}, images={len(self)}, "
                f"classes={len(self.class_names)})")
