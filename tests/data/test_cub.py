from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdcicam.data.cub import convert_cub, cub_box_to_xyxy, exif_transpose_box
from kdcicam.data.dataset import load_image_rgb
from kdcicam.data.metadata import MetadataError, read_dataset_info, read_metadata


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_tiny_tree_counts_classes_and_splits(tiny_cub, tmp_path):
    counts = convert_cub(tiny_cub.root, tmp_path / "out", val_fraction=0.2, seed=0)
    # 7 official train images per class: round_half_up(0.2 * 7) = 1 held out; 3 test images per class
    assert counts == {"train": 18, "val": 3, "test": 9, "classes": 3, "clipped_boxes": 1, "exif_transposed": 0}
    info = read_dataset_info(tmp_path / "out")
    # original ids 3, 7, 11 -> 0, 1, 2; class 12 has no images and is dropped; names kept verbatim
    assert info.class_names == ["003.Sooty_Albatross", "007.Parakeet_Auklet", "011.Rusty_Blackbird"]
    assert info.image_root == (tiny_cub.root / "images").resolve() and info.image_root.is_absolute()
    assert info.splits == ["train", "val", "test"]

    by_path = {v[0]: (i, v) for i, v in tiny_cub.images.items()}
    official_train = {v[0] for v in tiny_cub.images.values() if v[2]}
    splits = {s: read_metadata(tmp_path / "out" / s) for s in ("train", "val", "test")}  # checks images exist
    assert set(splits["train"].image_ids) | set(splits["val"].image_ids) == official_train
    assert not set(splits["train"].image_ids) & set(splits["val"].image_ids)
    assert set(splits["test"].image_ids) == {v[0] for v in tiny_cub.images.values() if not v[2]}
    for md in splits.values():
        for image_id in md.image_ids:
            _, (_, class_id, _, _, size) = by_path[image_id]
            assert md.class_labels[image_id] == {3: 0, 7: 1, 11: 2}[class_id]
            assert md.image_sizes[image_id] == size
        # ids keep the original image-id order
        assert md.image_ids == sorted(md.image_ids, key=lambda p: by_path[p][0])
    assert sorted(splits["val"].class_labels.values()) == [0, 1, 2]


def test_cub_files_saved_with_bom_or_crlf_convert_the_same(tiny_cub, tmp_path, windows_style):
    convert_cub(tiny_cub.root, tmp_path / "plain")
    windows_style(tiny_cub.root.glob("*.txt"))  # classes.txt (the class names) included
    convert_cub(tiny_cub.root, tmp_path / "windows")
    assert _all_files(tmp_path / "windows") == _all_files(tmp_path / "plain")  # written plain: LF, no BOM


def test_box_rounding_half_up_and_clipping(tiny_cub, tmp_path):
    convert_cub(tiny_cub.root, tmp_path / "out")
    boxes = {}
    for split in ("train", "val", "test"):
        boxes.update(read_metadata(tmp_path / "out" / split).boxes)
    rel1 = tiny_cub.images[1][0]
    assert boxes[rel1] == [(3, 3, 23, 19)]  # 2.5 -> 3, 3.4 -> 3, 22.5 -> 23, 18.95 -> 19
    assert boxes[tiny_cub.images[2][0]] == [(10, 20, 48, 36)]  # clipped to the 48x36 image
    text = (tmp_path / "out" / "train" / "localization.txt").read_text()
    for row in text.splitlines():  # integers only, as wsolevaluation's reader calls int()
        assert all(v.isdigit() for v in row.split(",")[1:]), row
    assert cub_box_to_xyxy(0.49, 0.5, 10.0, 10.0) == (0, 1, 10, 11)


def test_val_is_deterministic_and_seeded(tiny_cub, tmp_path):
    convert_cub(tiny_cub.root, tmp_path / "a", val_fraction=0.3, seed=0)
    convert_cub(tiny_cub.root, tmp_path / "b", val_fraction=0.3, seed=0)
    assert _all_files(tmp_path / "a") == _all_files(tmp_path / "b")
    vals = {(tmp_path / "a" / "val" / "image_ids.txt").read_text()}
    for seed in range(1, 6):
        convert_cub(tiny_cub.root, tmp_path / f"s{seed}", val_fraction=0.3, seed=seed)
        vals.add((tmp_path / f"s{seed}" / "val" / "image_ids.txt").read_text())
    assert len(vals) > 1  # the seed matters


def test_zero_val_fraction_writes_no_val_split(tiny_cub, tmp_path):
    counts = convert_cub(tiny_cub.root, tmp_path / "out", val_fraction=0.0)
    assert counts["val"] == 0 and counts["train"] == 21
    assert read_dataset_info(tmp_path / "out").splits == ["train", "test"]
    assert not (tmp_path / "out" / "val").exists()


