"""config.py: the presets, the one lr-step rule, the config built from a data set, and
reading configs that older checkpoints saved."""
import json

import numpy as np
import pytest

from minifrcnn.config import LR_STEP_AT, Config, config_for_data


def test_with_iters_moves_the_lr_step_to_80_percent():
    cfg = Config.small()
    assert cfg.iters == 3000 and cfg.lr_steps == (int(3000 * LR_STEP_AT),)   # the preset obeys it
    assert cfg.with_iters(150).lr_steps == (120,) and cfg.with_iters(150).iters == 150
    assert cfg.with_iters(5).lr_steps == cfg.with_iters(6).lr_steps == (4,)
    assert cfg.with_iters(1).lr_steps == (1,)          # never a step before the first iteration


def test_config_for_data_sizes_the_small_preset_and_lets_overrides_win():
    small = [{"image": np.zeros((128, 128, 3), np.uint8)}] * 3
    cfg = config_for_data(small, ("a", "b"), seed=4)
    assert (cfg.num_classes, cfg.class_names, cfg.seed) == (2, ("a", "b"), 4)
    assert (cfg.image_min_size, cfg.image_max_size, cfg.anchor_sizes()) == (128, 213, (16, 32, 64))
    big = [{"image": np.zeros((480, 640, 3), np.uint8)}]
    assert config_for_data(big, ("a",)).anchor_sizes() == (60, 120, 240)
    cfg = config_for_data(small, ("a",), anchor_scales=(4,), anchor_ratios=(1.0,))
    assert cfg.num_anchors() == 1 and cfg.anchor_sizes() == (32,)


def test_config_is_sized_to_the_data():
    small = [{"image": np.zeros((96, 128, 3), np.uint8)}] * 3
    cfg = config_for_data(small, ("a",))
    assert cfg.image_min_size == 96 and not cfg.allow_upscale     # no blowing up to 600 px
    assert cfg.anchor_sizes() == (12, 24, 48)                      # scaled with the image
    big = [{"image": np.zeros((480, 640, 3), np.uint8)}]
    assert config_for_data(big, ("a",)).image_min_size == 480
    assert config_for_data(big, ("a",), min_size=300).image_min_size == 300


# --- bad input found by an audit (2026-11-26): each is one line naming the culprit, and loses nothing


def test_from_dict_reads_older_checkpoints_and_names_unknown_fields():
    d = Config.small().to_dict()
    assert Config.from_dict(json.loads(json.dumps(dict(d, extra={})))) == Config.small()
    with pytest.raises(ValueError, match="no_such_field"):
        Config.from_dict(dict(d, no_such_field=1))
