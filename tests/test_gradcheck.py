"""gradcheck.py must itself be right, or every other gradient test proves nothing."""
import numpy as np
import pytest

from minifrcnn.gradcheck import numeric_gradient, numeric_gradient_array, rel_error, sparse_numeric_gradient


def test_rel_error():
    assert rel_error(np.ones(3), np.ones(3)) == 0.0
    assert rel_error(np.array([1.0]), np.array([1.1])) == pytest.approx(0.1 / 2.1)
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.ones(3), np.ones(4))


def test_numeric_gradient_of_known_functions():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    g = numeric_gradient(lambda: (x ** 3).sum(), x)
    assert rel_error(g, 3 * x ** 2) < 1e-8
    x_before = x.copy()
    dout = rng.standard_normal((3, 4))
    g2 = numeric_gradient_array(lambda: np.sin(x), x, dout)
    assert rel_error(g2, np.cos(x) * dout) < 1e-8
    np.testing.assert_array_equal(x, x_before)   # x restored


def test_wrong_gradient_is_caught():
    x = np.random.default_rng(1).standard_normal(5)
    g = numeric_gradient(lambda: (x ** 2).sum(), x)
    assert rel_error(g, 2.2 * x) > 1e-3


def test_sparse_numeric_gradient():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((10, 10))
    idx, vals = sparse_numeric_gradient(lambda: (x ** 2).sum(), x, num_checks=7, rng=rng)
    assert len(idx) == 7 and len(set(idx.tolist())) == 7
    assert rel_error(vals, 2 * x.reshape(-1)[idx]) < 1e-8


def test_non_contiguous_is_refused():
    x = np.zeros((4, 4))[:, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        numeric_gradient(lambda: x.sum(), x)
