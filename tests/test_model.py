"""model.py: the network at test time: predict, detect, save / load, and its caches.

The training half (sampling, losses, the whole-model gradient check) is in test_joint_training.py.
"""
import numpy as np
import pytest

from minifrcnn.config import Config
from minifrcnn.model import FasterRCNN


def tiny_config(**overrides):
    values = dict(backbone="tiny", num_classes=2, class_names=("a", "b"), head_hidden=16,
                  roi_output_size=3, rpn_batch_size=32, roi_batch_size=16,
                  image_min_size=32, image_max_size=64,
                  rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50,
                  rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=30)
    values.update(overrides)
    return Config.small(**values)


def tiny_batch(rng, n=2, size=32, dtype=np.float64):
    images = rng.standard_normal((n, 3, size, size)).astype(dtype)
    boxes = [np.array([[2.0, 3.0, 18.0, 20.0], [10.0, 8.0, 30.0, 29.0]]),
             np.array([[5.0, 5.0, 25.0, 15.0]])][:n]
    labels = [np.array([1, 2]), np.array([2])][:n]
    return images, [(size, size)] * n, boxes, labels


def test_predict_formats_and_original_coordinates():
    cfg = tiny_config(score_threshold=0.0)
    model = FasterRCNN(cfg, rng=np.random.default_rng(0))
    rng = np.random.default_rng(5)
    imgs = [rng.integers(0, 255, (40, 56, 3), dtype=np.uint8),
            rng.integers(0, 255, (64, 30, 3), dtype=np.uint8)]
    dets = model.predict(imgs)
    assert len(dets) == 2
    for d, img in zip(dets, imgs):
        assert d["boxes"].dtype == np.float32 and d["boxes"].shape[1] == 4
        assert d["labels"].dtype == np.int64 and d["scores"].shape == d["labels"].shape
        assert len(d["scores"]) <= cfg.max_detections
        assert (d["boxes"][:, [0, 2]] <= img.shape[1]).all()
        assert (d["boxes"][:, [1, 3]] <= img.shape[0]).all()
        assert ((d["labels"] >= 1) & (d["labels"] <= 2)).all()
        assert (np.diff(d["scores"]) <= 1e-6).all() or len(d["scores"]) < 2
    # original coordinates: predict's boxes are detect's (in the resized batch) divided by
    # each image's resize factor, then clipped to the original image
    batch, sizes, scales = model.preprocess(imgs)
    assert scales[0] != 1.0 and scales[0] != scales[1]          # both images were resized
    resized = model.detect(batch, sizes, scales)
    for d, r, s, img in zip(dets, resized, scales, imgs):
        assert len(d["boxes"]) == len(r["boxes"]) > 0
        h, w = img.shape[:2]
        want = np.clip(r["boxes"] / s, 0, [w, h, w, h])
        np.testing.assert_allclose(d["boxes"], want, rtol=1e-5, atol=1e-4)
        assert (d["boxes"] >= 0).all()
    # the same images as an (N, 3, H, W) float batch in [0, 1] take the same road
    same = model.predict([imgs[0], imgs[0]])
    floats = np.stack([imgs[0]] * 2).transpose(0, 3, 1, 2).astype(np.float32) / 255
    again = model.predict(floats)
    np.testing.assert_allclose(again[1]["scores"], same[1]["scores"], rtol=1e-5)
    np.testing.assert_allclose(again[1]["boxes"], same[1]["boxes"], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="image 0"):
        model.predict([np.zeros((5, 5), np.uint8)])
    # floats outside [0, 1] (0..255 pixels, a normalised batch) would be clipped: refused
    for wrong in (floats * 255, floats - 0.5):
        with pytest.raises(ValueError, match=r"images: expected floats in \[0, 1\]"):
            model.predict(wrong)


def test_save_load_round_trip(tmp_path):
    # rng 123, not the config's seed 0: a load that ignored the saved weights would build
    # different ones from the config's seed, and the checks below would see it
    model = FasterRCNN(tiny_config(score_threshold=0.0), rng=np.random.default_rng(123))
    img = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    model.save(tmp_path / "m.npz")
    loaded = FasterRCNN.load(tmp_path / "m.npz")
    assert loaded.cfg == model.cfg
    fresh = dict(FasterRCNN(tiny_config(score_threshold=0.0)).named_parameters())
    for name, p in loaded.named_parameters():
        np.testing.assert_array_equal(p.data, dict(model.named_parameters())[name].data, err_msg=name)
        assert not np.array_equal(p.data, fresh[name].data) or not p.data.any(), name
    a, b = model.predict([img])[0], loaded.predict([img])[0]
    np.testing.assert_array_equal(a["boxes"], b["boxes"])
    np.testing.assert_array_equal(a["scores"], b["scores"])


def test_load_rejects_other_files(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="x.npz.*not a minifrcnn model"):
        FasterRCNN.load(tmp_path / "x.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.npz"):
        FasterRCNN.load(tmp_path / "broken.npz")


def test_config_checks():
    with pytest.raises(ValueError, match="class_names"):
        FasterRCNN(tiny_config(num_classes=3))
    with pytest.raises(ValueError, match="feat_stride"):
        FasterRCNN(tiny_config(feat_stride=16))


def arrays_held(module):
    """(module type, attribute) of every array a module keeps outside its Parameters:
    a numpy array, or a tuple / list / dict holding one (a layer's cache)."""
    def holds_array(v):
        if hasattr(v, "shape") and hasattr(v, "dtype"):
            return True
        if isinstance(v, (tuple, list)):
            return any(holds_array(x) for x in v)
        if isinstance(v, dict):
            return any(holds_array(x) for x in v.values())
        return False
    from minifrcnn.layers import Parameter
    return [(type(m).__name__, k) for m in module.modules() for k, v in vars(m).items()
            if not isinstance(v, Parameter) and holds_array(v)]


def test_no_layer_holds_an_activation_after_predict():
    """predict() drops every activation cache (RoI pooling's argmax, the convs' columns...):
    what stays is the weights and the model's constant anchors."""
    model = FasterRCNN(tiny_config(score_threshold=0.0), rng=np.random.default_rng(0))
    constants = {("FasterRCNN", "base_anchors"), ("FasterRCNN", "_anchor_cache")}
    assert set(arrays_held(model)) <= constants
    img = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    model.predict([img])
    assert set(arrays_held(model)) == constants
    # after a training forward the caches are there (the check can see them) ...
    from minifrcnn.joint_training import JointTraining
    images, sizes, boxes, labels = tiny_batch(np.random.default_rng(1), dtype=np.float32)
    JointTraining(model).forward(images, sizes, boxes, labels, np.random.default_rng(2))
    held = arrays_held(model)
    assert ("FastRCNNHead", "cache") in held and ("Conv2d", "cache") in held
    # ... and drop_caches gives every one of them back; what a layer keeps between its
    # forward and its backward is called `cache` everywhere, so none escapes
    model.drop_caches()
    assert set(arrays_held(model)) == constants
    assert all(getattr(m, "cache", None) is None for m in model.modules())
