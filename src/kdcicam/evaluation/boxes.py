"""Score map -> boxes, the clovaai/wsolevaluation way, plus the small helpers every evaluator shares.

The protocol's details live here and nowhere else, because a one-pixel or one-level difference
changes MaxBoxAcc:

- a score map is a float array in [0, 1]; it is quantised as ``uint8(map * 255)`` (truncation)
  in float64, as wsolevaluation does after its ``t2n`` cast;
- the binary map at threshold ``t`` is ``q > int(t * max(q))`` (``cv2.THRESH_BINARY``);
- contours come from ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)`` (holes included);
  single-contour mode keeps the contour of largest ``cv2.contourArea`` (the first one on ties);
- a contour's box is ``(x, y, x + w, y + h)`` from ``cv2.boundingRect``, with ``x1``/``y1`` clipped
  to ``width - 1``/``height - 1``; no contour gives the box ``[0, 0, 0, 0]``;
- IoU counts pixels inclusively (``+1`` in widths and heights); a degenerate union scores 0;
- ground-truth boxes are rescaled to the score-map grid with ``int()`` truncation.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import KdcicamError

__all__ = [
    "BoxConventionError",
    "ScoremapError",
    "as_size",
    "box_iou_matrix",
    "check_scoremap",
    "normalize_scoremap",
    "prepare_scoremap",
    "quantize_scoremap",
    "resize_box",
    "scoremap_to_boxes",
    "threshold_levels",
    "threshold_list",
]


class ScoremapError(KdcicamError, ValueError):
    """A score map that the protocol cannot evaluate; the message names the image."""

    def __init__(self, image_id: object, problem: str):
        self.image_id = None if image_id is None else str(image_id)
        self.problem = problem
        super().__init__(f"score map for {self.image_id!r}: {problem}" if image_id is not None
                         else f"score map: {problem}")


class BoxConventionError(KdcicamError, ValueError, RuntimeError):
    """Boxes that are not ``x0, y0, x1, y1`` with non-negative coordinates and ``x1 >= x0``,
    ``y1 >= y0`` (a RuntimeError too, as wsolevaluation's ``check_box_convention`` raises)."""


def as_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``224`` or ``(w, h)`` -> ``(w, h)``."""
    if isinstance(size, (int, np.integer)):
        w = h = int(size)
    else:
        w, h = (int(v) for v in size)
    if w <= 0 or h <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return w, h


def check_scoremap(scoremap: object, image_id: object = None, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Validate one score map (wsolevaluation's ``check_scoremap_validity``) and return it as float64.

    Any floating dtype is accepted and cast to float64, which is what wsolevaluation's loader does
    before the check. ``shape`` is ``(height, width)`` when the grid must match the GT grid.
    """
    if not isinstance(scoremap, np.ndarray):
        raise ScoremapError(image_id, f"must be a numpy array, got {type(scoremap).__name__}")
    if not np.issubdtype(scoremap.dtype, np.floating):
        raise ScoremapError(image_id, f"must have a floating dtype, got {scoremap.dtype}")
    if scoremap.ndim != 2:
        raise ScoremapError(image_id, f"must be 2-D (H, W), got shape {scoremap.shape}")
    if shape is not None and scoremap.shape != tuple(shape):
        raise ScoremapError(image_id, f"has shape {scoremap.shape}, expected {tuple(shape)} (height, width)")
    scoremap = scoremap.astype(np.float64, copy=False)
    if not np.isfinite(scoremap).all():
        raise ScoremapError(image_id, "contains NaN or inf")
    lo, hi = float(scoremap.min()), float(scoremap.max())
    if lo < 0.0 or hi > 1.0:
        raise ScoremapError(image_id, f"values must lie in [0, 1], got min {lo:g}, max {hi:g} "
                            "(min-max normalise it first)")
    return scoremap


def normalize_scoremap(cam: np.ndarray) -> np.ndarray:
    """Min-max normalise one map to [0, 1] in float64, as wsolevaluation's ``normalize_scoremap``:
    a map with NaN, or a constant map, becomes all zeros (so it localises nothing)."""
    cam = np.array(cam, dtype=np.float64)  # a copy: never normalise the caller's array in place
    if np.isnan(cam).any():
        return np.zeros_like(cam)
    lo, hi = cam.min(), cam.max()
    if lo == hi:
        return np.zeros_like(cam)
    cam -= lo
    cam /= cam.max()
    return cam


def prepare_scoremap(cam: np.ndarray, size: int | Sequence[int] = 224) -> np.ndarray:
    """A raw CAM of any resolution -> the evaluated score map: bicubic resize to ``size`` (w, h),
    then min-max normalisation, in that order (bicubic overshoot is normalised away)."""
    import cv2  # here, not at the top: `kdcicam score` loads OpenCV only when a map needs tracing

    w, h = as_size(size)
    cam = np.asarray(cam, dtype=np.float64)
    if cam.ndim != 2:
        raise ValueError(f"a CAM must be 2-D, got shape {cam.shape}")
    if cam.shape != (h, w):
        cam = cv2.resize(cam, (w, h), interpolation=cv2.INTER_CUBIC)
    return normalize_scoremap(cam)


def threshold_list(interval: float = 0.01) -> np.ndarray:
    """The CAM thresholds ``np.arange(0, 1, interval)``, bit for bit (their float noise decides
    ``int(t * 255)``)."""
    if not 0 < interval < 1:
        raise ValueError(f"cam curve interval must be in (0, 1), got {interval}")
    return np.arange(0, 1, interval)


def quantize_scoremap(scoremap: np.ndarray) -> np.ndarray:
    """``uint8(map * 255)`` in float64 (truncation), the grey image the contours are found on."""
    return (np.asarray(scoremap, dtype=np.float64) * 255).astype(np.uint8)


def threshold_levels(thresholds: np.ndarray, max_level: int) -> np.ndarray:
    """Integer level per threshold: the binary map is ``q > int(t * max(q))``."""
    return (np.asarray(thresholds, dtype=np.float64) * max_level).astype(np.int64)


def resize_box(box: Iterable[float], image_size: Sequence[int], resize_size: Sequence[int]) -> tuple[int, int, int, int]:
    """A GT box in original pixels -> the score-map grid (wsolevaluation's ``resize_bbox``:
    ``int(v * new / old)``, computed in that order)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = (float(v) for v in image_size)
    nw, nh = (float(v) for v in resize_size)
    return int(x0 * nw / w), int(y0 * nh / h), int(x1 * nw / w), int(y1 * nh / h)


def box_iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` with every box in ``b`` (``x0, y0, x1, y1``, inclusive pixels).

    Boxes must be non-negative with ``x1 >= x0`` and ``y1 >= y0`` (else :class:`BoxConventionError`).
    A union of zero or less scores 0.
    """
    a = np.asarray(boxes_a).reshape(-1, 4)
    b = np.asarray(boxes_b).reshape(-1, 4)
    for name, boxes in (("first", a), ("second", b)):
        if (boxes < 0).any():
            raise BoxConventionError(f"{name} boxes: coordinates must be non-negative")
        if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
            raise BoxConventionError(f"{name} boxes: need x1 >= x0 and y1 >= y0")
    a = a[:, None, :]
    b = b[None, :, :]
    inter_w = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    inter_h = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    bad = union <= 0
    iou = inter / np.where(bad, 1, union)
    iou[bad] = 0.0
    return iou


def _contour_boxes(binary: np.ndarray, multi_contour: bool) -> np.ndarray:
    """Boxes of one binary (uint8 0/255) map: the largest contour's, or every contour's."""
    import cv2

    height, width = binary.shape
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if len(contours) == 0:
        return np.zeros((1, 4), dtype=np.int64)
    if not multi_contour:
        contours = [max(contours, key=cv2.contourArea)]
    boxes = np.empty((len(contours), 4), dtype=np.int64)
    for i, contour in enumerate(contours):
        x, y, w, h = cv2.boundingRect(contour)
        boxes[i] = (x, y, min(x + w, width - 1), min(y + h, height - 1))
    return boxes


def scoremap_to_boxes(scoremap: np.ndarray, thresholds: Sequence[float] | np.ndarray,
                      multi_contour: bool = False) -> list[np.ndarray]:
    """Boxes at every threshold: a list (one entry per threshold) of int arrays ``[n, 4]``.

    Exactly wsolevaluation's boxes (same contours, same order), but a binary map is traced once
    however many thresholds produce it (the map is 8-bit, so at most 256 distinct ones).
    """
    import cv2

    scoremap = check_scoremap(scoremap)
    q = quantize_scoremap(scoremap)
    levels = threshold_levels(np.asarray(thresholds, dtype=np.float64), int(q.max()))
    present = np.zeros(257, dtype=np.int64)
    present[np.unique(q).astype(np.int64) + 1] = 1
    # binary maps q > a and q > b are equal iff no level lies in (a, b]: key by levels present above
    above = np.cumsum(present)  # above[l + 1] = number of distinct values <= l
    cache: dict[int, np.ndarray] = {}
    out = []
    for level in levels:
        key = int(above[min(max(int(level), -1), 255) + 1])
        if key not in cache:
            binary = cv2.threshold(q, int(level), 255, cv2.THRESH_BINARY)[1]
            cache[key] = _contour_boxes(binary, multi_contour)
        out.append(cache[key].copy())
    return out
