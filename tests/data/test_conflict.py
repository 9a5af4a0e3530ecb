"""`kdcicam data conflict`: every pixel of a composite comes from where it should, boxes and masks are the
pasted region exactly, the host's own object never shows, and the controls are what they claim.

The source is a tiny CUB tree made here: flat background colour per class, flat object colour per class,
so any pixel tells which image it came from."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _datasets import BG, FG, H, W, make_cub_tree
from kdcicam.cli import main
from kdcicam.data.conflict import (
    ConflictConfig,
    background_crop,
    feathered_alpha,
    make_conflict,
)
from kdcicam.data.cub import convert_cub
from kdcicam.data.metadata import read_dataset_info, read_metadata
from kdcicam.errors import ConfigError


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cubish") / "CUB"
    return root, make_cub_tree(root)


@pytest.fixture(scope="module")
def probe(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("probe") / "p"
    make_conflict(tree[0], out, ConflictConfig(control=True, image_format="png"))
    return out


def _which(pixels: np.ndarray, palette: list[tuple[int, int, int]]) -> set[int]:
    """The palette entries nearest to the pixels [N, 3] (max-channel distance)."""
    d = np.abs(pixels.astype(int)[:, None, :] - np.array(palette)[None]).max(-1)
    return set(np.argmin(d, axis=1).tolist())


def _sources(split_dir: Path) -> dict[str, list[str]]:
    rows = [line.split(",") for line in (split_dir / "paste_sources.txt").read_text().splitlines()]
    return {r[0]: r[1:] for r in rows}


def _regions(box, feather_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels surely inside / surely outside the box (away from the ramp and JPEG's 8x8 ringing)."""
    alpha = feathered_alpha((W, H), box, feather_px)
    inner = feathered_alpha((W, H), box, 0)
    far = 4 + feather_px
    d_in = feathered_alpha((W, H), (box[0] + far, box[1] + far, box[2] - far, box[3] - far), 0) > 0
    grown = (box[0] - far, box[1] - far, box[2] + far, box[3] + far)
    d_out = feathered_alpha((W, H), grown, 0) == 0
    assert (alpha[d_in] == 1).all() and (alpha[d_out] == 0).all() and inner.sum() > 0
    return d_in, d_out


def test_splits_boxes_masks_exact(probe, tree):
    _, truth = tree
    info = read_dataset_info(probe)
    assert info.splits == ["test_original", "test_same", "test_conflict", "test_seam", "test_canvas"]
    assert info.class_names == [f"{c + 1:03d}.Bird_{c}" for c in range(4)]
    for split in info.splits:
        md = read_metadata(probe / split)  # validates files, boxes inside images, images and masks exist
        assert len(md) == 16
        for image_id in md.image_ids:
            source = _sources(probe / split)[image_id][0]
            c, box = truth[source]
            assert md.class_labels[image_id] == c and md.boxes[image_id] == [box]
            mask = np.asarray(Image.open(md.mask_paths(image_id)[0]))
            assert mask.shape == (H, W) and set(np.unique(mask)) == {0, 255}
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == box and (mask > 0).sum() == (
                (box[2] - box[0]) * (box[3] - box[1]))  # a full rectangle: the pasted region


def test_original_is_the_source_bytes_and_splits_are_paired(probe, tree):
    ids = {s: read_metadata(probe / s).image_ids for s in read_dataset_info(probe).splits}
    objects = {s: [_sources(probe / s)[i][0] for i in v] for s, v in ids.items()}
    assert len({tuple(v) for v in objects.values()}) == 1  # the same objects, in the same order
    for image_id, obj in zip(ids["test_original"], objects["test_original"], strict=True):
        assert image_id == "test_original/" + obj
        assert (probe / "images" / image_id).read_bytes() == (tree[0] / "images" / obj).read_bytes()


