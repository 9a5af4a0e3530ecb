"""COCO pseudo-labels from a localizer, and their COCO AP against a split's ground-truth boxes.

Conventions, the same in every file this module writes and in the evaluation:

- **image ids** are 1-based positions in the sorted list of the images' relative paths (POSIX form,
  relative to the stated root; for a dataset split, its ``image_ids.txt`` entries, which are relative
  to the dataset's image root). The same set of images always gets the same ids, whatever order the
  inputs came in.
- **category ids** are the checkpoint's class index + :data:`CATEGORY_OFFSET` (1), named by its class
  names: COCO tools and most detectors keep id 0 for the background.
- **boxes** are COCO ``[x, y, width, height]`` in the original image's pixels, from kdcicam's
  ``x0, y0, x1, y1`` (x1 and y1 are right/bottom edges, so ``width = x1 - x0``).
- the protocol's box is class-agnostic (one box per image, largest contour, or one per contour with
  ``--all-contours``); each box carries the **top-1 class** and its softmax probability as ``score``.
  An image with no foreground at the threshold has no box (and no annotation).

AP is pycocotools' COCOeval (``iouType="bbox"``, its default 101-point AP over IoU 0.50:0.95, at most
100 boxes per image), reported in percent like every other kdcicam metric: ``AP`` (IoU 0.50:0.95),
``AP50``, ``AP75``. ``class_aware`` scores a box under its predicted class (a wrong class is a false
positive, as a detector would be scored); ``class_agnostic`` pools all classes (``useCats=0``), the
box quality alone, like GT-known Loc.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from .errors import KdcicamError

CATEGORY_OFFSET = 1
AP_KEYS = ("AP", "AP50", "AP75")


@dataclass
class ImageBoxes:
    """One image's pseudo-label: ``boxes`` float ``[n, 4]`` as ``x0, y0, x1, y1`` in original pixels,
    all labelled ``class_id`` (0-based) with probability ``score``."""

    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    class_id: int
    score: float


# ------------------------------------------------------------------------------------------ ids and paths
def image_ids(names: Iterable[str]) -> dict[str, int]:
    """Relative paths → 1-based ids in sorted order (duplicates are an error: ids must be unique)."""
    ordered = sorted(names)
    if len(set(ordered)) != len(ordered):
        dup = next(a for a, b in itertools.pairwise(ordered) if a == b)
        raise KdcicamError(f"COCO: two images share the relative path {dup!r}; give a root that keeps them apart")
    return {name: i + 1 for i, name in enumerate(ordered)}


def common_root(files: Sequence[str | os.PathLike]) -> Path:
    """The deepest folder containing every file (absolute)."""
    if not files:
        raise KdcicamError("COCO: no images")
    return Path(os.path.commonpath([str(Path(f).resolve().parent) for f in files]))


def relative_name(file: str | os.PathLike, root: Path) -> str:
    """``file`` relative to ``root`` in POSIX form, or an error when it lies outside."""
    try:
        return Path(file).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise KdcicamError(f"--coco-root {root}: {file} is not inside it; give a folder that holds every "
                           "image") from None


def categories(class_names: Sequence[str]) -> list[dict[str, Any]]:
    return [{"id": i + CATEGORY_OFFSET, "name": str(n), "supercategory": "object"} for i, n in enumerate(class_names)]


def coco_box(box: Sequence[float] | np.ndarray, decimals: int = 2) -> list[float]:
    """``x0, y0, x1, y1`` (edges) → COCO ``[x, y, w, h]``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [round(x0, decimals), round(y0, decimals), round(x1 - x0, decimals), round(y1 - y0, decimals)]


