"""conv2d: im2col/col2im, fast path vs loop reference, numeric gradients, dtypes, errors."""
import numpy as np
import pytest

from minifrcnn import ops
from minifrcnn.gradcheck import numeric_gradient_array, rel_error

# (N, C, H, W, F, kh, kw, stride, pad): odd sizes, stride 2, pad 0/1/2, N > 1, 1x1, C = 1 and 3
CONFIGS = [
    (2, 3, 7, 7, 4, 3, 3, 1, 1),    # the backbone's 3x3 pad 1, odd size
    (2, 3, 7, 9, 2, 3, 3, 2, 0),    # stride 2, H and W not multiples of the stride (floor)
    (1, 1, 8, 6, 3, 3, 3, 2, 1),    # one channel, stride 2, pad 1
    (3, 1, 5, 5, 2, 3, 2, 2, 2),    # pad 2, non-square kernel, stride 2 on an odd size
    (2, 3, 5, 6, 4, 1, 1, 1, 0),    # 1x1 kernel (the RPN heads)
    (2, 3, 6, 5, 2, 1, 1, 2, 1),    # 1x1 kernel, stride 2, pad 1
    (2, 2, 6, 6, 3, 5, 5, 1, 2),    # kernel 5 > stride: many overlapping windows
]


def _make(cfg, rng, dtype=np.float64):
    N, C, H, W, F, kh, kw, stride, pad = cfg
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, kh, kw)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    return x, w, b, stride, pad


def test_output_size_is_floored():
    x = np.zeros((1, 1, 7, 8))
    assert ops.conv2d_forward(x, np.zeros((2, 1, 3, 3)), np.zeros(2), stride=2)[0].shape == (1, 2, 3, 3)
    assert ops.conv2d_forward(x, np.zeros((2, 1, 3, 3)), np.zeros(2), stride=2, pad=1)[0].shape == (1, 2, 4, 4)
    assert ops.conv2d_forward(x, np.zeros((2, 1, 3, 3)), np.zeros(2), pad=1)[0].shape == (1, 2, 7, 8)
    # non-square kernel: OH uses kh, OW uses kw
    assert ops.conv2d_forward(x, np.zeros((2, 1, 3, 1)), np.zeros(2), stride=2)[0].shape == (1, 2, 3, 4)
    assert ops.im2col(x, 1, 4, stride=1, pad=0).shape == (1, 1 * 1 * 4, 7 * 5)


def test_reference_on_a_hand_computed_example():
    # 4x4 image 0..15, one 2x2 filter of ones, stride 2: each output is the sum of a 2x2 block
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    w = np.ones((1, 1, 2, 2))
    b = np.array([0.5])
    want = np.array([[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]) + 0.5
    for forward in (ops.conv2d_forward_reference, ops.conv2d_forward):
        out, _ = forward(x, w, b, stride=2)
        np.testing.assert_array_equal(out[0, 0], want)
    # cross-correlation, not flipped convolution: a filter with a single 1 at (0, 1) picks x[i, j+1]
    w = np.zeros((1, 1, 2, 2))
    w[0, 0, 0, 1] = 1.0
    out, _ = ops.conv2d_forward(x, w, np.zeros(1))
    np.testing.assert_array_equal(out[0, 0], x[0, 0, :3, 1:])


@pytest.mark.parametrize("cfg", CONFIGS)
def test_im2col_matches_reference_and_col2im_is_its_adjoint(cfg):
    rng = np.random.default_rng(0)
    x, w, _, stride, pad = _make(cfg, rng)
    kh, kw = w.shape[2:]
    cols = ops.im2col(x, kh, kw, stride, pad)
    np.testing.assert_array_equal(cols, ops.im2col_reference(x, kh, kw, stride, pad))
    # <im2col(x), c> == <x, col2im(c)> for every c: col2im adds each column back where it came from
    c = rng.standard_normal(cols.shape)
    back = ops.col2im(c, x.shape, kh, kw, stride, pad)
    assert back.shape == x.shape
    assert abs((cols * c).sum() - (x * back).sum()) < 1e-10 * (1 + abs((cols * c).sum()))


def test_col2im_accumulates_overlapping_windows():
    # 1x4 image, 1x3 kernel, stride 1: two windows, pixels 0-2 and 1-3; pixels 1 and 2 are in both
    ones = np.ones((1, 3, 2))               # (N, C*kh*kw, OH*OW) = (1, 1*1*3, 1*2)
    dx = ops.col2im(ones, (1, 1, 1, 4), 1, 3, stride=1, pad=0)
    np.testing.assert_array_equal(dx[0, 0, 0], [1, 2, 2, 1])


@pytest.mark.parametrize("cfg", CONFIGS)
def test_fast_conv_matches_reference(cfg):
    rng = np.random.default_rng(1)
    x, w, b, stride, pad = _make(cfg, rng)
    out, cache = ops.conv2d_forward(x, w, b, stride, pad)
    out_ref, cache_ref = ops.conv2d_forward_reference(x, w, b, stride, pad)
    assert out.shape == out_ref.shape
    assert rel_error(out, out_ref) < 1e-12
    dout = rng.standard_normal(out.shape)
    for got, want in zip(ops.conv2d_backward(dout, cache), ops.conv2d_backward_reference(dout, cache_ref)):
        assert got.shape == want.shape
        assert rel_error(got, want) < 1e-12


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[1], CONFIGS[3], CONFIGS[5]])
@pytest.mark.parametrize("version", ["fast", "reference"])
def test_conv_gradients_match_numeric(cfg, version):
    forward, backward = {
        "fast": (ops.conv2d_forward, ops.conv2d_backward),
        "reference": (ops.conv2d_forward_reference, ops.conv2d_backward_reference)}[version]
    rng = np.random.default_rng(2)
    x, w, b, stride, pad = _make(cfg, rng)
    out, cache = forward(x, w, b, stride, pad)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = backward(dout, cache)
    f = lambda: forward(x, w, b, stride, pad)[0]  # noqa: E731
    assert rel_error(dx, numeric_gradient_array(f, x, dout)) < 1e-6
    assert rel_error(dw, numeric_gradient_array(f, w, dout)) < 1e-6
    assert rel_error(db, numeric_gradient_array(f, b, dout)) < 1e-6


