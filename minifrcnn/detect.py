"""Inference helpers: run a model over a data set, or draw its detections on image files.

    python -m minifrcnn detect --checkpoint runs/shapes/model.npz a.png b.jpg --out detections/
"""
import os

from .data.images import read_image     # the one image reader (the notebooks import it from here)


def predict_dataset(model, samples, batch_size=8):
    """model.predict over samples (dicts with "image"), batch_size images at a time.

    Images of different sizes are padded into one batch, which changes nothing for the
    convolutions near the real pixels; the boxes come back in each image's own coordinates.
    """
    dets = []
    for start in range(0, len(samples), batch_size):
        dets.extend(model.predict([s["image"] for s in samples[start:start + batch_size]]))
    return dets


def offscreen_figure(figsize):
    """A matplotlib Figure drawn with the Agg canvas directly, for writing PNG files.

    pyplot is not involved, so a notebook's plotting backend is left as it was (calling
    matplotlib.use("Agg") inside Jupyter would make every later figure disappear).
    Returns (fig, ax); save with fig.savefig(path).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def draw_detections(image, det, class_names, score_threshold=0.5, ax=None):
    """Draw the image and its detections scoring at least score_threshold (plotting.py's look:
    each class its colour, "name score" on it); a new figure if ax is None. Returns ax."""
    from . import plotting
    ax = plotting.show_image(image, ax=ax)     # pixel c covers [c, c + 1), as our boxes assume
    plotting.draw_detections(ax, det["boxes"], det["labels"], det["scores"], class_names, score_threshold)
    return ax


def output_paths(image_paths, out_dir):
    """<out_dir>/<name>.png for each image; a ValueError if one would overwrite an input image
    or two images would be drawn to the same file (a.png and a.jpg, or dir1/a.png and dir2/a.png).
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir}: is a file, expected a folder")
    outs = [os.path.join(out_dir, os.path.splitext(os.path.basename(p))[0] + ".png")
            for p in image_paths]
    inputs = {os.path.realpath(p): p for p in image_paths}
    first = {}
    for path, out in zip(image_paths, outs):
        real = os.path.realpath(out)
        if real in inputs:
            raise ValueError(f"--out {out_dir}: drawing {path} would overwrite the input image "
                             f"{inputs[real]}; choose another folder")
        if real in first and os.path.realpath(first[real]) != os.path.realpath(path):
            raise ValueError(f"images {first[real]} and {path} would both be drawn to {out}; "
                             "rename one or detect them in two runs")
        first.setdefault(real, path)
    return outs


def detect_files(checkpoint, image_paths, out_dir, device=None, score_threshold=0.5):
    """Detect on each image file and write <out_dir>/<name>.png with the boxes drawn.

    Every file is read, and every output name checked (output_paths), first, so a bad one
    stops the run before anything is written. Returns the written paths.
    """
    from .data.transforms import check_image
    from .model import FasterRCNN
    outs = output_paths(image_paths, out_dir)
    model = FasterRCNN.load(checkpoint, device=device)
    images = [read_image(p) for p in image_paths]
    for path, image in zip(image_paths, images):
        check_image(image, model.cfg, f"image {path}")     # every image, before any work
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for path, out, image, det in zip(image_paths, outs, images,
                                     predict_dataset(model, [{"image": i} for i in images])):
        fig, ax = offscreen_figure((6, 6 * image.shape[0] / image.shape[1]))
        draw_detections(image, det, model.cfg.class_names, score_threshold, ax)
        ax.set_title(f"{os.path.basename(path)}: {int((det['scores'] >= score_threshold).sum())} "
                     f"detections (score >= {score_threshold})")
        fig.savefig(out, dpi=100, bbox_inches="tight")
        written.append(out)
    return written
