"""Data: the synthetic shapes set, PASCAL VOC folders, the image reader, the image/box transforms.

    >>> from minifrcnn.data import make_split, write_voc, VOCDataset, CLASS_NAMES
    >>> write_voc(make_split("train", 200), "data/shapes", "train")
    >>> ds = VOCDataset("data/shapes", "train")

Every sample is a dict {"image" (H, W, 3) uint8, "boxes" (G, 4) float32 x1 y1 x2 y2 (no +1),
"labels" (G,) int64 in 1..K, "difficult" (G,) bool, "id" str}; a VOC sample also has "path",
its image file. Image files are read by ``read_image`` (images.py): upright, RGB (a pixel format
without a known range is refused).
"""
from . import transforms  # noqa: F401
from .images import read_image  # noqa: F401
from .shapes import CLASS_NAMES, make_dataset, make_image, make_split, write_voc  # noqa: F401
from .voc import VOC_CLASSES, DatasetError, VOCDataset  # noqa: F401

__all__ = ["transforms", "read_image", "CLASS_NAMES", "make_dataset", "make_image", "make_split",
           "write_voc", "VOC_CLASSES", "DatasetError", "VOCDataset"]
