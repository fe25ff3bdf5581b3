"""Tests for layers.py: Parameter, Module bookkeeping, Conv2d / Linear / ReLU / MaxPool2d, Sequential.

    .venv/bin/pytest tests/test_layers.py -q
"""
import numpy as np
import pytest

from minifrcnn.gradcheck import numeric_gradient, rel_error
from minifrcnn.layers import Conv2d, GroupNorm, Linear, MaxPool2d, Module, Parameter, ReLU, Sequential
from minifrcnn.ops.losses import softmax_cross_entropy
from minifrcnn.optim import SGD


def tiny_net(seed=0, dtype=np.float64):
    """(N, 2, 4, 4) -> conv 3x3 pad 1 -> ReLU -> pool 2x2 -> (N, 3, 2, 2) -> linear -> (N, 5)."""
    rng = np.random.default_rng(seed)
    return Sequential(Conv2d(2, 3, 3, pad=1, init="he", rng=rng, dtype=dtype),
                      ReLU(),
                      MaxPool2d(2, 2),
                      Linear(3 * 2 * 2, 5, init="he", rng=rng, dtype=dtype))


def _data(dtype=np.float64):
    rng = np.random.default_rng(100)
    x = rng.standard_normal((2, 2, 4, 4)).astype(dtype)      # (N, C, H, W)
    labels = np.array([1, 4])                                 # (N,)
    return x, labels


def check_network_gradients(net, names):
    """The softmax loss of net on _data(): every parameter's gradient, named `names`, and the
    input's against numeric gradients, rel_error < 1e-6."""
    x, labels = _data()

    def loss_fn():
        return softmax_cross_entropy(net.forward(x), labels)[0]

    net.zero_grad()
    scores = net.forward(x)
    _, dscores = softmax_cross_entropy(scores, labels)
    dx = net.backward(dscores)

    assert [n for n, _ in net.named_parameters()] == names
    for name, p in net.named_parameters():
        num = numeric_gradient(loss_fn, p.data)
        assert rel_error(p.grad, num) < 1e-6, name
        assert np.abs(p.grad).max() > 1e-6, name             # the check is not vacuous
    assert rel_error(dx, numeric_gradient(loss_fn, x)) < 1e-6


def test_whole_network_gradcheck():
    net = tiny_net()
    # non-zero biases so their gradients are not checked only at the initial point
    rng = np.random.default_rng(5)
    for p in net.parameters():
        if p.name == "bias":
            p.data[...] = 0.1 * rng.standard_normal(p.shape)
    check_network_gradients(net, ["0.weight", "0.bias", "3.weight", "3.bias"])


def test_gradients_accumulate_over_two_backward_calls():
    net = tiny_net()
    x, _ = _data()
    out = net.forward(x)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    net.zero_grad()
    dx1 = net.backward(dout)
    once = [p.grad.copy() for p in net.parameters()]
    dx2 = net.backward(dout)                                   # same cache, second gradient
    assert np.array_equal(dx1, dx2)
    for p, g in zip(net.parameters(), once):
        assert np.allclose(p.grad, 2 * g, rtol=1e-12, atol=0)
    net.zero_grad()
    assert all(np.all(p.grad == 0) for p in net.parameters())


def test_shared_layer_gets_summed_gradient():
    # y = L(x1) + L(x2) with one Linear: dW = x1^T d + x2^T d
    lin = Linear(3, 2, init="gaussian", std=1.0, rng=np.random.default_rng(0), dtype=np.float64)
    rng = np.random.default_rng(1)
    x1, x2, d = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    lin.zero_grad()
    lin.forward(x1)
    lin.backward(d)
    lin.forward(x2)
    lin.backward(d)
    assert np.allclose(lin.weight.grad, x1.T @ d + x2.T @ d)
    assert np.allclose(lin.bias.grad, 2 * d.sum(axis=0))


def test_frozen_parameters_get_no_gradient():
    net = tiny_net()
    net[0].freeze()
    x, _ = _data()
    out = net.forward(x)
    net.zero_grad()
    net.backward(np.ones_like(out))
    assert np.all(net[0].weight.grad == 0) and np.all(net[0].bias.grad == 0)
    assert np.any(net[3].weight.grad != 0)
    net.unfreeze()
    assert all(p.requires_grad for p in net.parameters())


def test_float32_stays_float32():
    net = tiny_net(dtype=np.float32)
    x, _ = _data(np.float32)
    out = net.forward(x)
    assert out.dtype == np.float32 and out.shape == (2, 5)
    dx = net.backward(np.ones_like(out))
    assert dx.dtype == np.float32 and dx.shape == x.shape
    assert all(p.dtype == np.float32 and p.grad.dtype == np.float32 for p in net.parameters())


