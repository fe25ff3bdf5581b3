"""backbones.py: strides and feature-map sizes as documented, and npz weights loading."""
import numpy as np
import pytest

from minifrcnn.backbones import (BACKBONES, backbone_channels, backbone_stride, build_backbone,
                                 feature_size, load_backbone_weights, parameter_names)
from minifrcnn.config import Config
from minifrcnn.layers import Conv2d, GroupNorm, ReLU
from minifrcnn.model import FasterRCNN


@pytest.mark.parametrize("name,size", [("tiny", (37, 50)), ("small", (64, 72)),
                                       ("small4", (61, 70)), ("zf", (96, 112)), ("vgg16", (48, 64))])
def test_output_shape_matches_feature_size(name, size):
    net = build_backbone(name, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((1, 3) + size).astype(np.float32)
    out = net.forward(x)
    assert out.dtype == np.float32
    assert out.shape == (1, backbone_channels(name)) + feature_size(name, *size)


def test_strides_are_the_papers():
    assert backbone_stride("zf") == 16 and backbone_stride("vgg16") == 16
    assert backbone_stride("small") == 8 and backbone_channels("small") == 128
    assert backbone_stride("small4") == 4 and backbone_channels("small4") == 128
    # small4 is small without its third pool: the same convs, so the same parameter shapes
    assert [p.shape for p in build_backbone("small4", np.random.default_rng(0)).parameters()] == \
        [p.shape for p in build_backbone("small", np.random.default_rng(0)).parameters()]
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


# --------------------------------------------------------------------------- backbone_norm="group"

@pytest.mark.parametrize("name,groups", [("tiny", 2), ("small", 8)])
def test_group_norm_after_every_conv_runs_forward_and_backward(name, groups):
    plain = build_backbone(name, np.random.default_rng(0))
    net = build_backbone(name, np.random.default_rng(0), norm="group", norm_groups=groups)
    convs = [i for i, m in enumerate(net) if isinstance(m, Conv2d)]
    assert len(convs) == 4
    for i in convs:                                             # conv -> GroupNorm -> ReLU
        assert isinstance(net[i + 1], GroupNorm) and isinstance(net[i + 2], ReLU)
        assert net[i + 1].num_groups == groups and net[i + 1].weight.shape == (net[i].weight.shape[0],)
    # no random draw added: the convs hold exactly the weights of the backbone without norm
    plain_convs = [m for m in plain if isinstance(m, Conv2d)]
    for i, conv in zip(convs, plain_convs):
        np.testing.assert_array_equal(net[i].weight.data, conv.weight.data)
    assert parameter_names(name, norm="group", norm_groups=groups) == [n for n, _ in net.named_parameters()]

    x = np.random.default_rng(1).standard_normal((2, 3, 40, 48)).astype(np.float32)
    out = net.forward(x)
    assert out.dtype == np.float32 and out.shape == (2, backbone_channels(name)) + feature_size(name, 40, 48)
    net.zero_grad()
    dx = net.backward(np.ones_like(out))
    assert dx.shape == x.shape and np.all(np.isfinite(dx))
    assert all(np.abs(p.grad).max() > 0 for p in net.parameters())


def test_backbone_norm_is_off_by_default_and_checked():
    assert Config().backbone_norm == "none" and Config.small().backbone_norm == "none"
    assert not any(isinstance(m, GroupNorm) for m in build_backbone("small", np.random.default_rng(0)))
    with pytest.raises(ValueError, match="backbone_norm: expected one of 'none', 'group', got 'batch'"):
        build_backbone("small", np.random.default_rng(0), norm="batch")
    with pytest.raises(ValueError, match=r"backbone_norm_groups: expected a divisor .*\[4, 8, 8, 8\].*got 8"):
        build_backbone("tiny", np.random.default_rng(0), norm="group")       # 8 groups, 4 channels
    with pytest.raises(ValueError, match="backbone_norm_groups: expected an int >= 1"):
        FasterRCNN(Config.small(num_classes=2, backbone_norm="group", backbone_norm_groups=0))
    model = FasterRCNN(Config.small(num_classes=2, backbone_norm="group"))
    assert sum(isinstance(m, GroupNorm) for m in model.backbone) == 4
