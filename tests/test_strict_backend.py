"""minifrcnn/testing/strict.py and the "strict" device: CuPy's host/device rules on a CPU, and
the whole package running under them with the same results as NumPy.

Every test here turns NumpyCallWarning into an error, so a hard-coded `np.` on device data in
any op, box function, target layer or the training step fails the test.

    .venv/bin/pytest tests/test_strict_backend.py -q
    MINIFRCNN_DEVICE=strict .venv/bin/pytest -q     # the tests that use the env device run on it
    MINIFRCNN_DEVICE=cuda .venv/bin/pytest tests/test_strict_backend.py -q   # + CPU-vs-GPU check
"""
import warnings

import numpy as np
import pytest

from minifrcnn import ops
from minifrcnn.anchor_targets import anchor_targets
from minifrcnn.anchors import generate_base_anchors, grid_anchors
from minifrcnn.backend import (array_module_for, device_of, get_array_module, resolve_device,
                               to_device, to_numpy)
from minifrcnn.boxes import batched_nms, box_iou, clip_boxes, decode, encode, nms
from minifrcnn.config import Config
from minifrcnn.data import shapes
from minifrcnn.model import FasterRCNN
from minifrcnn.ops.checks import check_same_device
from minifrcnn.optim import SGD
from minifrcnn.proposal_targets import proposal_targets
from minifrcnn.proposals import proposal_layer
from minifrcnn.testing import strict
from minifrcnn.testing.strict import NumpyCallWarning, StrictArray, xp

pytestmark = pytest.mark.filterwarnings("error::minifrcnn.testing.strict.NumpyCallWarning")


def S(a):
    """A host array on the strict device."""
    return to_device(np.asarray(a), "strict")


def assert_same(strict_result, numpy_result, rtol=0.0):
    """The strict run gave a StrictArray equal to the NumPy run's array (bit for bit by default)."""
    assert isinstance(strict_result, StrictArray), type(strict_result)
    got = strict_result.get()
    assert got.dtype == np.asarray(numpy_result).dtype
    if rtol:
        np.testing.assert_allclose(got, numpy_result, rtol=rtol, atol=1e-7)
    else:
        np.testing.assert_array_equal(got, numpy_result)


# --------------------------------------------------------------------------- the backend itself

def test_implicit_conversion_to_numpy_is_refused():
    a = S(np.arange(6.0).reshape(2, 3))
    for convert in (np.asarray, np.array, np.ascontiguousarray, np.float64):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
            convert(a)
    host = np.zeros((2, 3))
    with pytest.raises(TypeError, match="Implicit conversion"):
        host[...] = a                                   # device data into a host buffer
    copy = a.get()                                      # the explicit copy
    assert type(copy) is np.ndarray
    copy[0, 0] = 99.0
    assert float(a[0, 0]) == 0.0                        # a copy, not a view of the device data


def test_host_arrays_are_refused_inside_device_computations():
    a = S(np.arange(3.0))
    host = np.ones(3)
    for mix in (lambda: a + host, lambda: host * a, lambda: xp.concatenate([a, host]),
                lambda: xp.maximum(a, host), lambda: a + [1.0, 2.0, 3.0]):
        with pytest.raises(TypeError, match="Unsupported type"):
            mix()
    with pytest.raises(TypeError, match="Unsupported type"):
        a += host
    # the allowed ways in: xp.asarray, an index, a value written with a[...] = value
    a[np.array([0, 2])] = np.array([5.0, 7.0])
    assert a.get().tolist() == [5.0, 1.0, 7.0]
    with pytest.raises(ValueError, match="expected all arrays on one device"):
        check_same_device(("x", a), ("w", host))


