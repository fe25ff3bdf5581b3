"""Resize rules, flips, normalisation, batching and the way back to the original image."""
import numpy as np
import pytest

from minifrcnn.config import Config
from minifrcnn.data.transforms import (
    boxes_to_original, check_image, check_images, denormalize, hflip, hflip_boxes, normalize, prepare_batch,
    resize_boxes, resize_image, resize_scale, resized_shape, to_batch)


def test_resize_scale_rules():
    # shorter side to min_size: VOC's 500 x 375 -> 600 / 375 = 1.6 (longer side 800 <= 1000)
    assert resize_scale(375, 500, 600, 1000) == pytest.approx(1.6)
    # unless the longer side would pass max_size: 600 / 200 = 3 -> 1500 > 1000, so 1000 / 500
    assert resize_scale(200, 500, 600, 1000) == pytest.approx(2.0)
    # no up-scaling: a 128 px image stays 128 px with min_size 600
    assert resize_scale(128, 128, 600, 1000, allow_upscale=False) == 1.0
    # ... but down-scaling still happens: 128 / 256 = 0.5
    assert resize_scale(256, 300, 128, 1000, allow_upscale=False) == pytest.approx(0.5)
    # the small preset (min 128, max 256) on a 64 x 96 image: would be 2, capped at 1
    assert resize_scale(64, 96, 128, 256, allow_upscale=False) == 1.0
    assert resize_scale(64, 96, 128, 256, allow_upscale=True) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="min_size"):
        resize_scale(10, 10, 0, 100)


def test_resize_image_shape_and_values():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    out = resize_image(image, 1.5)
    assert out.shape == (45, 60, 3) and out.dtype == np.uint8
    assert resized_shape(30, 40, 1.5) == (45, 60)
    same = resize_image(image, 1.0)
    assert np.array_equal(same, image) and same is not image
    flat = np.full((20, 20, 3), 77, dtype=np.uint8)
    assert (resize_image(flat, 0.55) == 77).all()          # bilinear keeps a flat image flat
    with pytest.raises(ValueError, match="uint8"):
        resize_image(image.astype(np.float32), 2.0)


def test_resize_boxes_and_back_to_original():
    boxes = np.array([[0, 0, 10, 20], [5.5, 3, 40, 30]], dtype=np.float32)
    scaled = resize_boxes(boxes, 1.6)
    np.testing.assert_allclose(scaled, boxes * 1.6)
    assert scaled.dtype == np.float32
    back = boxes_to_original(scaled, 1.6, (30, 40))
    np.testing.assert_allclose(back, boxes, rtol=1e-6)
    # the model's boxes may reach past the image: clipped to [0, W] x [0, H]
    out = boxes_to_original(np.array([[-5, -1, 70, 100.0]]), 2.0, (30, 40))
    np.testing.assert_array_equal(out, [[0, 0, 35, 30]])


def test_hflip_box_convention_matches_the_pixels():
    image = np.zeros((5, 10, 3), dtype=np.uint8)
    image[1:3, 1:4] = 255                        # pixels x 1..3 -> box x1 = 1, x2 = 4
    boxes = np.array([[1, 1, 4, 3]], dtype=np.float32)
    flipped, fboxes = hflip(image, boxes)
    np.testing.assert_array_equal(fboxes, [[6, 1, 9, 3]])   # x1' = W - x2, x2' = W - x1
    cols = np.flatnonzero(flipped[..., 0].any(axis=0))
    assert (cols.min(), cols.max() + 1) == (6, 9)           # the pixels moved the same way
    again, gboxes = hflip(flipped, fboxes)
    assert np.array_equal(again, image) and np.array_equal(gboxes, boxes)   # flip twice = id
    np.testing.assert_array_equal(hflip_boxes(boxes, 10), fboxes)


def test_normalize_and_denormalize():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = normalize(image, mean, std)
    assert x.shape == (3, 6, 7) and x.dtype == np.float32
    expected = (image[2, 3, 1] / 255 - mean[1]) / std[1]
    assert x[1, 2, 3] == pytest.approx(expected, rel=1e-5)
    assert np.array_equal(denormalize(x, mean, std), image)


def test_to_batch_pads_bottom_right():
    a = np.ones((3, 4, 5), dtype=np.float32)
    b = 2 * np.ones((3, 6, 3), dtype=np.float32)
    batch, sizes = to_batch([a, b])
    assert batch.shape == (2, 3, 6, 5) and batch.dtype == np.float32
    assert sizes == [(4, 5), (6, 3)]
    assert (batch[0, :, :4, :5] == 1).all() and (batch[0, :, 4:, :] == 0).all()
    assert (batch[1, :, :, :3] == 2).all() and (batch[1, :, :, 3:] == 0).all()
    with pytest.raises(ValueError, match="images"):
        to_batch([])
    with pytest.raises(ValueError, match=r"images\[1\]"):
        to_batch([a, np.ones((4, 5, 3))])


