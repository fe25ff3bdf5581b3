"""Stochastic gradient descent with momentum and weight decay, in Caffe's form, and a step schedule.

The update (Caffe's SGDSolver, which py-faster-rcnn trained with), for each parameter w with
gradient g:

    v <- momentum * v + lr * lr_mult * (g + weight_decay * decay_mult * w)
    w <- w - v

This is the same as "v <- momentum * v - lr * (g + wd * w); w <- w + v" with v's sign flipped.
It differs from PyTorch's form (v <- momentum * v + g; w <- w - lr * v) only when lr changes:
here the velocity already carries the old lr, so a step down in lr takes effect gradually.

Choices, stated:
- Biases get no weight decay: Conv2d and Linear make their biases with decay_mult = 0, and this
  optimiser multiplies weight_decay by each Parameter's decay_mult. (Detectron and the ResNet
  prototxts derived from py-faster-rcnn do this; py-faster-rcnn's own VGG16/ZF prototxts instead
  give biases lr_mult 2 and leave decay_mult at 1. Set p.lr_mult = 2.0, p.decay_mult = 1.0 on
  the biases to get that exactly.)
- A frozen parameter (requires_grad False) is skipped entirely: its data and its momentum buffer
  do not change by a single bit.
- Momentum buffers are created at a parameter's first step, as zeros on its device and dtype.
- On a GPU each parameter's update is one CUDA kernel (cuda_kernels.sgd_update) doing the same
  float operations in the same order as the array lines in step(), which stay its reference.

    opt = SGD(model.parameters(), lr=1e-3)          # momentum 0.9, weight decay 5e-4
    for it in range(iters):
        opt.set_lr(lr_at(it, 1e-3, steps=(50000,), gamma=0.1))
        model.zero_grad(); ...forward, loss, backward...; opt.step()
"""
from .backend import device_of, get_array_module, to_device, to_numpy
from .layers import Parameter
from .ops import cuda_kernels


def _kernel_ready(w, v, g):
    """True if w, v, g share one dtype and are C-contiguous: the SGD kernel's flat, in-place view."""
    return w.dtype == v.dtype == g.dtype and all(a.flags.c_contiguous for a in (w, v, g))


class SGD:
    """SGD with momentum and (bias-free) weight decay over a list of Parameters.

    Args:
        params: iterable of Parameter (e.g. module.parameters()); order defines the
            keys of state_dict(), so build the optimiser from the same model the same way.
        lr: learning rate (a Python number).
        momentum: the momentum coefficient (0.9 in the paper).
        weight_decay: L2 coefficient (5e-4 in the paper), times each param's decay_mult.
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=5e-4):
        self.params = list(params)
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise ValueError(f"params: item {i} is a {type(p).__name__}, expected a Parameter "
                                 "(pass module.parameters())")
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.velocity = [None] * len(self.params)      # one buffer per param, shaped like it

    def set_lr(self, lr):
        self.lr = float(lr)

    def zero_grad(self):
        """Set every param.grad to 0 (the same as module.zero_grad() for the same params)."""
        for p in self.params:
            p.grad.fill(0)

    def step(self):
        """One update of every non-frozen parameter, in place (the formula in the module docstring)."""
        for i, p in enumerate(self.params):
            if not p.requires_grad:
                continue
            xp = get_array_module(p.data)
            v = self.velocity[i]
            if v is None:
                v = xp.zeros_like(p.data)                       # same shape as p.data
            elif device_of(v) != device_of(p.data):             # the model was moved with .to()
                v = to_device(v, device_of(p.data))
            self.velocity[i] = v

            decay = self.weight_decay * p.decay_mult
            if cuda_kernels.kernels_enabled(p.data) and _kernel_ready(p.data, v, p.grad):
                # on a GPU: the lines below as one kernel, the same arithmetic (cuda_kernels.py)
                cuda_kernels.sgd_update(p.data, v, p.grad, self.lr * p.lr_mult, self.momentum, decay)
                continue
            g = p.grad                                          # same shape as p.data
            if decay != 0.0:
                g = g + decay * p.data
            v *= self.momentum                                  # in place: v stays the stored buffer
            v += (self.lr * p.lr_mult) * g
            p.data -= v

    # -- resuming ---------------------------------------------------------------------------
    def state_dict(self):
        """{"lr", "momentum", "weight_decay": float, "velocity.<i>": NumPy copy of buffer i}.

        i is the parameter's position in `params`; buffers never created are left out.
        Flat and host-side, so it saves with numpy.savez next to the model's state_dict.
        """
        state = {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}
        for i, v in enumerate(self.velocity):
            if v is not None:
                state[f"velocity.{i}"] = to_numpy(v).copy()
        return state

    def load_state_dict(self, state):
        """Restore what state_dict() returned; training then continues bit for bit.

        A velocity for a parameter that does not exist or has another shape is a ValueError
        naming the key; nothing is changed unless every entry fits.
        """
        velocity = [None] * len(self.params)
        for key, value in state.items():
            if not key.startswith("velocity."):
                continue
            try:
                i = int(key[len("velocity."):])
            except ValueError:
                raise ValueError(f"SGD.load_state_dict: {key!r}: expected 'velocity.<index>'") from None
            if not 0 <= i < len(self.params):
                raise ValueError(f"SGD.load_state_dict: {key!r}: this optimiser has only "
                                 f"{len(self.params)} parameters")
            p = self.params[i]
            if tuple(value.shape) != p.shape:
                raise ValueError(f"SGD.load_state_dict: {key!r}: expected shape {p.shape}, "
                                 f"got {tuple(value.shape)}")
            v = to_device(to_numpy(value), device_of(p.data))
            velocity[i] = v.astype(p.dtype, copy=True)
        for name in ("lr", "momentum", "weight_decay"):
            if name in state:
                setattr(self, name, float(state[name]))
        self.velocity = velocity
        return self


def lr_at(iteration, base_lr, steps, gamma=0.1):
    """The learning rate at `iteration` for a multi-step schedule (Caffe's "multistep").

        lr = base_lr * gamma ** (number of s in steps with iteration >= s)

    steps: a sequence of iterations, e.g. (50000,) for py-faster-rcnn's VOC schedule
    (lr 1e-3 for 50k iterations, then 1e-4). A bare int is refused: it could mean one step or
    "every that many iterations".

        lr_at(49999, 1e-3, (50000,))     # 1e-3
        lr_at(50000, 1e-3, (50000,))     # 1e-4 (up to float rounding: 1e-3 * 0.1)
    """
    if isinstance(steps, (int, float)) or not hasattr(steps, "__iter__"):
        raise ValueError(f"steps: expected a sequence of iterations such as (50000,), got {steps!r}")
    passed = sum(1 for s in steps if iteration >= s)
    return float(base_lr) * float(gamma) ** passed
