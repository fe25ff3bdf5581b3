"""backbones.py: strides and feature-map sizes as documented, and npz weights loading."""
import numpy as np
import pytest

from minifrcnn.backbones import (BACKBONES, backbone_channels, backbone_stride, build_backbone,
                                 feature_size, load_backbone_weights, parameter_names)


@pytest.mark.parametrize("name,size", [("tiny", (37, 50)), ("small", (64, 72)),
                                       ("zf", (96, 112)), ("vgg16", (48, 64))])
def test_output_shape_matches_feature_size(name, size):
    net = build_backbone(name, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((1, 3) + size).astype(np.float32)
    out = net.forward(x)
    assert out.dtype == np.float32
    assert out.shape == (1, backbone_channels(name)) + feature_size(name, *size)


def test_strides_are_the_papers():
    assert backbone_stride("zf") == 16 and backbone_stride("vgg16") == 16
    assert backbone_stride("small") == 8 and backbone_channels("small") == 128
    assert sum(1 for layer in BACKBONES["vgg16"]["layers"] if layer != "M") == 13
    with pytest.raises(ValueError, match="backbone 'resnet'"):
        build_backbone("resnet", np.random.default_rng(0))


def test_load_weights_from_npz(tmp_path):
    a = build_backbone("tiny", np.random.default_rng(0))
    b = build_backbone("tiny", np.random.default_rng(1))
    np.savez(tmp_path / "w.npz", **a.state_dict())
    load_backbone_weights(b, str(tmp_path / "w.npz"))
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)
    assert parameter_names("tiny") == [n for n, _ in a.named_parameters()]
    np.savez(tmp_path / "bad.npz", **{"0.weight": np.zeros((1, 1, 1, 1))})
    with pytest.raises(ValueError, match="bad.npz"):
        load_backbone_weights(b, str(tmp_path / "bad.npz"))
    with pytest.raises(ValueError, match="missing.npz"):
        load_backbone_weights(b, str(tmp_path / "missing.npz"))
