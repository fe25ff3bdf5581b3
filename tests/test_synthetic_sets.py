"""scripts/make_digits_voc.py and make_patterns_voc.py: the second test set and the set the
shipped backbone (data/small4_backbone.npz) was pre-trained on. Same seed, same bytes; every box
inside its image and labelled with a known class; the folder reads back as a VOC set."""
import sys
from pathlib import Path

import numpy as np
import pytest

from minifrcnn.data import VOCDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import make_digits_voc  # noqa: E402
import make_patterns_voc  # noqa: E402


@pytest.mark.parametrize("module", [make_digits_voc, make_patterns_voc], ids=lambda m: m.__name__)
def test_a_synthetic_set_is_a_function_of_its_seed_and_reads_back(module, tmp_path):
    make_split = make_digits_voc.make_split                     # both sets' images, by seed
    first = make_split("train", 4, seed=3, make_image=module.make_image)
    again = make_split("train", 4, seed=3, make_image=module.make_image)
    other = make_split("train", 4, seed=4, make_image=module.make_image)
    assert all(np.array_equal(a["image"], b["image"]) and np.array_equal(a["boxes"], b["boxes"])
               for a, b in zip(first, again))
    assert not all(np.array_equal(a["image"], b["image"]) for a, b in zip(first, other))
    for s in first:
        h, w = s["image"].shape[:2]
        assert module.MIN_SIDE <= min(h, w) and max(h, w) <= module.MAX_SIDE
        b = s["boxes"]
        assert len(b) >= 1 and (b[:, :2] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (b[:, 2:] > b[:, :2]).all()
        assert set(s["labels"].tolist()) <= set(range(1, len(module.CLASS_NAMES) + 1))
    module.main(["--out", str(tmp_path / "set"), "--train-images", "3", "--test-images", "2"])
    ds = VOCDataset(str(tmp_path / "set"), "train")
    assert len(ds) == 3 and tuple(ds.class_names) == module.CLASS_NAMES


def test_every_pattern_is_drawn_and_is_not_a_flat_fill():
    """Each class's texture has both colours inside a patch: a class is its pattern."""
    rng = np.random.default_rng(0)
    for name in make_patterns_voc.CLASS_NAMES:
        texture = make_patterns_voc.pattern(name, rng, 64, 64, (32.0, 32.0))
        assert texture.shape == (64, 64) and 0.1 < texture.mean() < 0.9, name
    with pytest.raises(ValueError, match="unknown pattern"):
        make_patterns_voc.pattern("plaid", rng, 8, 8, (4.0, 4.0))
