"""minifrcnn.plotting: each kind of box has one look, each class one colour, images on 01's grid."""
import numpy as np
import pytest
from matplotlib.colors import to_rgba

from minifrcnn import plotting
from minifrcnn.detect import draw_detections, offscreen_figure

BOXES = np.array([[10, 20, 50, 60], [0, 0, 30, 30], [40, 40, 100, 90]], dtype=np.float64)
NAMES = ("circle", "square", "triangle", "star")


def axis():
    return offscreen_figure((4, 4))[1]


def edge(patch):
    return patch.get_edgecolor()


def test_a_class_keeps_one_colour_and_background_is_grey():
    assert to_rgba(plotting.class_colour(1)) != to_rgba(plotting.class_colour(2))
    assert plotting.class_colour(3) == plotting.class_colour(3)
    assert plotting.class_colour(0) == plotting.BACKGROUND
    assert plotting.class_colour(11) == plotting.class_colour(1)        # tab10 wraps around


def test_ground_truth_is_drawn_in_its_class_colour_with_its_name():
    ax = axis()
    plotting.draw_gt(ax, BOXES, np.array([1, 2, 1]), NAMES)
    patches = ax.patches
    assert len(patches) == 3
    assert edge(patches[0]) == to_rgba(plotting.class_colour(1)) == edge(patches[2])
    assert edge(patches[1]) == to_rgba(plotting.class_colour(2))
    assert all(p.get_linestyle() == "-" and p.get_linewidth() == 3.0 for p in patches)
    assert [t.get_text() for t in ax.texts] == ["circle", "square", "circle"]
    x1, y1, x2, y2 = BOXES[0]
    assert patches[0].get_xy() == (x1, y1) and patches[0].get_width() == x2 - x1


def test_rois_foreground_in_class_colour_dash_dot_background_grey_dotted():
    ax = axis()
    plotting.draw_rois(ax, BOXES, np.array([0, 3, 0]))
    styles = sorted((p.get_linestyle(), edge(p)) for p in ax.patches)
    assert styles == sorted([(":", to_rgba(plotting.BACKGROUND))] * 2 + [("-.", to_rgba(plotting.class_colour(3)))])


def test_detections_below_the_threshold_are_not_drawn():
    ax = axis()
    plotting.draw_detections(ax, BOXES, np.array([4, 1, 2]), np.array([0.9, 0.3, 0.5]), NAMES, 0.5)
    assert len(ax.patches) == 2 and all(p.get_linestyle() == "--" for p in ax.patches)
    assert [t.get_text() for t in ax.texts] == ["star 0.90", "square 0.50"]


def test_anchors_and_proposals_have_their_fixed_colours():
    ax = axis()
    plotting.draw_anchors(ax, BOXES[:1])
    plotting.draw_proposals(ax, BOXES[1:])
    assert edge(ax.patches[0]) == to_rgba("0.85") and ax.patches[0].get_linestyle() == "--"
    assert all(edge(p) == to_rgba("yellow") for p in ax.patches[1:])


def test_images_sit_on_the_pixel_grid_and_detect_uses_the_same_look():
    image = np.zeros((30, 40, 3))
    ax = plotting.show_image(image, ax=axis())
    assert ax.images[0].get_extent() == [0, 40, 30, 0]
    det = {"boxes": BOXES[:1], "labels": np.array([2]), "scores": np.array([0.8])}
    ax = draw_detections(image, det, NAMES, 0.5, ax=axis())
    assert edge(ax.patches[0]) == to_rgba(plotting.class_colour(2))
    assert ax.texts[0].get_text() == "square 0.80"


def test_an_unknown_kind_is_a_one_line_error_and_legend_lists_kinds_and_classes():
    with pytest.raises(ValueError, match="kind: expected one of ground truth, detection, anchor"):
        plotting.draw_boxes(axis(), BOXES, "box")
    ax = axis()
    plotting.legend(ax, ["ground truth", "proposal"], NAMES[:2])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["ground truth", "proposal", "circle", "square"]


def test_positive_anchors_take_their_objects_class_colour_plain_anchors_stay_grey():
    ax = axis()
    plotting.draw_anchors(ax, BOXES, labels=np.array([1, 3, 1]))
    plotting.draw_anchors(ax, BOXES[:1])
    positives, plain = ax.patches[:3], ax.patches[3]
    assert [edge(p) for p in positives] == [to_rgba(plotting.class_colour(k)) for k in (1, 3, 1)]
    assert all(p.get_linestyle() == "--" and p.get_linewidth() == 1.5 for p in positives)
    assert edge(plain) == to_rgba("0.85") and plain.get_linewidth() == 1.0


def test_pixel_axes_keep_labelled_axes_and_a_figure_takes_one_legend_with_options():
    fig, ax = offscreen_figure((4, 4))
    plotting.show_image(np.zeros((8, 8)), ax=ax, pixel_axes=True)
    assert ax.axison and ax.get_xlabel() == "x (pixels)" and ax.get_ylabel() == "y (pixels)"
    assert not plotting.show_image(np.zeros((8, 8)), ax=axis()).axison
    dots = ax.plot([1, 2], [1, 2], "o", label="anchor centres")
    plotting.legend(fig, ["anchor, positive"], NAMES, loc="lower center", extra=dots, ncol=5, title="box colour = class")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["anchor, positive", *NAMES, "anchor centres"]
    assert fig.legends[0].get_title().get_text() == "box colour = class"
