"""A tiny module system on top of the functional ops: parameters, layers, Sequential.

There is no autograd here (as in CS231n and the early DeZero steps). Every layer does two things:

    out = layer.forward(x)       computes the output and keeps the cache it needs
    dx  = layer.backward(dout)   uses that cache, ADDS dL/dW into each param.grad, returns dL/dx

Gradients accumulate (+=) so that a layer used twice, or a feature map read by two branches,
gets the sum of both gradients, as the chain rule asks. Call zero_grad() before each step.

    rng = np.random.default_rng(0)
    net = Sequential(Conv2d(3, 8, 3, pad=1, rng=rng), ReLU(), MaxPool2d(2, 2),
                     Linear(8 * 4 * 4, 10, rng=rng))
    scores = net.forward(x)                   # x (N, 3, 8, 8) -> (N, 10)
    loss, dscores = softmax_cross_entropy(scores, labels)
    net.zero_grad(); net.backward(dscores)    # fills every param.grad
    for name, p in net.named_parameters():    # "0.weight", "0.bias", "3.weight", "3.bias"
        print(name, p.data.shape)

Initialisation (weights; biases start at zero):

    "gaussian":  W ~ N(0, std^2)           the paper's new layers use std 0.01 (0.001 for box regression)
    "he":        W ~ N(0, 2 / fan_in)      fan_in = in_channels * kh * kw (conv) or d_in (linear)

Weights are drawn in float64 on the host from the numpy Generator you pass (same seed, same
weights, in either dtype), cast to `dtype`, and moved to the GPU with module.to("cuda").
"""
import math

import numpy as np

from .backend import device_of, get_array_module, to_device, to_numpy
from .ops.checks import check_int
from .ops.conv import conv2d_backward, conv2d_forward
from .ops.group_norm import group_norm_backward, group_norm_forward
from .ops.linear import linear_backward, linear_forward
from .ops.pool import max_pool2d_backward, max_pool2d_forward
from .ops.relu import relu_backward, relu_forward


class Parameter:
    """One trainable array and its gradient.

    Attributes:
        data: the array (numpy or cupy).
        grad: same shape, dtype and device as data; backward passes add into it.
        name: a short name ("weight", "bias"); Module.named_parameters() gives the dotted path.
        requires_grad: False = frozen: backward does not accumulate into grad and the
            optimiser leaves data (and its momentum buffer) untouched.
        lr_mult, decay_mult: per-parameter multipliers of the learning rate and the weight
            decay, as in Caffe's `param { lr_mult decay_mult }`. Layers give biases decay_mult 0.
    """

    def __init__(self, data, name="", requires_grad=True, lr_mult=1.0, decay_mult=1.0):
        self.data = data
        self.grad = get_array_module(data).zeros_like(data)
        self.name = name
        self.requires_grad = requires_grad
        self.lr_mult = lr_mult
        self.decay_mult = decay_mult

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    def accumulate_grad(self, g):
        """grad += g, unless frozen (then g is dropped)."""
        if self.requires_grad:
            self.grad += g

    def __repr__(self):
        frozen = "" if self.requires_grad else ", frozen"
        return (f"Parameter({self.name!r}, shape={self.shape}, dtype={self.dtype}, "
                f"{device_of(self.data)}{frozen})")


