"""linear and relu: forward values, numeric gradients, dtypes, errors."""
import numpy as np
import pytest

from minifrcnn import ops
from minifrcnn.gradcheck import numeric_gradient_array, rel_error


# ----------------------------------------------------------------------------------- linear

@pytest.mark.parametrize("x_shape", [(4, 6), (3, 2, 3, 2)])     # flat, and a feature map flattened
def test_linear_forward_and_gradients(x_shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    D_in = int(np.prod(x_shape[1:]))
    w = rng.standard_normal((D_in, 5))
    b = rng.standard_normal(5)
    out, cache = ops.linear_forward(x, w, b)
    assert out.shape == (x_shape[0], 5)
    # out[n, k] = sum_d x[n, d] w[d, k] + b[k], written out as loops
    x2 = x.reshape(x_shape[0], D_in)
    want = np.array([[sum(x2[n, d] * w[d, k] for d in range(D_in)) + b[k] for k in range(5)]
                     for n in range(x_shape[0])])
    assert rel_error(out, want) < 1e-12
    dout = rng.standard_normal(out.shape)
    dx, dw, db = ops.linear_backward(dout, cache)
    assert dx.shape == x.shape
    f = lambda: ops.linear_forward(x, w, b)[0]  # noqa: E731
    assert rel_error(dx, numeric_gradient_array(f, x, dout)) < 1e-6
    assert rel_error(dw, numeric_gradient_array(f, w, dout)) < 1e-6
    assert rel_error(db, numeric_gradient_array(f, b, dout)) < 1e-6


def test_linear_float32_stays_float32():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 2)).astype(np.float32)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = np.zeros(3, np.float32)
    out, cache = ops.linear_forward(x, w, b)
    assert out.dtype == np.float32
    grads = ops.linear_backward(np.ones((3, 3), np.float32), cache)
    assert [g.dtype for g in grads] == [np.float32] * 3


@pytest.mark.parametrize("x, w, b, match", [
    (np.zeros(4), np.zeros((4, 3)), np.zeros(3), r"x: expected shape \(N, D_in\)"),
    (np.zeros((2, 5)), np.zeros((4, 3)), np.zeros(3), r"w: expected shape \(5, D_out\)"),
    (np.zeros((2, 2, 3)), np.zeros((4, 3)), np.zeros(3), r"w: expected shape \(6, D_out\)"),
    (np.zeros((2, 4)), np.zeros((4, 3)), np.zeros(2), r"b: expected shape \(3,\)"),
    (np.zeros((2, 4)), np.zeros(4), np.zeros(3), r"w: expected a 2-D array"),
    (np.zeros((2, 4), dtype=np.int64), np.zeros((4, 3)), np.zeros(3), r"x: expected dtype float32 or float64"),
    (np.zeros((2, 4), dtype=np.float32), np.zeros((4, 3)), np.zeros(3), r"expected one dtype"),
])
def test_linear_bad_arguments(x, w, b, match):
    with pytest.raises(ValueError, match=match):
        ops.linear_forward(x, w, b)


def test_linear_bad_dout():
    _, cache = ops.linear_forward(np.zeros((2, 4)), np.zeros((4, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"dout: expected shape \(2, 3\)"):
        ops.linear_backward(np.zeros((2, 4)), cache)


# ----------------------------------------------------------------------------------- relu

def test_relu_forward_and_gradient():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5))
    x[np.abs(x) < 1e-3] = 0.5                        # stay away from the kink for the numeric check
    out, cache = ops.relu_forward(x)
    np.testing.assert_array_equal(out, np.where(x > 0, x, 0.0))
    dout = rng.standard_normal(x.shape)
    dx = ops.relu_backward(dout, cache)
    assert rel_error(dx, numeric_gradient_array(lambda: ops.relu_forward(x)[0], x, dout)) < 1e-6


def test_relu_gradient_at_zero_is_zero():
    x = np.array([-1.0, 0.0, 2.0])
    _, cache = ops.relu_forward(x)
    np.testing.assert_array_equal(ops.relu_backward(np.array([5.0, 5.0, 5.0]), cache), [0.0, 0.0, 5.0])


def test_relu_float32_stays_float32():
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    out, cache = ops.relu_forward(x)
    assert out.dtype == np.float32
    assert ops.relu_backward(np.ones_like(x), cache).dtype == np.float32


def test_relu_bad_arguments():
    with pytest.raises(ValueError, match=r"x: expected dtype float32 or float64"):
        ops.relu_forward(np.arange(4))
    _, cache = ops.relu_forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"dout: expected shape \(2, 3\)"):
        ops.relu_backward(np.zeros((3, 2)), cache)
    with pytest.raises(ValueError, match=r"dout: expected dtype float64"):
        ops.relu_backward(np.zeros((2, 3), np.float32), cache)
