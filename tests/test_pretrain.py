"""pretrain.py: global average pooling's backward, the crops, and weights that train can load."""
import numpy as np
import pytest

from minifrcnn.backbones import build_backbone, load_backbone_weights
from minifrcnn.config import Config
from minifrcnn.data import shapes
from minifrcnn.gradcheck import numeric_gradient_array, rel_error
from minifrcnn.paper.pretrain import (global_avg_pool_backward, global_avg_pool_forward, make_crops,
                                pretrain_backbone)


def test_global_avg_pool_against_loops_and_numeric_gradient():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 4))
    out, cache = global_avg_pool_forward(x)
    loop = np.array([[x[n, c].sum() / 20 for c in range(3)] for n in range(2)])
    np.testing.assert_allclose(out, loop, rtol=1e-12)
    dout = rng.standard_normal(out.shape)
    dx = global_avg_pool_backward(dout, cache)
    dx_num = numeric_gradient_array(lambda: global_avg_pool_forward(x)[0], x, dout)
    assert rel_error(dx, dx_num) < 1e-6
    assert global_avg_pool_forward(x.astype(np.float32))[0].dtype == np.float32


def test_crops_cover_objects_and_background():
    samples = shapes.make_split("train", 10, size=64)
    crops, labels = make_crops(samples, np.random.default_rng(0), crop_size=24)
    n_objects = sum(len(s["labels"]) for s in samples)
    assert crops.shape[1:] == (24, 24, 3) and crops.dtype == np.uint8
    assert int((labels > 0).sum()) == n_objects
    assert 0 < int((labels == 0).sum()) <= 10


def test_pretrained_weights_load_into_the_backbone(tmp_path):
    cfg = Config.small(backbone="tiny", num_classes=4, class_names=shapes.CLASS_NAMES)
    samples = shapes.make_split("train", 12, size=64)
    out = str(tmp_path / "backbone.npz")
    result = pretrain_backbone(cfg, samples, out, iters=5, batch_size=8, crop_size=24,
                               log=lambda *_: None)
    assert 0.0 <= result["train_accuracy"] <= 1.0 and result["num_crops"] > 12
    fresh = build_backbone("tiny", np.random.default_rng(0))
    before = fresh.state_dict()
    load_backbone_weights(fresh, out)
    after = fresh.state_dict()
    assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_no_objects_is_a_clear_error(tmp_path):
    cfg = Config.small(backbone="tiny", num_classes=4, class_names=shapes.CLASS_NAMES)
    empty = [{"image": np.zeros((32, 32, 3), np.uint8), "boxes": np.zeros((0, 4)),
              "labels": np.zeros(0, int)}] * 3
    with pytest.raises(ValueError, match="no objects"):
        pretrain_backbone(cfg, empty, str(tmp_path / "x.npz"), iters=1, log=lambda *_: None)
