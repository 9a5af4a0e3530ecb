"""Synthetic v2: its splits, its plan, its knobs doing what they say, and v1 refusing them."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _datasets import file_tree
from kdcicam.data.metadata import read_dataset_info, read_metadata
from kdcicam.data.synthetic import (
    SyntheticConfig,
    generate_synthetic,
    plan_split,
    read_habitats,
    render_sample,
)
from kdcicam.data.synthetic_v2 import LOBES, lobed_mask, v2_config
from kdcicam.errors import ConfigError

SMALL = {"size": 48, "num_classes": 4, "n_train": 16, "n_val": 8, "n_val_conflict": 8, "n_test": 8,
         "n_test_conflict": 8, "workers": 1}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_v2") / "ds"
    generate_synthetic(out, v2_config(**SMALL))
    return out


def test_layout_splits_and_dataset_yaml(small):
    info = read_dataset_info(small)
    assert info.splits == ["train", "val", "val_conflict", "test", "test_conflict"]
    assert info.class_names == ["lobes3", "lobes4", "lobes5", "lobes6"]
    assert info.name == "synthetic confounded objects v2"
    assert info.extra["variant"] == "v2" and info.extra["rho"] == 0.97 and info.extra["n_val_conflict"] == 8
    for knob in ("shape_detail", "class_texture", "texture_noise", "habitat_contrast", "habitat_colour"):
        assert knob in info.extra
    for split in info.splits:
        md = read_metadata(small / split)  # validates files, boxes inside images, images and masks exist
        assert len(md) == SMALL[f"n_{split}"]
        for image_id in md.image_ids:
            mask = np.asarray(Image.open(md.mask_paths(image_id)[0]))
            ys, xs = np.nonzero(mask)
            assert md.boxes[image_id] == [(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)]
        assert [md.class_labels[i] for i in md.image_ids] == [c for c, _ in plan_split(v2_config(**SMALL), split)]
        habitats = read_habitats(small / split)
        assert [habitats[i] for i in md.image_ids] == [h for _, h in plan_split(v2_config(**SMALL), split)]


def test_same_config_same_bytes_any_workers(small, tmp_path):
    generate_synthetic(tmp_path / "again", v2_config(**{**SMALL, "workers": 2}))
    assert file_tree(tmp_path / "again") == file_tree(small)


def test_plan_confounds_train_val_test_and_conflicts_never_match():
    cfg = v2_config(num_classes=8, rho=0.97, n_train=2400, n_val=400, n_val_conflict=400, n_test=800,
                    n_test_conflict=800)
    for split, n in (("train", 2400), ("val", 400), ("test", 800)):
        plan = plan_split(cfg, split)
        assert sum(c == h for c, h in plan) == 8 * math.floor(0.97 * n / 8 + 0.5)
    for split in ("val_conflict", "test_conflict"):
        plan = plan_split(cfg, split)
        assert len(plan) == cfg.count(split) and sum(c == h for c, h in plan) == 0
        for c in range(8):  # the other habitats evenly
            counts = Counter(h for cc, h in plan if cc == c)
            assert len(counts) == 7 and max(counts.values()) - min(counts.values()) <= 1
    assert plan_split(cfg, "val_conflict") != plan_split(cfg, "test_conflict")


def test_v2_draws_differ_from_v1():
    v1 = SyntheticConfig(size=48, num_classes=4)
    v2 = v2_config(size=48, num_classes=4)
    assert not np.array_equal(render_sample(v1, "train", 0, 1, 1)[0], render_sample(v2, "train", 0, 1, 1)[0])


@pytest.mark.parametrize("lobes", LOBES[:6])
def test_lobe_count_is_the_class(lobes):
    """On the circle of the base radius the outline crosses in and out twice per lobe."""
    phi = np.linspace(0, 2 * math.pi, 3600, endpoint=False)
    base = 0.95 / 1.1
    inside = lobed_mask(lobes, 0.1, base * np.cos(phi), base * np.sin(phi))
    assert int(np.count_nonzero(inside != np.roll(inside, 1))) == 2 * lobes


def test_knobs_flatten_what_they_say():
    """habitat_contrast 0: a flat background; class_texture 0 and texture_noise 0: a flat object."""
    cfg = v2_config(size=64, num_classes=4, habitat_contrast=0.0, class_texture=0.0, texture_noise=0.0)
    for index in range(4):
        image, mask, _ = render_sample(cfg, "train", index, index, index)
        m = mask > 0
        assert np.ptp(image[~m], axis=0).max() <= 1 and np.ptp(image[m], axis=0).max() <= 1
    full = v2_config(size=64, num_classes=4)
    image, mask, _ = render_sample(full, "train", 0, 0, 0)
    assert np.ptp(image[mask == 0], axis=0).max() > 30


def test_habitat_colour_off_hides_the_class_in_the_hue():
    """With habitat_colour the mean background colour separates the habitats; without it, much less."""
    def spread(cfg) -> float:
        means = np.zeros((4, 3))
        for h in range(4):
            for k in range(40):
                image, mask, _ = render_sample(cfg, "train", 40 * h + k, 0, h)
                means[h] += image[mask == 0].mean(0) / 255 / 40
        return max(np.abs(means[i] - means[j]).max() for i in range(4) for j in range(4))

    on = spread(v2_config(size=32, num_classes=4))
    off = spread(v2_config(size=32, num_classes=4, habitat_colour=False))
    assert on > 0.3 and off < on / 2


def test_v1_refuses_v2_knobs(tmp_path):
    with pytest.raises(ConfigError, match=r"shape_detail, n_val_conflict|n_val_conflict, shape_detail") as err:
        generate_synthetic(tmp_path / "x", SyntheticConfig(n_val_conflict=5, shape_detail=0.2))
    assert "variant v1" in str(err.value)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("field,value,words", [
    ("variant", "v3", "variant must be one of v1, v2"),
    ("shape_detail", 0.5, "shape_detail must be in [0, 0.3]"),
    ("class_texture", -0.1, "class_texture must be in [0, 1]"),
    ("texture_noise", 1.5, "texture_noise must be in [0, 1]"),
    ("habitat_contrast", 2.0, "habitat_contrast must be in [0, 1]"),
    ("n_val_conflict", -1, "n_val_conflict must be >= 0"),
])
def test_bad_v2_config(tmp_path, field, value, words):
    with pytest.raises(ConfigError) as err:
        generate_synthetic(tmp_path / "x", v2_config(**{**SMALL, field: value}))
    assert words in str(err.value)


def test_objects_without_any_class_signal_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="carry no class"):
        generate_synthetic(tmp_path / "x", v2_config(**{**SMALL, "shape_detail": 0.0, "class_texture": 0.0}))


def test_a_fresh_test_draw_changes_the_test_pair_only():
    """test_draw k > 0 redraws test / test_conflict from their own streams; train, val and val_conflict
    stay byte for byte what draw 0 made (so models trained before a redraw are still valid)."""
    from kdcicam.data.synthetic import plan_split, render_sample

    first, second, third = v2_config(test_draw=0), v2_config(test_draw=1), v2_config(test_draw=2)
    for fresh in (second, third):
        for split in ("train", "val", "val_conflict"):
            assert plan_split(first, split) == plan_split(fresh, split)
            a, b = (render_sample(c, split, 3, *plan_split(c, split)[3]) for c in (first, fresh))
            assert all(np.array_equal(x, y) for x, y in zip(a[:2], b[:2], strict=True)) and a[2] == b[2]
    for split in ("test", "test_conflict"):
        images = [render_sample(c, split, 3, *plan_split(c, split)[3])[0] for c in (first, second, third)]
        assert not any(np.array_equal(images[i], images[j]) for i, j in ((0, 1), (0, 2), (1, 2)))
    assert "test_draw" not in first.settings() and third.settings()["test_draw"] == 2
    with pytest.raises(ConfigError, match="test_draw"):
        v2_config(test_draw=-1).validate()
