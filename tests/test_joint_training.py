"""joint_training.py: approximate joint training's forward (sampling and the four loss terms)
and backward. The key test: a whole-model gradient check in float64."""
import numpy as np
import pytest

from minifrcnn.gradcheck import rel_error
from minifrcnn.joint_training import JointTraining
from minifrcnn.model import FasterRCNN
from test_model import tiny_batch, tiny_config


@pytest.mark.parametrize("roi_op", ["pool", "align"])
@pytest.mark.parametrize("normalization", ["paper", "py-faster-rcnn"])
@pytest.mark.parametrize("backbone_norm", [{}, dict(backbone_norm="group", backbone_norm_groups=2)],
                         ids=["no-norm", "group-norm"])
def test_whole_model_gradient_check(roi_op, normalization, backbone_norm):
    """d(total loss)/d(every parameter) against centred differences, samples held fixed.

    Every parameter tensor is checked at a few random coordinates (all of the small ones):
    the RPN and head gradients meeting on the shared feature map, RoI pooling's backward
    and the backbone's are all in this chain. With backbone_norm="group" the tiny backbone
    has a GroupNorm (2 groups) after every conv, their gamma and beta checked too.
    """
    cfg = tiny_config(roi_op=roi_op, loss_normalization=normalization, **backbone_norm)
    model = FasterRCNN(cfg, rng=np.random.default_rng(0), dtype="float64")
    # larger initial weights than the paper's 0.01, so every term has a sizeable gradient
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            p.data[...] = np.random.default_rng(len(name)).standard_normal(p.shape) * 0.3
    rng = np.random.default_rng(1)
    images, sizes, boxes, labels = tiny_batch(rng)
    step = JointTraining(model)
    terms, samples = step.forward(images, sizes, boxes, labels, np.random.default_rng(2))
    assert int((samples["roi_labels"] > 0).sum()) > 0, "the check needs foreground RoIs"
    assert int((samples["rpn_labels"] == 1).sum()) > 0, "the check needs positive anchors"
    model.zero_grad()
    step.backward()

    def total():
        t, _ = step.forward(images, sizes, boxes, labels, None, samples=samples)
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
    terms, samples = JointTraining(model).forward(images, sizes, boxes, labels,
                                                  np.random.default_rng(2))
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
    step = JointTraining(model)
    terms, samples = step.forward(images, sizes, empty, [np.zeros(0, int)] * 2,
                                  np.random.default_rng(2))
    assert all(np.isfinite(float(v)) for v in terms.values())
    assert float(terms["rpn_reg"]) == 0.0 and float(terms["head_reg"]) == 0.0
    assert (samples["rpn_labels"] != 1).all() and (samples["roi_labels"] == 0).all()
    model.zero_grad()
    step.backward()
    assert all(np.isfinite(p.grad).all() for p in model.parameters())


def test_parts_are_checked_and_backward_needs_a_forward():
    model = FasterRCNN(tiny_config(), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="parts"):
        JointTraining(model, parts=("rpn", "heads"))
    with pytest.raises(RuntimeError, match="before forward"):
        JointTraining(model).backward()