def test_arithmetic_and_xp_functions_keep_arrays_strict():
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = S(host)
    results = {
        "a * 2 + 1": (a * 2 + 1, host * 2 + 1),
        "np.float32(2) * a": (np.float32(2) * a, np.float32(2) * host),
        "1 - a": (1 - a, 1 - host),
        "a @ a.T": (a @ a.T, host @ host.T),
        "a > 5": (a > 5, host > 5),
        "-a": (-a, -host),
        "xp.exp": (xp.exp(a), np.exp(host)),
        "xp.where": (xp.where(a > 5, a, 0), np.where(host > 5, host, 0)),
        "xp.concatenate": (xp.concatenate([a, a]), np.concatenate([host, host])),
        "a[idx]": (a[S([2, 0])], host[[2, 0]]),
        "a[mask]": (a[a > 5], host[host > 5]),
        "reshape": (a.reshape(4, 3).T, host.reshape(4, 3).T),
        "astype": (a.astype(np.float64), host.astype(np.float64)),
        "sum(axis)": (a.sum(axis=0), host.sum(axis=0)),
    }
    for name, (got, want) in results.items():
        assert isinstance(got, StrictArray), name
        np.testing.assert_array_equal(got.get(), want, err_msg=name)
    # reductions and scalar indexing stay on the device as 0-d arrays (CuPy's rule) ...
    for zero_d in (a.sum(), a.max(), xp.min(a), a[1, 2], a.argmax()):
        assert isinstance(zero_d, StrictArray) and zero_d.ndim == 0
    # ... and become Python numbers only when asked
    assert float(a.sum()) == 66.0 and int(a[1, 2]) == 6 and bool(a[0, 1] > 0)
    assert a.shape == (3, 4) and a.dtype == np.float32 and len(a) == 3 and a.size == 12
    rows, cols = xp.nonzero(a > 9)
    assert isinstance(rows, StrictArray) and rows.get().tolist() == [2, 2]
    out = xp.zeros(4, dtype=np.float32)
    assert xp.maximum(out, a[1], out=out) is out                     # out= hands back out
    out += 1
    assert out.get().tolist() == [5.0, 6.0, 7.0, 8.0]
    assert [float(r[0]) for r in a] == [0.0, 4.0, 8.0]               # iteration gives rows
    assert xp.__name__ == "strict" and xp.int64 is np.int64 and xp.float32 is np.float32


def test_numpy_functions_on_device_data_warn():
    a = S(np.arange(4.0))
    with pytest.warns(NumpyCallWarning, match="numpy.concatenate was called on a strict"):
        b = np.concatenate([a, a])
    assert isinstance(b, StrictArray) and b.shape == (8,)             # it still works, as in CuPy
    with warnings.catch_warnings():
        warnings.simplefilter("error", NumpyCallWarning)
        with pytest.raises(NumpyCallWarning):
            np.clip(a, 0, 1)


def test_sort_is_stable_and_only_cupy_methods_exist():
    ties = np.array([3.0, 1.0, 3.0, 2.0, 1.0, 3.0] * 20)
    a = S(ties)
    np.testing.assert_array_equal(xp.argsort(-a).get(), np.argsort(-ties, kind="stable"))
    np.testing.assert_array_equal(a.argsort().get(), np.argsort(ties, kind="stable"))
    for name in ("tobytes", "data", "ctypes", "tofile"):
        with pytest.raises(AttributeError):
            getattr(a, name)
    with pytest.raises(AttributeError, match="mirrors only"):
        xp.random
    with pytest.raises(NotImplementedError):
        xp.multiply.at(a, S([0]), 2.0)


def test_backend_knows_the_strict_device(monkeypatch):
    host = np.arange(6, dtype=np.float32)
    a = to_device(host, "strict")
    assert isinstance(a, StrictArray) and device_of(a) == "strict" and device_of(host) == "cpu"
    assert get_array_module(a) is xp and get_array_module(host, a) is xp
    back = to_device(a, "cpu")
    assert type(back) is np.ndarray and back.dtype == np.float32
    np.testing.assert_array_equal(to_numpy(a), host)
    assert to_device(a, "strict") is a
    assert resolve_device("STRICT") == "strict"
    monkeypatch.setenv("MINIFRCNN_DEVICE", "strict")
    assert resolve_device() == "strict" and array_module_for() is xp
    assert isinstance(to_device(host), StrictArray)


