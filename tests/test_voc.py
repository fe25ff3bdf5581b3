"""Reading PASCAL VOC folders: the shapes round trip, the coordinate rule, every bad input."""
import os

import numpy as np
import pytest
from PIL import Image

from minifrcnn.data.shapes import CLASS_NAMES, make_split, write_voc
from test_images import save_turned

from minifrcnn.data.voc import DatasetError, VOCDataset, default_train_split, find_voc_root


# ----------------------------------------------------------------------------------------
# A tiny hand-made VOC folder
# ----------------------------------------------------------------------------------------

def _obj(name, xmin, ymin, xmax, ymax, difficult=None):
    diff = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    return (f"<object><name>{name}</name>{diff}<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")


def make_voc(root, images, split="train", write_split=True):
    """images: {id: (objects xml list, (w, h) or None for no <size>, write_image)}."""
    for d in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for image_id, (objects, size, write_image) in images.items():
        w, h = size if size is not None else (40, 30)
        size_xml = (f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
                    if size is not None else "")
        xml = (f"<annotation><filename>{image_id}.jpg</filename>{size_xml}"
               + "".join(objects) + "</annotation>")
        with open(os.path.join(root, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write(xml)
        if write_image:
            Image.new("RGB", (w, h), (10, 20, 30)).save(
                os.path.join(root, "JPEGImages", f"{image_id}.jpg"), quality=95)
    if write_split:
        with open(os.path.join(root, "ImageSets", "Main", f"{split}.txt"), "w") as f:
            f.write("".join(i + "\n" for i in images))
    return str(root)


@pytest.fixture
def good_voc(tmp_path):
    return make_voc(tmp_path, {
        "a": ([_obj("dog", 1, 2, 10, 20), _obj("cat", 5, 5, 40, 30, difficult=1)], (40, 30), True),
        "b": ([_obj("cat", 3, 3, 8, 9, difficult=0)], (40, 30), True),
    })


# ----------------------------------------------------------------------------------------
# Round trip and conventions
# ----------------------------------------------------------------------------------------

def test_shapes_round_trip(tmp_path):
    train = make_split("train", 12, seed=1)
    test = make_split("test", 5, seed=1)
    write_voc(train, tmp_path, "train")
    write_voc(test, tmp_path, "test")
    ds = VOCDataset(tmp_path, "train")
    assert ds.class_names == CLASS_NAMES          # from classes.txt, in label order
    assert len(ds) == 12 and len(VOCDataset(tmp_path, "test")) == 5
    for i, s in enumerate(train):
        r = ds[i]
        assert r["id"] == s["id"]
        assert np.array_equal(r["image"], s["image"])                 # PNG is lossless
        # shapes boxes are whole pixels, so the 1-based VOC integers bring them back exactly
        np.testing.assert_array_equal(r["boxes"], s["boxes"])
        np.testing.assert_array_equal(r["labels"], s["labels"])
        assert r["boxes"].dtype == np.float32 and r["labels"].dtype == np.int64
        assert not r["difficult"].any()


def test_round_trip_without_classes_txt_uses_sorted_names(tmp_path):
    train = make_split("train", 12, seed=1)
    write_voc(train, tmp_path, "train")
    os.remove(tmp_path / "classes.txt")
    ds = VOCDataset(tmp_path, "train")
    assert ds.class_names == tuple(sorted(CLASS_NAMES))
    for i, s in enumerate(train):
        got = [ds.class_names[k - 1] for k in ds[i]["labels"]]
        assert got == [CLASS_NAMES[k - 1] for k in s["labels"]]


def test_one_based_inclusive_boxes_and_difficult(good_voc):
    ds = VOCDataset(good_voc, "train")
    assert ds.class_names == ("cat", "dog")                     # sorted union
    a = ds[0]
    # xml (1, 2, 10, 20) -> x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax
    np.testing.assert_array_equal(a["boxes"][0], [0, 1, 10, 20])
    # a box over the whole 40 x 30 image is (0, 0, 40, 30)
    np.testing.assert_array_equal(a["boxes"][1], [4, 4, 40, 30])
    np.testing.assert_array_equal(a["labels"], [2, 1])
    np.testing.assert_array_equal(a["difficult"], [False, True])   # missing tag means 0
    assert a["image"].shape == (30, 40, 3) and a["image"].dtype == np.uint8
    assert not ds[1]["difficult"].any()


def test_training_samples_leave_difficult_out(good_voc):
    ds = VOCDataset(good_voc, "train", keep_difficult=False)
    assert len(ds[0]["labels"]) == 1 and ds[0]["labels"][0] == 2
    full = VOCDataset(good_voc, "train")
    assert len(full.get(0, keep_difficult=False)["labels"]) == 1
    assert len(full[0]["labels"]) == 2
    assert len(full.annotation(0)["labels"]) == 2


def test_given_class_names_and_cache(good_voc):
    ds = VOCDataset(good_voc, "train", class_names=("dog", "cat", "bird"), cache_images=True)
    np.testing.assert_array_equal(ds[0]["labels"], [1, 2])
    ds[0]["image"][:] = 0                                   # a copy: the cache is untouched
    assert ds[0]["image"].max() > 0
    assert ds.num_classes == 3


def test_grey_image_becomes_rgb_and_no_size_tag(tmp_path):
    root = make_voc(tmp_path, {"g": ([_obj("x", 1, 1, 5, 5)], None, False)})
    Image.new("L", (40, 30), 7).save(os.path.join(root, "JPEGImages", "g.png"))  # found by id
    s = VOCDataset(root, "train")[0]
    assert s["image"].shape == (30, 40, 3)


def test_clip_boxes_option(tmp_path):
    root = make_voc(tmp_path, {"a": ([_obj("x", 1, 1, 41, 30)], (40, 30), True)})
    with pytest.raises(DatasetError, match="outside"):
        VOCDataset(root, "train")
    ds = VOCDataset(root, "train", clip_boxes=True)
    np.testing.assert_array_equal(ds[0]["boxes"][0], [0, 0, 40, 30])


# ----------------------------------------------------------------------------------------
# Bad input: a clear error naming the file, the id or the argument
# ----------------------------------------------------------------------------------------

def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="root.*nowhere"):
        VOCDataset(tmp_path / "nowhere", "train")


def test_missing_split_file(good_voc):
    with pytest.raises(DatasetError, match=r"val\.txt.*splits there: train"):
        VOCDataset(good_voc, "val")


def test_empty_split_file(good_voc):
    with open(os.path.join(good_voc, "ImageSets", "Main", "empty.txt"), "w") as f:
        f.write("\n  \n")
    with pytest.raises(DatasetError, match=r"empty\.txt lists no image"):
        VOCDataset(good_voc, "empty")


def test_missing_annotation(good_voc):
    with open(os.path.join(good_voc, "ImageSets", "Main", "train.txt"), "a") as f:
        f.write("ghost\n")
    with pytest.raises(DatasetError, match=r"'ghost'.*ghost\.xml"):
        VOCDataset(good_voc, "train")


def test_missing_image(tmp_path):
    root = make_voc(tmp_path, {"noimg": ([_obj("x", 1, 1, 5, 5)], (40, 30), False)})
    with pytest.raises(DatasetError, match=r"'noimg'.*no image file.*noimg\.jpg"):
        VOCDataset(root, "train")


def test_unreadable_image(tmp_path):
    root = make_voc(tmp_path, {"bad": ([_obj("x", 1, 1, 5, 5)], (40, 30), False)})
    with open(os.path.join(root, "JPEGImages", "bad.jpg"), "wb") as f:
        f.write(b"this is not a jpeg")
    ds = VOCDataset(root, "train")               # images are read lazily ...
    with pytest.raises(DatasetError, match=r"image id 'bad' \(.*bad\.jpg\): cannot read it"):
        ds[0]                                    # ... so the error comes here


def test_malformed_xml(good_voc):
    with open(os.path.join(good_voc, "Annotations", "b.xml"), "w") as f:
        f.write("<annotation><object><name>cat</name></annotation")
    with pytest.raises(DatasetError, match=r"b\.xml: malformed xml"):
        VOCDataset(good_voc, "train")


def test_non_numeric_coordinate(tmp_path):
    root = make_voc(tmp_path, {"a": ([_obj("x", "one", 1, 5, 5)], (40, 30), True)})
    with pytest.raises(DatasetError, match=r"a\.xml: object 0 \(x\): <xmin> is 'one'"):
        VOCDataset(root, "train")


def test_nan_coordinate(tmp_path):
    """float("nan") parses, and NaN fails every comparison, so the box checks alone let it in."""
    root = make_voc(tmp_path, {"a": ([_obj("x", "nan", 1, 5, 5)], (40, 30), True)})
    with pytest.raises(DatasetError, match=r"a\.xml: object 0 \(x\): <xmin> is 'nan', expected a finite"):
        VOCDataset(root, "train")


def test_unknown_class_name(good_voc):
    with pytest.raises(DatasetError, match=r"a\.xml: unknown class name 'dog', not one of the "
                                           r"classes given \(.*\): cat, bird$"):
        VOCDataset(good_voc, "train", class_names=("cat", "bird"))


def test_box_outside_the_image(tmp_path):
    root = make_voc(tmp_path, {"a": ([_obj("x", 1, 1, 5, 5), _obj("y", 0, 3, 9, 9)],
                                     (40, 30), True)})
    # xmin = 0 means x1 = -1: one pixel left of the image (0-based coordinates, say)
    with pytest.raises(DatasetError, match=r"a\.xml: object 1 \(y\).*outside the 40x30 image"
                       r".*1 <= xmin <= xmax <= 40.*correct this object in the xml, or .* "
                       r"--clip-boxes \(clip_boxes=True in Python\)"):
        VOCDataset(root, "train")


def test_box_outside_checked_against_the_image_when_no_size(tmp_path):
    root = make_voc(tmp_path, {"a": ([_obj("x", 1, 1, 50, 5)], None, True)})
    ds = VOCDataset(root, "train")               # the size is only known from the image
    with pytest.raises(DatasetError, match=r"a\.xml: object 0 \(x\).*outside"):
        ds[0]


@pytest.mark.parametrize("box", [(10, 2, 9, 5), (1, 6, 5, 5)])
def test_empty_box(tmp_path, box):
    root = make_voc(tmp_path, {"a": ([_obj("x", *box)], (40, 30), True)})
    with pytest.raises(DatasetError, match=r"a\.xml: object 0 \(x\) has an empty box"):
        VOCDataset(root, "train")


def test_image_size_disagrees_with_xml(tmp_path):
    root = make_voc(tmp_path, {"a": ([_obj("x", 1, 1, 5, 5)], (40, 30), False)})
    Image.new("RGB", (50, 30)).save(os.path.join(root, "JPEGImages", "a.jpg"))
    with pytest.raises(DatasetError, match=r"a\.xml: <size> says 40x30 but the image .* is 50x30"):
        VOCDataset(root, "train")[0]


def test_index_out_of_range(good_voc):
    ds = VOCDataset(good_voc, "train")
    assert ds[-1]["id"] == "b"
    with pytest.raises(IndexError):
        ds[2]


def test_repeated_id_in_a_split_file(good_voc):
    """A repeated id would weigh its image twice in training and count its objects twice."""
    open(os.path.join(good_voc, "ImageSets", "Main", "train.txt"), "w").write("a\nb\na\n")
    with pytest.raises(DatasetError, match=r"train\.txt lists the image id 'a' twice \(lines 1 and 3\)"):
        VOCDataset(good_voc, "train")


def test_the_id_names_the_image_not_the_filename_tag(tmp_path):
    """An xml whose <filename> names another (existing) image is an error naming both."""
    root = make_voc(tmp_path, {"a": ([_obj("x", 1, 1, 5, 5)], (40, 30), True),
                               "b": ([_obj("x", 2, 2, 9, 9)], (40, 30), True)})
    xml = os.path.join(root, "Annotations", "a.xml")
    text = open(xml).read()
    open(xml, "w").write(text.replace("<filename>a.jpg</filename>", "<filename>b.jpg</filename>"))
    with pytest.raises(DatasetError, match=r"a\.xml: <filename> is 'b\.jpg' but the image id is 'a'"):
        VOCDataset(root, "train")
    # the same id with another extension, no extension, or a folder in front is the same image
    for tag in ("a.png", "a", "C:\\labels\\a.jpg", "JPEGImages/a.jpg"):
        open(xml, "w").write(text.replace("<filename>a.jpg</filename>", f"<filename>{tag}</filename>"))
        assert VOCDataset(root, "train").image_path(0).endswith("a.jpg")


def test_images_are_read_upright_and_16_bit_images_by_their_range(tmp_path):
    """EXIF orientation 6 (a phone's portrait): boxes drawn on the upright 30x40 view fit it."""
    root = make_voc(tmp_path, {"p": ([_obj("x", 1, 1, 30, 10)], (30, 40), False),
                               "g": ([_obj("x", 1, 1, 5, 5)], (40, 30), False)})
    stored = np.zeros((30, 40, 3), dtype=np.uint8)
    stored[:, :10] = 255                     # stored left band = the upright view's top rows
    save_turned(stored, os.path.join(root, "JPEGImages", "p.jpg"))
    grey = np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) % 256
    Image.fromarray(grey * 257).save(os.path.join(root, "JPEGImages", "g.png"))    # 16-bit
    ds = VOCDataset(root, "train")
    p = ds[0]
    assert p["image"].shape == (40, 30, 3)
    x1, y1, x2, y2 = p["boxes"][0].astype(int)
    assert p["image"][y1:y2, x1:x2].mean() > 240            # the box sits on the white band
    np.testing.assert_array_equal(ds[1]["image"][:, :, 2], grey)


