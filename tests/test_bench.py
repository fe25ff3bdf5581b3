"""The bench command runs and prints a table (its numbers are not checked: no timed tests)."""
from minifrcnn.bench import CASES, run_bench


def test_bench_prints_a_row_per_case():
    lines = []
    rows = run_bench("cpu", repeat=1, only=["pool", "nms"], with_torch=False, out=lines.append)
    assert lines[0].startswith("machine:")
    assert lines[1].startswith("| op | ours (ms) |")
    assert len(rows) == 4 and all(r["ours_ms"] > 0 for r in rows)
    assert {"conv", "pool", "linear", "roi", "nms"} <= set(CASES)
