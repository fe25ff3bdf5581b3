"""The bench command runs and prints a table (its numbers are not checked: no timed tests).

The torch twin's tests are in test_bench_vs_torch.py (benchmarks/bench_vs_torch.py)."""
import functools

import pytest

from minifrcnn import bench
from minifrcnn.bench import CASES, run_bench
from minifrcnn.config import Config
from minifrcnn.data import shapes


def tiny_config():
    return Config.small(backbone="tiny", num_classes=4, class_names=tuple(shapes.CLASS_NAMES),
                        head_hidden=16, roi_output_size=3, image_min_size=48, image_max_size=48,
                        rpn_batch_size=32, roi_batch_size=16,
                        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50,
                        rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=30)


def test_bench_prints_a_row_per_case():
    lines = []
    rows = run_bench("cpu", repeat=1, only=["pool", "nms"], out=lines.append)
    assert lines[0].startswith("machine:")
    assert lines[1] == "| op | ours (ms) | images/s | peak memory (MiB) |"   # no twin columns
    assert len(rows) == 4 and all(r["ours_ms"] > 0 for r in rows)
    assert {"conv", "pool", "linear", "roi", "nms", "step", "vgg16"} <= set(CASES)


def test_step_group_times_the_detector_with_images_per_second_and_memory(monkeypatch):
    monkeypatch.setitem(CASES, "step", functools.partial(bench.step_cases, config=tiny_config()))
    lines = []
    rows = run_bench("cpu", repeat=1, only=["step"], out=lines.append)
    names = [r["op"] for r in rows]
    assert len(rows) == 5 and all(n.startswith("step [cpu]: ") for n in names)
    assert any("training forward" in n for n in names) and any("predict, 8 images" in n for n in names)
    assert all(r["ours_ms"] > 0 and r["peak_mib"] > 0 for r in rows)
    predict = [r for r in rows if "predict" in r["op"]][0]
    assert predict["images_per_s"] == pytest.approx(8 / (predict["ours_ms"] / 1e3))
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + 5 and all(line.count("|") == table[0].count("|") for line in table)
