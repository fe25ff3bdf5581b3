"""The synthetic shapes data set: deterministic, sane ground truth, tight boxes."""
import numpy as np
import pytest

from minifrcnn.data import shapes
from minifrcnn.data.shapes import CLASS_NAMES, make_dataset, make_image, make_split


@pytest.fixture(scope="module")
def train100():
    return make_split("train", 100, seed=0)


def _same(a, b):
    return (a["id"] == b["id"] and a["image"].tobytes() == b["image"].tobytes()
            and a["boxes"].tobytes() == b["boxes"].tobytes()
            and a["labels"].tobytes() == b["labels"].tobytes())


def test_same_seed_gives_the_same_bytes():
    a = make_split("train", 5, seed=3)
    b = make_split("train", 5, seed=3)
    assert all(_same(x, y) for x, y in zip(a, b))


def test_different_seed_or_split_gives_different_images():
    a = make_split("train", 5, seed=3)
    b = make_split("train", 5, seed=4)
    c = make_split("test", 5, seed=3)
    for x, y, z in zip(a, b, c):
        assert x["image"].tobytes() != y["image"].tobytes()
        assert x["image"].tobytes() != z["image"].tobytes()
    assert c[0]["id"] == "test_00000" and a[0]["id"] == "train_00000"


def test_image_i_does_not_depend_on_the_number_of_images():
    assert _same(make_dataset(2, seed=7)[1], make_dataset(4, seed=7)[1])


def test_sample_format(train100):
    for s in train100:
        assert s["image"].shape == (128, 128, 3) and s["image"].dtype == np.uint8
        g = len(s["labels"])
        assert s["boxes"].shape == (g, 4) and s["boxes"].dtype == np.float32
        assert s["labels"].dtype == np.int64
        assert s["difficult"].shape == (g,) and s["difficult"].dtype == bool
        assert not s["difficult"].any()


def test_object_counts_classes_and_empty_images(train100):
    counts = np.array([len(s["labels"]) for s in train100])
    assert counts.min() == 0 and counts.max() <= 5
    assert 3 <= (counts == 0).sum() <= 30          # about 10% empty (18 for this seed)
    assert (counts >= 4).sum() >= 10               # and busy images too
    labels = np.concatenate([s["labels"] for s in train100])
    assert set(labels.tolist()) == set(range(1, len(CLASS_NAMES) + 1))


def test_boxes_inside_the_image_with_sensible_sizes(train100):
    boxes = np.concatenate([s["boxes"] for s in train100])
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 128).all()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (w >= 6).all() and (h >= 6).all()
    assert w.max() <= 85 and h.max() <= 85
    assert np.median(w) > 15 and np.median(w) < 60
    assert (boxes == np.round(boxes)).all()        # pixel-aligned, so VOC keeps them exactly


def test_boxes_are_the_tight_boxes_of_the_painted_pixels(monkeypatch):
    # Without pixel noise every visible pixel of an object has exactly the object's colour.
    monkeypatch.setattr(shapes, "_NOISE_SIGMA", (0.0, 0.0))
    checked = 0
    for i in range(12):
        image, boxes, labels, masks = shapes._make_image_and_masks(
            np.random.default_rng([11, i]), 128)
        for box, mask in zip(boxes, masks):
            colours = image[mask]                                   # (n, 3)
            assert (colours == colours[0]).all()                    # one flat colour: painted
            assert mask.sum() > 0
            x1, y1, x2, y2 = box.astype(int)
            # nothing of the object outside the box, and something on each of its 4 edges
            assert mask[y1:y2, x1:x2].sum() == mask.sum()
            assert mask[y1, x1:x2].any() and mask[y2 - 1, x1:x2].any()
            assert mask[y1:y2, x1].any() and mask[y1:y2, x2 - 1].any()
            checked += 1
    assert checked > 20


def test_shape_geometry_circle_and_square():
    # A circle of radius 10 centred at (40, 30) spans about 20 px (PIL rasterises inclusively).
    _, mask = shapes._shape_mask(1, 40.0, 30.0, 10.0, 0.0, 128, 16)
    x1, y1, x2, y2 = shapes._tight_box(mask)
    assert abs((x1 + x2) / 2 - 40.5) <= 1 and abs((y1 + y2) / 2 - 30.5) <= 1
    assert 19 <= x2 - x1 <= 22 and 19 <= y2 - y1 <= 22
    # An axis-aligned square (rotated 45 degrees from a vertex at angle 0) of circumradius r
    # has side r * sqrt(2).
    _, mask = shapes._shape_mask(2, 64.0, 64.0, 20.0, np.pi / 4, 128, 16)
    x1, y1, x2, y2 = shapes._tight_box(mask)
    assert abs((x2 - x1) - 20 * np.sqrt(2)) <= 2 and abs((y2 - y1) - 20 * np.sqrt(2)) <= 2


def test_tight_box_convention():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:11] = True               # rows 2..4, columns 3..10
    assert shapes._tight_box(mask) == (3.0, 2.0, 11.0, 5.0)


def test_other_image_size_and_bad_size():
    image, boxes, labels = make_image(np.random.default_rng(1), size=64)
    assert image.shape == (64, 64, 3)
    assert (boxes <= 64).all()
    with pytest.raises(ValueError, match="size"):
        make_image(np.random.default_rng(1), size=8)
