"""docs/own_data.md, command for command, on tiny generated images: a folder of class folders and a boxes CSV
for a few of them → `data import` → `init` → `train` → `evaluate` → `localize`; and the CLI's errors for
bad input (one line, exit 2, nothing written)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from kdcicam.cli import main
from kdcicam.config import load_config
from kdcicam.data.metadata import read_dataset_info, read_metadata

CLASSES = ("disc", "square", "triangle")
FAST = ["model.freeze_stages=12", "optim.epochs=1", "trainer.progress_bar=false", "trainer.log_every_n_steps=1",
        "data.eval_batch_size=8"]


def draw(kind: str, k: int, size: int = 56) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """One shape on a noisy background; returns the image and the shape's box."""
    rng = np.random.default_rng(k * 7 + len(kind))
    im = Image.fromarray((rng.random((size, size + 8, 3)) * 80).astype(np.uint8))
    x0, y0 = int(rng.integers(2, 20)), int(rng.integers(2, 20))
    box = (x0, y0, x0 + 30, y0 + 30)
    d = ImageDraw.Draw(im)
    if kind == "disc":
        d.ellipse(box, fill=(230, 60, 60))
    elif kind == "square":
        d.rectangle(box, fill=(60, 230, 60))
    else:
        d.polygon([(x0, y0 + 30), (x0 + 15, y0), (x0 + 30, y0 + 30)], fill=(60, 60, 230))
    return im, (box[0], box[1], box[2] + 1, box[3] + 1)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """photos/<class>/<k>.jpg (10 per class) and val_boxes.csv for 2 images per class."""
    root = tmp_path_factory.mktemp("own")
    lines = ["path,x0,y0,x1,y1"]
    for kind in CLASSES:
        (root / "photos" / kind).mkdir(parents=True)
        for k in range(10):
            im, box = draw(kind, k)
            im.save(root / "photos" / kind / f"{k:03d}.jpg", quality=92)
            if k < 2:
                lines.append(f"{kind}/{k:03d}.jpg," + ",".join(map(str, box)))
    (root / "val_boxes.csv").write_text("\n".join(lines) + "\n")
    return root / "photos", root / "val_boxes.csv"


def test_walkthrough(photos: tuple[Path, Path], tmp_path: Path, capsys):
    folder, boxes = photos
    data, config, run = tmp_path / "data" / "mine", tmp_path / "configs" / "mine.yaml", tmp_path / "runs" / "mine-cam"
    # 1. import: val = the boxed images, taken out of train
    assert main(["data", "import", "--train", str(folder), "--val-boxes", str(boxes), "--out", str(data)]) == 0
    printed = capsys.readouterr().out
    assert "train 24" in printed and "val 6 (the images of" in printed and "6 boxes" in printed
    info = read_dataset_info(data)
    assert info.class_names == list(CLASSES) and info.image_root == folder.resolve()
    val = read_metadata(data / "val")
    assert len(val) == 6 and val.has_boxes and len(read_metadata(data / "train")) == 24
    # 2. a config sized to the dataset, that loads as is
    assert main(["init", str(data), "--out", str(config)]) == 0
    assert "configs/mine.yaml" in capsys.readouterr().out
    cfg = load_config(config)
    assert cfg.data.root == str(data) and cfg.eval.monitor == "val/max_box_acc_v2" and cfg.data.image_size == 64
    assert cfg.model.freeze_stages == 8 and cfg.trainer.accelerator == "cpu"
    assert main(["init", str(data), "--out", str(config)]) == 2  # never overwrites a config by accident
    assert "--force" in capsys.readouterr().err
    # 3. train, evaluate, localize
    assert main(["train", str(config), "--method", "cam", "--out", str(run), *FAST]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "chosen on val" in out and "GT-known Loc" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["box_threshold_chosen_on"] == "val" and "gt_known_loc_oracle" in metrics["val"]
    code = main(["localize", str(run), str(folder / "disc"), "--out", str(tmp_path / "out"), "--no-overlays"])
    assert code == 0
    doc = json.loads((tmp_path / "out" / "boxes.json").read_text())
    assert len(doc["images"]) == 10 and doc["images"][0]["topk"][0]["class_name"] in CLASSES


def test_init_for_gpu_and_without_val_boxes(photos: tuple[Path, Path], tmp_path: Path, capsys):
    folder, _ = photos
    data = tmp_path / "held_out"
    assert main(["data", "import", "--train", str(folder), "--val-fraction", "0.2", "--seed", "3",
                 "--out", str(data)]) == 0
    printed = capsys.readouterr().out
    assert "held out" in printed and "seed 3" in printed and "--box-threshold" in printed
    assert main(["init", str(data), "--out", str(tmp_path / "gpu.yaml"), "--device", "gpu", "--method", "ci-cam"]) == 0
    cfg = load_config(tmp_path / "gpu.yaml")
    assert cfg.method == "ci-cam" and cfg.trainer.accelerator == "gpu" and cfg.model.freeze_stages == -1
    assert cfg.eval.monitor == "val/top1_cls" and cfg.kd.loc_teacher.monitor == "val/top1_cls"
    text = (tmp_path / "gpu.yaml").read_text()
    assert "--box-threshold" in text and "# " in text


@pytest.mark.parametrize("extra, needle", [
    (["--val-fraction", "1.5"], "--val-fraction"),
    (["--val-boxes", "{missing}"], "not found"),
    (["--val-boxes", "{bad}"], "bad.csv:2: "),
])
def test_import_errors_are_one_line(photos: tuple[Path, Path], tmp_path: Path, capsys, extra: list[str], needle: str):
    folder, _ = photos
    (tmp_path / "bad.csv").write_text("disc/000.jpg,1,1,9,9\ndisc/000.jpg,1,1,9\n")
    extra = [e.format(missing=tmp_path / "nope.csv", bad=tmp_path / "bad.csv") for e in extra]
    assert main(["data", "import", "--train", str(folder), *extra, "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()