# --------------------------------------------------------------------------- every op, strict vs NumPy

def _op_cases(rng):
    """(name, run) pairs; run(x) maps a host or strict array maker to the op's outputs."""
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    d_conv = rng.standard_normal((2, 4, 4, 4))
    d_pool = rng.standard_normal((2, 3, 4, 4))
    xl = rng.standard_normal((5, 3, 2, 2))
    wl = rng.standard_normal((12, 6))
    bl = rng.standard_normal(6)
    dl = rng.standard_normal((5, 6))
    logits = rng.standard_normal((10, 4))
    labels = np.array([0, 1, 2, 3, -1, 1, 0, -1, 3, 2])
    pred, target = rng.standard_normal((10, 4)), rng.standard_normal((10, 4))
    weights = (rng.random((10, 4)) < 0.6).astype(np.float64)
    feat = rng.standard_normal((2, 5, 9, 11))
    rois = np.array([[0, 3.0, 5.0, 60.0, 40.0], [1, -8.0, 2.0, 30.0, 70.0],
                     [0, 40.0, 10.0, 41.0, 12.0], [1, 0.0, 0.0, 87.0, 71.0]])
    d_roi = rng.standard_normal((4, 5, 3, 3))

    def conv(m):
        out, cache = ops.conv2d_forward(m(x), m(w), m(b), stride=2, pad=1)
        return (out,) + ops.conv2d_backward(m(d_conv), cache)

    def conv_reference(m):
        out, cache = ops.conv2d_forward_reference(m(x), m(w), m(b), stride=2, pad=1)
        return (out,) + ops.conv2d_backward_reference(m(d_conv), cache)

    def pool(m):
        out, cache = ops.max_pool2d_forward(m(x), 2, 2)
        return out, ops.max_pool2d_backward(m(d_pool), cache)

    def linear(m):
        out, cache = ops.linear_forward(m(xl), m(wl), m(bl))
        return (out,) + ops.linear_backward(m(dl), cache)

    def relu(m):
        out, cache = ops.relu_forward(m(x))
        return out, ops.relu_backward(m(x), cache)

    def losses(m):
        return (ops.softmax_cross_entropy(m(logits), m(labels))
                + ops.softmax_cross_entropy(m(logits), m(labels), normalizer=256)
                + ops.smooth_l1(m(pred), m(target), m(weights), sigma=3.0, normalizer=7.0))

    def roi_pool(m):
        out, cache = ops.roi_pool_forward(m(feat), m(rois), (3, 3), 1 / 8)
        return out, cache["argmax"], ops.roi_pool_backward(m(d_roi), cache)

    def roi_pool_reference(m):
        out, cache = ops.roi_pool_forward_reference(m(feat), m(rois), (3, 3), 1 / 8)
        return out, ops.roi_pool_backward_reference(m(d_roi), cache)

    def roi_align(m):
        out, cache = ops.roi_align_forward(m(feat), m(rois), (3, 3), 1 / 8, sampling_ratio=2)
        return out, ops.roi_align_backward(m(d_roi), cache)

    return [("conv", conv), ("conv_reference", conv_reference), ("pool", pool),
            ("linear", linear), ("relu", relu), ("losses", losses), ("roi_pool", roi_pool),
            ("roi_pool_reference", roi_pool_reference), ("roi_align", roi_align)]


@pytest.mark.parametrize("index", range(9))
def test_every_op_forward_and_backward_runs_strict_and_equals_numpy(index):
    name, run = _op_cases(np.random.default_rng(index))[index]
    want = run(np.asarray)
    got = run(S)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_same(g, w)


def test_roi_align_reference_runs_strict():
    # the slow sample-by-sample loops, on a small case (numpy scalars mixed with device rows)
    rng = np.random.default_rng(5)
    feat = rng.standard_normal((1, 2, 5, 6))
    rois = np.array([[0, 2.0, 3.0, 30.0, 20.0], [0, -4.0, 1.0, 12.0, 44.0]])
    dout = rng.standard_normal((2, 2, 2, 2))

    def run(m):
        out, cache = ops.roi_align_forward_reference(m(feat), m(rois), (2, 2), 1 / 8, 2)
        return out, ops.roi_align_backward_reference(m(dout), cache)

    for g, w in zip(run(S), run(np.asarray)):
        assert_same(g, w)


