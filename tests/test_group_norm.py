"""group_norm: numeric gradients, fast path vs loop reference, the normalisation itself, dtypes,
errors, and the strict device (and a GPU where there is one)."""
import numpy as np
import pytest

from minifrcnn import ops
from minifrcnn.backend import to_device
from minifrcnn.gradcheck import numeric_gradient_array, rel_error
from minifrcnn.testing import strict
from minifrcnn.testing.strict import StrictArray

# (N, C, H, W, num_groups)
CONFIGS = [
    (2, 6, 3, 4, 3),        # 2 channels per group
    (2, 8, 4, 5, 2),        # 4 channels per group, odd W
    (2, 4, 3, 3, 1),        # one group: layer norm over (C, H, W)
    (3, 4, 3, 3, 4),        # one channel per group: instance norm
    (1, 4, 5, 2, 2),        # a batch of one
]


def _case(cfg, rng, dtype=np.float64):
    """x (N, C, H, W) away from zero mean and unit variance, gamma (C,), beta (C,), dout."""
    N, C, H, W, G = cfg
    x = (rng.standard_normal((N, C, H, W)) * 2 + 0.5).astype(dtype)
    gamma = rng.standard_normal(C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    dout = rng.standard_normal((N, C, H, W)).astype(dtype)
    return x, gamma, beta, dout, G


def _groups(a, G):
    """(N, C, H, W) -> (N, G, C/G * H * W): the elements that share one mean and variance."""
    return a.reshape(a.shape[0], G, -1)


# --------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("cfg", CONFIGS)
def test_gradients_match_numeric(cfg):
    rng = np.random.default_rng(0)
    x, gamma, beta, dout, G = _case(cfg, rng)
    out, cache = ops.group_norm_forward(x, gamma, beta, G)
    dx, dgamma, dbeta = ops.group_norm_backward(dout, cache)
    assert dx.shape == x.shape and dgamma.shape == dbeta.shape == gamma.shape

    def f():
        return ops.group_norm_forward(x, gamma, beta, G)[0]

    assert rel_error(dgamma, numeric_gradient_array(f, gamma, dout)) < 1e-6
    assert rel_error(dbeta, numeric_gradient_array(f, beta, dout)) < 1e-6
    # dx sums to 0 over each group, so some of its entries are close to 0: there the centred
    # difference's rounding (~1e-9 here, the loss's rounding / h) is all that rel_error sees.
    # So: rel_error < 1e-6 on the entries above 1% of the largest (measured: at most 1.6e-7 over
    # 25 seeds of these configs), and an absolute bound relative to the gradient's scale on all
    # of them (measured: at most 6e-9).
    dx_num = numeric_gradient_array(f, x, dout)
    sizeable = np.abs(dx_num) > 1e-2 * np.abs(dx_num).max()
    assert rel_error(dx[sizeable], dx_num[sizeable]) < 1e-6
    assert np.abs(dx - dx_num).max() < 1e-7 * np.abs(dx_num).max()


@pytest.mark.parametrize("cfg", CONFIGS)
def test_dx_is_orthogonal_to_shifts_and_scalings_of_a_group(cfg):
    # out does not change when a group's input is shifted or scaled, so dx sums to 0 over each
    # group and is orthogonal to x_hat there (up to the eps in sqrt(var + eps))
    x, gamma, beta, dout, G = _case(cfg, np.random.default_rng(1))
    out, cache = ops.group_norm_forward(x, gamma, beta, G)
    dx, _, _ = ops.group_norm_backward(dout, cache)
    x_hat, _ = ops.group_norm_forward(x, np.ones_like(gamma), np.zeros_like(beta), G)
    scale = np.abs(_groups(dx, G)).sum(axis=2)                          # (N, G)
    assert np.all(np.abs(_groups(dx, G).sum(axis=2)) < 1e-12 * scale)
    assert np.all(np.abs((_groups(dx, G) * _groups(x_hat, G)).sum(axis=2)) < 1e-5 * scale.max())


# --------------------------------------------------------------------------- fast path vs reference

@pytest.mark.parametrize("cfg", CONFIGS + [(2, 32, 16, 16, 8)])
def test_fast_path_matches_reference_float64(cfg):
    x, gamma, beta, dout, G = _case(cfg, np.random.default_rng(2))
    out, cache = ops.group_norm_forward(x, gamma, beta, G)
    out_ref, cache_ref = ops.group_norm_forward_reference(x, gamma, beta, G)
    np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-12)
    grads = ops.group_norm_backward(dout, cache)
    grads_ref = ops.group_norm_backward_reference(dout, cache_ref)
    for got, want, name in zip(grads, grads_ref, ("dx", "dgamma", "dbeta")):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("cfg", [(2, 6, 3, 4, 3), (2, 32, 16, 16, 8), (2, 128, 16, 16, 8)])