@pytest.mark.parametrize("kind", ["conflict", "same", "seam", "canvas"])
def test_every_pixel_comes_from_the_right_image(probe, tree, kind):
    _, truth = tree
    md = read_metadata(probe / f"test_{kind}")
    sources = _sources(probe / f"test_{kind}")
    for image_id in md.image_ids:
        obj, host, donor = sources[image_id]
        c, box = truth[obj]
        host_c = truth[host][0]
        assert host != obj and (host_c != c if kind in ("conflict", "seam", "canvas") else host_c == c)
        image = np.asarray(Image.open(md.image_path(image_id)))
        d_in, d_out = _regions(box, 0.05 * min(box[2] - box[0], box[3] - box[1]))
        # outside: the host's background only, never its object (the strip avoids its box)
        assert _which(image[d_out], BG + FG) == {host_c}
        inside = _which(image[d_in], BG + FG)
        if kind == "canvas":  # the bare canvas: the host's background inside the box too
            assert _which(image.reshape(-1, 3), BG + FG) == {host_c} and donor == ""
            assert host == _sources(probe / "test_conflict")[image_id.replace("test_canvas", "test_conflict")][1]
        elif kind == "seam":  # a third class's background patch, no object anywhere
            donor_c = truth[donor][0]
            assert inside == {donor_c} and donor_c not in (c, host_c)
        else:
            assert inside == {4 + c} and donor == ""
    if kind == "conflict":  # hosts are spread over the other classes
        assert len({truth[sources[i][1]][0] for i in md.image_ids}) == 4


