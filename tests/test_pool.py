"""max_pool2d: fast path vs loop reference, tie rule, numeric gradients, dtypes, errors."""
import numpy as np
import pytest

from minifrcnn import ops
from minifrcnn.gradcheck import numeric_gradient_array, rel_error

# (N, C, H, W, kernel, stride)
CONFIGS = [
    (2, 3, 8, 8, 2, 2),     # the backbone's 2x2 pool
    (2, 3, 7, 9, 2, 2),     # odd H, W: last row / column dropped
    (1, 1, 7, 7, 3, 2),     # overlapping windows (stride < kernel)
    (2, 1, 5, 6, 2, 1),     # stride 1
    (2, 3, 9, 7, 3, 3),     # kernel == stride == 3, odd sizes
    (1, 2, 6, 7, 2, 3),     # stride > kernel: some pixels in no window
    (2, 2, 4, 5, 1, 1),     # 1x1 pool is the identity
]


def _distinct(shape, rng):
    """float64 values that are all different and at least 0.01 apart: no ties, even after +-1e-6."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.01 + 0.005).reshape(shape) * rng.choice([-1.0, 1.0])


def test_output_size_is_floored():
    x = np.zeros((1, 1, 7, 9))
    assert ops.max_pool2d_forward(x)[0].shape == (1, 1, 3, 4)
    assert ops.max_pool2d_forward(x, kernel=3, stride=2)[0].shape == (1, 1, 3, 4)
    assert ops.max_pool2d_forward(x, kernel=3, stride=3)[0].shape == (1, 1, 2, 3)


def test_hand_computed_example():
    x = np.array([[1., 2., 0., 9., 7.],
                  [3., 4., 5., 6., 8.],
                  [0., 0., 0., 0., 1.]])[None, None]           # (1, 1, 3, 5)
    out, cache = ops.max_pool2d_forward(x)                    # 2x2 stride 2: last row and column dropped
    np.testing.assert_array_equal(out[0, 0], [[4., 9.]])
    dx = ops.max_pool2d_backward(np.array([[[[10., 20.]]]]), cache)
    want = np.zeros((3, 5))
    want[1, 1] = 10.0
    want[0, 3] = 20.0
    np.testing.assert_array_equal(dx[0, 0], want)


@pytest.mark.parametrize("backward", [ops.max_pool2d_backward, ops.max_pool2d_backward_reference])
def test_ties_send_the_gradient_to_the_first_max(backward):
    x = np.array([[5., 5., 1., 7.],
                  [5., 5., 7., 7.]])[None, None]              # (1, 1, 2, 4): ties in both windows
    out, cache = ops.max_pool2d_forward(x)
    dx = backward(np.array([[[[1., 2.]]]]), cache)
    want = np.array([[1., 0., 0., 2.],                         # row-major first: (0, 0) and (0, 3)
                     [0., 0., 0., 0.]])
    np.testing.assert_array_equal(dx[0, 0], want)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_fast_pool_matches_reference_even_with_ties(cfg):
    N, C, H, W, k, s = cfg
    rng = np.random.default_rng(0)
    for x in (rng.standard_normal((N, C, H, W)),
              rng.integers(0, 3, size=(N, C, H, W)).astype(np.float64)):   # many ties
        out, cache = ops.max_pool2d_forward(x, k, s)
        out_ref, cache_ref = ops.max_pool2d_forward_reference(x, k, s)
        np.testing.assert_array_equal(out, out_ref)
        dout = rng.standard_normal(out.shape)
        dx = ops.max_pool2d_backward(dout, cache)
        np.testing.assert_allclose(dx, ops.max_pool2d_backward_reference(dout, cache_ref), rtol=0, atol=1e-14)
        # every output's gradient lands somewhere, exactly once
        assert abs(dx.sum() - dout.sum()) < 1e-10


@pytest.mark.parametrize("cfg", CONFIGS)
def test_pool_gradient_matches_numeric(cfg):
    N, C, H, W, k, s = cfg
    rng = np.random.default_rng(1)
    x = _distinct((N, C, H, W), rng)
    out, cache = ops.max_pool2d_forward(x, k, s)
    dout = rng.standard_normal(out.shape)
    dx_num = numeric_gradient_array(lambda: ops.max_pool2d_forward(x, k, s)[0], x, dout)
    assert rel_error(ops.max_pool2d_backward(dout, cache), dx_num) < 1e-6
    assert rel_error(ops.max_pool2d_backward_reference(dout, cache), dx_num) < 1e-6


@pytest.mark.parametrize("forward, backward", [
    (ops.max_pool2d_forward, ops.max_pool2d_backward),
    (ops.max_pool2d_forward_reference, ops.max_pool2d_backward_reference)])
def test_float32_stays_float32(forward, backward):
    x = np.random.default_rng(2).standard_normal((2, 3, 7, 7)).astype(np.float32)
    out, cache = forward(x, 3, 2)
    assert out.dtype == np.float32
    dx = backward(np.ones(out.shape, np.float32), cache)
    assert dx.dtype == np.float32


@pytest.mark.parametrize("forward", [ops.max_pool2d_forward, ops.max_pool2d_forward_reference])
@pytest.mark.parametrize("x, kernel, stride, match", [
    (np.zeros((3, 6, 6)), 2, 2, r"x: expected a 4-D array"),
    (np.zeros((1, 3, 6, 6), dtype=np.int32), 2, 2, r"x: expected dtype float32 or float64"),
    (np.zeros((1, 3, 6, 2)), 3, 2, r"kernel: expected kernel <= H and <= W"),
    (np.zeros((1, 3, 6, 6)), 0, 2, r"kernel: expected an int >= 1"),
    (np.zeros((1, 3, 6, 6)), 2, 0, r"stride: expected an int >= 1"),
    (np.zeros((1, 3, 6, 6)), (2, 2), 2, r"kernel: expected an int >= 1"),
])
def test_bad_arguments_raise_value_error(forward, x, kernel, stride, match):
    with pytest.raises(ValueError, match=match):
        forward(x, kernel, stride)


def test_bad_dout_raises_value_error():
    out, cache = ops.max_pool2d_forward(np.zeros((1, 2, 6, 6)))
    with pytest.raises(ValueError, match=r"dout: expected shape \(1, 2, 3, 3\)"):
        ops.max_pool2d_backward(np.zeros((1, 2, 3, 4)), cache)
    with pytest.raises(ValueError, match=r"dout: expected dtype float64"):
        ops.max_pool2d_backward(out.astype(np.float32), cache)
