"""One visual language for every figure: the notebooks' and the command line's.

Every kind of box the detector handles has one look, the same in every notebook:

    kind          colour                          line              label
    ground truth  its class's colour              solid, 3          the class name, on white
    detection     its class's colour              dashed, 2         "name 0.97", on the colour
    anchor        light grey                      dashed, 1         -
    anchor, pos.  its object's class colour       dashed, 1.5       -
    proposal      yellow                          solid, 1          -
    RoI, fg       its class's colour              dash-dot, 1.5     -
    RoI, bg       grey                            dotted, 1         -

A class keeps its colour everywhere: label k (1..K) is tab10's colour k - 1 (circle blue,
square orange, triangle green, star red for the shapes data); background (label 0) is grey.
Images are drawn on notebook 01's pixel grid: pixel c covers [c, c + 1), so an image of
width W spans x in [0, W], exactly where the boxes' coordinates put its edges.

    from minifrcnn import plotting
    ax = plotting.show_image(image)                      # a new figure, or ax=...
    plotting.draw_gt(ax, boxes, labels, class_names)
    plotting.draw_detections(ax, det["boxes"], det["labels"], det["scores"], class_names)
    plotting.legend(ax, ["ground truth", "detection"])

Nothing here computes anything the detector uses; it only draws.
"""
import numpy as np

from .backend import to_numpy

BACKGROUND = "0.55"                               # grey: background RoIs, label 0
STYLES = {                                        # the one look of each kind of box
    "ground truth": {"lw": 3.0, "ls": "-"},
    "detection": {"lw": 2.0, "ls": "--"},
    "anchor": {"lw": 1.0, "ls": "--", "color": "0.85"},
    "anchor, positive": {"lw": 1.5, "ls": "--"},
    "proposal": {"lw": 1.0, "ls": "-", "color": "yellow"},
    "RoI, foreground": {"lw": 1.5, "ls": "-."},
    "RoI, background": {"lw": 1.0, "ls": ":", "color": BACKGROUND},
}


def class_colour(label):
    """The colour of class `label`: tab10's colour label - 1 for 1..K, grey for 0 (background)."""
    from matplotlib import colormaps
    label = int(label)
    if label <= 0:
        return BACKGROUND
    palette = colormaps["tab10"].colors
    return palette[(label - 1) % len(palette)]


def new_axes(figsize=(5, 5)):
    """A new pyplot figure with one axis (for notebooks; files use detect.offscreen_figure)."""
    import matplotlib.pyplot as plt
    return plt.subplots(figsize=figsize)[1]


def show_image(image, ax=None, title=None, pixel_axes=False):
    """Draw an (H, W, 3) or (H, W) image on 01's pixel grid (extent [0, W] x [0, H]); returns ax.

    pixel_axes: keep the axes, labelled in pixels (where a box's coordinates matter); else none.
    """
    ax = new_axes() if ax is None else ax
    image = to_numpy(image)
    h, w = image.shape[:2]
    ax.imshow(image, extent=(0, w, h, 0), cmap="gray" if image.ndim == 2 else None)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    if pixel_axes:
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
    else:
        ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def draw_boxes(ax, boxes, kind, labels=None, texts=None):
    """Draw boxes (N, 4) = (x1, y1, x2, y2) in the style of `kind` (a key of STYLES).

    labels (N,): class labels, for the kinds whose colour is the class's; texts (N,): a label
    drawn at each box's top-left corner (None: no text). Returns ax.
    """
    from matplotlib.patches import Rectangle
    if kind not in STYLES:
        raise ValueError(f"kind: expected one of {', '.join(STYLES)}, got {kind!r}")
    boxes = np.asarray(to_numpy(boxes), dtype=np.float64).reshape(-1, 4)     # (N, 4)
    style = dict(STYLES[kind])
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        colour = style.get("color") or class_colour(labels[i] if labels is not None else 1)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=style["lw"],
                               ls=style["ls"], edgecolor=colour))
        if texts is not None and texts[i]:
            on_colour = kind == "detection"
            ax.text(x1, y1, texts[i], fontsize=8, va="bottom", color="white" if on_colour else colour,
                    bbox={"facecolor": colour if on_colour else "white", "alpha": 0.85, "pad": 1, "lw": 0})
    return ax


def _name(label, class_names):
    label = int(label)
    if label == 0:
        return "background"
    return class_names[label - 1] if class_names else str(label)


def draw_gt(ax, boxes, labels, class_names=None, names=True):
    """Ground-truth boxes (N, 4) with their labels (N,): class colour, solid; the class names."""
    texts = [_name(k, class_names) for k in to_numpy(labels)] if names else None
    return draw_boxes(ax, boxes, "ground truth", labels=to_numpy(labels), texts=texts)


def draw_anchors(ax, anchors, labels=None):
    """Anchors (A, 4): light grey, dashed. With labels (A,), the class of the object each anchor
    is matched to, they are positive anchors: dashed, a little thicker, in that class's colour."""
    if labels is None:
        return draw_boxes(ax, anchors, "anchor")
    return draw_boxes(ax, anchors, "anchor, positive", labels=to_numpy(labels))


def draw_proposals(ax, proposals):
    """RPN proposals (P, 4): yellow, thin (a proposal has no class yet)."""
    return draw_boxes(ax, proposals, "proposal")


def draw_rois(ax, rois, labels):
    """Sampled RoIs (R, 4) with their head labels (R,): foreground in its class's colour,
    dash-dot; background (label 0) grey, dotted."""
    rois = np.asarray(to_numpy(rois), dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(to_numpy(labels)).reshape(-1)
    draw_boxes(ax, rois[labels == 0], "RoI, background")
    return draw_boxes(ax, rois[labels > 0], "RoI, foreground", labels=labels[labels > 0])


def draw_detections(ax, boxes, labels, scores, class_names=None, score_threshold=0.5):
    """Detections scoring at least score_threshold: class colour, dashed, "name score" on the colour."""
    boxes = np.asarray(to_numpy(boxes), dtype=np.float64).reshape(-1, 4)
    labels, scores = np.asarray(to_numpy(labels)).reshape(-1), np.asarray(to_numpy(scores)).reshape(-1)
    keep = scores >= score_threshold
    texts = [f"{_name(k, class_names)} {s:.2f}" for k, s in zip(labels[keep], scores[keep])]
    return draw_boxes(ax, boxes[keep], "detection", labels=labels[keep], texts=texts)


def legend(ax, kinds, class_names=None, loc="upper right", extra=(), **options):
    """A legend with one line per kind of box drawn (and one per class when class_names is given).

    ax may be a figure (one legend for all its panels); extra: more entries, artists with a label
    (what ax.plot(..., label=...) returned); options go to matplotlib's legend (ncol=4,
    bbox_to_anchor=..., title=...). A kind drawn in its class's colour is shown in black, a kind
    with a light colour of its own (anchor, proposal) outlined in dark grey, to show on white.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patheffects import withStroke
    handles = []
    for kind in kinds:
        style = STYLES[kind]
        outline = [withStroke(linewidth=style["lw"] + 2, foreground="0.3")] if "color" in style else None
        handles.append(Line2D([], [], lw=style["lw"], ls=style["ls"], color=style.get("color", "black"),
                              path_effects=outline, label=kind))
    for k, name in enumerate(class_names or (), start=1):
        handles.append(Line2D([], [], lw=3, color=class_colour(k), label=name))
    handles += list(extra)
    ax.legend(**{"handles": handles, "loc": loc, "fontsize": 8, "framealpha": 0.85, **options})
    return ax
