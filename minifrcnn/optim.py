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


class Optimizer:
    """What SGD and AdamW share: the list of Parameters, the learning rate, zero_grad.

    params: iterable of Parameter (e.g. module.parameters()); its order defines the keys of
    state_dict(), so build the optimiser from the same model the same way.
    """

    def __init__(self, params, lr):
        self.params = list(params)
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise ValueError(f"params: item {i} is a {type(p).__name__}, expected a Parameter "
                                 "(pass module.parameters())")
        self.lr = float(lr)

    def set_lr(self, lr):
        self.lr = float(lr)

    def zero_grad(self):
        """Set every param.grad to 0 (the same as module.zero_grad() for the same params)."""
        for p in self.params:
            p.grad.fill(0)


class SGD(Optimizer):
    """SGD with momentum and (bias-free) weight decay over a list of Parameters.

    Args:
        params: iterable of Parameter (e.g. module.parameters()); order defines the
            keys of state_dict(), so build the optimiser from the same model the same way.
        lr: learning rate (a Python number).
        momentum: the momentum coefficient (0.9 in the paper).
        weight_decay: L2 coefficient (5e-4 in the paper), times each param's decay_mult.
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=5e-4):
        super().__init__(params, lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.velocity = [None] * len(self.params)      # one buffer per param, shaped like it

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


# Where a gradient stays exactly 0 (a dead unit's weights), m shrinks by beta1 every step and
# after about 800 steps reaches the subnormal floats (below 1.2e-38 in float32), on which a CPU
# computes about 10 times slower: 1.1 million of the 2.1 million m entries of the default
# detector of the time (7 x 7 RoI pooling) were subnormal at iteration 3000, and the update
# took 42 ms instead of 8. So every FLUSH_EVERY steps the entries of m below FLUSH_BELOW are
# set to 0 (a zero then stays zero until a gradient arrives); their updates were already below
# 1e-22 of a weight.
FLUSH_EVERY = 100
FLUSH_BELOW = 1e-30


class AdamW(Optimizer):
    """Adam (Kingma & Ba, 2015) with decoupled weight decay (AdamW, Loshchilov & Hutter, 2019).

    Not the paper's optimiser (it used SGD); an option of the small preset (Config.optimizer).
    For each parameter w with gradient g, at step t = 1, 2, ...:

        m <- beta1 * m + (1 - beta1) * g                      first moment
        v <- beta2 * v + (1 - beta2) * g * g                  second moment
        w <- w - lr * lr_mult * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
               - lr * lr_mult * weight_decay * decay_mult * w

    Each weight moves by about lr per step whatever its gradient's scale, which is what makes
    a from-scratch network's small head layers learn as fast as its large ones.
    Same interface as SGD (set_lr, zero_grad, step, state_dict, load_state_dict); frozen
    parameters are skipped and keep their own step count t.
    """

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=5e-4):
        super().__init__(params, lr)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.m = [None] * len(self.params)                 # one buffer each, shaped like the param
        self.v = [None] * len(self.params)
        self.t = [0] * len(self.params)                    # steps taken by each param

    def step(self):
        """One update of every non-frozen parameter, in place (the formula in the class docstring)."""
        for i, p in enumerate(self.params):
            if not p.requires_grad:
                continue
            xp = get_array_module(p.data)
            for buffers in (self.m, self.v):
                if buffers[i] is None:
                    buffers[i] = xp.zeros_like(p.data)          # same shape as p.data
                elif device_of(buffers[i]) != device_of(p.data):
                    buffers[i] = to_device(buffers[i], device_of(p.data))
            m, v, g = self.m[i], self.v[i], p.grad
            self.t[i] += 1
            t = self.t[i]
            lr = self.lr * p.lr_mult
            # In place, one temporary array at a time (torch.optim.AdamW's order of operations):
            # w -= lr * wd * w;  w -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
            m *= self.beta1                                     # the stored buffers, in place
            m += (1 - self.beta1) * g
            if t % FLUSH_EVERY == 0:
                m[xp.abs(m) < FLUSH_BELOW] = 0                  # see FLUSH_BELOW
            v *= self.beta2
            v += (1 - self.beta2) * (g * g)
            decay = self.weight_decay * p.decay_mult
            if decay != 0.0:
                p.data *= 1 - lr * decay
            denom = xp.sqrt(v)                                  # (same shape as p.data)
            denom /= (1 - self.beta2 ** t) ** 0.5
            denom += self.eps
            xp.divide(m, denom, out=denom)                      # denom now holds m / denom
            denom *= lr / (1 - self.beta1 ** t)
            p.data -= denom

    def state_dict(self):
        """{"lr", "beta1", "beta2", "eps", "weight_decay": float, "m.<i>", "v.<i>": NumPy copies,
        "t.<i>": the step count of parameter i} (buffers never created are left out)."""
        state = {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                 "weight_decay": self.weight_decay}
        for i in range(len(self.params)):
            if self.m[i] is not None:
                state[f"m.{i}"] = to_numpy(self.m[i]).copy()
                state[f"v.{i}"] = to_numpy(self.v[i]).copy()
                state[f"t.{i}"] = self.t[i]
        return state

    def load_state_dict(self, state):
        """Restore what state_dict() returned; training then continues bit for bit.
        A key for a parameter that does not exist or has another shape is a ValueError naming it;
        nothing is changed unless every entry fits."""
        m, v, t = [None] * len(self.params), [None] * len(self.params), [0] * len(self.params)
        for key, value in state.items():
            kind, _, index = key.partition(".")
            if kind not in ("m", "v", "t"):
                continue
            try:
                i = int(index)
            except ValueError:
                raise ValueError(f"AdamW.load_state_dict: {key!r}: expected 'm.<index>', "
                                 "'v.<index>' or 't.<index>'") from None
            if not 0 <= i < len(self.params):
                raise ValueError(f"AdamW.load_state_dict: {key!r}: this optimiser has only "
                                 f"{len(self.params)} parameters")
            p = self.params[i]
            if kind == "t":
                t[i] = int(value)
                continue
            if tuple(value.shape) != p.shape:
                raise ValueError(f"AdamW.load_state_dict: {key!r}: expected shape {p.shape}, "
                                 f"got {tuple(value.shape)}")
            buffer = to_device(to_numpy(value), device_of(p.data)).astype(p.dtype, copy=True)
            (m if kind == "m" else v)[i] = buffer
        for name in ("lr", "beta1", "beta2", "eps", "weight_decay"):
            if name in state:
                setattr(self, name, float(state[name]))
        self.m, self.v, self.t = m, v, t
        return self


OPTIMIZERS = ("sgd", "adamw")


def make_optimizer(params, cfg):
    """The optimiser cfg.optimizer names, with cfg's lr, momentum and weight decay."""
    if cfg.optimizer == "sgd":
        return SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer: expected one of {', '.join(map(repr, OPTIMIZERS))}, "
                     f"got {cfg.optimizer!r}")