def test_seeded_init_is_reproducible():
    a = tiny_net(seed=3)
    b = tiny_net(seed=3)
    c = tiny_net(seed=4)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert np.array_equal(pa.data, pb.data)
    assert not np.array_equal(a[0].weight.data, c[0].weight.data)
    # same seed in float32 gives the float64 weights rounded to float32
    d = tiny_net(seed=3, dtype=np.float32)
    assert np.array_equal(d[0].weight.data, a[0].weight.data.astype(np.float32))


def test_init_statistics():
    rng = np.random.default_rng(0)
    conv = Conv2d(64, 64, 3, init="he", rng=rng)               # fan_in = 576, 36864 weights
    want = np.sqrt(2.0 / 576)
    w = conv.weight.data
    assert w.shape == (64, 64, 3, 3) and w.dtype == np.float32
    assert abs(w.std() / want - 1) < 0.03 and abs(w.mean()) < 0.03 * want
    assert np.all(conv.bias.data == 0)

    lin = Linear(500, 400, init="gaussian", std=0.01, rng=rng)  # 200000 weights
    assert abs(lin.weight.data.std() / 0.01 - 1) < 0.02
    assert abs(lin.weight.data.mean()) < 5 * 0.01 / np.sqrt(200000)     # 5 standard errors
    lin = Linear(500, 400, init="gaussian", std=0.001, rng=rng)
    assert abs(lin.weight.data.std() / 0.001 - 1) < 0.02
    lin = Linear(800, 100, init="he", rng=rng)
    assert abs(lin.weight.data.std() / np.sqrt(2.0 / 800) - 1) < 0.03
    assert np.all(lin.bias.data == 0)


def test_init_bad_arguments():
    with pytest.raises(ValueError, match="rng"):
        Conv2d(1, 2, 3)                                         # no Generator given
    with pytest.raises(ValueError, match="init"):
        Linear(2, 3, init="xavier", rng=np.random.default_rng(0))


def test_state_dict_round_trip():
    a = tiny_net(seed=0)
    b = tiny_net(seed=1)
    x, _ = _data()
    assert not np.allclose(a.forward(x), b.forward(x))
    state = a.state_dict()
    assert sorted(state) == ["0.bias", "0.weight", "3.bias", "3.weight"]
    b.load_state_dict(state)
    assert np.array_equal(a.forward(x), b.forward(x))
    # state_dict holds copies: changing it changes neither model
    state["0.weight"][...] = 0
    assert np.any(a[0].weight.data != 0) and np.any(b[0].weight.data != 0)
    # a float32 model loads a float64 state, keeping its own dtype
    c = tiny_net(seed=2, dtype=np.float32)
    c.load_state_dict(a.state_dict())
    assert c[0].weight.dtype == np.float32
    assert np.array_equal(c[0].weight.data, a[0].weight.data.astype(np.float32))


def test_load_state_dict_errors():
    net = tiny_net()
    before = net[0].weight.data.copy()
    bad = net.state_dict()
    bad["0.weight"] = np.zeros((3, 2, 5, 5))
    bad["3.bias"] = np.ones(5)
    with pytest.raises(ValueError, match=r"'0\.weight'.*\(3, 2, 3, 3\).*\(3, 2, 5, 5\)"):
        net.load_state_dict(bad)
    assert np.array_equal(net[0].weight.data, before)         # nothing was loaded
    assert np.all(net[3].bias.data == 0)

    partial = {"3.bias": np.ones(5)}
    with pytest.raises(ValueError, match=r"missing \['0\.bias', '0\.weight', '3\.weight'\]"):
        net.load_state_dict(partial)
    net.load_state_dict(partial, strict=False)
    assert np.all(net[3].bias.data == 1)
    with pytest.raises(ValueError, match="unexpected.*extra"):
        net.load_state_dict({**net.state_dict(), "extra": np.zeros(1)})


class TwoBranch(Module):
    """A module with named children and one Linear used twice (shared parameters)."""

    def __init__(self, rng):
        super().__init__()
        self.trunk = Linear(4, 3, rng=rng, dtype=np.float64)
        self.heads = [Linear(3, 2, rng=rng, dtype=np.float64), ReLU()]
        self.alias = self.trunk                                   # same module twice
        self.scale = Parameter(np.ones(1), "scale")