class Module:
    """Base class: forward, backward, and the bookkeeping over parameters.

    Sub-modules and parameters are found by looking at the instance's attributes (in the
    order they were set): a Parameter attribute is a parameter, a Module attribute (or a
    list/tuple of Modules) is a child. So `self.conv = Conv2d(...)` is all a subclass does.
    """

    def __init__(self):
        pass   # nothing to set up; subclasses may call super().__init__() or not

    # -- to be written by each layer ----------------------------------------------------
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, dout):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- walking the tree ---------------------------------------------------------------
    def named_children(self):
        """(name, module) for each direct sub-module, in attribute order."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(m, Module) for m in value):
                for i, m in enumerate(value):
                    yield f"{name}.{i}", m

    def modules(self):
        """This module and every sub-module, depth first."""
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) for every parameter, recursively, e.g. ("0.weight", p).

        A Parameter shared by two sub-modules is listed once (under its first name), so
        an optimiser never updates it twice.
        """
        seen = set()
        for name, p in self._named_parameters_all(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _named_parameters_all(self, prefix):
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child._named_parameters_all(prefix + name + ".")

    def parameters(self):
        """A list of every Parameter (see named_parameters)."""
        return [p for _, p in self.named_parameters()]

    # -- gradients, freezing, devices -----------------------------------------------------
    def zero_grad(self):
        """Set every param.grad to 0 (in place)."""
        for p in self.parameters():
            p.grad.fill(0)

    def freeze(self):
        """requires_grad = False on every parameter: no gradient accumulates, SGD skips them."""
        for p in self.parameters():
            p.requires_grad = False
        return self

    def unfreeze(self):
        """requires_grad = True on every parameter."""
        for p in self.parameters():
            p.requires_grad = True
        return self

    def to(self, device):
        """Move every parameter (data and grad) to "cpu" or "cuda" (or "strict"); returns self.

        Cached activations from an earlier forward are dropped (they live on the old device).
        """
        for p in self.parameters():
            p.data = to_device(p.data, device)
            p.grad = to_device(p.grad, device)
        return self.drop_caches()

    def drop_caches(self):
        """Forget the cached activations of every layer (a backward needs a new forward).

        A forward pass keeps what its backward will need (a conv keeps its im2col columns,
        kh*kw times its input), and keeps it until the next forward. After inference nothing
        needs them: dropping them gives that memory back. Returns self.
        """
        for m in self.modules():
            if hasattr(m, "cache"):
                m.cache = None
        return self

    # -- saving and loading -----------------------------------------------------------------
    def state_dict(self):
        """{dotted name: NumPy copy of param.data}: host arrays, ready for numpy.savez."""
        return {name: to_numpy(p.data).copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state, strict=True):
        """Copy arrays from {dotted name: array} into the parameters (in place, cast to their dtype).

        strict=True: the keys must be exactly named_parameters()' names. A shape mismatch is
        always a ValueError naming the key and both shapes; nothing is changed unless every
        entry fits. Returns self.
        """
        own = dict(self.named_parameters())
        if strict:
            missing = sorted(set(own) - set(state))
            unexpected = sorted(set(state) - set(own))
            if missing or unexpected:
                raise ValueError(
                    f"load_state_dict: keys do not match; missing {missing}, unexpected {unexpected}")
        for name, value in state.items():
            if name in own and tuple(value.shape) != own[name].shape:
                raise ValueError(
                    f"load_state_dict: {name!r}: expected shape {own[name].shape}, "
                    f"got {tuple(value.shape)}")
        for name, value in state.items():
            if name in own:
                p = own[name]
                p.data[...] = to_device(to_numpy(value), device_of(p.data))
        return self

    def __repr__(self):
        children = ", ".join(f"{n}={type(m).__name__}" for n, m in self.named_children())
        return f"{type(self).__name__}({children})"


# ----------------------------------------------------------------------------------------
# initialisation
# ----------------------------------------------------------------------------------------

INITS = ("he", "gaussian")


def init_weight(shape, fan_in, init, std, rng, dtype):
    """A host (NumPy) weight array of `shape`, drawn from `rng` in float64 and cast to dtype.

        "he":        N(0, 2 / fan_in)      (He et al. 2015, for layers followed by ReLU)
        "gaussian":  N(0, std^2)
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy Generator such as np.random.default_rng(0), "
                         f"got {type(rng).__name__}")
    if init == "he":
        scale = math.sqrt(2.0 / fan_in)
    elif init == "gaussian":
        scale = float(std)
    else:
        raise ValueError(f"init: expected one of {', '.join(INITS)}, got {init!r}")
    return (rng.standard_normal(shape) * scale).astype(np.dtype(dtype))   # shape


def _pair(k, name):
    """An int k -> (k, k); a pair of ints passes through."""
    if isinstance(k, (int, np.integer)):
        return int(k), int(k)
    if isinstance(k, (tuple, list)) and len(k) == 2:
        return int(k[0]), int(k[1])
    raise ValueError(f"{name}: expected an int or a pair of ints, got {k!r}")


# ----------------------------------------------------------------------------------------
# layers
# ----------------------------------------------------------------------------------------

class Conv2d(Module):
    """2-D convolution, W (out_ch, in_ch, kh, kw), b (out_ch,).

    forward: x (N, in_ch, H, W) -> (N, out_ch, OH, OW), OH = (H + 2 pad - kh) // stride + 1.
    """

    def __init__(self, in_ch, out_ch, kernel, stride=1, pad=0, init="he", std=0.01,
                 rng=None, dtype=np.float32):
        kh, kw = _pair(kernel, "kernel")
        self.stride, self.pad = stride, pad
        w = init_weight((out_ch, in_ch, kh, kw), in_ch * kh * kw, init, std, rng, dtype)
        self.weight = Parameter(w, "weight")                                          # (F, C, kh, kw)
        self.bias = Parameter(np.zeros(out_ch, dtype=np.dtype(dtype)), "bias", decay_mult=0.0)   # (F,)
        self.cache = None

    def forward(self, x):
        out, self.cache = conv2d_forward(x, self.weight.data, self.bias.data,
                                         stride=self.stride, pad=self.pad)
        return out

    def backward(self, dout):
        check_cache(self)
        dx, dw, db = conv2d_backward(dout, self.cache)
        self.weight.accumulate_grad(dw)
        self.bias.accumulate_grad(db)
        return dx

    def __repr__(self):
        f, c, kh, kw = self.weight.shape
        return f"Conv2d({c}, {f}, kernel=({kh}, {kw}), stride={self.stride}, pad={self.pad})"


class Linear(Module):
    """Fully connected layer, W (d_in, d_out), b (d_out,).

    forward: x (N, ...) with prod(...) = d_in -> (N, d_out); out = x.reshape(N, d_in) @ W + b.
    """

    def __init__(self, d_in, d_out, init="gaussian", std=0.01, rng=None, dtype=np.float32):
        w = init_weight((d_in, d_out), d_in, init, std, rng, dtype)
        self.weight = Parameter(w, "weight")                                           # (D_in, D_out)
        self.bias = Parameter(np.zeros(d_out, dtype=np.dtype(dtype)), "bias", decay_mult=0.0)   # (D_out,)
        self.cache = None

    def forward(self, x):
        out, self.cache = linear_forward(x, self.weight.data, self.bias.data)
        return out

    def backward(self, dout):
        check_cache(self)
        dx, dw, db = linear_backward(dout, self.cache)
        self.weight.accumulate_grad(dw)
        self.bias.accumulate_grad(db)
        return dx

    def __repr__(self):
        d_in, d_out = self.weight.shape
        return f"Linear({d_in}, {d_out})"


class GroupNorm(Module):
    """Group normalisation (Wu & He, 2018) over num_groups groups of num_channels / num_groups
    channels, then a per-channel scale and shift: weight = gamma (C,), bias = beta (C,).

    forward: x (N, C, H, W) -> (N, C, H, W); ops/group_norm.py has the formula.
    gamma starts at 1 and beta at 0 (the layer starts as plain normalisation), no random draw.
    Neither gets weight decay (decay_mult 0, as the conv and linear biases): decaying gamma
    would pull the layer's output scale towards 0 rather than regularise a weight (Detectron's
    GN models train with SOLVER.WEIGHT_DECAY_GN = 0 for the same reason).
    """

    def __init__(self, num_channels, num_groups, eps=1e-5, dtype=np.float32):
        num_groups = check_int(num_groups, "num_groups", 1)
        if num_channels % num_groups:
            raise ValueError(f"num_groups: expected a divisor of num_channels={num_channels}, "
                             f"got {num_groups}")
        self.num_groups, self.eps = num_groups, eps
        dtype = np.dtype(dtype)
        self.weight = Parameter(np.ones(num_channels, dtype=dtype), "weight", decay_mult=0.0)   # (C,) gamma
        self.bias = Parameter(np.zeros(num_channels, dtype=dtype), "bias", decay_mult=0.0)     # (C,) beta
        self.cache = None

    def forward(self, x):
        out, self.cache = group_norm_forward(x, self.weight.data, self.bias.data,
                                             self.num_groups, eps=self.eps)
        return out

    def backward(self, dout):
        check_cache(self)
        dx, dgamma, dbeta = group_norm_backward(dout, self.cache)
        self.weight.accumulate_grad(dgamma)
        self.bias.accumulate_grad(dbeta)
        return dx

    def __repr__(self):
        return f"GroupNorm({self.weight.shape[0]}, num_groups={self.num_groups})"


class ReLU(Module):
    """max(x, 0), elementwise. No parameters."""

    def __init__(self):
        self.cache = None

    def forward(self, x):
        out, self.cache = relu_forward(x)
        return out

    def backward(self, dout):
        check_cache(self)
        return relu_backward(dout, self.cache)

    def __repr__(self):
        return "ReLU()"


class MaxPool2d(Module):
    """Max pooling over kernel x kernel windows, no padding. No parameters.

    forward: x (N, C, H, W) -> (N, C, (H - kernel) // stride + 1, (W - kernel) // stride + 1).
    """

    def __init__(self, kernel=2, stride=2):
        self.kernel, self.stride = kernel, stride
        self.cache = None

    def forward(self, x):
        out, self.cache = max_pool2d_forward(x, kernel=self.kernel, stride=self.stride)
        return out

    def backward(self, dout):
        check_cache(self)
        return max_pool2d_backward(dout, self.cache)

    def __repr__(self):
        return f"MaxPool2d(kernel={self.kernel}, stride={self.stride})"


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse. net[i] is the i-th module.

    Parameter names are "<index>.<name>", e.g. "0.weight", as in PyTorch.
    """

    def __init__(self, *modules):
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise ValueError(f"Sequential: argument {i} is a {type(m).__name__}, expected a Module")
        self.layers = list(modules)

    def named_children(self):
        for i, m in enumerate(self.layers):
            yield str(i), m

    def forward(self, x):
        for m in self.layers:
            x = m.forward(x)
        return x

    def forward_inference(self, x):
        """forward(x) for inference: each layer drops its cache as soon as it has run.

        Same output as forward, but no backward is possible afterwards. forward keeps every
        layer's cache at once, because a backward will need them all; for VGG-16 on a 600x1000
        image that is about 4 GB of im2col columns. Dropped as we go, they are freed as soon as
        the next layer has run (measured: predict's peak 4.9 GB -> 1.6 GB, 1.7-3x faster).
        """
        for m in self.layers:
            x = m.forward_inference(x) if isinstance(m, Sequential) else m.forward(x)
            m.drop_caches()
        return x

    def backward(self, dout):
        for m in reversed(self.layers):
            dout = m.backward(dout)
        return dout

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*self.layers[i])   # shares the modules (and their parameters)
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {m!r}" for i, m in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"


def check_cache(layer):
    if layer.cache is None:
        raise RuntimeError(f"{type(layer).__name__}.backward called before forward "
                           "(or after .to(), which drops the cache)")