def test_exif_turned_image_with_the_stored_size_in_the_xml(tmp_path):
    root = make_voc(tmp_path, {"p": ([_obj("x", 1, 1, 5, 5)], (40, 30), False)})
    save_turned(np.zeros((30, 40, 3), np.uint8), os.path.join(root, "JPEGImages", "p.jpg"))
    with pytest.raises(DatasetError, match=r"p\.xml: <size> says 40x30 but the image .* is 30x40 "
                                           r"\(turned: the image's EXIF orientation is applied"):
        VOCDataset(root, "train")[0]


def test_samples_name_their_file_and_the_data_set_iterates(good_voc):
    ds = VOCDataset(good_voc, "train")
    assert [s["path"] for s in ds] == [os.path.join(good_voc, "JPEGImages", f"{i}.jpg")
                                       for i in ("a", "b")]


def test_default_train_split_is_trainval_when_there_is_one(good_voc):
    assert default_train_split(good_voc) == "train"
    open(os.path.join(good_voc, "ImageSets", "Main", "trainval.txt"), "w").write("a\n")
    assert default_train_split(good_voc) == "trainval"


def test_find_voc_root(tmp_path):
    voc2007 = make_voc(tmp_path / "VOCdevkit" / "VOC2007", {"a": ([], (40, 30), True)})
    assert find_voc_root(voc2007) == voc2007
    assert find_voc_root(str(tmp_path / "VOCdevkit")) == voc2007             # VOC's own layout
    os.rename(tmp_path / "VOCdevkit", tmp_path / "download")                 # VOC2007 alone in it
    assert find_voc_root(str(tmp_path / "download")) == str(tmp_path / "download" / "VOC2007")
    os.makedirs(tmp_path / "download" / "other")                             # no longer alone
    with pytest.raises(DatasetError, match=r"--data-dir .*download: not a VOC folder .*; point "
                                           r"--data-dir at .*download/VOC2007$"):
        find_voc_root(str(tmp_path / "download"), "--data-dir")
    with pytest.raises(DatasetError, match=r"root .*: not a VOC folder.*expected Annotations/"):
        find_voc_root(str(tmp_path / "download" / "other"))
