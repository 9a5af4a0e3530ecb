"""`kdcicam localize`: folders searched recursively, unreadable files named and skipped (exit 1),
json / csv results that parse and match the Localizer, overlays, and usage errors (exit 2)."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdcicam.cli import main


@pytest.fixture()
def image_folder(tiny_data: Path, tmp_path: Path) -> Path:
    """Five readable images (png, jpg, grey, a 16-bit png, nested), a corrupt jpg and a text file."""
    folder = tmp_path / "photos"
    (folder / "nested" / "deeper").mkdir(parents=True)
    sources = sorted((tiny_data / "images" / "test").rglob("*.png"))
    sources = [p for p in sources if not p.stem.endswith("_mask")]
    shutil.copy(sources[0], folder / "a.png")
    Image.open(sources[9]).convert("RGB").resize((96, 80)).save(folder / "b.JPG", quality=95)
    Image.open(sources[17]).convert("L").save(folder / "nested" / "c.png")
    Image.open(sources[25]).convert("RGB").save(folder / "nested" / "deeper" / "a.webp")
    grey16 = (np.asarray(Image.open(sources[30]).convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(grey16).save(folder / "nested" / "d16.tif")
    (folder / "nested" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated nonsense")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_folder_with_a_corrupt_file(trained_run: Path, image_folder: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    code = main(["localize", str(trained_run), str(image_folder), "--out", str(out), "--topk", "3"])
    captured = capsys.readouterr()
    assert code == 1
    assert "corrupt.jpg" in captured.err and "skipped" in captured.err
    doc = json.loads((out / "boxes.json").read_text())
    files = sorted(Path(r["file"]).relative_to(image_folder).as_posix() for r in doc["images"])
    assert files == ["a.png", "b.JPG", "nested/c.png", "nested/d16.tif", "nested/deeper/a.webp"]
    assert [Path(s["file"]).name for s in doc["skipped"]] == ["corrupt.jpg"]
    assert "validation" in doc["threshold_source"] and doc["method"] == "cam"
    by_name = {Path(r["file"]).name: r for r in doc["images"]}
    assert (by_name["b.JPG"]["width"], by_name["b.JPG"]["height"]) == (96, 80)
    for rec in doc["images"]:
        assert len(rec["topk"]) == 3
        assert rec["topk"][0]["score"] >= rec["topk"][1]["score"] >= rec["topk"][2]["score"]
        for box in rec["boxes"]:
            assert 0 <= box["x0"] <= box["x1"] <= rec["width"] and 0 <= box["y0"] <= box["y1"] <= rec["height"]
            assert box["class_name"] == rec["topk"][0]["class_name"]
        overlay = out / rec["overlay"]
        with Image.open(overlay) as im:
            assert im.format == "PNG" and im.size == (rec["width"], rec["height"])
    overlays = sorted(p.name for p in (out / "overlays").iterdir())
    assert len(overlays) == 5 and len(set(overlays)) == 5  # a.png and deeper/a.webp do not collide
    # the numbers are the Localizer's
    from kdcicam import Localizer

    [r] = Localizer.from_checkpoint(trained_run, device="cpu", topk=3).predict(image_folder / "b.JPG")
    assert doc["threshold"] == r.threshold
    assert [t["class_id"] for t in by_name["b.JPG"]["topk"]] == r.class_ids
    np.testing.assert_allclose([[b[k] for k in ("x0", "y0", "x1", "y1")] for b in by_name["b.JPG"]["boxes"]],
                               r.boxes.reshape(-1, 4), atol=0.01)


def test_csv_all_contours_and_no_overlays(trained_run: Path, image_folder: Path, tmp_path: Path, capsys):
    out = tmp_path / "csv_out"
    files = [str(image_folder / "a.png"), str(image_folder / "nested")]
    code = main(["localize", str(trained_run), *files, "--out", str(out), "--format", "csv", "--all-contours",
                 "--threshold", "0.5", "--no-overlays", "--batch-size", "2", "--device", "cpu"])
    assert code == 1  # nested/ holds the corrupt file
    assert "corrupt.jpg" in capsys.readouterr().err
    assert not (out / "overlays").exists() and not (out / "boxes.json").exists()
    with open(out / "boxes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {Path(r["file"]).name for r in rows} == {"a.png", "c.png", "d16.tif", "a.webp"}
    for row in rows:
        assert int(row["width"]) > 0 and row["topk"].count(":") == 4
        if row["box"] != "":
            x0, y0, x1, y1 = (float(row[k]) for k in ("x0", "y0", "x1", "y1"))
            assert 0 <= x0 <= x1 <= int(row["width"]) and 0 <= y0 <= y1 <= int(row["height"])
            assert float(row["score"]) > 0


def test_all_readable_exits_zero(trained_run: Path, image_folder: Path, tmp_path: Path):
    out = tmp_path / "ok"
    assert main(["localize", str(trained_run), str(image_folder / "a.png"), "--out", str(out)]) == 0
    doc = json.loads((out / "boxes.json").read_text())
    assert doc["num_images"] == 1 and doc["skipped"] == []


def test_usage_errors_exit_two(trained_run: Path, tmp_path: Path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images here")
    assert main(["localize", str(trained_run), str(empty), "--out", str(tmp_path / "o1")]) == 2
    assert "no images found" in capsys.readouterr().err
    assert main(["localize", str(trained_run), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o2")]) == 2
    assert "missing.png" in capsys.readouterr().err
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(image)
    bad_ckpt = tmp_path / "bad.ckpt"
    bad_ckpt.write_text("not a checkpoint")
    assert main(["localize", str(bad_ckpt), str(image), "--out", str(tmp_path / "o3")]) == 2
    assert "bad.ckpt" in capsys.readouterr().err
    assert main(["localize", str(trained_run), str(image), "--out", str(tmp_path / "o4"), "--threshold", "2"]) == 2
    assert "threshold" in capsys.readouterr().err