def test_prepare_batch_resizes_flips_and_normalises():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(101, 60, 3), dtype=np.uint8)
    sample = {"image": image, "boxes": np.array([[0, 10, 60, 101]], np.float32),
              "labels": np.array([3])}
    cfg = Config.small(image_min_size=30, image_max_size=1000, allow_upscale=True,
                       pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.25, 0.25, 0.25), flip=False)
    x, sizes, boxes, labels, scales = prepare_batch([sample], cfg, train=True)
    assert scales == [pytest.approx(0.5)] and sizes == [(50, 30)]
    assert x.shape == (1, 3, 50, 30) and x.dtype == np.float32  # round(50.5) = 50 (half to even)
    np.testing.assert_allclose(x[0], normalize(resize_image(image, 0.5), cfg.pixel_mean,
                                               cfg.pixel_std))
    np.testing.assert_allclose(boxes[0], [[0, 5, 30, 50]])   # 50.5 clipped to the image
    assert labels[0].dtype == np.int64
    # a flip when training (rng.random() < 0.5 for this seed), never at test time
    flip_cfg = cfg.replace(flip=True)
    moved = {**sample, "boxes": np.array([[10, 0, 20, 8]], np.float32)}
    assert np.random.default_rng(2).random() < 0.5
    xf, _, fboxes, _, _ = prepare_batch([moved], flip_cfg, np.random.default_rng(2), train=True)
    np.testing.assert_allclose(fboxes[0], [[20, 0, 25, 4]])  # W' = 30: 30 - 10, 30 - 5
    np.testing.assert_array_equal(xf[0], x[0][:, :, ::-1])
    xt, _, tboxes, _, _ = prepare_batch([moved], flip_cfg, np.random.default_rng(2), train=False)
    np.testing.assert_array_equal(xt, x)
    np.testing.assert_allclose(tboxes[0], [[5, 0, 10, 4]])
    # images without boxes (predict's road): empty boxes and labels
    _, _, none, nolabels, _ = prepare_batch([{"image": image}], cfg, train=False)
    assert none[0].shape == (0, 4) and nolabels[0].shape == (0,)


def test_check_image_names_the_image_and_the_minimum_size():
    cfg = Config.small()                                  # stride 4, never up-scaled
    assert check_image(np.zeros((128, 100, 3), np.uint8), cfg) == 1.0
    with pytest.raises(ValueError, match=r"image a\.png: 3x3 px is too small.*at least 4 px"):
        check_image(np.zeros((3, 3, 3), np.uint8), cfg, "image a.png")
    with pytest.raises(ValueError, match="image 3: expected dtype uint8"):
        check_image(np.zeros((32, 32, 3), np.float32), cfg, "image 3")
    with pytest.raises(ValueError, match=r"image x7: 40x3 px is too small"):
        prepare_batch([{"image": np.zeros((32, 32, 3), np.uint8)},
                       {"image": np.zeros((3, 40, 3), np.uint8), "id": "x7"}], cfg, train=False)




def test_check_images_names_each_sample_by_its_file_else_its_id():
    """The command line checks every image of every split with it, before the first iteration."""
    cfg = Config.small()
    good = {"image": np.zeros((32, 32, 3), np.uint8), "id": "ok"}
    check_images([good] * 3, cfg)
    tiny = np.zeros((3, 3, 3), np.uint8)
    for sample, name in (({"image": tiny, "id": "t", "path": "J/t.png"}, "J/t.png"),
                         ({"image": tiny, "id": "t"}, "t"), ({"image": tiny}, "1")):
        with pytest.raises(ValueError, match=rf"^image {name}: 3x3 px is too small"):
            check_images(iter([good, sample]), cfg)


def test_prepare_batch_for_training_needs_the_generator_that_flips():
    cfg = Config.small()
    sample = {"image": np.zeros((32, 32, 3), np.uint8)}
    with pytest.raises(ValueError, match="rng: .*numpy Generator.*train=False"):
        prepare_batch([sample], cfg)
    assert prepare_batch([sample], cfg.replace(flip=False))[0].shape == (1, 3, 32, 32)
    assert prepare_batch([sample], cfg, train=False)[0].shape == (1, 3, 32, 32)