def test_named_parameters_of_custom_module():
    m = TwoBranch(np.random.default_rng(0))
    names = [n for n, _ in m.named_parameters()]
    assert names == ["scale", "trunk.weight", "trunk.bias", "heads.0.weight", "heads.0.bias"]
    assert len(m.parameters()) == 5                              # the alias is not counted twice
    m.freeze()
    assert not any(p.requires_grad for p in m.parameters())


def test_sequential_indexing_and_errors():
    net = tiny_net()
    assert len(net) == 4 and isinstance(net[1], ReLU) and isinstance(net[-1], Linear)
    head = net[:2]
    assert isinstance(head, Sequential) and head[0] is net[0]
    assert [type(m) for m in net] == [Conv2d, ReLU, MaxPool2d, Linear]
    with pytest.raises(ValueError, match="argument 1"):
        Sequential(ReLU(), "not a module")
    with pytest.raises(RuntimeError, match="before forward"):
        tiny_net().backward(np.zeros((2, 5)))


def test_to_cpu_keeps_everything():
    net = tiny_net()
    x, _ = _data()
    out = net.forward(x)
    assert net.to("cpu") is net
    assert net[0].cache is None                                   # caches are dropped
    assert np.array_equal(net.forward(x), out)
    assert all(isinstance(p.data, np.ndarray) and p.grad.shape == p.shape for p in net.parameters())


def test_forward_inference_gives_the_same_output_and_keeps_no_cache():
    net = tiny_net()
    x, _ = _data()
    out = net.forward(x)
    assert net[0].cache is not None                               # forward keeps what backward needs
    assert np.array_equal(net.forward_inference(x), out)
    assert all(m.cache is None for m in net)                      # ... forward_inference does not
    with pytest.raises(RuntimeError, match="before forward"):
        net.backward(np.zeros_like(out))
    net.forward(x)
    assert net.drop_caches() is net and all(m.cache is None for m in net)


# --------------------------------------------------------------------------- GroupNorm

def gn_net(dtype=np.float64):
    """(N, 2, 4, 4) -> conv 3x3 pad 1 -> GroupNorm(4, 2 groups) -> ReLU -> pool 2x2 -> linear -> (N, 5)."""
    rng = np.random.default_rng(0)
    return Sequential(Conv2d(2, 4, 3, pad=1, init="he", rng=rng, dtype=dtype),
                      GroupNorm(4, 2, dtype=dtype),
                      ReLU(),
                      MaxPool2d(2, 2),
                      Linear(4 * 2 * 2, 5, init="he", rng=rng, dtype=dtype))


def test_group_norm_layer_gradcheck():
    net = gn_net()
    rng = np.random.default_rng(6)
    gn = net[1]
    gn.weight.data[...] = 1 + 0.5 * rng.standard_normal(4)          # away from the initial 1 and 0
    gn.bias.data[...] = 0.5 * rng.standard_normal(4)
    net[0].bias.data[...] = 0.1 * rng.standard_normal(4)
    check_network_gradients(net, ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"])


def test_group_norm_layer_init_decay_cache_and_errors():
    gn = GroupNorm(6, 3)
    assert gn.weight.dtype == np.float32 and gn.weight.shape == (6,)
    assert np.all(gn.weight.data == 1) and np.all(gn.bias.data == 0)
    assert gn.weight.decay_mult == 0.0 and gn.bias.decay_mult == 0.0
    assert repr(gn) == "GroupNorm(6, num_groups=3)"
    # no weight decay: with a zero gradient SGD leaves gamma and beta where they are
    SGD(gn.parameters(), lr=0.1, weight_decay=0.5).step()
    assert np.all(gn.weight.data == 1) and np.all(gn.bias.data == 0)
    x = np.random.default_rng(0).standard_normal((2, 6, 3, 3)).astype(np.float32)
    out = gn.forward(x)
    assert out.dtype == np.float32 and out.shape == x.shape and gn.cache is not None
    gn.zero_grad()
    dx = gn.backward(np.ones_like(out))
    assert dx.dtype == np.float32 and np.all(gn.bias.grad == 2 * 3 * 3)
    assert gn.drop_caches() is gn and gn.cache is None
    with pytest.raises(RuntimeError, match="before forward"):
        gn.backward(np.ones_like(out))
    with pytest.raises(ValueError, match="num_groups: expected a divisor of num_channels=6, got 4"):
        GroupNorm(6, 4)
    with pytest.raises(ValueError, match="num_groups: expected an int >= 1"):
        GroupNorm(6, 0)
