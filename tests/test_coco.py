"""COCO pseudo-labels: `localize --coco` writes an annotations file and a detections file that pycocotools
loads and COCOeval scores; image ids do not depend on the input order; categories are the checkpoint's
classes; perfect boxes score AP 100 and `evaluate --coco` reports AP / AP50 / AP75 on a split."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kdcicam.cli import main

pytest.importorskip("pycocotools")

CLASSES = ["disc", "square", "triangle", "star"]


def _metadata(boxes: dict[str, list[tuple[float, float, float, float]]], labels: dict[str, int]):
    from kdcicam.data.metadata import Metadata

    ids = list(boxes)
    return Metadata(image_ids=ids, class_labels=labels, image_sizes={i: (200, 150) for i in ids}, boxes=boxes,
                    num_classes=len(CLASSES), class_names=CLASSES)


def test_perfect_boxes_score_100_and_shifted_ones_less():
    from kdcicam.coco import ImageBoxes, coco_scores, ground_truth, pseudo_labels

    boxes = {"b/2.png": [(10, 20, 110, 120)], "a/1.png": [(0, 0, 50, 40)], "c.png": [(30, 30, 190, 140)]}
    labels = {"b/2.png": 1, "a/1.png": 3, "c.png": 0}
    md = _metadata(boxes, labels)
    gt = ground_truth(md)
    perfect = [ImageBoxes(i, 200, 150, np.array(b, dtype=float), labels[i], 0.9) for i, b in boxes.items()]
    _, dets = pseudo_labels(perfect, CLASSES)
    scores = coco_scores(gt, dets)
    assert scores["class_aware"] == {"AP": 100.0, "AP50": 100.0, "AP75": 100.0}
    assert scores["class_agnostic"] == {"AP": 100.0, "AP50": 100.0, "AP75": 100.0}
    # the right boxes under the wrong classes: class-aware AP 0, class-agnostic still perfect
    wrong = [ImageBoxes(it.file_name, 200, 150, it.boxes, (it.class_id + 1) % 4, 0.9) for it in perfect]
    scores = coco_scores(gt, pseudo_labels(wrong, CLASSES)[1])
    assert scores["class_aware"]["AP"] == 0.0 and scores["class_agnostic"]["AP"] == 100.0
    # boxes shifted right by a fifth of their width: IoU 0.8 / 1.2 = 0.67, so they match at IoU 0.50 to 0.65
    # (4 of COCO's 10 thresholds): AP50 100, AP75 0, AP 40
    shifted = [ImageBoxes(it.file_name, 200, 150, it.boxes + np.array([[1, 0, 1, 0]]) * (it.boxes[0, 2] - it.boxes[0, 0]) / 5,
                          it.class_id, 0.9) for it in perfect]
    s = coco_scores(gt, pseudo_labels(shifted, CLASSES)[1])["class_aware"]
    assert s == {"AP": 40.0, "AP50": 100.0, "AP75": 0.0}


def test_ids_are_the_sorted_paths_whatever_the_order():
    from kdcicam.coco import ImageBoxes, image_ids, pseudo_labels

    names = ["z.png", "a/b.png", "a/a.png", "m.jpg"]
    assert image_ids(names) == image_ids(reversed(names)) == {"a/a.png": 1, "a/b.png": 2, "m.jpg": 3, "z.png": 4}
    items = [ImageBoxes(n, 10, 10, np.array([[1.0, 1.0, 5.0, 6.0]]), 2, 0.5) for n in names]
    doc1, det1 = pseudo_labels(items, CLASSES)
    doc2, det2 = pseudo_labels(items[::-1], CLASSES)
    assert doc1 == doc2 and det1 == det2
    assert doc1["annotations"][0]["bbox"] == [1.0, 1.0, 4.0, 5.0]  # x0, y0, x1, y1 -> x, y, w, h
    assert [c["id"] for c in doc1["categories"]] == [1, 2, 3, 4] and det1[0]["category_id"] == 3
    with pytest.raises(Exception, match="share the relative path"):
        image_ids(["a.png", "a.png"])


@pytest.fixture()
def photos(tiny_data: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    files = sorted(p for p in (tiny_data / "images" / "test").rglob("*.png") if not p.stem.endswith("_mask"))
    for i, f in enumerate(files[:6]):
        shutil.copy(f, folder / ("sub" if i % 2 else "") / f"img{i}.png")
    return folder


def test_localize_coco_files_load_in_pycocotools(trained_run: Path, photos: Path, tmp_path: Path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = tmp_path / "out"
    coco = tmp_path / "labels" / "train.json"
    assert main(["localize", str(trained_run), str(photos / "sub"), str(photos), "--out", str(out), "--no-overlays",
                 "--all-contours", "--coco", str(coco)]) == 0
    det_path = tmp_path / "labels" / "train_detections.json"
    doc, dets = json.loads(coco.read_text()), json.loads(det_path.read_text())
    assert [c["name"] for c in doc["categories"]] == CLASSES and [c["id"] for c in doc["categories"]] == [1, 2, 3, 4]
    names = [im["file_name"] for im in doc["images"]]
    assert names == sorted(names) and set(names) == {f"img{i}.png" for i in (0, 2, 4)} | {f"sub/img{i}.png" for i in (1, 3, 5)}
    assert [im["id"] for im in doc["images"]] == list(range(1, 7))
    boxes = json.loads((out / "boxes.json").read_text())
    by_name = {Path(r["file"]).resolve().relative_to(photos.resolve()).as_posix(): r for r in boxes["images"]}
    ids = {im["file_name"]: im["id"] for im in doc["images"]}
    for name, rec in by_name.items():
        mine = [a for a in doc["annotations"] if a["image_id"] == ids[name]]
        assert len(mine) == len(rec["boxes"])
        for a, b in zip(mine, rec["boxes"], strict=True):
            assert a["bbox"] == pytest.approx([b["x0"], b["y0"], b["x1"] - b["x0"], b["y1"] - b["y0"]], abs=0.011)
            assert a["category_id"] == b["class_id"] + 1 and a["score"] == b["score"]
    assert len(dets) == len(doc["annotations"]) > 0
    gt = COCO(str(coco))  # the annotations file is a valid COCO dataset, loaded by the reference tool
    ev = COCOeval(gt, gt.loadRes(str(det_path)), iouType="bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # the pseudo-labels scored against themselves
    # the same images given in another order (and a stated root) get the same ids and the same file
    again = tmp_path / "again.json"
    assert main(["localize", str(trained_run), str(photos), "--out", str(tmp_path / "out2"), "--no-overlays",
                 "--all-contours", "--coco", str(again), "--coco-root", str(photos)]) == 0
    doc2 = json.loads(again.read_text())
    assert doc2["images"] == doc["images"] and doc2["annotations"] == doc["annotations"]


def test_coco_usage_errors(trained_run: Path, photos: Path, tmp_path: Path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert main(["localize", str(trained_run), str(photos), "--out", str(tmp_path / "o"), "--no-overlays",
                 "--coco", str(tmp_path / "c.json"), "--coco-root", str(elsewhere)]) == 2
    assert "is not inside it" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()
    assert main(["localize", str(trained_run), str(photos), "--out", str(tmp_path / "o"), "--coco",
                 str(elsewhere)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_evaluate_coco_reports_ap(trained_run: Path, tiny_data: Path, tmp_path: Path, capsys):
    from kdcicam.checkpoints import resolve_checkpoint
    from kdcicam.coco import AP_KEYS

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)  # evaluate writes metrics.json into the run
    out = tmp_path / "m.json"
    assert main(["evaluate", str(run), "--split", "test", "--device", "cpu", "--coco", "--json", str(out)]) == 0
    assert resolve_checkpoint(run).is_file()
    printed = capsys.readouterr().out
    assert "COCO test" in printed and "AP50" in printed
    result = json.loads(out.read_text())["coco"]["test"]
    assert result["num_images"] == 32 and result["threshold"] == json.loads(out.read_text())["box_threshold"]
    for mode in ("class_aware", "class_agnostic"):
        assert all(0.0 <= result[mode][k] <= 100.0 for k in AP_KEYS)
        assert result[mode]["AP50"] >= result[mode]["AP75"]
    assert result["class_agnostic"]["AP"] >= result["class_aware"]["AP"]