def lr_at(iteration, base_lr, steps, gamma=0.1, warmup=0):
    """The learning rate at `iteration` for a multi-step schedule (Caffe's "multistep"),
    optionally after a linear warm-up over the first `warmup` iterations:

        lr = base_lr * gamma ** (number of s in steps with iteration >= s)
        lr = lr * (iteration + 1) / warmup          while iteration < warmup

    steps: a sequence of iterations, e.g. (50000,) for py-faster-rcnn's VOC schedule
    (lr 1e-3 for 50k iterations, then 1e-4). A bare int is refused: it could mean one step or
    "every that many iterations". warmup = 0 (the paper's) means no warm-up.

        lr_at(49999, 1e-3, (50000,))     # 1e-3
        lr_at(50000, 1e-3, (50000,))     # 1e-4 (up to float rounding: 1e-3 * 0.1)
        lr_at(0, 1e-2, (4000,), warmup=100)   # 1e-4: the first of 100 warm-up steps
    """
    if isinstance(steps, (int, float)) or not hasattr(steps, "__iter__"):
        raise ValueError(f"steps: expected a sequence of iterations such as (50000,), got {steps!r}")
    passed = sum(1 for s in steps if iteration >= s)
    return float(base_lr) * float(gamma) ** passed * warmup_factor(iteration, warmup)


def warmup_factor(iteration, warmup):
    """(iteration + 1) / warmup during the first `warmup` iterations, then 1 (warmup 0: always 1)."""
    return (iteration + 1) / warmup if iteration < warmup else 1.0


SCHEDULES = ("step", "linear")


def lr_for(cfg, iteration):
    """The learning rate a Config asks for at `iteration` (the training loop calls this):

        cfg.lr_schedule == "step":   lr_at(iteration, cfg.lr, cfg.lr_steps, cfg.lr_gamma, warmup)
                                     (the paper's: constant, then x0.1 at each step)
        cfg.lr_schedule == "linear": cfg.lr * (1 - iteration / cfg.iters), after the same warm-up
                                     (down to 0 at the last iteration; not in the paper)

    warmup = cfg.lr_warmup_iters: the first iterations ramp up linearly (lr_at's rule).
    """
    if cfg.lr_schedule == "step":
        return lr_at(iteration, cfg.lr, cfg.lr_steps, cfg.lr_gamma, cfg.lr_warmup_iters)
    if cfg.lr_schedule == "linear":
        return (float(cfg.lr) * max(0.0, 1.0 - iteration / cfg.iters)
                * warmup_factor(iteration, cfg.lr_warmup_iters))
    raise ValueError(f"lr_schedule: expected one of {', '.join(map(repr, SCHEDULES))}, "
                     f"got {cfg.lr_schedule!r}")
