from __future__ import annotations

from pathlib import Path

import pytest

from kdcicam.data.metadata import (
    DatasetInfo,
    Metadata,
    MetadataError,
    read_dataset_info,
    read_metadata,
    write_dataset_info,
    write_metadata,
)

IDS = ["a/1.jpg", "a/2.jpg", "b/3.jpg"]


def _metadata(**overrides) -> Metadata:
    fields = {
        "image_ids": list(IDS),
        "class_labels": {"a/1.jpg": 0, "a/2.jpg": 0, "b/3.jpg": 1},
        "image_sizes": {"a/1.jpg": (100, 80), "a/2.jpg": (64, 64), "b/3.jpg": (300, 200)},
        "boxes": {"a/1.jpg": [(0, 0, 100, 80)], "a/2.jpg": [(1, 2, 30, 40), (10.5, 11.25, 60, 64)],
                  "b/3.jpg": [(5, 6, 7, 8), (100, 100, 300, 200), (0, 0, 1, 1)]},
    }
    fields.update(overrides)
    return Metadata(**fields)


def _touch_images(root: Path, names) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


@pytest.fixture
def split(tmp_path: Path) -> Path:
    """A valid split at tmp/ds/test with images under tmp/ds/images and a dataset.yaml (2 classes)."""
    ds = tmp_path / "ds"
    _touch_images(ds / "images", IDS)
    write_metadata(_metadata(), ds / "test")
    write_dataset_info(ds, DatasetInfo(image_root=ds / "images", class_names=["cat", "dog"], splits=["test"]))
    return ds / "test"


def test_round_trip_boxes(split):
    md = read_metadata(split)
    ref = _metadata()
    assert md.image_ids == ref.image_ids
    assert md.class_labels == ref.class_labels
    assert md.image_sizes == ref.image_sizes
    assert md.boxes == ref.boxes  # several boxes per image, decimals kept
    assert md.num_classes == 2 and md.class_names == ["cat", "dog"]
    assert md.image_root == (split.parent / "images").resolve()
    assert not md.has_masks
    assert (split / "localization.txt").read_text().splitlines()[0] == "a/1.jpg,0,0,100,80"  # integers as int


def test_round_trip_boxes_and_masks(tmp_path):
    root = tmp_path / "images"
    masks = {"a/1.jpg": ["a/1_m0.png", "a/1_m1.png"], "a/2.jpg": ["a/2_m.png"], "b/3.jpg": ["b/3_m.png"]}
    _touch_images(root, IDS + [m for ms in masks.values() for m in ms] + ["b/3_ignore.png"])
    ref = _metadata(masks=masks, ignore_masks={"b/3.jpg": "b/3_ignore.png"})
    write_metadata(ref, tmp_path / "train")
    assert (tmp_path / "train" / "masks.txt").is_file()
    md = read_metadata(tmp_path / "train", image_root=root)
    assert md.boxes == ref.boxes and md.masks == masks and md.ignore_masks == {"b/3.jpg": "b/3_ignore.png"}
    assert md.mask_paths("a/1.jpg") == [root / "a/1_m0.png", root / "a/1_m1.png"]


def test_round_trip_mask_only_localization(tmp_path):
    root = tmp_path / "images"
    masks = {i: [i.replace(".jpg", "_mask.png")] for i in IDS}
    _touch_images(root, IDS + [m[0] for m in masks.values()])
    write_metadata(_metadata(boxes={}, masks=masks), tmp_path / "val")
    assert not (tmp_path / "val" / "masks.txt").exists()
    assert (tmp_path / "val" / "localization.txt").read_text().splitlines()[0] == "a/1.jpg,a/1_mask.png,"
    md = read_metadata(tmp_path / "val", image_root=root)
    assert md.masks == masks and not md.has_boxes


def test_dataset_info_round_trip_and_image_root_storage(tmp_path):
    inside = DatasetInfo(image_root=tmp_path / "d" / "images", class_names=["x", "y"], splits=["train"],
                         name="demo", extra={"seed": 3})
    write_dataset_info(tmp_path / "d", inside)
    assert "image_root: images\n" in (tmp_path / "d" / "dataset.yaml").read_text()  # movable folder
    back = read_dataset_info(tmp_path / "d")
    assert back.image_root == (tmp_path / "d" / "images").resolve()
    assert (back.class_names, back.splits, back.name, back.extra) == (["x", "y"], ["train"], "demo", {"seed": 3})
    outside = DatasetInfo(image_root=tmp_path / "elsewhere", class_names=["x"])
    write_dataset_info(tmp_path / "d2", outside)
    assert read_dataset_info(tmp_path / "d2").image_root == (tmp_path / "elsewhere").resolve()
    assert f"image_root: {(tmp_path / 'elsewhere').resolve()}" in (tmp_path / "d2" / "dataset.yaml").read_text()


# ------------------------------------------------------------------------------------ validation
def _edit(split: Path, name: str, line: int, new: str | None) -> None:
    """Replace (or with None delete) 1-based ``line`` of ``name``; line 0 appends."""
    lines = (split / name).read_text().splitlines()
    if line == 0:
        lines.append(new)
    elif new is None:
        del lines[line - 1]
    else:
        lines[line - 1] = new
    (split / name).write_text("\n".join(lines) + "\n")