@pytest.mark.parametrize("forward, backward", [
    (ops.conv2d_forward, ops.conv2d_backward),
    (ops.conv2d_forward_reference, ops.conv2d_backward_reference)])
def test_float32_stays_float32(forward, backward):
    rng = np.random.default_rng(4)
    x, w, b, stride, pad = _make(CONFIGS[1], rng, dtype=np.float32)
    out, cache = forward(x, w, b, stride, pad)
    assert out.dtype == np.float32
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, dw, db = backward(dout, cache)
    assert (dx.dtype, dw.dtype, db.dtype) == (np.float32,) * 3
    assert ops.im2col(x, 3, 3, 2, 0).dtype == np.float32
    # float32 agrees with float64 to float32 precision
    out64, _ = forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), stride, pad)
    assert rel_error(out, out64) < 1e-4


def _args(**over):
    args = dict(x=np.zeros((2, 3, 6, 6)), w=np.zeros((4, 3, 3, 3)), b=np.zeros(4), stride=1, pad=0)
    args.update(over)
    return args


@pytest.mark.parametrize("forward", [ops.conv2d_forward, ops.conv2d_forward_reference])
@pytest.mark.parametrize("over, match", [
    (dict(x=np.zeros((3, 6, 6))), r"x: expected a 4-D array"),
    (dict(w=np.zeros((4, 3, 3))), r"w: expected a 4-D array"),
    (dict(w=np.zeros((4, 2, 3, 3))), r"w: expected shape \(F, C=3, kh, kw\)"),
    (dict(x=np.zeros((2, 3, 6, 6), dtype=np.int64)), r"x: expected dtype float32 or float64"),
    (dict(b=np.zeros(5)), r"b: expected shape \(4,\)"),
    (dict(b=np.zeros((4, 1))), r"b: expected a 1-D array"),
    (dict(w=np.zeros((4, 3, 3, 3), dtype=np.float32)), r"expected one dtype"),
    (dict(w=np.zeros((4, 3, 7, 3))), r"kernel no larger than the padded input.*\(6, 6\)"),
    (dict(w=np.zeros((4, 3, 9, 9)), pad=1), r"kernel no larger than the padded input.*\(8, 8\)"),
    (dict(stride=0), r"stride: expected an int >= 1"),
    (dict(stride=1.5), r"stride: expected an int >= 1"),
    (dict(pad=-1), r"pad: expected an int >= 0"),
])
def test_bad_arguments_raise_value_error(forward, over, match):
    a = _args(**over)
    with pytest.raises(ValueError, match=match):
        forward(a["x"], a["w"], a["b"], stride=a["stride"], pad=a["pad"])


def test_bad_dout_raises_value_error():
    a = _args()
    out, cache = ops.conv2d_forward(a["x"], a["w"], a["b"])
    with pytest.raises(ValueError, match=r"dout: expected shape \(2, 4, 4, 4\)"):
        ops.conv2d_backward(np.zeros((2, 4, 4, 5)), cache)
    with pytest.raises(ValueError, match=r"dout: expected dtype float64"):
        ops.conv2d_backward(out.astype(np.float32), cache)
    with pytest.raises(ValueError, match=r"cols: expected shape"):
        ops.col2im(np.zeros((2, 27, 15)), (2, 3, 6, 6), 3, 3)