@pytest.mark.parametrize("feather,blended", [(0.0, 0), (0.25, 4)])
def test_feathered_edge_blends_across_the_border(tree, tmp_path, feather, blended):
    """A ramp of 0.25 × 18 px = 4.5 px: 4 blended pixels across the left edge (2 in, 2 out); 0: a hard cut.
    Exact colours are compared, so the composites are PNG: JPEG, even at quality 100, rings at a hard cut."""
    out = tmp_path / "p"
    make_conflict(tree[0], out, ConflictConfig(feather=feather, image_format="png", limit=8))
    md = read_metadata(out / "test_conflict")
    image_id = md.image_ids[0]
    obj, host, _ = _sources(out / "test_conflict")[image_id]
    (c, box), host_c = tree[1][obj], tree[1][host][0]
    image = np.asarray(Image.open(md.image_path(image_id))).astype(float)
    row = image[(box[1] + box[3]) // 2]
    channel = int(np.argmax(np.abs(np.array(FG[c]) - np.array(BG[host_c]))))
    profile = row[box[0] - 4: box[0] + 4, channel]
    lo, hi = sorted((BG[host_c][channel], FG[c][channel]))
    assert int(((profile > lo) & (profile < hi)).sum()) == blended


def test_alpha_is_above_half_exactly_on_the_box():
    box = (10, 7, 31, 20)
    assert set(np.unique(feathered_alpha((40, 30), box, 1.0))) == {0.0, 1.0}  # 1 px: the ramp falls between pixels
    for feather in (0.0, 2.5, 6.0):
        alpha = feathered_alpha((40, 30), box, feather)
        ys, xs = np.nonzero(alpha > 0.5)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == box and (alpha > 0.5).sum() == 21 * 13
        if feather > 0:
            assert ((alpha > 0) & (alpha < 1)).any()


def test_background_crop_avoids_the_box_and_keeps_the_aspect():
    crop, scale = background_crop((100, 80), (40, 0, 100, 80), 0.0, (60, 40))
    assert crop[2] <= 40 and abs((crop[2] - crop[0]) / (crop[3] - crop[1]) - 1.5) < 0.05
    assert scale == pytest.approx(60 / (crop[2] - crop[0]), rel=0.05)
    assert background_crop((20, 20), (2, 2, 18, 18), 0.0, (20, 20)) is None  # no strip of 8 px


def test_deterministic_and_seeded(probe, tree, tmp_path):
    make_conflict(tree[0], tmp_path / "again", ConflictConfig(control=True, image_format="png"))
    for split in ("test_conflict", "test_seam"):
        a, b = probe / split / "paste_sources.txt", tmp_path / "again" / split / "paste_sources.txt"
        assert a.read_bytes() == b.read_bytes()
    files = sorted(p.relative_to(probe / "images") for p in (probe / "images").rglob("*") if p.is_file())
    assert len(files) == 2 * 80  # 5 splits of 16 objects, each an image and a mask
    assert all((probe / "images" / f).read_bytes() == (tmp_path / "again" / "images" / f).read_bytes() for f in files)
    make_conflict(tree[0], tmp_path / "s1", ConflictConfig(seed=1))
    assert (tmp_path / "s1" / "test_conflict" / "paste_sources.txt").read_text() != (
        probe / "test_conflict" / "paste_sources.txt").read_text()


def test_prepared_dataset_gives_the_same_probe(tree, tmp_path):
    convert_cub(tree[0], tmp_path / "prepared")
    make_conflict(tree[0], tmp_path / "a", ConflictConfig(limit=6))
    make_conflict(tmp_path / "prepared", tmp_path / "b", ConflictConfig(limit=6))
    assert (tmp_path / "a" / "test_conflict" / "paste_sources.txt").read_text() == (
        tmp_path / "b" / "test_conflict" / "paste_sources.txt").read_text()
    assert read_dataset_info(tmp_path / "a").extra["uniform_map_leakage"]["test_conflict"] > 50


def test_too_small_backgrounds_are_skipped_and_counted(tmp_path):
    """Classes 1-3 fill their images: no background for class 0's objects, which are skipped; with an upscale
    limit of 1 no crop fits at all, which is an error, not an empty dataset."""
    root = tmp_path / "CUB"
    make_cub_tree(root)
    rows = [r.split() for r in (root / "bounding_boxes.txt").read_text().splitlines()]
    (root / "bounding_boxes.txt").write_text("".join(
        f"{i} 0 0 {W} {H}\n" if int(i) > 5 else f"{i} {x} {y} {w} {h}\n" for i, x, y, w, h in rows))
    summary = make_conflict(root, tmp_path / "p", ConflictConfig())
    assert summary["test_conflict"] == summary["test_original"] == {"images": 12, "skipped": 4}
    assert read_dataset_info(tmp_path / "p").extra["counts"]["test_conflict"]["skipped"] == 4
    assert {_sources(tmp_path / "p" / "test_original")[i][0].split("/")[0] for i in
            read_metadata(tmp_path / "p" / "test_original").image_ids} == {f"{c + 1:03d}.Bird_{c}" for c in (1, 2, 3)}
    with pytest.raises(ConfigError, match="no image of split 'test' found a host with a large enough"):
        make_conflict(root, tmp_path / "q", ConflictConfig(max_upscale=1.0))


def test_cli_and_its_errors(tree, tmp_path, capsys):
    umask = os.umask(0o022)
    try:
        assert main(["data", "conflict", str(tree[0]), "--out", str(tmp_path / "p"), "--control", "--limit", "8"]) == 0
    finally:
        os.umask(umask)
    # every file written (images, masks, metadata) has open()'s permissions, not a temp file's 0600
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "p").rglob("*") if p.is_file()}
    assert modes == {0o644}
    printed = capsys.readouterr().out
    assert "test_conflict: 8 images" in printed and "test_seam: 8 images" in printed
    assert main(["data", "conflict", str(tree[0]), "--out", str(tree[0] / "inside")]) == 2
    assert "--out" in capsys.readouterr().err and not (tree[0] / "inside").exists()
    assert main(["data", "conflict", str(tree[0]), "--out", str(tmp_path / "q"), "--feather", "0.9"]) == 2
    assert "--feather must be in [0, 0.5]" in capsys.readouterr().err
    assert main(["data", "conflict", str(tree[0]), "--out", str(tmp_path / "q"), "--split", "nope"]) == 2
    assert "split 'nope' not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["data", "conflict", str(tmp_path / "empty"), "--out", str(tmp_path / "q")]) == 2
    assert "neither a prepared dataset" in capsys.readouterr().err


def test_out_inside_the_source_images_of_a_prepared_dataset_is_refused(tree, tmp_path):
    convert_cub(tree[0], tmp_path / "prepared")  # its images stay in the tree
    with pytest.raises(ConfigError, match="outside the source images"):
        make_conflict(tmp_path / "prepared", tree[0] / "images" / "probe", ConflictConfig())
    assert not (tree[0] / "images" / "probe").exists()


def test_one_class_is_refused(tree, tmp_path):
    with pytest.raises(ConfigError, match="at least two classes"):
        make_conflict(tree[0], tmp_path / "p", ConflictConfig(limit=2))
