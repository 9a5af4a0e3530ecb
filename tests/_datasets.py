"""Datasets shared by tests (not a test module): a split whose localization is reduced, a tiny CUB tree of
flat colours (any pixel tells which image it came from), a file tree's bytes."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from kdcicam.data.metadata import (
    LOCALIZATION,
    MASKS,
    read_dataset_info,
    read_metadata,
    write_dataset_info,
    write_metadata,
)


def reduce_localization(split_dir: Path, keep: str) -> Path:
    """Rewrite a split in place so that it keeps ``keep`` = "masks" (mask-only: wsolevaluation's OpenImages
    layout) or "none" (labels only)."""
    md = read_metadata(split_dir)
    for name in (LOCALIZATION, MASKS):
        (split_dir / name).unlink(missing_ok=True)
    md.boxes = {}
    if keep == "none":
        md.masks, md.ignore_masks = {}, {}
    write_metadata(md, split_dir)
    again = read_metadata(split_dir)
    assert not again.has_boxes and again.has_masks == (keep == "masks")
    return split_dir


def metadata_copy(src: Path, dst: Path) -> Path:
    """The metadata of dataset ``src`` under ``dst`` (the images stay where they are)."""
    info = read_dataset_info(src)
    for split in info.splits:
        shutil.copytree(src / split, dst / split)
    write_dataset_info(dst, info)
    return dst


def file_tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` by its relative POSIX path, with its bytes: two generations compare whole."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


BG = [(200, 60, 30), (30, 160, 200), (90, 200, 60), (230, 220, 40)]
FG = [(250, 250, 250), (10, 10, 10), (160, 40, 200), (120, 120, 120)]
W, H = 96, 72


def make_cub_tree(root: Path, per_class: int = 4) -> dict[str, tuple[int, tuple[int, int, int, int]]]:
    """4 classes × ``per_class`` test images (+1 train each); returns path -> (class index, box xyxy)."""
    truth = {}
    lines: dict[str, list[str]] = {k: [] for k in ("images", "labels", "split", "boxes")}
    image_id = 0
    for c in range(4):
        folder = f"{c + 1:03d}.Bird_{c}"
        (root / "images" / folder).mkdir(parents=True)
        for k in range(per_class + 1):
            image_id += 1
            x0, y0 = 6 + 9 * k % 50, 8 + 5 * k % 30
            box = (x0, y0, x0 + 22 + 2 * k, y0 + 18 + k)
            array = np.empty((H, W, 3), np.uint8)
            array[:] = BG[c]
            array[box[1]:box[3], box[0]:box[2]] = FG[c]
            rel = f"{folder}/Bird_{c}_{k:04d}.png"
            Image.fromarray(array).save(root / "images" / rel)
            lines["images"].append(f"{image_id} {rel}")
            lines["labels"].append(f"{image_id} {c + 1}")
            lines["split"].append(f"{image_id} {int(k == per_class)}")
            lines["boxes"].append(f"{image_id} {box[0]} {box[1]} {box[2] - box[0]} {box[3] - box[1]}")
            if k < per_class:
                truth[rel] = (c, box)
    for name, key in (("images.txt", "images"), ("image_class_labels.txt", "labels"),
                      ("train_test_split.txt", "split"), ("bounding_boxes.txt", "boxes")):
        (root / name).write_text("\n".join(lines[key]) + "\n")
    (root / "classes.txt").write_text("".join(f"{c + 1} {c + 1:03d}.Bird_{c}\n" for c in range(4)))
    return truth


#: a one-epoch CAM on the tiny set: 64 px, only the head trains (about 15 s)
RUN_RECIPE = [
    "model.backbone=efficientnet_lite0", "model.pretrained=true", "model.freeze_stages=12",
    "data.image_size=64", "data.batch_size=16", "data.eval_batch_size=32", "data.augment.resize=72",
    "optim.epochs=1", "optim.lr=0.003", "trainer.progress_bar=false", "trainer.seed=0",
    "data.test_splits=[test,test_conflict]",
]
