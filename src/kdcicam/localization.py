"""What a localizer returns for one image, and the step from a score map to that result, without torch.

Both backends share this module: the PyTorch :class:`~kdcicam.inference.Localizer` and the onnxruntime
:class:`~kdcicam.onnx_backend.OnnxLocalizer` hand their softmax probabilities and score maps to
:func:`build_result`, so the same map gives the same boxes whichever backend computed it. Nothing here
imports torch, so a deployment that runs the ONNX graph never loads it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .errors import KdcicamError


class ImageInputError(KdcicamError, ValueError):
    """An input that is not an image the Localizer understands; the message names which input."""


@dataclass
class LocalizationResult:
    """What the model says about one image.

    ``class_ids`` / ``class_names`` / ``scores``: the top-k classes, best first, with softmax
    probabilities. ``boxes``: float ``[n, 4]`` in the original image's pixels (``n`` = 1 in
    largest-contour mode, 0 when the map has no foreground at the threshold). ``cam``: float32
    ``[S, S]`` in [0, 1], the score map the boxes were extracted from (the model-input grid);
    :meth:`cam_resized` gives it at the original image size. ``grid_boxes``: the same boxes on the
    ``S × S`` grid, exactly as the evaluator computes them.
    """

    width: int
    height: int
    class_ids: list[int]
    class_names: list[str]
    scores: list[float]
    boxes: np.ndarray
    cam: np.ndarray = field(repr=False)
    threshold: float
    grid_boxes: np.ndarray
    multi_contour: bool = False
    source: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the image as given."""
        return self.width, self.height

    @property
    def class_id(self) -> int:
        return self.class_ids[0]

    @property
    def class_name(self) -> str:
        return self.class_names[0]

    @property
    def score(self) -> float:
        return self.scores[0]

    def cam_resized(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """The CAM at ``size`` = ``(w, h)`` (default: the original image size), bicubic and clipped
        to [0, 1], for display. Boxes are not recomputed at this size (they come from the grid)."""
        w, h = size or self.size
        cam = cv2.resize(self.cam, (int(w), int(h)), interpolation=cv2.INTER_CUBIC)
        return np.clip(cam, 0.0, 1.0).astype(np.float32, copy=False)

    def to_dict(self, decimals: int = 2) -> dict[str, Any]:
        """JSON-friendly summary (no CAM): size, top-k, and boxes labelled with the top-1 class.

        The protocol's box is class-agnostic (one box per image, shared by every top-k class), so
        each box carries the top-1 class and its probability.
        """
        topk = [{"class_id": int(c), "class_name": n, "score": round(float(s), 6)}
                for c, n, s in zip(self.class_ids, self.class_names, self.scores, strict=True)]
        boxes = [{"x0": round(float(b[0]), decimals), "y0": round(float(b[1]), decimals),
                  "x1": round(float(b[2]), decimals), "y1": round(float(b[3]), decimals),
                  "class_id": int(self.class_id), "class_name": self.class_name, "score": round(float(self.score), 6)}
                 for b in self.boxes]
        out: dict[str, Any] = {"width": self.width, "height": self.height, "topk": topk, "boxes": boxes,
                               "threshold": self.threshold}
        if self.source is not None:
            out = {"file": self.source, **out}
        return out


def check_threshold(threshold: float, where: str) -> float:
    """A box threshold in [0, 1), or a :class:`KdcicamError` naming ``where``."""
    t = float(threshold)
    if not (math.isfinite(t) and 0.0 <= t < 1.0):
        raise KdcicamError(f"{where}: box threshold must be in [0, 1), got {threshold!r}")
    return t


def grid_boxes(cam: np.ndarray, threshold: float, multi_contour: bool = False) -> np.ndarray:
    """The evaluator's boxes for one score map at ``threshold``; no foreground → ``[0, 4]``."""
    from .evaluation.boxes import scoremap_to_boxes

    boxes = scoremap_to_boxes(cam, [threshold], multi_contour=multi_contour)[0]
    return boxes[(boxes != 0).any(axis=1)]  # the protocol's "no contour" box is [0, 0, 0, 0]


def build_result(probs: np.ndarray, cam: np.ndarray, size: tuple[int, int], source: str | None, *,
                 image_size: int, threshold: float, topk: int, multi_contour: bool,
                 class_names: Sequence[str]) -> LocalizationResult:
    """Softmax probabilities ``[C]`` and the ``S × S`` score map of one image → its result: the top-k
    classes (ties keep the lower class id first) and the grid boxes scaled by ``(w / S, h / S)``."""
    k = min(int(topk), probs.shape[0])
    order = np.argsort(-probs, kind="stable")[:k]
    grid = grid_boxes(cam, threshold, multi_contour)
    w, h = size
    scale = np.array([w / image_size, h / image_size] * 2, dtype=np.float64)
    names = [class_names[i] if i < len(class_names) else str(i) for i in order]
    return LocalizationResult(width=w, height=h, class_ids=[int(i) for i in order], class_names=names,
                              scores=[float(probs[i]) for i in order], boxes=grid.astype(np.float64) * scale,
                              cam=cam, threshold=threshold, grid_boxes=grid, multi_contour=multi_contour,
                              source=source)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, computed as torch does (shifted by the row maximum)."""
    z = np.asarray(logits, dtype=np.float32)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


__all__ = ["ImageInputError", "LocalizationResult", "build_result", "check_threshold", "grid_boxes", "softmax"]
