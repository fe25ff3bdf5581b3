"""Data-parallel training: the images of each batch split over processes, one CPU core each.

    batch of N images (cfg.images_per_batch), P processes, P divides N
      process r: the batch's images r, r + P, r + 2P, ... -> forward, the four losses
                 (normalised by the whole batch's counts), backward -> its loss terms and
                 its gradient g_r of every parameter
      all-reduce: every process writes g_r into row r of one shared buffer (P, n), waits for the
                 others, and reads back the sum; the mean  g = (g_0 + ... + g_{P-1}) / P
      every process: the same optimiser step with the same g on the same weights, so the P
                 copies of the model stay equal, bit for bit

This is how frameworks train on several GPUs (PyTorch's DistributedDataParallel averages the
gradients in the same way); here it spreads a batch over the cores of one CPU. Why it pays on a
CPU: most of a training step is too small to keep two BLAS threads busy (convolutions over
8-channel maps, the proposal layer, the sampling loops), so two processes with one thread each
get more done than one process with two. On this project's 2-core machine a step of 2 images
took 74-79 ms in one process with 2 BLAS threads and 59-61 ms split over two processes (the
train command's median step; docs/time-to-accuracy).

What is the same as train_step, and what is not: for images of one size (the shapes data) the
loss is the whole batch's, as train_step defines it. The RPN's normaliser is 256 anchors per image, so the mean over the processes is the
batch's mean over images; the head's loss is a mean over every RoI of the batch, and an image may
give fewer than cfg.roi_batch_size RoIs, so the processes first add up their RoI counts (a small
all-reduce) and each scales its head loss by P x (its RoIs) / (the batch's RoIs) before its
backward pass. What differs: each process draws its images' flips, anchors and RoIs with its own
random numbers, default_rng([seed, it, r]); and a process pads its images only to each other's
size, so with images of different sizes the network sees less zero padding than in one batch,
and the RPN's N_reg (the cells of the padded feature map) is its own share's map's, not the
batch's: another computation, with less padding, not the same numbers. So a run with P processes is a function of (seed, P), as a run is of the BLAS
thread count: another P gives another model of the same kind, not the same bits.

The main process does not train: it sends "step it" to every process, receives the mean loss
terms, and keeps the log, the progress bar, the checkpoints and the evaluations; at a
checkpoint, an evaluation and the end it copies the weights and the optimiser state from
process 0 (copy_state_to). Ctrl-C reaches the worker processes too: they ignore it and the
main process stops the run as train() always does, after the iteration, with a checkpoint.

    with DataParallel(model, optimizer, dataset, cfg, processes=2) as workers:
        for it in range(cfg.iters):
            terms = workers.step(it)                # {"rpn_cls": ..., "total": ...}
        workers.copy_state_to(model, optimizer)
"""
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import traceback

import numpy as np

from .backend import keep_freed_memory, one_blas_thread_in_new_processes
from .joint_training import JointTraining
from .optim import lr_for, make_optimizer
from .train import LOSS_TERMS, STOP_SIGNALS, batch_forward, batch_indices, stop_signals_handled_by


