"""VOC and COCO average precision on cases small enough to compute by hand."""
import math

import numpy as np
import pytest

from minifrcnn.evaluate import (
    coco_map, evaluate_detections, format_ap_table, iou_matrix, plot_pr_curves, voc_ap,
    voc_tp_fp, voc_tp_fp_reference)


def det(boxes, scores, labels):
    return {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
            "scores": np.array(scores, dtype=np.float32), "labels": np.array(labels)}


def gt(boxes, labels, difficult=None):
    g = {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4), "labels": np.array(labels)}
    if difficult is not None:
        g["difficult"] = np.array(difficult, dtype=bool)
    return g


A, B = [0, 0, 10, 10], [20, 20, 30, 30]
C, D = [0, 0, 10, 10], [50, 50, 60, 60]
FAR = [70, 70, 80, 80]


def test_iou_matrix():
    iou = iou_matrix(np.array([[0, 0, 10, 10.0]]), np.array([[5, 0, 15, 10.0], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[50 / 150, 0.0]])      # no +1: areas are 100


@pytest.mark.parametrize("method", ["area", "voc07"])
def test_perfect_detections_give_ap_one(method):
    gts = [gt([A, B], [1, 2]), gt([C, D], [2, 2])]
    dets = [det([A, B], [0.9, 0.8], [1, 2]), det([C, D], [0.7, 0.6], [2, 2])]
    r = evaluate_detections(dets, gts, ["a", "b"], method=method)
    assert r["ap"] == {"a": 1.0, "b": 1.0} and r["map"] == 1.0
    assert r["num_gt"] == {"a": 1, "b": 3}


def test_hand_computed_example():
    # One class, 4 gts: image 0 has A and B, image 1 has C and D.
    gts = [gt([A, B], [1, 1]), gt([C, D], [1, 1])]
    dets = [
        det([A, FAR, [1, 0, 11, 10], [90, 0, 99, 9]], [0.9, 0.8, 0.6, 0.4], [1, 1, 1, 1]),
        det([C, D], [0.7, 0.5], [1, 1]),
    ]
    # In score order:
    #   0.9 A exact             TP  (A taken)
    #   0.8 FAR                 FP  (no overlap)
    #   0.7 C exact             TP
    #   0.6 A shifted by 1 px   FP  (IoU 90/110 >= 0.5 but A is taken: a duplicate)
    #   0.5 D exact             TP
    #   0.4 far away            FP      (B is never found)
    # cum TP 1 1 2 2 3 3, cum FP 0 1 1 2 2 3, npos = 4
    #   recall    .25  .25  .5   .5  .75  .75
    #   precision 1    .5   2/3  .5  .6   .5
    # voc07: t = 0, .1, .2 -> max precision with recall >= t = 1       (3 points)
    #        t = .3, .4, .5 -> 2/3                                      (3 points)
    #        t = .6, .7     -> .6                                       (2 points)
    #        t = .8, .9, 1  -> 0 (recall never reaches them)            (3 points)
    #        AP = (3 * 1 + 3 * 2/3 + 2 * .6) / 11 = 6.2 / 11
    # area:  envelope at recall .25 -> 1, .5 -> 2/3, .75 -> .6, 1 -> 0
    #        AP = .25 * (1 + 2/3 + .6 + 0) = 0.5666...
    r07 = evaluate_detections(dets, gts, ["thing"], method="voc07")
    area = evaluate_detections(dets, gts, ["thing"], method="area")
    assert r07["ap"]["thing"] == pytest.approx(6.2 / 11)
    assert area["ap"]["thing"] == pytest.approx(0.25 * (1 + 2 / 3 + 0.6))
    np.testing.assert_allclose(area["recall"]["thing"], [.25, .25, .5, .5, .75, .75])
    np.testing.assert_allclose(area["precision"]["thing"], [1, .5, 2 / 3, .5, .6, .5])
    assert area["map"] == area["ap"]["thing"]


def test_duplicates_are_false_positives():
    # gts G1, G2; detections G1 (.9), G1 again (.8), G2 (.7): TP FP TP
    # recall .5 .5 1, precision 1 .5 2/3
    # area = .5 * 1 + .5 * 2/3;  voc07 = (6 * 1 + 5 * 2/3) / 11
    gts = [gt([A, B], [1, 1])]
    dets = [det([A, A, B], [0.9, 0.8, 0.7], [1, 1, 1])]
    assert evaluate_detections(dets, gts, ["x"])["ap"]["x"] == pytest.approx(0.5 + 1 / 3)
    assert evaluate_detections(dets, gts, ["x"], method="voc07")["ap"]["x"] == pytest.approx(
        (6 + 10 / 3) / 11)
    tp, fp = voc_tp_fp(np.zeros(3, int), [0.9, 0.8, 0.7], np.array([A, A, B], float),
                       [np.array([A, B], float)], [np.zeros(2, bool)])
    assert tp.tolist() == [True, False, True] and fp.tolist() == [False, True, False]


def test_difficult_ground_truth_is_ignored():
    # B is difficult: the .95 detection on it is neither TP nor FP, and B is not counted.
    gts = [gt([A, B], [1, 1], difficult=[False, True])]
    dets = [det([B, A], [0.95, 0.9], [1, 1])]
    r = evaluate_detections(dets, gts, ["x"])
    assert r["ap"]["x"] == 1.0 and r["num_gt"]["x"] == 1
    np.testing.assert_allclose(r["recall"]["x"], [1.0])       # the ignored one left out
    # Without the flag the same detections find 2 of 2: also AP 1, but num_gt 2.
    plain = evaluate_detections(dets, [gt([A, B], [1, 1])], ["x"])
    assert plain["num_gt"]["x"] == 2
    # A detection that hits a difficult gt *and* would be a FP otherwise stays ignored:
    # here a far FP ranks first in the plain case and lowers the AP.
    dets2 = [det([B, FAR, A], [0.95, 0.92, 0.9], [1, 1, 1])]
    r2 = evaluate_detections(dets2, gts, ["x"])
    # counted: FAR (FP), A (TP): recall 0, 1; precision 0, .5 -> area AP = .5
    assert r2["ap"]["x"] == pytest.approx(0.5)


def test_difficult_may_be_missing_or_none():
    dets = [det([A], [0.9], [1])]
    r1 = evaluate_detections(dets, [gt([A], [1])], ["x"])
    r2 = evaluate_detections(dets, [{"boxes": [A], "labels": [1], "difficult": None}], ["x"])
    assert r1["ap"] == r2["ap"] == {"x": 1.0}


def test_class_with_only_difficult_gt_is_nan_and_left_out_of_the_map():
    gts = [gt([A, B], [1, 2], difficult=[False, True])]
    dets = [det([A, B], [0.9, 0.9], [1, 2])]
    r = evaluate_detections(dets, gts, ["a", "b"])
    assert math.isnan(r["ap"]["b"]) and r["map"] == 1.0


def test_class_without_detections_has_ap_zero_and_counts_in_the_map():
    gts = [gt([A, B], [1, 2])]
    dets = [det([A], [0.9], [1])]
    r = evaluate_detections(dets, gts, ["a", "b"], method="voc07")
    assert r["ap"] == {"a": 1.0, "b": 0.0} and r["map"] == 0.5


def test_iou_exactly_at_the_threshold_counts_as_a_hit():
    # gt 10 x 10, detection its top half: IoU = 50 / 100 = 0.5 exactly; the devkit uses >=
    r = evaluate_detections([det([[0, 0, 10, 5]], [1.0], [1])], [gt([A], [1])], ["x"])
    assert r["ap"]["x"] == 1.0


def test_detection_takes_its_best_gt_even_if_taken():
    # The devkit does not fall back to a second-best free gt: d2's best gt is A (taken),
    # so d2 is a FP even though it overlaps the free gt E with IoU 0.6.
    E = [4, 0, 14, 10]       # IoU(A, E) = 60 / 140
    d2 = [2, 0, 12, 10]      # IoU(d2, A) = 80/120 = .667, IoU(d2, E) = 80/120 = .667 -> first: A
    gts = [gt([A, E], [1, 1])]
    r = evaluate_detections([det([A, d2], [0.9, 0.8], [1, 1])], gts, ["x"])
    np.testing.assert_allclose(r["precision"]["x"], [1.0, 0.5])
    np.testing.assert_allclose(r["recall"]["x"], [0.5, 0.5])


def test_voc_ap_on_empty_curves():
    assert voc_ap([], [], "area") == 0.0 and voc_ap([], [], "voc07") == 0.0
    with pytest.raises(ValueError, match="method"):
        voc_ap([1.0], [1.0], "coco")


@pytest.mark.parametrize("found", [3, 6, 7])
def test_voc07_a_recall_of_exactly_3_6_or_7_tenths_misses_that_point(found):
    # 10 gts in one image; the `found` best detections find one each, and nothing else is
    # detected: recall climbs to exactly found / 10 with precision 1. np.arange(0, 1.1, 0.1)
    # makes t = 0.30000000000000004 (0.6000000000000001, 0.7000000000000001), which that recall
    # does not reach, so only the points 0 .. (found - 1) / 10 count: AP = found / 11
    # (py-faster-rcnn's voc_eval.py). With t = k / 10 it would be (found + 1) / 11.
    gts = [gt([[20 * i, 0, 20 * i + 10, 10] for i in range(10)], [1] * 10)]
    dets = [det([[20 * i, 0, 20 * i + 10, 10] for i in range(found)],
                [1 - i / 100 for i in range(found)], [1] * found)]
    r = evaluate_detections(dets, gts, ["x"], method="voc07")
    assert r["recall"]["x"][-1] == found / 10
    assert r["ap"]["x"] == pytest.approx(found / 11)


def voc_ap_of_py_faster_rcnn(rec, prec):
    """py-faster-rcnn's lib/datasets/voc_eval.py, voc_ap(rec, prec, use_07_metric=True)."""
    ap = 0.
    for t in np.arange(0., 1.1, 0.1):
        if np.sum(rec >= t) == 0:
            p = 0
        else:
            p = np.max(prec[rec >= t])
        ap = ap + p / 11.
    return ap


def test_voc07_agrees_with_py_faster_rcnn():
    rng = np.random.default_rng(0)
    for trial in range(200):
        npos = int(rng.integers(1, 21))                # recalls k / npos: 3/10, 6/20, 7/10 ...
        found = int(rng.integers(0, npos + 1))
        hits = rng.permutation(np.r_[np.ones(found), np.zeros(int(rng.integers(0, 10)))])
        tp = np.cumsum(hits)                                  # (D,) in score order
        rec, prec = tp / npos, tp / np.arange(1, len(tp) + 1)
        assert voc_ap(rec, prec, "voc07") == pytest.approx(voc_ap_of_py_faster_rcnn(rec, prec),
                                                          abs=1e-12)


def _random_case(rng, n_images=12, n_classes=3):
    dets, gts = [], []
    for _ in range(n_images):
        g = int(rng.integers(0, 5))
        xy = rng.uniform(0, 60, (g, 2))
        wh = rng.uniform(5, 30, (g, 2))
        gb = np.concatenate([xy, xy + wh], axis=1)
        gl = rng.integers(1, n_classes + 1, g)
        k = int(rng.integers(0, 9))
        src = rng.integers(0, max(g, 1), k)
        db = np.concatenate([rng.uniform(0, 60, (k, 2)), np.zeros((k, 2))], axis=1)
        db[:, 2:] = db[:, :2] + rng.uniform(5, 30, (k, 2))
        dl = rng.integers(1, n_classes + 1, k)
        if g:
            near = rng.uniform(size=k) < 0.7
            db[near] = gb[src[near]] + rng.normal(0, 2, (int(near.sum()), 4))
            db[near, 2:] = np.maximum(db[near, 2:], db[near, :2] + 1)
            dl[near] = gl[src[near]]
        scores = np.round(rng.uniform(size=k), 1)                 # many ties on purpose
        dets.append(det(db, scores, dl))
        gts.append(gt(gb, gl, rng.uniform(size=g) < 0.2))
    return dets, gts


def test_fast_matching_equals_the_reference_loop():
    rng = np.random.default_rng(0)
    for trial in range(20):
        dets, gts = _random_case(rng)
        for k in (1, 2, 3):
            det_image = np.concatenate([np.full(int((d["labels"] == k).sum()), i)
                                        for i, d in enumerate(dets)]).astype(int)
            scores = np.concatenate([d["scores"][d["labels"] == k] for d in dets])
            boxes = np.concatenate([d["boxes"][d["labels"] == k] for d in dets]).astype(float)
            gb = [g["boxes"][g["labels"] == k].astype(float) for g in gts]
            gd = [g["difficult"][g["labels"] == k] for g in gts]
            for thr in (0.3, 0.5, 0.7):
                fast = voc_tp_fp(det_image, scores, boxes, gb, gd, thr)
                ref = voc_tp_fp_reference(det_image, scores, boxes, gb, gd, thr)
                assert np.array_equal(fast[0], ref[0]) and np.array_equal(fast[1], ref[1])


def test_input_checks():
    with pytest.raises(ValueError, match="one entry per image"):
        evaluate_detections([det([A], [1], [1])], [], ["x"])
    with pytest.raises(ValueError, match=r"detections\[0\]\['labels'\].*1\.\.1"):
        evaluate_detections([det([A], [1], [2])], [gt([A], [1])], ["x"])
    with pytest.raises(ValueError, match=r"detections\[0\]: missing key 'scores'"):
        evaluate_detections([{"boxes": np.zeros((0, 4)), "labels": []}], [gt([A], [1])], ["x"])
    with pytest.raises(ValueError, match=r"ground_truths\[0\]\['boxes'\]"):
        evaluate_detections([det([], [], [])], [{"boxes": np.zeros((1, 3)), "labels": [1]}],
                            ["x"])
    with pytest.raises(ValueError, match="method"):
        evaluate_detections([det([], [], [])], [gt([A], [1])], ["x"], method="coco")


# ----------------------------------------------------------------------------------------
# COCO
# ----------------------------------------------------------------------------------------

def test_coco_perfect_detections():
    gts = [gt([A, B], [1, 2]), gt([C, D], [2, 1])]
    dets = [det([A, B], [0.9, 0.8], [1, 2]), det([C, D], [0.7, 0.6], [2, 1])]
    r = coco_map(dets, gts, ["a", "b"])
    assert r["map"] == pytest.approx(1.0) and r["map50"] == pytest.approx(1.0)
    assert r["map75"] == pytest.approx(1.0)


def test_coco_shifted_box():
    # gt (0, 0, 20, 20) and a detection shifted by 4.5 px: IoU = 15.5 * 20 / (800 - 310) = 0.633
    # -> matched at IoU thresholds .50, .55, .60 only: map50 = 1, map75 = 0, map = 3 / 10
    r = coco_map([det([[4.5, 0, 24.5, 20]], [0.9], [1])], [gt([[0, 0, 20, 20]], [1])])
    assert r["map50"] == pytest.approx(1.0) and r["map75"] == 0.0
    assert r["map"] == pytest.approx(0.3)


def test_coco_hand_computed_101_points():
    # 2 gts; in score order TP, FP, TP at every threshold (exact boxes):
    # recall .5 .5 1, precision 1 .5 2/3, envelope 1 2/3 2/3
    # recall points 0 .. .50 (51 of them) read precision 1, .51 .. 1 (50) read 2/3
    # AP = (51 + 50 * 2/3) / 101
    r = coco_map([det([A, FAR, B], [0.9, 0.8, 0.7], [1, 1, 1])], [gt([A, B], [1, 1])])
    assert r["map"] == pytest.approx((51 + 100 / 3) / 101)


def test_coco_difficult_and_duplicates_and_max_detections():
    # the detection on the difficult gt B is ignored; the duplicate of A is a FP after the TP
    gts = [gt([A, B], [1, 1], difficult=[False, True])]
    r = coco_map([det([B, A, A], [0.95, 0.9, 0.8], [1, 1, 1])], gts)
    assert r["map"] == pytest.approx(1.0) and r["num_gt"] == {"1": 1}
    # two identical detections of one gt: the first claims it (TP), the second is a FP after
    # it, which cannot lower the envelope: AP stays 1
    r = coco_map([det([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [1, 1])],
                 [gt([A], [1])])
    assert r["map"] == pytest.approx(1.0)
    # a duplicate ranked above a true positive does count: TP (A), FP (A again), TP (B):
    # the same curve as test_coco_hand_computed_101_points, AP = (51 + 50 * 2/3) / 101
    r = coco_map([det([A, A, B], [0.9, 0.8, 0.7], [1, 1, 1])], [gt([A, B], [1, 1])])
    assert r["map"] == pytest.approx((51 + 100 / 3) / 101)
    # only the best max_detections per image and class are kept
    two = [det([A, B], [0.9, 0.8], [1, 1])]
    assert coco_map(two, [gt([A, B], [1, 1])], max_detections=1)["map"] == pytest.approx(
        51 / 101)                                  # recall .5 reached, never beyond


def test_coco_class_without_gt_is_left_out():
    r = coco_map([det([A, B], [0.9, 0.8], [1, 2])], [gt([A], [1])], ["a", "b"])
    assert r["map"] == pytest.approx(1.0) and math.isnan(r["ap_per_class"]["b"])


def test_coco_agrees_with_pycocotools():
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    import contextlib
    import io
    dets, gts = _random_case(np.random.default_rng(5), n_images=20)
    images = [{"id": i + 1, "width": 100, "height": 100} for i in range(len(gts))]
    anns, results = [], []
    for i, (d, g) in enumerate(zip(dets, gts)):
        for b, lab, dif in zip(g["boxes"], g["labels"], g["difficult"]):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(lab),
                         "bbox": [float(b[0]), float(b[1]), w, h], "iscrowd": 0,
                         "area": 1e11 if dif else w * h})   # outside "all": an ignored gt
        for b, s, lab in zip(d["boxes"], d["scores"], d["labels"]):
            results.append({"image_id": i + 1, "category_id": int(lab), "score": float(s),
                            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]),
                                     float(b[3] - b[1])]})
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": k} for k in (1, 2, 3)]}
        cg.createIndex()
        ev = COCOeval(cg, cg.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ours = coco_map(dets, gts, ["1", "2", "3"])
    np.testing.assert_allclose([ours["map"], ours["map50"], ours["map75"]], ev.stats[:3],
                               atol=1e-12)


# ----------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------

def test_table_and_plot(tmp_path):
    gts = [gt([A, B], [1, 1]), gt([C], [2])]
    dets = [det([A, FAR], [0.9, 0.8], [1, 1]), det([], [], [])]
    r = evaluate_detections(dets, gts, ["cat", "dog"])
    table = format_ap_table(r, coco=coco_map(dets, gts, ["cat", "dog"]))
    lines = table.splitlines()
    assert lines[0].startswith("| class | #gt | AP@0.5 (area)")
    assert lines[2].startswith("| cat | 2 | 0.5000 |") and lines[3].startswith("| dog | 1 | 0.0000")
    assert lines[-1].startswith("| **mAP** | 3 | 0.2500 |")
    path = plot_pr_curves(r, str(tmp_path / "pr.png"))
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_coco_matching_prefers_a_normal_gt_to_a_difficult_one():
    """pycocotools' rule: once a detection has a normal gt above the threshold, the difficult
    (ignored) gts after it are not looked at, even with a higher IoU."""
    from minifrcnn.evaluate import coco_match_image
    ious = np.array([[0.6, 0.9]])                       # gts sorted normal first, then difficult
    matched, ignored = coco_match_image(ious, np.array([False, True]), [0.5])
    assert matched.tolist() == [[True]] and ignored.tolist() == [[False]]
    # above the normal gt's IoU only the difficult gt is left: matched, and ignored
    matched, ignored = coco_match_image(ious, np.array([False, True]), [0.7])
    assert matched.tolist() == [[True]] and ignored.tolist() == [[True]]


def test_coco_matching_on_an_iou_tie_the_later_gt_wins():
    """">=" in pycocotools' loop: detection 0 ties between gts 0 and 1 and takes gt 1, so
    detection 1, which overlaps only gt 1, finds it taken and is a false positive."""
    from minifrcnn.evaluate import coco_match_image
    ious = np.array([[0.7, 0.7],
                     [0.0, 0.7]])
    matched, _ = coco_match_image(ious, np.array([False, False]), [0.5])
    assert matched.tolist() == [[True, False]]
