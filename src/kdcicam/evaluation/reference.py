"""The plain protocol: one ``cv2.threshold`` + ``cv2.findContours`` per image and threshold.

Slow on purpose. It is the oracle the fast evaluator is tested against (property tests) and the
baseline of ``benchmarks/evaluator_speed.py``; it follows clovaai/wsolevaluation step by step
(``compute_bboxes_from_scoremaps``, ``BoxEvaluator.accumulate``/``compute``, ``MaskEvaluator``).
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .boxes import as_size, box_iou_matrix, check_scoremap, resize_box

__all__ = [
    "ReferenceBoxEvaluator",
    "reference_best_ious",
    "reference_boxes",
    "reference_pxap",
    "reference_pxap_curve",
]


def reference_boxes(scoremap: np.ndarray, thresholds: Sequence[float],
                    multi_contour: bool = False) -> list[np.ndarray]:
    """Boxes ``[n, 4]`` at every threshold, one ``findContours`` per threshold."""
    scoremap = check_scoremap(scoremap)
    height, width = scoremap.shape
    grey = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
    top = np.max(grey)
    result = []
    for threshold in thresholds:
        _, binary = cv2.threshold(grey, int(threshold * top), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if len(contours) == 0:
            result.append(np.zeros((1, 4), dtype=np.int64))
            continue
        if not multi_contour:
            contours = [max(contours, key=cv2.contourArea)]
        boxes = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
        result.append(np.asarray(boxes, dtype=np.int64))
    return result


def reference_best_ious(scoremap: np.ndarray, gt_boxes: np.ndarray, thresholds: Sequence[float],
                        multi_contour: bool = False) -> np.ndarray:
    """Per threshold, the best IoU of any predicted box with any GT box (GT on the map's grid):
    all boxes in one IoU matrix, then the maximum over each threshold's slice."""
    per_threshold = reference_boxes(scoremap, thresholds, multi_contour)
    gt = np.asarray(gt_boxes, dtype=np.int64).reshape(-1, 4)
    best_per_box = box_iou_matrix(np.concatenate(per_threshold, axis=0), gt).max(axis=1)
    result = np.empty(len(per_threshold), dtype=np.float64)
    first = 0
    for i, boxes in enumerate(per_threshold):
        result[i] = best_per_box[first:first + len(boxes)].max()
        first += len(boxes)
    return result


class ReferenceBoxEvaluator:
    """wsolevaluation's BoxEvaluator on our :class:`~kdcicam.data.metadata.Metadata`: GT boxes
    rescaled to the map grid, one image at a time, ``num_correct`` per IoU and threshold."""

    def __init__(self, metadata, cam_size: int | Sequence[int] = 224, iou_thresholds: Sequence[int] = (30, 50, 70),
                 multi_contour: bool = False, cam_curve_interval: float = 0.01):
        self.metadata = metadata
        self.size = as_size(cam_size)
        self.iou_thresholds = [int(v) for v in iou_thresholds]
        self.multi_contour = multi_contour
        self.thresholds = list(np.arange(0, 1, cam_curve_interval))
        self.num_correct = {iou: np.zeros(len(self.thresholds)) for iou in self.iou_thresholds}
        self.count = 0

    def gt_boxes(self, image_id: str) -> np.ndarray:
        size = self.metadata.image_sizes[image_id]
        return np.array([resize_box(b, size, self.size) for b in self.metadata.boxes[image_id]], dtype=np.int64)

    def accumulate(self, scoremap: np.ndarray, image_id: str) -> np.ndarray:
        """Score one map; returns its best IoU per threshold."""
        best = reference_best_ious(scoremap, self.gt_boxes(image_id), self.thresholds, self.multi_contour)
        for iou in self.iou_thresholds:
            self.num_correct[iou][np.where(best >= iou / 100)[0]] += 1
        self.count += 1
        return best

    def curves(self) -> dict[int, np.ndarray]:
        return {iou: self.num_correct[iou] * 100.0 / float(self.count) for iou in self.iou_thresholds}

    def compute(self) -> list[float]:
        """MaxBoxAcc per IoU threshold, in percent."""
        return [float(curve.max()) for curve in self.curves().values()]


def reference_pxap_curve(scoremaps: Sequence[np.ndarray], gt_masks: Sequence[np.ndarray],
                         cam_curve_interval: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Score histograms of foreground (mask == 1) and background (mask == 0) pixels over the bins
    ``[t_0, t_1), ..., [t_last, 1), [1, 2), [2, 3]``; ignored pixels (255) count nowhere."""
    edges = np.append(np.arange(0, 1, cam_curve_interval), [1.0, 2.0, 3.0])
    fg = np.zeros(len(edges) - 1)
    bg = np.zeros(len(edges) - 1)
    for scoremap, mask in zip(scoremaps, gt_masks, strict=True):
        scoremap = check_scoremap(scoremap)
        fg += np.histogram(scoremap[mask == 1], bins=edges)[0]
        bg += np.histogram(scoremap[mask == 0], bins=edges)[0]
    return fg, bg


def reference_pxap(scoremaps: Sequence[np.ndarray], gt_masks: Sequence[np.ndarray],
                   cam_curve_interval: float = 0.01) -> float:
    """PxAP in percent: area under the pixel precision-recall curve, wsolevaluation's formula."""
    fg, bg = reference_pxap_curve(scoremaps, gt_masks, cam_curve_interval)
    tp = fg[::-1].cumsum()
    fn = fg.sum() - tp
    fp = bg[::-1].cumsum()
    if ((tp + fn) <= 0).all():
        raise RuntimeError("No positive ground truth in the eval set.")
    if ((tp + fp) <= 0).all():
        raise RuntimeError("No positive prediction in the eval set.")
    valid = (tp + fp) != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
    return float((precision[1:] * np.diff(recall))[valid[1:]].sum() * 100)