def test_exif_rotated_image_gets_transposed_size_and_box(tiny_cub, tmp_path):
    image_id = 3  # a 30x40 (w x h) image; draw a red block at x 4..14, y 20..35 on the stored pixels
    rel = tiny_cub.images[image_id][0]
    arr = np.zeros((40, 30, 3), np.uint8)
    arr[20:35, 4:14] = (255, 0, 0)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    im.save(tiny_cub.root / "images" / rel, exif=exif.tobytes(), quality=95)
    lines = (tiny_cub.root / "bounding_boxes.txt").read_text().splitlines()
    lines[image_id - 1] = f"{image_id} 4.0 20.0 10.0 15.0"
    tiny_cub.rewrite("bounding_boxes.txt", "\n".join(lines) + "\n")

    counts = convert_cub(tiny_cub.root, tmp_path / "out")
    assert counts["exif_transposed"] == 1
    split = "train" if tiny_cub.images[image_id][2] else "test"
    md = read_metadata(tmp_path / "out" / split)
    assert md.image_sizes[rel] == (40, 30)
    shown = np.asarray(load_image_rgb(tiny_cub.root / "images" / rel))
    ys, xs = np.nonzero((shown[..., 0] > 128) & (shown[..., 1] < 100))
    assert md.boxes[rel] == [(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_transpose_box_matches_pillow(orientation):
    from PIL import ImageOps

    arr = np.zeros((12, 20), np.uint8)
    arr[2:5, 3:9] = 255  # box (3, 2, 9, 5) on a 20x12 image
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    shown = np.asarray(ImageOps.exif_transpose(im))
    ys, xs = np.nonzero(shown)
    assert exif_transpose_box((3, 2, 9, 5), 20, 12, orientation) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def _expect_error(tree, tmp_path, name: str, line: int | None, words: str) -> None:
    with pytest.raises(MetadataError) as err:
        convert_cub(tree.root, tmp_path / "out")
    assert Path(err.value.file).name == name
    assert err.value.line == line
    assert words in str(err.value)
    assert name in str(err.value) and (line is None or f":{line}:" in str(err.value))


# (file, 1-based line, the text that replaces it, words of the error; the error names that file and line)
LINE_CASES = [
    ("bounding_boxes.txt", 5, "5 1.0 2.0 3.0", "expected 5 fields"),
    ("train_test_split.txt", 7, "7 yes", "must be 0 or 1"),
    ("images.txt", 2, "2 /etc/passwd", "absolute"),
]


@pytest.mark.parametrize("name, line, new, words", LINE_CASES, ids=[c[3] for c in LINE_CASES])
def test_a_bad_line_is_located(name, line, new, words, tiny_cub, tmp_path):
    lines = (tiny_cub.root / name).read_text().splitlines()
    lines[line - 1] = new
    tiny_cub.rewrite(name, "\n".join(lines) + "\n")
    _expect_error(tiny_cub, tmp_path, name, line, words)


def test_missing_file_is_named(tiny_cub, tmp_path):
    (tiny_cub.root / "bounding_boxes.txt").unlink()
    _expect_error(tiny_cub, tmp_path, "bounding_boxes.txt", None, "file not found")


def test_missing_image_file_is_located(tiny_cub, tmp_path):
    (tiny_cub.root / "images" / tiny_cub.images[4][0]).unlink()
    _expect_error(tiny_cub, tmp_path, "images.txt", 4, "not found")


def test_unknown_and_duplicate_ids(tiny_cub, tmp_path):
    labels = (tiny_cub.root / "image_class_labels.txt").read_text()
    tiny_cub.rewrite("image_class_labels.txt", labels + "99 3\n")
    _expect_error(tiny_cub, tmp_path, "image_class_labels.txt", 31, "not in images.txt")
    tiny_cub.rewrite("image_class_labels.txt", labels + "2 3\n")
    _expect_error(tiny_cub, tmp_path, "image_class_labels.txt", 31, "duplicate image id 2")
    tiny_cub.rewrite("image_class_labels.txt", "\n".join(labels.splitlines()[1:]) + "\n")
    _expect_error(tiny_cub, tmp_path, "image_class_labels.txt", None, "line 1 of images.txt")


def test_class_missing_from_classes_txt(tiny_cub, tmp_path):
    tiny_cub.rewrite("classes.txt", "3 003.Sooty_Albatross\n7 007.Parakeet_Auklet\n")
    _expect_error(tiny_cub, tmp_path, "image_class_labels.txt", None, "class id 11")


def test_shipped_image_sizes_must_agree(tiny_cub, tmp_path):
    rows = [f"{i} {v[4][0]} {v[4][1]} {v[4][0] * 2} {v[4][1] * 2}" for i, v in tiny_cub.images.items()]
    tiny_cub.rewrite("image_sizes.txt", "\n".join(rows) + "\n")
    convert_cub(tiny_cub.root, tmp_path / "ok")  # consistent: accepted
    rows[8] = "9 31 40 62 80"
    tiny_cub.rewrite("image_sizes.txt", "\n".join(rows) + "\n")
    _expect_error(tiny_cub, tmp_path, "image_sizes.txt", 9, "disagrees")


@pytest.mark.cub50
def test_cub50(cub50, tmp_path):
    counts = convert_cub(cub50, tmp_path / "cub50")
    assert (counts["train"], counts["val"], counts["test"], counts["classes"]) == (1350, 150, 1389, 50)
    info = read_dataset_info(tmp_path / "cub50")
    assert info.num_classes == 50 and info.class_names[0] == "001.Black_footed_Albatross"
    assert info.image_root == cub50 / "images"
    for split in ("train", "val", "test"):
        md = read_metadata(tmp_path / "cub50" / split)  # also checks every image file exists
        for image_id in md.image_ids:
            (w, h), [(x0, y0, x1, y1)] = md.image_sizes[image_id], md.boxes[image_id]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert all(float(v).is_integer() for v in (x0, y0, x1, y1))
        per_class = np.bincount(list(md.class_labels.values()), minlength=50)
        if split == "val":
            assert (per_class == 3).all()
        if split == "train":
            assert (per_class == 27).all()
    # sizes from the headers agree with cub50's image_sizes.txt (checked inside) and with a decode
    md = read_metadata(tmp_path / "cub50" / "test")
    first = md.image_ids[0]
    assert load_image_rgb(md.image_path(first)).size == md.image_sizes[first]
