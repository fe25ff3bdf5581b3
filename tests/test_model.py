"""model.py: the whole detector. The key test: a whole-model gradient check in float64."""
import numpy as np
import pytest

from minifrcnn.config import Config
from minifrcnn.gradcheck import rel_error
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


@pytest.mark.parametrize("roi_op", ["pool", "align"])
@pytest.mark.parametrize("normalization", ["paper", "py-faster-rcnn"])
def test_whole_model_gradient_check(roi_op, normalization):
    """d(total loss)/d(every parameter) against centred differences, samples held fixed.

    Every parameter tensor is checked at a few random coordinates (all of the small ones):
    the RPN and head gradients meeting on the shared feature map, RoI pooling's backward
    and the backbone's are all in this chain.
    """
    cfg = tiny_config(roi_op=roi_op, loss_normalization=normalization)
    model = FasterRCNN(cfg, rng=np.random.default_rng(0), dtype="float64")
    # larger initial weights than the paper's 0.01, so every term has a sizeable gradient
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            p.data[...] = np.random.default_rng(len(name)).standard_normal(p.shape) * 0.3
    rng = np.random.default_rng(1)
    images, sizes, boxes, labels = tiny_batch(rng)
    terms, samples = model.forward_train(images, sizes, boxes, labels, np.random.default_rng(2))
    assert int((samples["roi_labels"] > 0).sum()) > 0, "the check needs foreground RoIs"
    assert int((samples["rpn_labels"] == 1).sum()) > 0, "the check needs positive anchors"
    model.zero_grad()
    model.backward()

    def total():
        t, _ = model.forward_train(images, sizes, boxes, labels, None, samples=samples)
        return float(t["total"])

    h = 1e-6
    pick = np.random.default_rng(3)

    def numeric(flat, idx):
        out = np.empty(len(idx))
        for k, i in enumerate(idx):
            old = flat[i]
            flat[i] = old + h
            plus = total()
            flat[i] = old - h
            minus = total()
            flat[i] = old
            out[k] = (plus - minus) / (2 * h)
        return out

    checked = 0
    for name, p in model.named_parameters():
        flat = p.data.reshape(-1)
        grad = p.grad.reshape(-1)
        # Relative check where the gradient is sizeable: a coordinate whose true gradient is
        # ~1e-9 has a centred difference that is all rounding (the loss is ~1, float64 ~16
        # digits, h = 1e-6), so such coordinates get an absolute check below instead.
        big = np.nonzero(np.abs(grad) > 1e-3 * np.abs(grad).max())[0]
        assert len(big) > 0, f"{name}: no gradient at all reaches this parameter"
        idx = pick.choice(big, size=min(5, len(big)), replace=False)
        err = rel_error(grad[idx], numeric(flat, idx))
        assert err < 1e-5, f"{name}: rel_error {err:.2e}"
        anywhere = pick.choice(flat.size, size=min(3, flat.size), replace=False)
        np.testing.assert_allclose(grad[anywhere], numeric(flat, anywhere), rtol=1e-4, atol=1e-8,
                                   err_msg=name)
        checked += 1
    assert checked == len(model.parameters())


def test_loss_terms_are_reported_and_sum_to_total():
    model = FasterRCNN(tiny_config(), rng=np.random.default_rng(0))
    images, sizes, boxes, labels = tiny_batch(np.random.default_rng(1), dtype=np.float32)
    terms, samples = model.forward_train(images, sizes, boxes, labels, np.random.default_rng(2))
    assert set(terms) == {"rpn_cls", "rpn_reg", "head_cls", "head_reg", "total"}
    parts = sum(float(terms[k]) for k in ("rpn_cls", "rpn_reg", "head_cls", "head_reg"))
    assert float(terms["total"]) == pytest.approx(parts, rel=1e-6)
    # fresh weights: both classifiers start near uniform, log(2) and log(K + 1)
    assert float(terms["rpn_cls"]) == pytest.approx(np.log(2) * (samples["rpn_labels"] >= 0).sum()
                                                    / (2 * 32), rel=0.05)
    assert float(terms["head_cls"]) == pytest.approx(np.log(3), rel=0.05)
    assert samples["rois"].shape[1] == 5 and set(np.unique(samples["rois"][:, 0])) <= {0.0, 1.0}


def test_image_without_objects_trains_without_nan():
    model = FasterRCNN(tiny_config(), rng=np.random.default_rng(0))
    images, sizes, _, _ = tiny_batch(np.random.default_rng(1), dtype=np.float32)
    empty = [np.zeros((0, 4)), np.zeros((0, 4))]
    terms, samples = model.forward_train(images, sizes, empty, [np.zeros(0, int)] * 2,
                                         np.random.default_rng(2))
    assert all(np.isfinite(float(v)) for v in terms.values())
    assert float(terms["rpn_reg"]) == 0.0 and float(terms["head_reg"]) == 0.0
    assert (samples["rpn_labels"] != 1).all() and (samples["roi_labels"] == 0).all()
    model.zero_grad()
    model.backward()
    assert all(np.isfinite(p.grad).all() for p in model.parameters())


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
