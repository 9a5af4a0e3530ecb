from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _datasets import file_tree
from kdcicam.data import synthetic
from kdcicam.data.metadata import read_dataset_info, read_metadata
from kdcicam.data.synthetic import (
    SHAPES,
    SyntheticConfig,
    class_counts,
    generate_synthetic,
    plan_split,
    read_habitats,
    render_sample,
)
from kdcicam.errors import ConfigError

SMALL = {"size": 48, "num_classes": 4, "n_train": 24, "n_val": 8, "n_test": 12, "n_test_conflict": 12, "workers": 1}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    generate_synthetic(out, SyntheticConfig(**SMALL))
    return out


def test_layout_and_dataset_yaml(small):
    info = read_dataset_info(small)
    assert info.image_root == (small / "images").resolve()
    assert "image_root: images\n" in (small / "dataset.yaml").read_text()
    assert info.class_names == ["disc", "square", "triangle", "star"]
    assert info.splits == ["train", "val", "test", "test_conflict"]
    assert info.extra["seed"] == 0 and info.extra["rho"] == 0.9 and info.extra["size"] == 48
    assert info.extra["habitats"] == ["blobs", "grain", "stripes_0", "stripes_60"]
    md = read_metadata(small / "train")  # validates every file, boxes inside images, images and masks exist
    assert len(md) == 24 and md.image_ids[0] == "train/disc/0000.png"
    assert md.masks["train/disc/0000.png"] == ["train/disc/0000_mask.png"]
    assert Counter(md.class_labels.values()) == {0: 6, 1: 6, 2: 6, 3: 6}


def test_same_seed_gives_identical_bytes(small, tmp_path):
    generate_synthetic(tmp_path / "again", SyntheticConfig(**SMALL))
    assert file_tree(tmp_path / "again") == file_tree(small)


def test_output_does_not_depend_on_workers(small, tmp_path):
    generate_synthetic(tmp_path / "par", SyntheticConfig(**{**SMALL, "workers": 2}))
    assert file_tree(tmp_path / "par") == file_tree(small)


def test_other_seed_differs(small, tmp_path):
    generate_synthetic(tmp_path / "s1", SyntheticConfig(**{**SMALL, "seed": 1}))
    a, b = file_tree(tmp_path / "s1"), file_tree(small)
    assert a.keys() == b.keys()
    assert sum(a[k] != b[k] for k in a if k.endswith(".png")) > 0.9 * sum(k.endswith(".png") for k in a)


def test_masks_and_boxes_agree(small):
    for split in ("train", "val", "test", "test_conflict"):
        md = read_metadata(small / split)
        for image_id in md.image_ids:
            image = np.asarray(Image.open(md.image_path(image_id)))
            mask = np.asarray(Image.open(md.mask_paths(image_id)[0]))
            assert image.shape == (48, 48, 3) and image.dtype == np.uint8
            assert mask.shape == (48, 48) and set(np.unique(mask)) == {0, 255}
            ys, xs = np.nonzero(mask)
            assert md.boxes[image_id] == [(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)]


def test_habitats_file_matches_the_plan(small):
    cfg = SyntheticConfig(**SMALL)
    for split in ("train", "test", "test_conflict"):
        md = read_metadata(small / split)
        habitats = read_habitats(small / split)
        assert [habitats[i] for i in md.image_ids] == [h for _, h in plan_split(cfg, split)]
        assert [md.class_labels[i] for i in md.image_ids] == [c for c, _ in plan_split(cfg, split)]


def test_habitats_file_saved_with_bom_or_crlf(small, tmp_path, windows_style):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "habitats.txt").write_bytes((small / "test" / "habitats.txt").read_bytes())
    windows_style([tmp_path / "test" / "habitats.txt"])
    assert read_habitats(tmp_path / "test") == read_habitats(small / "test")