def _fails(split: Path, name: str, line: int | None, words: str, **kwargs) -> MetadataError:
    with pytest.raises(MetadataError) as err:
        read_metadata(split, **kwargs)
    e = err.value
    assert Path(e.file).name == name, str(e)
    assert e.line == line, str(e)
    assert words in str(e)
    assert str(e).startswith(f"{e.file}:{line}: " if line is not None else f"{e.file}: ")
    return e


# Every bad split that one edit of a valid split makes (malformed lines, bad values, duplicates, ids
# missing or unknown, absolute or escaping paths, missing files) is one table, checked through the CLI with
# the file and the line the message names: tests/faults/test_bad_metadata.py (CASES); an image missing on
# disk: test_missing_image_file_through_train there. Here: what that table does not reach.
def test_zero_width_box_is_allowed(split):
    """wsolevaluation's check_box_convention accepts x1 == x0 (a one-pixel-wide box, IoU counts +1)."""
    _edit(split, "localization.txt", 2, "a/2.jpg,30,2,30,40")
    md = read_metadata(split, check_images=False)
    assert (30.0, 2.0, 30.0, 40.0) in md.boxes["a/2.jpg"]


def test_mask_split_without_image_sizes(tmp_path):
    """wsolevaluation's OpenImages metadata has no image_sizes.txt: masks do not need one."""
    write_metadata(_metadata(boxes={}, masks={i: [f"m/{k}.png"] for k, i in enumerate(IDS)}), tmp_path / "s")
    (tmp_path / "s" / "image_sizes.txt").unlink()
    md = read_metadata(tmp_path / "s", check_images=False)
    assert md.image_sizes == {} and md.masks["a/1.jpg"] == ["m/0.png"] and not md.has_boxes
    (tmp_path / "s" / "localization.txt").unlink()  # OpenImages' train split: labels only
    assert read_metadata(tmp_path / "s", check_images=False).image_ids == IDS


def test_mask_split_with_a_malformed_first_line(tmp_path):
    """The first localization line decides boxes or masks: a malformed one is named, not taken for
    a box split that lacks image_sizes.txt."""
    write_metadata(_metadata(boxes={}, masks={i: ["m.png"] for i in IDS}), tmp_path / "s")
    (tmp_path / "s" / "image_sizes.txt").unlink()
    _edit(tmp_path / "s", "localization.txt", 1, "a/1.jpg,m.png")
    _fails(tmp_path / "s", "localization.txt", 1, "expected 5 fields (path,x0,y0,x1,y1) or 3")


def test_writing_a_mask_split_without_sizes_removes_a_stale_sizes_file(tmp_path):
    write_metadata(_metadata(), tmp_path / "s")  # boxes: writes image_sizes.txt
    write_metadata(_metadata(boxes={}, image_sizes={}, masks={i: ["m.png"] for i in IDS}), tmp_path / "s")
    assert not (tmp_path / "s" / "image_sizes.txt").exists()
    assert read_metadata(tmp_path / "s", check_images=False).masks["b/3.jpg"] == ["m.png"]


# ------------------------------------------------------------------------ files saved on Windows
def test_bom_and_crlf_metadata_reads_the_same(split, windows_style, tmp_path):
    """UTF-8 with a byte-order mark and/or CRLF line ends (what common Windows editors save) read exactly
    like plain files, dataset.yaml included; the writers still write plain UTF-8 with LF."""
    write_metadata(_metadata(masks={i: [f"m/{k}.png"] for k, i in enumerate(IDS)}), split)  # masks.txt too
    _touch_images(split.parent / "images", [f"m/{k}.png" for k in range(len(IDS))])
    plain = read_metadata(split)
    windows_style([*split.glob("*.txt"), split.parent / "dataset.yaml"])
    md = read_metadata(split)
    assert md.image_ids == IDS == plain.image_ids
    for field in ("class_labels", "image_sizes", "boxes", "masks", "class_names", "image_root", "num_classes"):
        assert getattr(md, field) == getattr(plain, field), field
    assert read_dataset_info(split.parent).class_names == ["cat", "dog"]
    write_metadata(md, tmp_path / "out")
    write_dataset_info(tmp_path / "out", read_dataset_info(split.parent))
    for path in [*(tmp_path / "out").glob("*.txt"), tmp_path / "out" / "dataset.yaml"]:
        data = path.read_bytes()
        assert data and not data.startswith(b"\xef\xbb\xbf") and b"\r" not in data, path.name


def test_bom_and_crlf_errors_keep_their_line_numbers(split, windows_style):
    _edit(split, "class_labels.txt", 2, "a/2.jpg,7")
    windows_style(split.glob("*.txt"))
    _fails(split, "class_labels.txt", 2, "class 7 is outside 0..1")


def test_other_encodings_are_still_refused_by_name(split):
    (split / "image_ids.txt").write_bytes(b"\xef\xbb\xbfa/1.jpg\r\na/\xff.jpg\r\n")
    _fails(split, "image_ids.txt", None, "not UTF-8 text")
