"""Helpers of the evaluation tests: small metadata and CAM-like maps made on the fly."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from kdcicam.data.metadata import Metadata, write_metadata


def make_metadata(boxes: dict[str, list[tuple[float, float, float, float]]] | None = None,
                  sizes: dict[str, tuple[int, int]] | None = None, labels: dict[str, int] | None = None,
                  masks: dict[str, list[str]] | None = None, ignore: dict[str, str] | None = None,
                  image_root: Path | None = None) -> Metadata:
    ids = list((boxes or masks or {}).keys())
    sizes = sizes or {i: (224, 224) for i in ids}
    labels = labels or {i: 0 for i in ids}
    return Metadata(image_ids=ids, class_labels=labels, image_sizes=sizes, boxes=boxes or {}, masks=masks or {},
                    ignore_masks=ignore or {}, num_classes=max(labels.values()) + 1, image_root=image_root)


def smooth_map(rng: np.random.Generator, size: int = 224, low: int = 7) -> np.ndarray:
    """A CAM-like map: a few blobs on low-level noise, bicubic-upsampled, min-max normalised."""
    yy, xx = np.mgrid[0:low, 0:low] / low
    m = rng.uniform(0, 0.3) * rng.random((low, low))
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.15, 0.85, 2)
        sy, sx = rng.uniform(0.05, 0.3, 2)
        m += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 / (2 * sy ** 2) + (xx - cx) ** 2 / (2 * sx ** 2)))
    cam = cv2.resize(m, (size, size), interpolation=cv2.INTER_CUBIC)
    cam -= cam.min()
    return cam / cam.max()


def write_split(tmp: Path, metadata: Metadata) -> Path:
    split = tmp / "split"
    write_metadata(metadata, split)
    return split