# ------------------------------------------------------------------------------------------ documents
def pseudo_labels(items: Sequence[ImageBoxes], class_names: Sequence[str], info: dict[str, Any] | None = None
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The COCO annotations document (images, categories, annotations: a detector's training set) and
    the detections list (image_id, category_id, bbox, score: what COCOeval's ``loadRes`` reads)."""
    ids = image_ids(item.file_name for item in items)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    detections: list[dict[str, Any]] = []
    for item in sorted(items, key=lambda it: ids[it.file_name]):
        image_id = ids[item.file_name]
        images.append({"id": image_id, "file_name": item.file_name, "width": int(item.width),
                       "height": int(item.height)})
        for box in np.asarray(item.boxes, dtype=np.float64).reshape(-1, 4):
            bbox = coco_box(box)
            category = int(item.class_id) + CATEGORY_OFFSET
            score = round(float(item.score), 6)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": bbox, "area": round(bbox[2] * bbox[3], 2), "iscrowd": 0, "score": score})
            detections.append({"image_id": image_id, "category_id": category, "bbox": bbox, "score": score})
    document = {"info": dict(info or {}), "licenses": [], "images": images, "annotations": annotations,
                "categories": categories(class_names)}
    return document, detections


def items_from_results(results: Sequence[Any], names: Sequence[str]) -> list[ImageBoxes]:
    """:class:`~kdcicam.localization.LocalizationResult` objects and their relative names → items."""
    return [ImageBoxes(name, r.width, r.height, np.asarray(r.boxes), r.class_id, r.score)
            for r, name in zip(results, names, strict=True)]


def detections_path(annotations_path: str | os.PathLike) -> Path:
    """``out.json`` → ``out_detections.json`` (the second file ``localize --coco`` writes)."""
    p = Path(annotations_path)
    return p.with_name(f"{p.stem}_detections{p.suffix or '.json'}")


def ground_truth(metadata: Any) -> dict[str, Any]:
    """A split's boxes as a COCO document: every box of an image labelled with the image's class."""
    if not metadata.has_boxes:
        where = metadata.split_dir or "this split"
        raise KdcicamError(f"{where}: no boxes (localization.txt), so COCO AP cannot be measured")
    names = metadata.class_names or [str(i) for i in range(metadata.num_classes)]
    ids = image_ids(metadata.image_ids)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id in sorted(metadata.image_ids):
        w, h = metadata.image_sizes[image_id]
        images.append({"id": ids[image_id], "file_name": PurePath(image_id).as_posix(), "width": int(w),
                       "height": int(h)})
        for box in metadata.boxes.get(image_id, []):
            bbox = coco_box(box, decimals=4)
            annotations.append({"id": len(annotations) + 1, "image_id": ids[image_id],
                                "category_id": int(metadata.class_labels[image_id]) + CATEGORY_OFFSET,
                                "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})
    return {"info": {}, "licenses": [], "images": images, "annotations": annotations, "categories": categories(names)}


# ------------------------------------------------------------------------------------------ COCOeval
def _import_pycocotools() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise KdcicamError("COCO AP needs pycocotools: pip install 'kdcicam[coco]'") from None
    return COCO, COCOeval


def coco_ap(gt: dict[str, Any], detections: list[dict[str, Any]], class_agnostic: bool = False
            ) -> dict[str, float | None]:
    """AP, AP50, AP75 (percent) of ``detections`` against the ground-truth document ``gt``.
    No detections scores 0; no ground-truth box gives None."""
    COCO, COCOeval = _import_pycocotools()
    if not gt["annotations"]:
        return dict.fromkeys(AP_KEYS)
    if not detections:
        return dict.fromkeys(AP_KEYS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and its summary table
        coco_gt = COCO()
        coco_gt.dataset = {k: gt[k] for k in ("images", "annotations", "categories")}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if class_agnostic:
            ev.params.useCats = 0
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: (None if ev.stats[i] < 0 else round(100.0 * float(ev.stats[i]), 4)) for i, k in enumerate(AP_KEYS)}


def coco_scores(gt: dict[str, Any], detections: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Both readings: ``class_aware`` (the predicted class must be right) and ``class_agnostic``."""
    return {"class_aware": coco_ap(gt, detections), "class_agnostic": coco_ap(gt, detections, class_agnostic=True)}


def localize_split(localizer: Any, metadata: Any, batch_size: int = 64) -> list[ImageBoxes]:
    """Run a localizer (PyTorch or ONNX: anything with ``predict``) on every image of a split, named by
    their image ids; the boxes are those of the localizer's threshold."""
    if metadata.image_root is None:
        raise KdcicamError(f"{metadata.split_dir}: no image root (no dataset.yaml)")
    items: list[ImageBoxes] = []
    ids = sorted(metadata.image_ids)
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        results = localizer.predict([metadata.image_path(i) for i in chunk])
        items += items_from_results(results, chunk)
    return items


def evaluate_split(localizer: Any, metadata: Any, batch_size: int = 64) -> dict[str, Any]:
    """COCO AP of a localizer's pseudo-labels on one split with boxes."""
    gt = ground_truth(metadata)
    items = localize_split(localizer, metadata, batch_size)
    names = metadata.class_names or [str(i) for i in range(metadata.num_classes)]
    _, detections = pseudo_labels(items, names)
    return {"num_images": len(items), "num_detections": len(detections), "threshold": localizer.threshold,
            **coco_scores(gt, detections)}


__all__ = ["AP_KEYS", "CATEGORY_OFFSET", "ImageBoxes", "categories", "coco_ap", "coco_box", "coco_scores",
           "common_root", "detections_path", "evaluate_split", "ground_truth", "image_ids", "items_from_results",
           "localize_split", "pseudo_labels", "relative_name"]