def test_fast_path_matches_reference_float32(cfg):
    # the fast path computes in float32; the reference in float64, rounded to float32 at the end
    x, gamma, beta, dout, G = _case(cfg, np.random.default_rng(3), np.float32)
    out, cache = ops.group_norm_forward(x, gamma, beta, G)
    out_ref, cache_ref = ops.group_norm_forward_reference(x, gamma, beta, G)
    assert out.dtype == out_ref.dtype == np.float32
    np.testing.assert_allclose(out, out_ref, rtol=1e-5, atol=1e-5)
    grads = ops.group_norm_backward(dout, cache)
    grads_ref = ops.group_norm_backward_reference(dout, cache_ref)
    for got, want, name in zip(grads, grads_ref, ("dx", "dgamma", "dbeta")):
        assert got.dtype == want.dtype == np.float32, name
        # dgamma and dbeta are sums of N*H*W float32 products: compare at that sum's scale
        atol = 1e-5 * max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol, err_msg=name)


# --------------------------------------------------------------------------- the normalisation

@pytest.mark.parametrize("forward", [ops.group_norm_forward, ops.group_norm_forward_reference])
def test_each_group_has_mean_0_and_variance_1(forward):
    N, C, H, W, G = 2, 8, 5, 6, 4
    rng = np.random.default_rng(4)
    x = rng.standard_normal((N, C, H, W)) * 3 + rng.standard_normal((N, C, 1, 1)) * 5   # channel offsets
    out, _ = forward(x, np.ones(C), np.zeros(C), G)
    groups = _groups(out, G)                                            # (N, G, M)
    var_x = _groups(x, G).var(axis=2)                                   # (N, G)
    np.testing.assert_allclose(groups.mean(axis=2), 0, atol=1e-12)
    # exactly var / (var + eps): 1 up to the eps
    np.testing.assert_allclose(groups.var(axis=2), var_x / (var_x + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(groups.var(axis=2), 1, rtol=1e-5)
    # gamma and beta scale and shift each channel afterwards
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    out2, _ = forward(x, gamma, beta, G)
    np.testing.assert_allclose(out2, out * gamma[:, None, None] + beta[:, None, None], rtol=1e-12, atol=1e-12)


def test_an_image_does_not_depend_on_the_batch_and_a_group_not_on_its_scale():
    x, gamma, beta, _, G = _case((3, 6, 4, 4, 3), np.random.default_rng(5))
    out, _ = ops.group_norm_forward(x, gamma, beta, G)
    alone, _ = ops.group_norm_forward(x[1:2], gamma, beta, G)
    np.testing.assert_allclose(alone[0], out[1], rtol=1e-12, atol=1e-12)
    moved = x.copy()
    moved[0, 2:4] = moved[0, 2:4] * 7.0 - 3.0                          # group 1 of image 0
    out_moved, _ = ops.group_norm_forward(moved, gamma, beta, G, eps=1e-12)
    out_eps0, _ = ops.group_norm_forward(x, gamma, beta, G, eps=1e-12)
    np.testing.assert_allclose(out_moved, out_eps0, rtol=1e-9, atol=1e-9)


def test_a_constant_group_gives_beta():
    # var = 0: x_hat = 0 / sqrt(eps) = 0, no division by zero, and dx = 0
    x = np.ones((1, 4, 3, 3))
    gamma, beta = np.full(4, 2.0), np.arange(4.0)
    out, cache = ops.group_norm_forward(x, gamma, beta, 2)
    np.testing.assert_array_equal(out, np.broadcast_to(beta[None, :, None, None], x.shape))
    dx, _, _ = ops.group_norm_backward(np.ones_like(x), cache)
    assert np.all(np.isfinite(dx)) and np.abs(dx).max() < 1e-12


@pytest.mark.parametrize("forward, backward", [
    (ops.group_norm_forward, ops.group_norm_backward),
    (ops.group_norm_forward_reference, ops.group_norm_backward_reference)])
def test_float32_stays_float32(forward, backward):
    x, gamma, beta, dout, G = _case((2, 4, 3, 3, 2), np.random.default_rng(6), np.float32)
    out, cache = forward(x, gamma, beta, G, eps=np.float64(1e-5))      # a float64 eps changes nothing
    assert out.dtype == np.float32
    assert [g.dtype for g in backward(dout, cache)] == [np.float32] * 3


# --------------------------------------------------------------------------- errors

C4 = np.zeros(4)


@pytest.mark.parametrize("forward", [ops.group_norm_forward, ops.group_norm_forward_reference])
@pytest.mark.parametrize("x, gamma, beta, num_groups, eps, match", [
    (np.zeros((2, 4, 3)), C4, C4, 2, 1e-5, r"x: expected a 4-D array"),
    (np.zeros((2, 4, 3, 3), np.int64), C4, C4, 2, 1e-5, r"x: expected dtype float32 or float64"),
    (np.zeros((2, 4, 3, 3)), np.zeros(3), C4, 2, 1e-5, r"gamma: expected shape \(4,\)"),
    (np.zeros((2, 4, 3, 3)), C4, np.zeros((4, 1)), 2, 1e-5, r"beta: expected a 1-D array"),
    (np.zeros((2, 4, 3, 3)), C4.astype(np.float32), C4, 2, 1e-5, r"expected one dtype.*gamma: float32"),
    (np.zeros((2, 4, 3, 3)), C4, C4, 0, 1e-5, r"num_groups: expected an int >= 1, got 0"),
    (np.zeros((2, 4, 3, 3)), C4, C4, 2.0, 1e-5, r"num_groups: expected an int >= 1, got 2.0"),
    (np.zeros((2, 4, 3, 3)), C4, C4, 3, 1e-5, r"num_groups: expected a divisor of the 4 channels.*got 3"),
    (np.zeros((2, 4, 3, 3)), C4, C4, 2, 0.0, r"eps: expected a positive number"),
    (np.zeros((2, 4, 3, 3)), C4, C4, 2, float("nan"), r"eps: expected a positive number"),
    (np.zeros((2, 4, 3, 3)), C4, C4, 2, "1e-5", r"eps: expected a positive number"),
    (np.zeros((2, 4, 3, 3)), C4, C4, 2, True, r"eps: expected a positive number"),
])
def test_bad_arguments_raise_value_error(forward, x, gamma, beta, num_groups, eps, match):
    with pytest.raises(ValueError, match=match):
        forward(x, gamma, beta, num_groups, eps)


@pytest.mark.parametrize("forward, backward", [
    (ops.group_norm_forward, ops.group_norm_backward),
    (ops.group_norm_forward_reference, ops.group_norm_backward_reference)])
def test_bad_dout_raises_value_error(forward, backward):
    out, cache = forward(np.zeros((1, 4, 3, 3)), np.ones(4), C4, 2)
    with pytest.raises(ValueError, match=r"dout: expected shape \(1, 4, 3, 3\)"):
        backward(np.zeros((1, 4, 3, 2)), cache)
    with pytest.raises(ValueError, match=r"dout: expected dtype float64"):
        backward(out.astype(np.float32), cache)


# --------------------------------------------------------------------------- devices

def S(a):
    """A host array on the strict device."""
    return to_device(np.asarray(a), "strict")


@pytest.mark.filterwarnings("error::minifrcnn.testing.strict.NumpyCallWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_runs_on_the_strict_device_equal_to_numpy_with_no_host_copy(dtype):
    x, gamma, beta, dout, G = _case((2, 8, 5, 6, 4), np.random.default_rng(7), dtype)

    def run(m):
        out, cache = ops.group_norm_forward(m(x), m(gamma), m(beta), G)
        return (out,) + ops.group_norm_backward(m(dout), cache)

    want = run(np.asarray)
    with strict.record_host_copies() as copies:
        got = run(S)
    assert copies == []
    for g, w in zip(got, want):
        assert isinstance(g, StrictArray) and g.dtype == dtype
        np.testing.assert_array_equal(g.get(), w)                       # bit for bit
    with pytest.raises(ValueError, match="expected all arrays on one device"):
        ops.group_norm_forward(S(x), gamma, beta, G)
    # the reference takes device arrays too (it copies them to the host, explicitly)
    out_ref, cache_ref = ops.group_norm_forward_reference(S(x), S(gamma), S(beta), G)
    grads_ref = ops.group_norm_backward_reference(S(dout), cache_ref)
    host_ref = ops.group_norm_forward_reference(x, gamma, beta, G)
    np.testing.assert_array_equal(out_ref, host_ref[0])
    for g, w in zip(grads_ref, ops.group_norm_backward_reference(dout, host_ref[1])):
        np.testing.assert_array_equal(g, w)


def test_cupy_matches_numpy():
    cupy = pytest.importorskip("cupy")
    if not cupy.is_available():
        pytest.skip("CuPy finds no usable GPU")
    x, gamma, beta, dout, G = _case((2, 32, 16, 16, 8), np.random.default_rng(8))
    out, cache = ops.group_norm_forward(x, gamma, beta, G)
    out_gpu, cache_gpu = ops.group_norm_forward(cupy.asarray(x), cupy.asarray(gamma), cupy.asarray(beta), G)
    np.testing.assert_allclose(cupy.asnumpy(out_gpu), out, rtol=1e-10, atol=1e-12)
    grads_gpu = ops.group_norm_backward(cupy.asarray(dout), cache_gpu)
    for got, want in zip(grads_gpu, ops.group_norm_backward(dout, cache)):
        np.testing.assert_allclose(cupy.asnumpy(got), want, rtol=1e-10, atol=1e-10)
