"""Ground-truth masks on the score-map grid, the wsolevaluation way (``get_mask``), and the
per-image helpers of the mask metrics.

A GT mask is a uint8 array with 1 = object, 0 = background and 255 = ignored: every instance mask
is read as grey, resized with nearest-neighbour interpolation in float32 and binarised at 0.5; the
instances are merged; the ignore mask (binarised the same way) minus the object becomes 255.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ImageReadError
from .boxes import ScoremapError, as_size

__all__ = ["IGNORE", "boxes_mask", "check_gt_mask", "load_gt_mask", "load_mask_image"]

IGNORE = 255  #: mask value of pixels that count neither as object nor as background


def load_mask_image(path: str, size: int | Sequence[int]) -> np.ndarray:
    """One mask file -> float32 ``[h, w]`` resized with INTER_NEAREST (wsolevaluation's
    ``load_mask_image``)."""
    import cv2  # here: scoring boxes alone never loads OpenCV's masks path

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ImageReadError(path, "missing or not an image OpenCV can decode")
    return cv2.resize(image.astype(np.float32), as_size(size), interpolation=cv2.INTER_NEAREST)


def load_gt_mask(mask_paths: Sequence[str], ignore_path: str | None, size: int | Sequence[int]) -> np.ndarray:
    """Merge an image's instance masks and its ignore mask into one uint8 mask (1 / 0 / 255)."""
    if not mask_paths:
        raise ValueError("an image with masks needs at least one mask file")
    foreground = np.zeros(as_size(size)[::-1], dtype=bool)
    for path in mask_paths:
        foreground |= load_mask_image(path, size) > 0.5
    result = foreground.astype(np.uint8)
    if ignore_path:
        ignore = (load_mask_image(ignore_path, size) > 0.5) & ~foreground
        result[ignore] = IGNORE
    return result


def check_gt_mask(mask: np.ndarray, shape: tuple[int, int], image_id: object) -> np.ndarray:
    """A caller's GT mask -> uint8 1 / 0 / 255. Booleans mean object / background."""
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ScoremapError(image_id, f"GT mask has shape {mask.shape}, expected {tuple(shape)}")
    if mask.dtype == np.bool_:
        return mask.astype(np.uint8)
    if not np.issubdtype(mask.dtype, np.integer):
        raise ScoremapError(image_id, f"GT mask must be bool or integer (0 / 1 / {IGNORE}), got {mask.dtype}")
    values = np.unique(mask)
    if not np.isin(values, (0, 1, IGNORE)).all():
        raise ScoremapError(image_id, f"GT mask values must be 0, 1 or {IGNORE}, got {values[:8].tolist()}")
    return mask.astype(np.uint8)


def boxes_mask(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Union of boxes (inclusive pixel coordinates, as the protocol's IoU counts them) as a bool
    mask; the object region when an image has boxes but no mask."""
    region = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.int64).reshape(-1, 4):
        region[y0:y1 + 1, x0:x1 + 1] = True
    return region
