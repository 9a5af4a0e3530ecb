"""Helpers of the evaluation tests: small metadata and CAM-like maps made on the fly."""
from __future__ import annotations

from pathlib import Path

from cam_maps import smooth_map  # benchmarks/ (on pytest's pythonpath): the benchmark's CAM-like maps

from kdcicam.data.metadata import Metadata, write_metadata

__all__ = ["make_metadata", "smooth_map", "write_split"]


def make_metadata(boxes: dict[str, list[tuple[float, float, float, float]]] | None = None,
                  sizes: dict[str, tuple[int, int]] | None = None, labels: dict[str, int] | None = None,
                  masks: dict[str, list[str]] | None = None, ignore: dict[str, str] | None = None,
                  image_root: Path | None = None) -> Metadata:
    ids = list((boxes or masks or {}).keys())
    sizes = sizes or {i: (224, 224) for i in ids}
    labels = labels or {i: 0 for i in ids}
    return Metadata(image_ids=ids, class_labels=labels, image_sizes=sizes, boxes=boxes or {}, masks=masks or {},
                    ignore_masks=ignore or {}, num_classes=max(labels.values()) + 1, image_root=image_root)


def write_split(tmp: Path, metadata: Metadata) -> Path:
    split = tmp / "split"
    write_metadata(metadata, split)
    return split

