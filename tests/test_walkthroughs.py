"""The walkthrough notebooks' question layer (issue 17, item 4): read as JSON, nothing executed.

Every walkthrough asks the reader questions with their answers folded away in <details>, ends with
a Summary and a Next, and every exercise is linked from at least one walkthrough section.
"""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
WALKTHROUGHS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXERCISES = sorted(p.stem for p in (ROOT / "notebooks" / "exercises" / "student").glob("[0-9][0-9]_*.ipynb"))


def markdown(path):
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]


def test_there_are_walkthroughs_and_exercises():
    assert len(WALKTHROUGHS) >= 11 and len(EXERCISES) >= 14


@pytest.mark.parametrize("path", WALKTHROUGHS, ids=lambda p: p.stem)
def test_a_walkthrough_asks_questions_and_folds_their_answers(path):
    text = "\n".join(markdown(path))
    answers = re.findall(r"<details>\s*<summary>.*?</summary>(.*?)</details>", text, flags=re.S)
    assert len(answers) >= 2, f"{path.name}: {len(answers)} folded answers"
    assert all(a.strip() for a in answers), f"{path.name}: an empty answer"


@pytest.mark.parametrize("path", WALKTHROUGHS, ids=lambda p: p.stem)
def test_a_walkthrough_ends_with_a_summary_and_a_next(path):
    end = "\n".join(markdown(path)[-2:])
    assert "## Summary" in end and "## Next" in end, path.name
    assert end.index("## Summary") < end.index("## Next"), path.name


def test_every_exercise_is_linked_from_a_walkthrough():
    links = set()
    for path in WALKTHROUGHS:
        links |= set(re.findall(r"\(exercises/student/(\d\d_\w+)\.ipynb\)", "\n".join(markdown(path))))
    assert set(EXERCISES) <= links, f"not linked from any walkthrough: {sorted(set(EXERCISES) - links)}"
    for stem in links:
        assert stem in EXERCISES, f"a walkthrough links a missing exercise: {stem}"