# --------------------------------------------------------------------------- boxes and targets

def _boxes(rng, n, size=64.0):
    xy = rng.uniform(0, size * 0.8, (n, 2))
    wh = rng.uniform(2, size * 0.5, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def test_boxes_and_anchors_run_strict():
    rng = np.random.default_rng(0)
    a, b = _boxes(rng, 40), _boxes(rng, 7)
    deltas = rng.normal(0, 0.3, (40, 8)).astype(np.float32)
    scores = rng.random(40).astype(np.float32)
    scores[::5] = scores[0]                                           # ties: stable order matters
    labels = rng.integers(1, 4, 40)
    assert_same(box_iou(S(a), S(b)), box_iou(a, b))
    assert_same(encode(S(a[:7]), S(b), (10, 10, 5, 5)), encode(a[:7], b, (10, 10, 5, 5)))
    assert_same(decode(S(a), S(deltas)), decode(a, deltas))
    assert_same(clip_boxes(S(a), (50, 60)), clip_boxes(a, (50, 60)))
    want = nms(a, scores, 0.5)
    for method in ("loop", "matrix", "auto"):                         # auto = matrix off NumPy
        assert_same(nms(S(a), S(scores), 0.5, method=method), want)
    assert_same(batched_nms(S(a), S(scores), S(labels), 0.3), batched_nms(a, scores, labels, 0.3))
    base = generate_base_anchors(8, (0.5, 1, 2), (2, 4, 8))
    assert_same(grid_anchors(S(base), 5, 6, 8), grid_anchors(base, 5, 6, 8))


def sampling_case():
    """Anchors (576, 4) of an 8x8 map, 2 gt boxes and labels, RPN scores and deltas: host arrays."""
    rng = np.random.default_rng(1)
    anchors = grid_anchors(generate_base_anchors(8, (0.5, 1, 2), (2, 4, 8)), 8, 8, 8)   # (576, 4)
    gt = np.array([[4.0, 6.0, 30.0, 40.0], [33.0, 20.0, 60.0, 58.0]], dtype=np.float32)
    gt_labels = np.array([2, 3])
    fg = rng.random(len(anchors)).astype(np.float32)
    deltas = rng.normal(0, 0.2, (len(anchors), 4)).astype(np.float32)
    return anchors, gt, gt_labels, fg, deltas


def test_anchor_targets_proposals_and_proposal_targets_run_strict():
    anchors, gt, gt_labels, fg, deltas = sampling_case()

    want = anchor_targets(anchors, gt, (64, 64), np.random.default_rng(2), batch_size=64)
    got = anchor_targets(S(anchors), S(gt), (64, 64), np.random.default_rng(2), batch_size=64)
    for g, w in zip(got, want):
        assert_same(g, w)

    want_p = proposal_layer(anchors, fg, deltas, (64, 64), 300, 50, 0.7, 2.0)
    got_p = proposal_layer(S(anchors), S(fg), S(deltas), (64, 64), 300, 50, 0.7, 2.0)
    for g, w in zip(got_p, want_p):
        assert_same(g, w)

    want_t = proposal_targets(want_p[0], gt, gt_labels, 3, np.random.default_rng(3), batch_size=32)
    got_t = proposal_targets(got_p[0], S(gt), S(gt_labels), 3, np.random.default_rng(3), batch_size=32)
    assert set(got_t) == set(want_t)
    for key in want_t:
        assert_same(got_t[key], want_t[key])


# --------------------------------------------------------------------------- the whole detector

def tiny_config(**overrides):
    values = dict(backbone="tiny", num_classes=4, class_names=shapes.CLASS_NAMES, head_hidden=16,
                  roi_output_size=3, rpn_batch_size=32, roi_batch_size=16,
                  image_min_size=48, image_max_size=48, score_threshold=0.0,
                  rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50,
                  rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=30)
    values.update(overrides)
    return Config.small(**values)


@pytest.fixture(scope="module")
def data():
    return shapes.make_split("train", 4, size=48)


def _train_and_detect(cfg, data, device, iters=2):
    """Two train_step iterations on `device`, then predict; everything returned on the host."""
    from minifrcnn.train import train_step
    model = FasterRCNN(cfg).to(device)
    opt = SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    losses = [train_step(model, opt, data, cfg, it) for it in range(iters)]
    assert model.device() == device
    params = {name: to_numpy(p.data) for name, p in model.named_parameters()}
    dets = model.predict([s["image"] for s in data[:2]])
    assert all(getattr(m, "cache", None) is None for m in model.modules())   # inference keeps none
    return losses, params, dets


def _assert_same_run(got, want, rtol):
    got_losses, got_params, got_dets = got
    want_losses, want_params, want_dets = want
    for g, w in zip(got_losses, want_losses):
        assert g.keys() == w.keys()
        for k in w:
            assert g[k] == pytest.approx(w[k], rel=rtol, abs=1e-7), k
    for name in want_params:
        np.testing.assert_allclose(got_params[name], want_params[name], rtol=rtol, atol=1e-7,
                                   err_msg=name)
    for g, w in zip(got_dets, want_dets):
        assert all(type(v) is np.ndarray for v in g.values())        # predict returns host arrays
        np.testing.assert_array_equal(g["labels"], w["labels"])
        np.testing.assert_allclose(g["boxes"], w["boxes"], rtol=rtol, atol=1e-4)
        np.testing.assert_allclose(g["scores"], w["scores"], rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("roi_op", ["pool", "align"])
def test_training_step_and_predict_under_strict_equal_numpy(data, roi_op):
    cfg = tiny_config(roi_op=roi_op)
    want = _train_and_detect(cfg, data, "cpu")
    got = _train_and_detect(cfg, data, "strict")
    assert len(want[2][0]["boxes"]) > 0, "the comparison needs some detections"
    _assert_same_run(got, want, rtol=1e-6)


def test_training_step_on_the_env_device_equals_numpy(data):
    """The chainercv-style consistency check on whatever MINIFRCNN_DEVICE names (cpu by default;
    strict or cuda when set), against NumPy. On a GPU the float32 sums run in another order,
    hence the looser tolerance there."""
    device = resolve_device()
    cfg = tiny_config()
    want = _train_and_detect(cfg, data, "cpu")
    got = _train_and_detect(cfg, data, device)
    _assert_same_run(got, want, rtol=1e-3 if device == "cuda" else 1e-6)


@pytest.mark.parametrize("roi_op", ["pool", "align"])
def test_a_training_step_copies_no_array_to_the_host_except_where_cuda_kernels_take_over(data, roi_op):
    """Issue #7: no host-device copy inside a training iteration other than scalars. On the
    strict device the ARRAY versions of RoI max pooling (its bin shapes, read back with
    .tolist()) and of NMS (the overlap matrix, greedy pass on the host) run; on CuPy the CUDA
    kernels of ops/cuda_kernels.py replace exactly those two (tests/test_gpu.py). RoIAlign (the
    small preset's) copies nothing. Everything else in the step (sampling included) must keep
    its arrays on the device."""
    from minifrcnn.train import train_step
    cfg = tiny_config(roi_op=roi_op)
    model = FasterRCNN(cfg).to("strict")
    opt = SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    with strict.record_host_copies() as copies:
        train_step(model, opt, data, cfg, 0)
    sites = {where for where, _ in copies}
    assert "boxes._nms_matrix" in sites, copies                  # the recorder does see copies
    kernel_replaced = {"roi_pool.roi_pool_forward", "boxes._nms_matrix"}
    assert sites <= (kernel_replaced if roi_op == "pool" else {"boxes._nms_matrix"}), copies


# --------------------------------------------------------------------------- counting device work

def test_count_device_ops_counts_each_operation_and_each_wait_once():
    where = "test_strict_backend.test_count_device_ops_counts_each_operation_and_each_wait_once"
    a = S(np.arange(6.0).reshape(2, 3))
    with strict.count_device_ops() as counts:
        b = a + 1                                   # op
        c = xp.exp(b)                               # op
        c.reshape(3, 2).T[1:]                       # views: free
        c[:, 0]                                     # basic index: a view, free
        c[xp.asarray(np.array([1, 0]))]             # asarray (host to device): op; index: op
        xp.nonzero(c.ravel() > 2)                   # ravel: a view; >, nonzero: ops; nonzero waits
        float(c.sum())                              # sum: op; float: op that waits
        c[c > 5] = 0                                # >: op; mask assignment: op that waits
        c *= 2                                      # op
        c.get()                                     # op that waits
    assert counts.ops == {where: 12}, counts.ops
    assert counts.syncs == {where: 4}, counts.syncs
    with strict.count_device_ops() as outside:
        pass
    a + 1                                           # nothing is counted outside the block
    assert not outside.ops and not outside.syncs


def test_count_device_ops_names_the_function_a_comprehension_is_written_in():
    """Python 3.12 runs list/dict comprehensions in their function's frame, 3.11 gives them one
    of their own ('<listcomp>'); the counts name the function on both (generators too)."""
    where = "test_strict_backend.test_count_device_ops_names_the_function_a_comprehension_is_written_in"
    a = S(np.arange(6.0))
    with strict.count_device_ops() as counts:
        [float(a[i]) for i in range(2)]             # 2 reads back
        {i: float(a[i]) for i in range(1)}          # 1
        sum(float(a[i]) for i in range(1))          # 1 (a generator)
    assert counts.syncs == {where: 4}, counts.syncs


@pytest.mark.parametrize("roi_op", ["pool", "align"])
def test_a_training_step_waits_for_the_device_only_where_the_algorithm_needs_it(data, roi_op):
    """Issue #7, GPU speed: each wait (sync) stops the host from queueing kernels ahead of the
    GPU. Outside the array versions that CUDA kernels replace, a training step may wait only
    where a size depends on the data (how many fg and bg RoIs, which proposals are big
    enough), in the argument checks that read one flag back, and for the 5 logged loss values.
    The anchor targets need none: they are computed on the host (JointTraining.sample) and only
    uploaded. A new sync elsewhere fails here, named; see scripts/count_device_ops.py for the
    counts of the default detector."""
    from minifrcnn.ops.cuda_kernels import REPLACED_ARRAY_VERSIONS
    from minifrcnn.train import train_step
    cfg = tiny_config(roi_op=roi_op)
    model = FasterRCNN(cfg).to("strict")
    opt = SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    allowed = {"proposal_targets.proposal_targets": 6,   # label check + 2 nonzero per image
               "roi_align.roi_align_forward": 2,         # RoIAlign: its RoIs of each image (nonzero)
               "boxes.remove_small_boxes": 2,            # 1 nonzero per image
               "boxes.encode": 2,                        # 1 size check per call, 1 per image
               "losses._check_logits_labels": 2,         # label range, RPN and head
               "roi_pool.check_feat_rois": 1,            # RoI coordinates finite and in range
               "train.batch_forward": 5}                 # float(loss) for the log
    for it in range(3):
        with strict.count_device_ops() as counts:
            train_step(model, opt, data, cfg, it)
        syncs = {k: v for k, v in counts.syncs.items() if k not in REPLACED_ARRAY_VERSIONS}
        over = {k: v for k, v in syncs.items() if v > allowed.get(k, 0)}
        assert not over, f"iteration {it}: more waits than expected at {over} (all: {syncs})"
        assert sum(counts.ops.values()) > 400            # the counter does see the step
        on_device = {k for k in counts.ops if k.startswith("anchor_targets.")}
        assert on_device == {"anchor_targets.random_subset"}, counts.ops   # proposal_targets' use
