"""A measurement for issue #7, not library code: what would a CUDA graph give the train step?

    python scripts/graph_network_step.py [--steps 200] [--check 5]        (needs CuPy and a GPU)

For the small default detector the GPU waits on the host: each of the ~320 operations of the
network part of a train step is a Python call and a kernel launch. A CUDA graph records those
launches once (cupy.cuda.Stream.begin_capture / end_capture) and replays them with one launch.

This script times the bench's "train step, network only (samples fixed)" both ways on one
stream, median of --steps steps:
  eager: the library's step as it runs today (model.forward_train with the samples fixed,
         model.backward, SGD.step);
  graph: the same step captured once into a CUDA graph and replayed with graph.launch().
Then it checks the replay computes the eager step: from the same weights and momentum, --check
steps each way must give the same parameters (printed: the largest relative difference).

Capture cannot contain a read back, so for the captured step only the three input checks that
read one value back (labels inside [-1, C), RoI batch indices whole and in range) are switched
off here; the data are the checked eager step's. Graph replay also needs every shape and
every pointer fixed (the same arrays each step), which the network part has once its samples
are fixed; the per-image sampling (proposal layer, NMS, RoI sampling) has data-dependent
sizes and stays outside. First with CuPy's default memory pool, warmed up on the capturing
stream; if that capture fails, again with cupy.cuda.MemoryAsyncPool (stream-ordered, which
CUDA can record in a graph). Each failure is printed with its reason.
"""
import argparse
import sys
import time

import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--check", type=int, default=5)
args = parser.parse_args()

import cupy                                                           # noqa: E402

from minifrcnn.bench import default_step_setup                       # noqa: E402
from minifrcnn.ops import losses, roi_pool                           # noqa: E402


def median_ms(run, steps):
    """Median wall time of run() in ms, each call synchronised."""
    times = []
    for _ in range(steps):
        cupy.cuda.get_current_stream().synchronize()
        t0 = time.perf_counter()
        run()
        cupy.cuda.get_current_stream().synchronize()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def throughput_ms(run, steps):
    """Wall time per call in ms of `steps` calls in a row, one sync at the end (the host may
    queue ahead of the GPU, as in training)."""
    cupy.cuda.get_current_stream().synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    cupy.cuda.get_current_stream().synchronize()
    return 1e3 * (time.perf_counter() - t0) / steps


def unchecked():
    """The three read-back input checks off (restored by the returned function)."""
    saved = (losses._check_logits_labels, roi_pool.check_feat_rois)
    losses._check_logits_labels = lambda logits, labels: None
    roi_pool.check_feat_rois = lambda feat, rois: rois[:, 0].astype(cupy.int64)

    def restore():
        losses._check_logits_labels, roi_pool.check_feat_rois = saved
    return restore


def measure(pool_name):
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:                     # warm-up, eager steps and capture on the same stream
        cfg, data, model, optimizer, batch = default_step_setup("cuda")
        images, sizes, boxes, labels, scales = batch
        _, samples = model.forward_train(images, sizes, boxes, labels, np.random.default_rng(0),
                                         scales=scales)
        params = [p for p in model.parameters() if p.requires_grad]

        def step():
            model.zero_grad()
            model.forward_train(images, sizes, boxes, labels, None, scales=scales,
                                samples=samples)
            model.backward()
            optimizer.step()

        for _ in range(3):                          # kernels compiled, momentum buffers made
            step()
        velocity = [v for v in optimizer.velocity if v is not None]   # one per trained param
        start = [a.copy() for a in [p.data for p in params] + velocity]

        def restore_start():                        # in place: the graph keeps the pointers
            for a, a0 in zip([p.data for p in params] + velocity, start):
                a[...] = a0

        for _ in range(args.check):
            step()
        eager_params = [p.data.copy() for p in params]
        restore_start()

        restore_checks = unchecked()
        try:
            step()                                  # the unchecked step once, eagerly
            restore_start()
            stream.synchronize()
            t0 = time.perf_counter()
            stream.begin_capture()
            try:
                step()
            finally:
                graph = stream.end_capture()
            capture_s = time.perf_counter() - t0
        finally:
            restore_checks()
        for _ in range(args.check):
            graph.launch()
        stream.synchronize()
        worst = max(float(cupy.max(cupy.abs(p.data - e)) / (cupy.max(cupy.abs(e)) + 1e-30))
                    for p, e in zip(params, eager_params))
        print(f"[{pool_name}] captured in {capture_s * 1e3:.1f} ms; after {args.check} steps "
              f"graph vs eager parameters: largest relative difference {worst:.2e}")

        eager_med = median_ms(step, args.steps)
        graph_med = median_ms(graph.launch, args.steps)
        eager_run = throughput_ms(step, args.steps)
        graph_run = throughput_ms(graph.launch, args.steps)
        print(f"[{pool_name}] network-only train step, default detector, batch 2 x 128x128, "
              f"{args.steps} steps:")
        print(f"  eager: median {eager_med:.2f} ms (each step synchronised), "
              f"{eager_run:.2f} ms per step back to back")
        print(f"  graph: median {graph_med:.2f} ms (each step synchronised), "
              f"{graph_run:.2f} ms per step back to back")
        print(f"  graph speed-up: {eager_med / graph_med:.1f}x (median), "
              f"{eager_run / graph_run:.1f}x (back to back)")


try:
    measure("default memory pool")
except Exception as exc:                                   # a failed capture: say why, go on
    print(f"[default memory pool] failed: {type(exc).__name__}: {exc}")
    try:
        cupy.cuda.set_allocator(cupy.cuda.MemoryAsyncPool().malloc)
        measure("MemoryAsyncPool")
    except Exception as exc2:
        print(f"[MemoryAsyncPool] failed: {type(exc2).__name__}: {exc2}")
        sys.exit(1)