def usable_cores():
    """The CPU cores this process may run on (its affinity, else os.cpu_count())."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                              # not Linux
        return os.cpu_count() or 1


def default_processes(cfg, device):
    """How many processes the command line splits a batch over by default: one per usable
    core, at most one per image of the batch, and a number that divides the batch; 1 on a GPU
    (one device does the work), with one core, or with loss_normalization "py-faster-rcnn"
    (its RPN normaliser, the batch's sampled anchors, is not split here)."""
    if device != "cpu" or cfg.loss_normalization != "paper":
        return 1
    p = min(cfg.images_per_batch, usable_cores())
    while cfg.images_per_batch % p:
        p -= 1
    return p


def images_of_process(indices, rank, processes):
    """The batch's sample indices that process `rank` of `processes` trains on: every
    processes-th one from position rank (N / P of them)."""
    return indices[rank::processes]


def all_reduce_sum(buffer, rank, values, barrier):
    """Write `values` (n,) into row `rank` of the shared buffer (P, n), wait until every
    process has written its row, and return the sum over the rows (n,), the same array in every
    process (numpy sums the rows in the same order everywhere). A second wait keeps any process
    from writing its next row before every process has read this one."""
    buffer[rank] = values
    barrier.wait()
    total = buffer.sum(axis=0)                                         # (n,)
    barrier.wait()
    return total


def flat_gradients(params):
    """Every parameter's .grad, flattened and concatenated in order: (n,)."""
    return np.concatenate([np.asarray(p.grad).ravel() for p in params])


def set_gradients(params, flat):
    """The inverse of flat_gradients: put the slices of flat (n,) back into each .grad."""
    start = 0
    for p in params:
        size = p.grad.size
        p.grad[...] = flat[start:start + size].reshape(p.grad.shape)
        start += size


def parallel_step(model, optimizer, dataset, cfg, it, rank, processes, buffers, barrier):
    """Process `rank`'s part of iteration `it`: its images' forward pass, the batch's RoI
    count (a first all-reduce), its gradient, the all-reduce of the gradients, the optimiser
    step with their mean. Returns the batch's loss terms {name: float}; a non-finite term in
    any process changes no weight anywhere (as in train_step).

    buffers: the shared (P, 1) RoI counts and (P, 5 + n) rows."""
    counts, rows = buffers
    indices = batch_indices(len(dataset), cfg.images_per_batch, it, cfg.seed)
    optimizer.set_lr(lr_for(cfg, it))
    step = JointTraining(model)
    terms, rois = share_forward(step, dataset, cfg, it, indices, rank, processes)
    batch_rois = int(all_reduce_sum(counts, rank, [rois], barrier)[0])
    row = share_backward(step, terms, head_factor(rois, batch_rois, processes))  # (5 + n,)
    return apply_mean(model, optimizer, all_reduce_sum(rows, rank, row, barrier) / processes)


def reference_step(model, optimizer, dataset, cfg, it, processes):
    """What `processes` processes compute together in parallel_step, in this one process, one
    share of the batch after the other: the readable reference the tests hold them to."""
    optimizer.set_lr(lr_for(cfg, it))
    return apply_mean(model, optimizer, reference_gradients(model, dataset, cfg, it, processes))


def reference_gradients(model, dataset, cfg, it, processes):
    """The mean row (5 + n,) of the processes' rows in iteration `it`, computed here. Each
    share's forward pass runs twice: first for its RoI count, then (with the same random
    numbers, so the same samples) before its backward pass."""
    indices = batch_indices(len(dataset), cfg.images_per_batch, it, cfg.seed)
    shares = range(processes)
    rois = [share_forward(JointTraining(model), dataset, cfg, it, indices, r, processes)[1]
            for r in shares]
    rows = []
    for r in shares:
        step = JointTraining(model)
        terms, _ = share_forward(step, dataset, cfg, it, indices, r, processes)
        rows.append(share_backward(step, terms, head_factor(rois[r], sum(rois), processes)))
    return np.stack(rows).sum(axis=0) / processes                               # (5 + n,)


def share_forward(step, dataset, cfg, it, indices, rank, processes):
    """The forward pass of process `rank`'s share of the batch `indices`, with the random
    numbers of default_rng([seed, it, rank]): (its loss terms {name: float}, its number of
    sampled RoIs)."""
    rng = np.random.default_rng([cfg.seed, it, rank])
    terms, samples = batch_forward(step, dataset, images_of_process(indices, rank, processes),
                                   cfg, rng)
    return terms, int(samples["roi_labels"].shape[0])


def head_factor(rois, batch_rois, processes):
    """P x (the share's RoIs) / (the batch's RoIs), each at least 1 as fast_rcnn_loss's
    normaliser is. Why: with S_r RoIs in share r and S = sum_r S_r in the batch,

        L_head = (1/S) sum_j l_j = (1/P) sum_r [P S_r / S] (1/S_r) sum_{j in r} l_j

    so share r's own mean, times P S_r / S, averaged over the P shares, is the batch's."""
    return float(processes * max(rois, 1) / max(batch_rois, 1))


def share_backward(step, terms, factor):
    """The share's head loss times factor, head_factor's P x (its RoIs) / (the batch's RoIs):
    the head's loss is a mean over every RoI of the batch, which the share normalised by its
    own; the RPN's normaliser (256 anchors per image) needs no change, the mean over the P
    processes divides by P. Then its backward pass; returns one row (5 + n,): the LOSS_TERMS,
    then flat_gradients (zero where a term is not finite: no backward)."""
    terms = dict(terms, head_cls=terms["head_cls"] * factor, head_reg=terms["head_reg"] * factor)
    terms["total"] = terms["rpn_cls"] + terms["rpn_reg"] + terms["head_cls"] + terms["head_reg"]
    if all(math.isfinite(v) for v in terms.values()):
        step.scale_head_loss(factor)
        step.backward()
    model = step.model
    losses = np.array([terms[k] for k in LOSS_TERMS], dtype=model.dtype)          # (5,)
    return np.concatenate([losses, flat_gradients(model.parameters())])


def apply_mean(model, optimizer, mean):
    """The optimiser step with the mean row (5 + n,) of the processes' rows, if every mean
    loss term is finite; returns the mean loss terms {name: float}."""
    terms = {k: float(v) for k, v in zip(LOSS_TERMS, mean[:len(LOSS_TERMS)])}
    if all(math.isfinite(v) for v in terms.values()):
        set_gradients(model.parameters(), mean[len(LOSS_TERMS):])
        optimizer.step()
    return terms


def _worker(rank, processes, shared, barrier, conn):
    """One training process: it says hello, receives the config, the data, the weights and
    the optimiser state, builds its copies, then serves the main process's requests
    ("step", it), ("state",) and ("stop",)."""
    from .model import FasterRCNN
    for stop in STOP_SIGNALS:        # ignored already if started from a main thread (below);
        signal.signal(stop, signal.SIG_IGN)      # from here on in any case
    keep_freed_memory()                                  # as the command line does
    try:
        conn.send(("hello",))
        cfg, dtype, dataset, weights, optimizer_state = conn.recv()
        model = FasterRCNN(cfg, dtype=dtype)
        model.load_state_dict(weights)
        optimizer = make_optimizer(model.parameters(), cfg)
        optimizer.load_state_dict(optimizer_state)
        buffers = (np.frombuffer(shared[0], dtype=np.float64).reshape(processes, 1),  # (P, 1)
                   np.frombuffer(shared[1], dtype=model.dtype).reshape(processes, -1))  # (P, 5 + n)
        conn.send(("ready",))
        while True:
            request = conn.recv()
            if request[0] == "step":
                conn.send(("terms", parallel_step(model, optimizer, dataset, cfg, request[1],
                                                  rank, processes, buffers, barrier)))
            elif request[0] == "state":
                conn.send(("state", model.state_dict(), optimizer.state_dict()))
            else:
                return
    except EOFError:                                     # the main process is gone
        return
    except BaseException as e:
        barrier.abort()                                  # the others must not wait for this one
        try:                     # a BrokenBarrierError: only saw another process fail first
            conn.send(("error", traceback.format_exc(), isinstance(e, threading.BrokenBarrierError)))
        except OSError:
            pass


class DataParallel:
    """`processes` worker processes training copies of `model` on their share of each batch.
    See the module docstring. Joint training on the CPU only (train() checks)."""

    def __init__(self, model, optimizer, dataset, cfg, processes):
        if processes < 2 or cfg.images_per_batch % processes:
            raise ValueError(f"processes {processes}: expected 2 or more, dividing the batch's "
                             f"{cfg.images_per_batch} images")
        context = multiprocessing.get_context("spawn")
        n = sum(p.data.size for p in model.parameters())
        typecode = {np.dtype(np.float32): "f", np.dtype(np.float64): "d"}[np.dtype(model.dtype)]
        shared = (context.RawArray("d", processes),                          # RoI counts
                  context.RawArray(typecode, processes * (len(LOSS_TERMS) + n)))    # rows
        barrier = self.barrier = context.Barrier(processes)
        setup = (cfg, model.dtype, dataset, model.state_dict(), optimizer.state_dict())
        self.conns, self.workers = [], []
        # The main process handles Ctrl-C and SIGTERM (it finishes the iteration and saves;
        # a terminal's Ctrl-C reaches the whole process group): a worker ignores them from its
        # first instruction, while it still imports the package, because it is started while
        # this process ignores them (an ignored signal stays ignored in a new program).
        with one_blas_thread_in_new_processes(), stop_signals_handled_by(signal.SIG_IGN):
            for rank in range(processes):
                ours, theirs = context.Pipe()
                worker = context.Process(target=_worker, args=(rank, processes, shared, barrier, theirs),
                                         daemon=True, name=f"minifrcnn-train-{rank}")
                worker.start()
                theirs.close()
                self.conns.append(ours)
                self.workers.append(worker)
        # The data and the weights go through the pipe once a process has said hello, not
        # with start(): a process that fails while starting (for one, a script that calls
        # train() outside `if __name__ == "__main__":` runs again in it) is then an error
        # here instead of a start() that waits for it forever.
        try:
            for rank, conn in enumerate(self.conns):
                self._receive(rank, "hello")
                conn.send(setup)
            for rank in range(processes):
                self._receive(rank, "ready")
        except BaseException:
            self.close()
            raise

    def step(self, it):
        """Iteration `it` in every process; the mean loss terms {name: float}."""
        for conn in self.conns:
            try:
                conn.send(("step", it))
            except OSError:                              # that process is gone: _reply says so
                self.barrier.abort()
        replies = [self._reply(rank) for rank in range(len(self.conns))]
        errors = [r for r in replies if r[0] == "error"]
        if errors:       # the process that failed first, not one that only saw the barrier break
            first = [e for e in errors if not e[3]] or errors
            raise RuntimeError(f"data-parallel training: process {first[0][1]} failed:\n"
                               f"{first[0][2]}")
        return replies[0][1]                             # every process returns the same mean

    def copy_state_to(self, model, optimizer):
        """Load process 0's weights and optimiser state (equal in every process) into
        `model` and `optimizer`, e.g. to save a checkpoint or evaluate."""
        self.conns[0].send(("state",))
        _, weights, optimizer_state = self._receive(0, "state")
        model.load_state_dict(weights)
        optimizer.load_state_dict(optimizer_state)

    def close(self):
        """Stop the processes (they also stop by themselves when this process ends)."""
        self.barrier.abort()                             # none may wait there for a dead one
        for conn in self.conns:
            try:
                conn.send(("stop",))
            except OSError:
                pass
        for worker in self.workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _reply(self, rank):
        """Process `rank`'s next message; ("error", rank, text, only_saw_another_fail) if it
        failed or ended."""
        conn, worker = self.conns[rank], self.workers[rank]
        # wait for its message, or for the end of any process: one that died (killed, out of
        # memory) never reaches the barrier, so break it and the others reply with an error
        ready = multiprocessing.connection.wait([conn] + [w.sentinel for w in self.workers])
        if conn not in ready:
            self.barrier.abort()
            multiprocessing.connection.wait([conn, worker.sentinel])
        try:
            if not conn.poll():
                raise EOFError
            message = conn.recv()
        except (EOFError, OSError):
            worker.join(timeout=1)
            code = worker.exitcode
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            return ("error", rank, f"it ended unexpectedly ({how}); if its error above comes from "
                    "your own script: a script that trains with processes > 1 must call train() "
                    "under `if __name__ == \"__main__\":`", False)
        return ("error", rank, *message[1:]) if message[0] == "error" else message

    def _receive(self, rank, expected):
        message = self._reply(rank)
        if message[0] == "error":
            raise RuntimeError(f"data-parallel training: process {rank} failed:\n{message[2]}")
        if message[0] != expected:
            raise RuntimeError(f"data-parallel training: process {rank} sent {message[0]!r}, "
                               f"expected {expected!r}")
        return message
