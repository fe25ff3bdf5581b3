"""Tests for optim.py: SGD (Caffe form, momentum, weight decay not on biases), its state, lr_at.

    .venv/bin/pytest tests/test_optim.py -q
"""
import numpy as np
import pytest

from minifrcnn.layers import Linear, Parameter, ReLU, Sequential
from minifrcnn.optim import SGD, lr_at


def test_two_steps_by_hand():
    # lr 0.1, momentum 0.9, weight decay 0.1; both params start at 1.0 with gradient 0.5.
    w = Parameter(np.array([1.0]), "weight")                    # decayed
    b = Parameter(np.array([1.0]), "bias", decay_mult=0.0)      # not decayed
    opt = SGD([w, b], lr=0.1, momentum=0.9, weight_decay=0.1)
    for p in (w, b):
        p.grad[...] = 0.5
    opt.step()
    # w: v1 = 0.1 * (0.5 + 0.1 * 1.0) = 0.06            w1 = 0.94
    # b: v1 = 0.1 * 0.5 = 0.05                            b1 = 0.95
    assert w.data[0] == pytest.approx(0.94, abs=1e-15)
    assert b.data[0] == pytest.approx(0.95, abs=1e-15)
    opt.step()                                                   # same gradient again
    # w: v2 = 0.9 * 0.06 + 0.1 * (0.5 + 0.1 * 0.94) = 0.1134   w2 = 0.8266
    # b: v2 = 0.9 * 0.05 + 0.1 * 0.5 = 0.095                    b2 = 0.855
    assert w.data[0] == pytest.approx(0.8266, abs=1e-15)
    assert b.data[0] == pytest.approx(0.855, abs=1e-15)


def test_matches_formula_on_arrays():
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4))
    g1, g2 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    p = Parameter(w0.copy(), "weight")
    opt = SGD([p], lr=0.01, momentum=0.9, weight_decay=5e-4)
    p.grad[...] = g1
    opt.step()
    p.grad[...] = g2
    opt.step()
    v1 = 0.01 * (g1 + 5e-4 * w0)
    w1 = w0 - v1
    v2 = 0.9 * v1 + 0.01 * (g2 + 5e-4 * w1)
    w2 = w1 - v2
    assert np.allclose(p.data, w2, rtol=0, atol=1e-15)


def test_layers_biases_are_not_decayed():
    lin = Linear(3, 2, rng=np.random.default_rng(0))
    assert lin.weight.decay_mult == 1.0 and lin.bias.decay_mult == 0.0
    lin.bias.data[...] = 1.0
    opt = SGD(lin.parameters(), lr=0.1, weight_decay=0.5)
    opt.step()                                                   # zero gradients: only decay acts
    assert np.all(lin.bias.data == 1.0)
    w0 = Linear(3, 2, rng=np.random.default_rng(0)).weight.data   # the same initial weights
    assert np.allclose(lin.weight.data, w0 * (1 - 0.1 * 0.5))     # w - lr * wd * w


def test_lr_mult():
    p = Parameter(np.zeros(2), "bias", lr_mult=2.0, decay_mult=0.0)
    q = Parameter(np.zeros(2), "weight")
    p.grad[...] = 1.0
    q.grad[...] = 1.0
    SGD([p, q], lr=0.1, weight_decay=0.0).step()
    assert np.allclose(p.data, -0.2) and np.allclose(q.data, -0.1)


def _net(seed):
    rng = np.random.default_rng(seed)
    return Sequential(Linear(4, 6, init="he", rng=rng), ReLU(), Linear(6, 3, init="he", rng=rng))


def _train(net, opt, steps, seed):
    """A few steps of a fixed regression problem (loss 0.5 |out - t|^2)."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = rng.standard_normal((5, 4)).astype(np.float32)
        t = rng.standard_normal((5, 3)).astype(np.float32)
        net.zero_grad()
        out = net.forward(x)
        net.backward(out - t)
        opt.step()


def test_frozen_params_are_bit_identical():
    net = _net(0)
    net[0].freeze()
    before = [p.data.copy() for p in net.parameters()]
    opt = SGD(net.parameters(), lr=0.1)
    _train(net, opt, 3, seed=1)
    after = [p.data for p in net.parameters()]
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert not np.array_equal(before[2], after[2])
    assert opt.velocity[0] is None and opt.velocity[1] is None
    net[0].unfreeze()
    _train(net, opt, 1, seed=2)
    assert not np.array_equal(before[0], net[0].weight.data)


def test_float32_stays_float32():
    net = _net(0)
    opt = SGD(net.parameters(), lr=0.1)
    _train(net, opt, 2, seed=1)
    assert all(p.dtype == np.float32 for p in net.parameters())
    assert all(v.dtype == np.float32 for v in opt.velocity)


def test_state_dict_resume_is_exact():
    # run A: 3 steps, save, 2 more steps
    net_a = _net(0)
    opt_a = SGD(net_a.parameters(), lr=0.05)
    _train(net_a, opt_a, 3, seed=1)
    model_state, opt_state = net_a.state_dict(), opt_a.state_dict()
    _train(net_a, opt_a, 2, seed=2)

    # run B: a different init and a different lr, then load the saved state and do the same 2 steps
    net_b = _net(7)
    opt_b = SGD(net_b.parameters(), lr=0.9)
    net_b.load_state_dict(model_state)
    opt_b.load_state_dict(opt_state)
    assert opt_b.lr == 0.05
    _train(net_b, opt_b, 2, seed=2)
    for pa, pb in zip(net_a.parameters(), net_b.parameters()):
        assert np.array_equal(pa.data, pb.data)

    # without the momentum buffers the result differs (so the test above can fail)
    net_c = _net(7)
    opt_c = SGD(net_c.parameters(), lr=0.05)
    net_c.load_state_dict(model_state)
    _train(net_c, opt_c, 2, seed=2)
    assert not np.array_equal(net_a[0].weight.data, net_c[0].weight.data)


def test_optimizer_state_dict_is_a_copy_and_errors():
    net = _net(0)
    opt = SGD(net.parameters(), lr=0.1)
    _train(net, opt, 1, seed=1)
    state = opt.state_dict()
    assert sorted(state) == ["lr", "momentum", "velocity.0", "velocity.1", "velocity.2",
                             "velocity.3", "weight_decay"]
    state["velocity.0"][...] = 123.0
    assert not np.any(opt.velocity[0] == 123.0)

    bad = dict(state, **{"velocity.0": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"'velocity\.0'.*\(4, 6\).*\(2, 2\)"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match=r"'velocity\.9'"):
        opt.load_state_dict(dict(state, **{"velocity.9": np.zeros(3)}))
    with pytest.raises(ValueError, match="params"):
        SGD([np.zeros(3)], lr=0.1)


def test_set_lr_and_lr_at():
    opt = SGD([Parameter(np.zeros(1))], lr=0.1)
    opt.set_lr(0.01)
    assert opt.lr == 0.01
    assert lr_at(0, 1e-3, (10, 20)) == 1e-3
    assert lr_at(9, 1e-3, (10, 20)) == 1e-3
    assert lr_at(10, 1e-3, (10, 20)) == pytest.approx(1e-4, rel=1e-12)
    assert lr_at(25, 1e-3, (10, 20), gamma=0.5) == pytest.approx(2.5e-4, rel=1e-12)
    assert lr_at(5, 0.01, ()) == 0.01
    with pytest.raises(ValueError, match="steps"):
        lr_at(5, 0.01, 50000)
