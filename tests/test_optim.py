"""Tests for optim.py: SGD (Caffe form, momentum, weight decay not on biases), its state, lr_at.

    .venv/bin/pytest tests/test_optim.py -q
"""
import numpy as np
import pytest

from minifrcnn.layers import Linear, Parameter, ReLU, Sequential
from minifrcnn.config import Config
from minifrcnn.optim import FLUSH_EVERY, SGD, AdamW, lr_at, lr_for, make_optimizer


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


# --- AdamW and the warm-up -------------------------------------------------------------------

def test_adamw_two_steps_by_hand():
    # lr 0.1, weight decay 0.1, gradient 0.5 twice; w starts at 1.0, the bias (no decay) at 1.0.
    w = Parameter(np.array([1.0]), "weight")
    b = Parameter(np.array([1.0]), "bias", decay_mult=0.0)
    opt = AdamW([w, b], lr=0.1, weight_decay=0.1)
    for p in (w, b):
        p.grad[...] = 0.5
    opt.step()
    # m1 = 0.1 * 0.5 = 0.05, mhat = 0.05 / (1 - 0.9) = 0.5; v1 = 0.001 * 0.25, vhat = 0.25
    # w1 = 1 - 0.1 * (0.5 / (0.5 + 1e-8) + 0.1 * 1.0) = 0.89;  b1 = 1 - 0.1 = 0.9
    assert w.data[0] == pytest.approx(0.89, abs=1e-8)
    assert b.data[0] == pytest.approx(0.9, abs=1e-8)
    opt.step()
    # m2 = 0.9 * 0.05 + 0.05 = 0.095, mhat = 0.095 / 0.19 = 0.5; vhat = 0.25 again
    # w2 = 0.89 - 0.1 * (1 + 0.1 * 0.89) = 0.7811;  b2 = 0.9 - 0.1 = 0.8
    assert w.data[0] == pytest.approx(0.7811, abs=1e-8)
    assert b.data[0] == pytest.approx(0.8, abs=1e-8)
    assert opt.t == [2, 2]


def test_adamw_matches_formula_on_arrays_and_keeps_float32():
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(3)]
    p = Parameter(w0.copy(), "weight")
    opt = AdamW([p], lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=5e-4)
    w, m, v = w0.copy(), 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        p.grad[...] = g
        opt.step()
        m = 0.8 * m + 0.2 * g
        v = 0.99 * v + 0.01 * g * g
        w = w - 0.01 * ((m / (1 - 0.8 ** t)) / (np.sqrt(v / (1 - 0.99 ** t)) + 1e-6) + 5e-4 * w)
    assert np.allclose(p.data, w, rtol=0, atol=1e-14)
    net = _net(0)
    opt = AdamW(net.parameters(), lr=0.01)
    _train(net, opt, 2, seed=1)
    assert all(p.dtype == np.float32 for p in net.parameters())
    assert all(b.dtype == np.float32 for b in opt.m + opt.v)


def test_adamw_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((5, 2))
    grads = [rng.standard_normal((5, 2)) for _ in range(4)]
    p = Parameter(w0.copy(), "weight")
    opt = AdamW([p], lr=0.02, weight_decay=0.01)
    tw = torch.tensor(w0.copy(), requires_grad=True)
    topt = torch.optim.AdamW([tw], lr=0.02, weight_decay=0.01, eps=1e-8)
    for g in grads:
        p.grad[...] = g
        opt.step()
        tw.grad = torch.tensor(g)
        topt.step()
    assert np.allclose(p.data, tw.detach().numpy(), rtol=0, atol=1e-12)


def test_adamw_resume_is_exact_and_state_errors():
    net_a = _net(0)
    opt_a = AdamW(net_a.parameters(), lr=0.01)
    _train(net_a, opt_a, 3, seed=1)
    model_state, opt_state = net_a.state_dict(), opt_a.state_dict()
    _train(net_a, opt_a, 2, seed=2)
    net_b = _net(7)
    opt_b = AdamW(net_b.parameters(), lr=0.5)
    net_b.load_state_dict(model_state)
    opt_b.load_state_dict(opt_state)
    assert opt_b.lr == 0.01 and opt_b.t == [3, 3, 3, 3]
    _train(net_b, opt_b, 2, seed=2)
    for pa, pb in zip(net_a.parameters(), net_b.parameters()):
        assert np.array_equal(pa.data, pb.data)
    net_c = _net(7)                                     # without the moments: another result
    opt_c = AdamW(net_c.parameters(), lr=0.01)
    net_c.load_state_dict(model_state)
    _train(net_c, opt_c, 2, seed=2)
    assert not np.array_equal(net_a[0].weight.data, net_c[0].weight.data)
    with pytest.raises(ValueError, match=r"'m\.0'.*\(4, 6\).*\(2, 2\)"):
        opt_a.load_state_dict(dict(opt_state, **{"m.0": np.zeros((2, 2))}))
    with pytest.raises(ValueError, match=r"'v\.9'"):
        opt_a.load_state_dict(dict(opt_state, **{"v.9": np.zeros(3)}))


def test_make_optimizer_and_warmup():
    params = [Parameter(np.zeros(1))]
    assert isinstance(make_optimizer(params, Config(num_classes=1)), SGD)          # the paper's
    assert isinstance(make_optimizer(params, Config.small(num_classes=1)), AdamW)  # the small preset
    with pytest.raises(ValueError, match="optimizer: expected one of 'sgd', 'adamw', got 'adam'"):
        make_optimizer(params, Config.small(num_classes=1, optimizer="adam"))
    assert lr_at(0, 0.01, (50,), warmup=10) == pytest.approx(0.001)
    assert lr_at(4, 0.01, (50,), warmup=10) == pytest.approx(0.005)
    assert lr_at(10, 0.01, (50,), warmup=10) == 0.01
    assert lr_at(60, 0.01, (50,), warmup=10) == pytest.approx(0.001)


def test_lr_for_follows_the_config_schedule():
    step = Config.small(num_classes=1, lr=0.01, lr_warmup_iters=10).with_iters(100)
    assert lr_for(step, 0) == pytest.approx(0.001)
    assert lr_for(step, 50) == 0.01
    assert lr_for(step, 80) == pytest.approx(0.001)            # the step at 0.8 * 100
    linear = step.replace(lr_schedule="linear")
    assert lr_for(linear, 4) == pytest.approx(0.01 * 0.96 * 0.5)
    assert lr_for(linear, 50) == pytest.approx(0.005)
    assert lr_for(linear, 100) == 0.0
    with pytest.raises(ValueError, match="lr_schedule: expected one of 'step', 'linear', got 'cos'"):
        lr_for(step.replace(lr_schedule="cos"), 0)


def test_adamw_flushes_first_moments_that_would_become_subnormal():
    p = Parameter(np.ones(3, dtype=np.float32), "weight", decay_mult=0.0)
    opt = AdamW([p], lr=1e-3)
    p.grad[...] = [1.0, 0.0, 0.0]
    opt.step()
    p.grad[...] = [1.0, 0.0, 0.0]
    opt.m[0][2] = 1e-31                  # an entry on its way to the subnormals
    for _ in range(FLUSH_EVERY - 1):     # the step count reaches FLUSH_EVERY: the flush
        opt.step()
    assert opt.m[0][2] == 0 and opt.m[0][1] == 0 and opt.m[0][0] > 0.5
