"""One uploaded image → everything the page needs to redraw boxes without the model.

The page's threshold slider takes the values of :func:`slider_thresholds` (the evaluator's grid,
``np.arange(0, 1, 0.01)``, plus the threshold chosen on val). For every class shown and every slider
value, the boxes are computed here, once, by the evaluator's own
:func:`~kdcicam.evaluation.scoremap_to_boxes` on the same score map, with the same "no contour → no box"
filter and the same scaling to original pixels as :class:`~kdcicam.inference.Localizer`. Moving the
slider then only looks a list up: the boxes on the page are, value for value, the boxes
``kdcicam localize --threshold T`` writes (``tests/test_app.py`` checks it), and no JavaScript
re-implementation of contour tracing can drift from the evaluator's.

Maps: the top-1 class shows the map the run is evaluated with (``model.localization_map`` of the
run's kind, e.g. the combinational CAM), so the page's default view is ``kdcicam localize``'s
result. Choosing another of the top-k classes shows that class's own CAM (``kind="gt"`` with that
class as the label), resized and normalised the same way (:func:`~kdcicam.scoremaps.scoremaps_for_evaluation`).
"""
from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from ..evaluation import scoremap_to_boxes, threshold_list
from ..inference import Localizer
from ..scoremaps import scoremaps_for_evaluation

#: the longer side of the photo sent back for display (the boxes stay in original pixels)
PREVIEW_SIDE = 768


def slider_thresholds(default: float, interval: float = 0.01) -> list[float]:
    """The slider's values: the evaluator's threshold grid, plus ``default`` where it is not on it."""
    values = [float(t) for t in threshold_list(interval)]
    if float(default) not in values:
        values = sorted([*values, float(default)])
    return values


def boxes_by_threshold(cam: np.ndarray, thresholds: Sequence[float], size: tuple[int, int], grid: int,
                       multi_contour: bool) -> list[list[list[float]]]:
    """Boxes (``x0, y0, x1, y1`` in original pixels, 2 decimals) of one ``grid × grid`` score map at
    each threshold, as :class:`~kdcicam.inference.Localizer` computes them at that threshold."""
    w, h = size
    scale = np.array([w / grid, h / grid] * 2, dtype=np.float64)
    out = []
    for boxes in scoremap_to_boxes(cam, list(thresholds), multi_contour=multi_contour):
        boxes = boxes[(boxes != 0).any(axis=1)]  # the protocol's "no contour" box [0, 0, 0, 0] is no box
        out.append(np.round(boxes.astype(np.float64) * scale, 2).tolist())
    return out


@torch.inference_mode()
def class_scoremaps(localizer: Localizer, x: torch.Tensor, class_ids: Sequence[int]) -> np.ndarray:
    """Each class's own CAM for one model input ``x`` [3, S, S] → ``[k, S, S]`` evaluator score maps."""
    if not class_ids:
        return np.zeros((0, localizer.image_size, localizer.image_size), dtype=np.float64)
    batch = x[None].to(localizer.device)
    if localizer.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    out = localizer.model(batch)
    maps = [localizer.model.localization_map(out, kind="gt", labels=torch.tensor([c]))  # type: ignore[operator]
            for c in class_ids]
    return scoremaps_for_evaluation(torch.cat(maps), localizer.image_size)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def heatmap_png(cam: np.ndarray) -> bytes:
    """The score map coloured as ``kdcicam localize``'s overlays colour it (JET), on its own grid;
    the page stretches it over the photo, as the model's ``Resize((S, S))`` did the other way."""
    grey = np.clip(np.asarray(cam, dtype=np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def preview_jpeg(image: Image.Image, side: int = PREVIEW_SIDE) -> bytes:
    """The decoded photo (EXIF orientation applied), at most ``side`` pixels on its longer side."""
    small = image.copy()
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def analyze(localizer: Localizer, image: Image.Image, name: str, thresholds: Sequence[float]) -> dict[str, Any]:
    """Top-k classes, each with its heatmap and its boxes at every slider threshold (JSON-ready)."""
    [result] = localizer.predict(image)  # exactly kdcicam localize's result for this image
    x, _, _ = localizer.preprocess(image)
    others = class_scoremaps(localizer, x, result.class_ids[1:])
    maps = [result.cam, *others]
    kinds = [f"{localizer.map_kind} map (the one evaluated)", *["this class's CAM"] * len(others)]
    classes = []
    for rank, (cid, cname, score, cam, kind) in enumerate(
            zip(result.class_ids, result.class_names, result.scores, maps, kinds, strict=True)):
        classes.append({"rank": rank + 1, "class_id": int(cid), "class_name": cname, "score": round(float(score), 6),
                        "map": kind, "heatmap": data_uri(heatmap_png(cam), "image/png"),
                        "boxes": boxes_by_threshold(cam, thresholds, result.size, localizer.image_size,
                                                    localizer.multi_contour)})
    return {"name": name, "width": result.width, "height": result.height,
            "preview": data_uri(preview_jpeg(image), "image/jpeg"), "classes": classes}


__all__ = ["PREVIEW_SIDE", "analyze", "boxes_by_threshold", "class_scoremaps", "heatmap_png", "preview_jpeg",
           "slider_thresholds"]