def test_measured_confounding():
    """Exact allocation: the train match count is the sum of round_half_up(rho * n_c)."""
    cfg = SyntheticConfig(num_classes=8, rho=0.9, n_train=2000, n_val=400, n_test=1000, n_test_conflict=800)
    train = plan_split(cfg, "train")
    expected = sum(int(np.floor(0.9 * n + 0.5)) for n in class_counts(2000, 8))
    assert sum(c == h for c, h in train) == expected == 1800
    # mismatched train images use the other habitats evenly (balanced, off by at most one per class)
    for c in range(8):
        others = Counter(h for cc, h in train if cc == c and h != c)
        assert set(others) <= set(range(8)) - {c} and max(others.values()) - min(others.values()) <= 1
    val = plan_split(cfg, "val")
    assert sum(c == h for c, h in val) == 360
    test = plan_split(cfg, "test")
    assert abs(sum(c == h for c, h in test) / len(test) - 1 / 8) <= 8 / 1000  # at most one extra per class
    for c in range(8):  # habitat independent of class: every habitat 15 or 16 times per class (125 images)
        counts = Counter(h for cc, h in test if cc == c)
        assert len(counts) == 8 and max(counts.values()) - min(counts.values()) <= 1
    conflict = plan_split(cfg, "test_conflict")
    assert len(conflict) == 800 and sum(c == h for c, h in conflict) == 0
    assert Counter(c for c, _ in conflict) == {c: 100 for c in range(8)}


def test_rho_extremes():
    for rho, want in ((1.0, 24), (0.0, 0)):
        plan = plan_split(SyntheticConfig(**{**SMALL, "rho": rho}), "train")
        assert sum(c == h for c, h in plan) == want


def test_object_colour_does_not_reveal_the_class():
    """Per class, the mean object colour is about the same; the mean habitat colour is not."""
    cfg = SyntheticConfig(size=40, num_classes=4)
    obj = np.zeros((4, 3))
    bg = np.zeros((4, 3))
    n = 60
    for c in range(4):
        for k in range(n):
            image, mask, _ = render_sample(cfg, "train", c * n + k, c, c)
            m = mask > 0
            obj[c] += image[m].mean(0) / 255 / n
            bg[c] += image[~m].mean(0) / 255 / n
    def spread(x: np.ndarray) -> float:
        return max(np.abs(x[i] - x[j]).max() for i in range(4) for j in range(4))

    assert spread(obj) < 0.12
    assert spread(bg) > 0.3


def test_every_shape_renders_inside_the_image():
    cfg = SyntheticConfig(size=64, num_classes=len(SHAPES))
    for c in range(len(SHAPES)):
        for k in range(3):
            image, mask, (x0, y0, x1, y1) = render_sample(cfg, "test", 100 * c + k, c, (c + k) % len(SHAPES))
            assert image.shape == (64, 64, 3) and 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            assert (mask > 0).sum() > 0.015 * 64 * 64  # a visible object


def test_interrupted_run_leaves_no_dataset_yaml(small, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    generate_synthetic(out, SyntheticConfig(**SMALL))
    assert (out / "dataset.yaml").is_file()
    calls = []

    def fail_on_second_split(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = synthetic._render_chunk
    monkeypatch.setattr(synthetic, "_render_chunk", fail_on_second_split)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(out, SyntheticConfig(**{**SMALL, "seed": 5}))
    assert not (out / "dataset.yaml").exists()


def test_zero_sized_split_is_skipped(tmp_path):
    counts = generate_synthetic(tmp_path / "d", SyntheticConfig(**{**SMALL, "n_val": 0, "n_test_conflict": 0}))
    assert counts["val"] == 0 and not (tmp_path / "d" / "val").exists()
    assert read_dataset_info(tmp_path / "d").splits == ["train", "test"]


@pytest.mark.parametrize("field,value,words", [
    ("num_classes", 1, "classes must be in 2..10"),
    ("num_classes", 11, "classes must be in 2..10"),
    ("rho", 1.5, "rho must be in [0, 1]"),
    ("size", 16, "size must be"),
    ("n_test", -1, "n_test must be >= 0"),
    ("n_train", 0, "n_train must be > 0"),
    ("max_radius", 0.6, "max_radius"),
])
def test_bad_config(tmp_path, field, value, words):
    with pytest.raises(ConfigError, match=None) as err:
        generate_synthetic(tmp_path / "x", SyntheticConfig(**{**SMALL, field: value}))
    assert words in str(err.value)
    assert not (tmp_path / "x").exists()


def test_textures_are_half_light_half_dark():
    """So that an object's mean brightness does not give its class away (the pattern does)."""
    y, x = np.mgrid[-1:1:300j, -1:1:300j]
    for c, name in enumerate(SHAPES):
        inside = synthetic.shape_mask(c, x, y)
        assert 0.45 < synthetic.object_texture(c, x, y)[inside].mean() < 0.55, name
