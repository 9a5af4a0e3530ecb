"""The page's "download" buttons: the boxes the user settled on (a threshold, one class per image),
as kdcicam JSON or as a COCO detections file.

The page sends back what it shows (for each image: its id, file name, size, the chosen class and the
boxes at the chosen threshold, all from :func:`kdcicam.app.analysis.analyze`); this module checks that
request and writes the file. Class names come from the checkpoint, never from the request.

COCO detections are the format COCO *results* use, a list of
``{"image_id", "category_id", "bbox": [x, y, width, height], "score"}`` in original pixels;
``category_id`` is the class index + 1 (:data:`COCO_CATEGORY_OFFSET`: COCO's ids start at 1, and some
detection toolkits keep 0 for the background). ``image_id`` is the image's position on the page
(1-based, in upload order); the JSON download maps each id to its file name.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import KdcicamError

#: COCO category id of class index ``i``: ``i + COCO_CATEGORY_OFFSET``
COCO_CATEGORY_OFFSET = 1
#: at most this many images per download request
MAX_EXPORT_IMAGES = 10_000
EXPORT_FORMATS = ("json", "coco")


class ExportError(KdcicamError):
    """A download request the server cannot turn into a file (the message says which field)."""


@dataclass(frozen=True)
class ChosenBoxes:
    """One image as the page shows it: the chosen class and its boxes at the chosen threshold."""

    image_id: int
    file: str
    width: int
    height: int
    class_id: int
    score: float
    boxes: list[tuple[float, float, float, float]]


def _number(value: Any, where: str, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ExportError(f"{where}: expected a finite number, got {value!r}")
    if integer and int(value) != value:
        raise ExportError(f"{where}: expected an integer, got {value!r}")
    return value


def parse_selection(body: Any, num_classes: int) -> tuple[float, list[ChosenBoxes]]:
    """The page's request ``{"threshold": t, "images": [...]}`` → (threshold, images), checked."""
    if not isinstance(body, dict):
        raise ExportError("the request must be a JSON object with 'threshold' and 'images'")
    threshold = _number(body.get("threshold"), "threshold")
    if not 0.0 <= threshold < 1.0:
        raise ExportError(f"threshold: must be in [0, 1), got {threshold!r}")
    images = body.get("images")
    if not isinstance(images, list) or not images:
        raise ExportError("images: expected a non-empty list (upload a photo first)")
    if len(images) > MAX_EXPORT_IMAGES:
        raise ExportError(f"images: at most {MAX_EXPORT_IMAGES} per download, got {len(images)}")
    chosen, seen = [], set()
    for i, item in enumerate(images):
        where = f"images[{i}]"
        if not isinstance(item, dict):
            raise ExportError(f"{where}: expected an object")
        image_id = int(_number(item.get("image_id"), f"{where}.image_id", integer=True))
        if image_id < 1 or image_id in seen:
            raise ExportError(f"{where}.image_id: must be a positive integer used once, got {image_id}")
        seen.add(image_id)
        file = item.get("file")
        if not isinstance(file, str) or not file:
            raise ExportError(f"{where}.file: expected a file name")
        width = int(_number(item.get("width"), f"{where}.width", integer=True))
        height = int(_number(item.get("height"), f"{where}.height", integer=True))
        if width < 1 or height < 1:
            raise ExportError(f"{where}: width and height must be positive, got {width} x {height}")
        class_id = int(_number(item.get("class_id"), f"{where}.class_id", integer=True))
        if not 0 <= class_id < num_classes:
            raise ExportError(f"{where}.class_id: {class_id} is not a class of this checkpoint (0..{num_classes - 1})")
        score = float(_number(item.get("score"), f"{where}.score"))
        raw_boxes = item.get("boxes")
        if not isinstance(raw_boxes, list):
            raise ExportError(f"{where}.boxes: expected a list of [x0, y0, x1, y1]")
        boxes = []
        for j, box in enumerate(raw_boxes):
            if not isinstance(box, list) or len(box) != 4:
                raise ExportError(f"{where}.boxes[{j}]: expected [x0, y0, x1, y1]")
            x0, y0, x1, y1 = (float(_number(v, f"{where}.boxes[{j}]")) for v in box)
            if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
                raise ExportError(f"{where}.boxes[{j}]: {box} is not a box inside the {width} x {height} image")
            boxes.append((x0, y0, x1, y1))
        chosen.append(ChosenBoxes(image_id, file, width, height, class_id, score, boxes))
    return float(threshold), chosen


def boxes_document(threshold: float, images: Sequence[ChosenBoxes], class_names: Sequence[str],
                   about: dict[str, Any]) -> dict[str, Any]:
    """kdcicam JSON: the settings (``about``: checkpoint, method...), the threshold, and per image its
    id, file, size, chosen class and boxes (``x0, y0, x1, y1`` labelled as ``kdcicam localize`` does)."""
    records = []
    for im in images:
        name = class_names[im.class_id]
        records.append({"image_id": im.image_id, "file": im.file, "width": im.width, "height": im.height,
                        "class_id": im.class_id, "class_name": name, "score": im.score,
                        "boxes": [{"x0": b[0], "y0": b[1], "x1": b[2], "y1": b[3], "class_id": im.class_id,
                                   "class_name": name, "score": im.score} for b in im.boxes]})
    return {**about, "threshold": threshold, "num_images": len(records), "images": records}


def coco_detections(images: Sequence[ChosenBoxes]) -> list[dict[str, Any]]:
    """COCO detections (results format): one entry per box, ``bbox`` = ``[x0, y0, x1 - x0, y1 - y0]``."""
    return [{"image_id": im.image_id, "category_id": im.class_id + COCO_CATEGORY_OFFSET,
             "bbox": [round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2), round(b[3] - b[1], 2)],
             "score": im.score}
            for im in images for b in im.boxes]


__all__ = ["COCO_CATEGORY_OFFSET", "EXPORT_FORMATS", "ChosenBoxes", "ExportError", "boxes_document",
           "coco_detections", "parse_selection"]
