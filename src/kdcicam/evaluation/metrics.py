"""Streaming WSOL evaluators with the clovaai/wsolevaluation protocol.

Every evaluator keeps per-threshold counters only (memory does not grow with the number of
images), takes batches ``[B, H, W]`` of score maps in [0, 1] on the evaluation grid (see
:func:`~kdcicam.evaluation.boxes.prepare_scoremap` for raw CAMs), and reports percentages.

- :class:`BoxEvaluator`: MaxBoxAcc per IoU (single- or multi-contour), its threshold curve, and
  GT-known / Top-1 / Top-5 Loc at a given threshold (e.g. one chosen on val) and at the best one.

Metric names (one meaning each, in every output): ``gt_known_loc`` / ``top1_loc`` / ``top5_loc`` are
read at the box threshold *chosen on the validation split* (given to :meth:`compute`; without one,
the split being computed is taken to be that validation split, so it is its own best threshold);
``gt_known_loc_oracle`` / ``top1_loc_oracle`` / ``top5_loc_oracle`` are read at the threshold best
*on the split itself* (the protocol's oracle choice: an upper bound, never a test result). Old
results files call the oracle numbers ``*_at_best``.
- :class:`MaskEvaluator`: PxAP (area under the pixel precision-recall curve) and PIoU.
- :class:`ContextLeakage`: share of CAM mass outside the object.
- :class:`ClassificationAccuracy`: Top-1 / Top-5 Cls.
- :class:`WSOLEvaluator`: all of the above in one pass per batch, flat JSON-friendly keys.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import wait
from typing import Any

import numpy as np

from ..data.metadata import Metadata
from ..errors import KdcicamError
from . import _compiled
from .boxes import ScoremapError, as_size, resize_box, threshold_list
from .engine import MapSource, batch_box_ious, default_workers, invalid_maps, read_all, worker_pool
from .masks import boxes_mask, check_gt_mask, load_gt_mask

__all__ = [
    "V2_IOU_THRESHOLDS",
    "BoxEvaluator",
    "ClassificationAccuracy",
    "ContextLeakage",
    "LogitsError",
    "MaskEvaluator",
    "MetricUndefinedError",
    "WSOLEvaluator",
    "leakage",
    "topk_from",
]


class MetricUndefinedError(KdcicamError, RuntimeError):
    """A metric with no defined value on this data, e.g. PxAP without any object pixel (a
    RuntimeError too, as wsolevaluation raises)."""


# ----------------------------------------------------------------------------------------- helpers
class _Grid:
    """The evaluation grid, thresholds and input checks shared by every evaluator."""

    def __init__(self, metadata: Metadata, cam_size: int | Sequence[int], cam_curve_interval: float):
        self.metadata = metadata
        self.size = as_size(cam_size)
        self.shape = (self.size[1], self.size[0])
        self.interval = float(cam_curve_interval)
        self.thresholds = threshold_list(self.interval)

    def check_batch(self, scoremaps: Any, image_ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """The batch as a float64 ``[B, H, W]`` array (a :class:`~.engine.MapSource` is read whole), and its ids."""
        maps, ids = self.check_lazy(scoremaps, image_ids)
        return (read_all(maps) if isinstance(maps, MapSource) else maps), ids

    def check_lazy(self, scoremaps: Any, image_ids: Sequence[str]) -> tuple[np.ndarray | MapSource, list[str]]:
        """:meth:`check_batch`, a :class:`~.engine.MapSource` left unread (the box kernel's workers read it)."""
        ids = [str(i) for i in image_ids]
        if isinstance(scoremaps, MapSource):
            if len(ids) != len(scoremaps):
                raise ValueError(f"{len(scoremaps)} score maps but {len(ids)} image ids")
            known = getattr(scoremaps, "image_ids", None)  # a source that knows its images (CamFiles) must agree
            if known is not None and [str(i) for i in known] != ids:
                raise ValueError("the source holds the maps of other image ids than those given")
            if tuple(scoremaps.shape) != self.shape:
                raise ScoremapError(ids[0] if ids else None, f"score map has shape {tuple(scoremaps.shape)}, "
                                    f"expected {self.shape} (height, width) of the evaluation grid")
            self._check_ids(ids)
            return scoremaps, ids
        maps = np.asarray(scoremaps)
        if maps.ndim == 2:
            maps = maps[None]
        first = ids[0] if ids else None
        if maps.ndim != 3:
            raise ScoremapError(first, f"score maps must be [B, H, W], got shape {maps.shape}")
        if len(ids) != maps.shape[0]:
            raise ValueError(f"{maps.shape[0]} score maps but {len(ids)} image ids")
        if not np.issubdtype(maps.dtype, np.floating):
            raise ScoremapError(first, f"score maps must have a floating dtype, got {maps.dtype}")
        if maps.shape[1:] != self.shape:
            raise ScoremapError(first, f"score map has shape {maps.shape[1:]}, expected {self.shape} "
                                "(height, width) of the evaluation grid")
        self._check_ids(ids)
        return np.ascontiguousarray(maps, dtype=np.float64), ids

    def _check_ids(self, ids: list[str]) -> None:
        for image_id in ids:
            if image_id not in self.metadata.class_labels:  # every id has a class label
                raise ScoremapError(image_id, "image id is not in the metadata")

    def threshold_index(self, threshold: float) -> int:
        """Index of a threshold on this grid (one chosen on val with the same interval)."""
        i = int(np.argmin(np.abs(self.thresholds - threshold)))
        if abs(self.thresholds[i] - threshold) > 1e-6:
            raise ValueError(f"threshold {threshold} is not on the evaluated grid "
                             f"np.arange(0, 1, {self.interval})")
        return i

    def check_range(self, maps: np.ndarray, ids: list[str]) -> None:
        """Every value finite and in [0, 1] (the box kernel checks this itself)."""
        bad = invalid_maps(maps)
        if bad.size:
            i = int(bad[0])
            if not np.isfinite(maps[i]).all():
                raise ScoremapError(ids[i], "contains NaN or inf")
            raise ScoremapError(ids[i], f"values must lie in [0, 1], got min {maps[i].min():g}, "
                                f"max {maps[i].max():g} (min-max normalise it first)")


class LogitsError(KdcicamError, ValueError):
    """Logits or top-k classes the evaluator cannot use (wrong shape, NaN/inf, non-integer classes);
    the message names the image when its id is known. NaN logits usually mean a diverged model."""


def topk_from(logits_or_topk: Any, batch: int, k: int = 5, ids: Sequence[str] | None = None) -> np.ndarray:
    """Predicted classes, best first, ``[B, <=k]``: from logits ``[B, C]`` (float; ties go to the
    lower class index) or from class indices already sorted (integer). ``ids`` only names the
    image in an error."""
    arr = np.asarray(logits_or_topk)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != batch:
        raise LogitsError(f"logits/top-k must be [B, C] with B = {batch}, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            where = f"image {ids[row]!r}" if ids is not None and row < len(ids) else f"row {row}"
            raise LogitsError(f"logits of {where} contain NaN or inf (a diverged model?)")
        return np.argsort(-arr, axis=1, kind="stable")[:, :k]
    if not np.issubdtype(arr.dtype, np.integer):
        raise LogitsError(f"top-k classes must be integers or logits floats, got {arr.dtype}")
    return arr[:, :k].astype(np.int64)


#: MaxBoxAccV2 is the multi-contour MaxBoxAcc averaged over these IoU thresholds (Choe et al., CVPR 2020),
#: whichever IoU thresholds an evaluator reports
V2_IOU_THRESHOLDS = (30, 50, 70)


def _ious(iou_thresholds: Sequence[int]) -> list[int]:
    ious = [int(v) for v in iou_thresholds]
    if not ious or any(not 0 < v <= 100 for v in ious):
        raise ValueError(f"IoU thresholds must be integers in 1..100 (percent), got {list(iou_thresholds)}")
    return ious


class _BoxCounts:
    """Per IoU threshold and CAM threshold: images whose box is right (any class), and those that
    are also right with the top-1 / any top-5 class."""

    def __init__(self, ious: list[int], nt: int):
        self.ious = ious
        self.correct = np.zeros((len(ious), nt), dtype=np.int64)
        self.top1 = np.zeros((len(ious), nt), dtype=np.int64)
        self.top5 = np.zeros((len(ious), nt), dtype=np.int64)

    def merge(self, other: _BoxCounts) -> None:
        if other.ious != self.ious or other.correct.shape != self.correct.shape:
            raise ValueError("cannot merge box counts of different IoU or CAM thresholds")
        self.correct += other.correct
        self.top1 += other.top1
        self.top5 += other.top5

    def add(self, best: np.ndarray, top1_ok: np.ndarray | None, top5_ok: np.ndarray | None) -> None:
        for k, iou in enumerate(self.ious):
            hit = best >= iou / 100  # the protocol's comparison, IoU threshold in percent
            self.correct[k] += hit.sum(axis=0)
            if top1_ok is not None:
                self.top1[k] += hit[top1_ok].sum(axis=0)
                self.top5[k] += hit[top5_ok].sum(axis=0)

    def max_acc(self, iou: int, count: int) -> float:
        """MaxBoxAcc at one counted IoU threshold, in percent."""
        return float((self.correct[self.ious.index(iou)] * 100.0 / float(count)).max())

    def report(self, grid: _Grid, reported: list[int], count: int, with_classes: bool,
               threshold: float | None) -> dict[str, Any]:
        """MaxBoxAcc etc. in percent, wsolevaluation's arithmetic: ``correct * 100. / count``."""
        curves = self.correct * 100.0 / float(count)
        row = {iou: k for k, iou in enumerate(self.ious)}
        best = {iou: int(np.argmax(curves[row[iou]])) for iou in self.ious}
        used = best[50] if threshold is None else grid.threshold_index(threshold)

        def at(index: int) -> dict[str, float | None]:
            k = row[50]
            return {
                "gt_known_loc": float(curves[k, index]),
                "top1_loc": float(self.top1[k, index] * 100.0 / count) if with_classes else None,
                "top5_loc": float(self.top5[k, index] * 100.0 / count) if with_classes else None,
            }

        out: dict[str, Any] = {
            "max_box_acc": {str(iou): float(curves[row[iou]].max()) for iou in reported},
            "best_threshold": {**{str(iou): float(grid.thresholds[best[iou]]) for iou in reported},
                               "used": float(grid.thresholds[used])},
            "box_acc_curve": {"thresholds": [float(t) for t in grid.thresholds],
                              **{str(iou): curves[row[iou]].tolist() for iou in reported}},
        }
        out["max_box_acc_mean"] = float(np.average([out["max_box_acc"][str(iou)] for iou in reported]))
        out.update(at(used))
        out.update({f"{key}_oracle": value for key, value in at(best[50]).items()})
        return out


def _class_hits(topk: np.ndarray | None, labels: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    if topk is None:
        return None, None
    return topk[:, 0] == labels, (topk == labels[:, None]).any(axis=1)


def _labels(metadata: Metadata, ids: list[str]) -> np.ndarray:
    return np.array([metadata.class_labels[i] for i in ids], dtype=np.int64)


class _GTBoxes:
    """GT boxes of an image on the evaluation grid (wsolevaluation's ``resize_bbox``), computed when
    asked: a few microseconds, and nothing kept, so memory stays flat however many images stream by."""

    def __init__(self, grid: _Grid):
        self.grid = grid

    def __call__(self, image_id: str) -> np.ndarray:
        original = self.grid.metadata.boxes.get(image_id)
        if not original:
            raise ScoremapError(image_id, "has no GT boxes in the metadata")
        size = self.grid.metadata.image_sizes[image_id]
        return np.array([resize_box(b, size, self.grid.size) for b in original], dtype=np.int64)


# ----------------------------------------------------------------------------------------- boxes
class BoxEvaluator:
    """MaxBoxAcc (single- or multi-contour) and GT-known / Top-1 / Top-5 Loc.

    GT boxes come from ``metadata`` (original pixels) and are rescaled to the ``cam_size`` grid
    (``int`` or ``(w, h)``) as wsolevaluation does; thresholds are ``np.arange(0, 1, interval)``.
    """

    def __init__(self, metadata: Metadata, cam_size: int | Sequence[int] = 224,
                 iou_thresholds: Sequence[int] = (30, 50, 70), multi_contour: bool = False,
                 cam_curve_interval: float = 0.01, workers: int | None = None):
        self.grid = _Grid(metadata, cam_size, cam_curve_interval)
        self.iou_thresholds = _ious(iou_thresholds)
        self.multi_contour = bool(multi_contour)
        self.workers = workers
        self._gt = _GTBoxes(self.grid)
        self._counts = _BoxCounts(sorted(set(self.iou_thresholds) | {50}), len(self.grid.thresholds))
        self.count = 0
        self.count_with_classes = 0

    def accumulate(self, scoremaps: np.ndarray | MapSource, image_ids: Sequence[str],
                   topk: np.ndarray | None = None) -> None:
        """Score a batch (``[B, H, W]``, or a :class:`~.engine.MapSource` read by the kernel's workers).
        ``topk``: predicted classes best first ``[B, k]`` (or logits ``[B, C]``), needed for Top-1 / Top-5
        Loc; give it for every batch or for none."""
        maps, ids = self.grid.check_lazy(scoremaps, image_ids)
        classes = None if topk is None else topk_from(topk, len(ids), ids=ids)
        if (classes is None) != (self.count_with_classes == 0) and self.count:
            raise ValueError("give top-k classes for every batch or for none")
        gts = [self._gt(i) for i in ids]
        result = batch_box_ious(maps, gts, self.grid.thresholds, ids, self.workers, multi_contour=self.multi_contour,
                                single_contour=not self.multi_contour)
        best = result.multi if self.multi_contour else result.single
        top1_ok, top5_ok = _class_hits(classes, _labels(self.grid.metadata, ids))
        self._counts.add(best, top1_ok, top5_ok)
        self.count += len(ids)
        self.count_with_classes += 0 if classes is None else len(ids)

    def merge(self, other: BoxEvaluator) -> None:
        """Add another evaluator's counts (e.g. another DDP rank's share of the split)."""
        if other.multi_contour != self.multi_contour:
            raise ValueError("cannot merge single- and multi-contour evaluators")
        if (self.count_with_classes and other.count and not other.count_with_classes) or \
                (other.count_with_classes and self.count and not self.count_with_classes):
            raise ValueError("cannot merge evaluators with and without top-k classes")
        self._counts.merge(other._counts)
        self.count += other.count
        self.count_with_classes += other.count_with_classes

    def compute(self, threshold: float | None = None) -> dict[str, Any]:
        """Metrics in percent. ``threshold`` (on this grid) is where GT-known / Top-1 / Top-5 Loc are
        read, e.g. the best threshold found on val; by default the best one here (IoU 50)."""
        if self.count == 0:
            raise ValueError("no score maps were accumulated")
        out = {"num_images": self.count, "multi_contour": self.multi_contour,
               "iou_thresholds": list(self.iou_thresholds)}
        out.update(self._counts.report(self.grid, self.iou_thresholds, self.count, self.count_with_classes > 0,
                                       threshold))
        return out


# ----------------------------------------------------------------------------------------- masks
def _given_masks(gt_masks: Any, ids: list[str], shape: tuple[int, int]) -> list[np.ndarray]:
    gt = np.asarray(gt_masks)
    if gt.ndim == 2:
        gt = gt[None]
    if gt.shape[0] != len(ids):
        raise ValueError(f"{len(ids)} score maps but {gt.shape[0]} GT masks")
    return [check_gt_mask(m, shape, i) for m, i in zip(gt, ids, strict=True)]


class _MaskCounts:
    """Histograms of object / background pixel scores over the CAM thresholds: bins
    ``[t_0, t_1), ..., [t_last, 1), [1, 2), [2, 3]`` as wsolevaluation's MaskEvaluator."""

    def __init__(self, thresholds: np.ndarray):
        self.edges = np.append(thresholds, [1.0, 2.0, 3.0])
        self.fg = np.zeros(len(self.edges) - 1, dtype=np.int64)
        self.bg = np.zeros(len(self.edges) - 1, dtype=np.int64)

    def add(self, scoremap: np.ndarray, mask: np.ndarray) -> None:
        _compiled.mask_histograms(scoremap, mask, self.edges, self.fg, self.bg)

    def merge(self, other: _MaskCounts) -> None:
        if not np.array_equal(other.edges, self.edges):
            raise ValueError("cannot merge mask histograms of different CAM thresholds")
        self.fg += other.fg
        self.bg += other.bg

    def report(self) -> dict[str, Any]:
        """PxAP (wsolevaluation's formula) and PIoU = best pixel IoU ``tp / (tp + fp + fn)`` over
        the thresholds, both in percent, plus the PIoU threshold."""
        tp = self.fg[::-1].cumsum().astype(np.float64)  # tp[j]: object pixels scoring >= edges[-2 - j]
        fn = self.fg.sum() - tp
        fp = self.bg[::-1].cumsum().astype(np.float64)
        if ((tp + fn) <= 0).all():
            raise MetricUndefinedError("no object pixel in the evaluated masks: PxAP is undefined")
        if ((tp + fp) <= 0).all():
            raise MetricUndefinedError("no pixel scored at any threshold: PxAP is undefined")
        valid = (tp + fp) != 0
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
            recall = tp / (tp + fn)
            iou = tp / (tp + fp + fn)
        pxap = float((precision[1:] * np.diff(recall))[valid[1:]].sum() * 100)
        iou = np.nan_to_num(iou[2:], nan=0.0)[::-1]  # per CAM threshold t_i: pixels scoring >= t_i
        best = int(np.argmax(iou))
        return {"pxap": pxap, "piou": float(iou[best] * 100), "piou_threshold": float(self.edges[best])}


class MaskEvaluator:
    """PxAP and PIoU against GT masks: given per batch (``gt_masks``, 1 / 0 / 255 or bool) or read
    from the metadata's mask files (instances merged, ignore masks honoured)."""

    def __init__(self, metadata: Metadata, cam_size: int | Sequence[int] = 224, cam_curve_interval: float = 0.01):
        self.grid = _Grid(metadata, cam_size, cam_curve_interval)
        self._counts = _MaskCounts(self.grid.thresholds)
        self.count = 0

    def mask(self, image_id: str) -> np.ndarray:
        """The GT mask of one image on the evaluation grid, from the metadata's files."""
        md = self.grid.metadata
        paths = md.mask_paths(image_id)
        if not paths:
            raise ScoremapError(image_id, "has no GT mask in the metadata")
        ignore = md.ignore_masks.get(image_id)
        ignore_path = str(md.image_root / ignore) if ignore and md.image_root is not None else None
        return load_gt_mask([str(p) for p in paths], ignore_path, self.grid.size)

    def masks_for(self, ids: list[str], gt_masks: np.ndarray | None) -> list[np.ndarray]:
        """The batch's masks: the caller's (checked) or the metadata's."""
        if gt_masks is None:
            return [self.mask(i) for i in ids]
        return _given_masks(gt_masks, ids, self.grid.shape)

    def accumulate(self, scoremaps: np.ndarray, image_ids: Sequence[str], gt_masks: np.ndarray | None = None) -> None:
        maps, ids = self.grid.check_batch(scoremaps, image_ids)
        self.grid.check_range(maps, ids)
        for scoremap, mask in zip(maps, self.masks_for(ids, gt_masks), strict=True):
            self._counts.add(scoremap, mask)
        self.count += len(ids)

    def merge(self, other: MaskEvaluator) -> None:
        self._counts.merge(other._counts)
        self.count += other.count

    def compute(self) -> dict[str, Any]:
        if self.count == 0:
            raise ValueError("no score maps were accumulated")
        return {"num_images": self.count, **self._counts.report()}


# ----------------------------------------------------------------------------------------- leakage
def leakage(scoremap: np.ndarray, object_region: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Share of the min-max normalised map's mass outside the object (ignored pixels left out).
    A constant map carries no location, so it counts as uniform: the background's share. (The
    share does not depend on the final division by the maximum, so it is skipped.)"""
    scoremap = np.asarray(scoremap, dtype=np.float64)
    valid = np.ones(scoremap.shape, dtype=bool) if ignore is None else ~np.asarray(ignore, dtype=bool)
    outside = valid & ~np.asarray(object_region, dtype=bool)
    shifted = scoremap - scoremap.min()
    total = float(shifted[valid].sum())
    if total <= 0.0:
        return float(outside.sum()) / max(int(valid.sum()), 1)
    return float(shifted[outside].sum()) / total


_LEAKAGE_UNIT = 2 ** 52  #: fixed-point unit of the summed shares (a share is in [0, 1])


class ContextLeakage:
    """Mean share of CAM mass outside the object's mask, or outside the union of GT boxes when the
    dataset has no masks; in percent. High leakage = the CAM lights the context (the habitat)."""

    def __init__(self, metadata: Metadata, cam_size: int | Sequence[int] = 224, use_masks: bool | None = None):
        self.grid = _Grid(metadata, cam_size, 0.01)
        self.use_masks = metadata.has_masks if use_masks is None else bool(use_masks)
        self._gt = _GTBoxes(self.grid)
        self._masks = MaskEvaluator(metadata, cam_size) if self.use_masks else None
        self.total = 0  # sum of the shares in units of 2**-52: integers add up the same in any order,
        # so shards merged in any grouping (DDP ranks) give the one-pass number exactly
        self.count = 0

    def share(self, scoremap: np.ndarray, image_id: str, mask: np.ndarray | None,
              boxes: np.ndarray | None = None) -> int:
        """One float64 map's leakage against its mask (1 / 0 / 255), or its GT boxes on the grid
        without one (``boxes``, when the caller has them already), in units of 2**-52, not yet
        added: :func:`leakage`, compiled (its numpy form costs as much as the box kernel). NaN or inf
        in the map is a :class:`ScoremapError` naming the image."""
        if mask is None and self._masks is not None:  # there is one exactly when use_masks
            mask = self._masks.mask(image_id)
        if mask is None:
            mask = boxes_mask(self._gt(image_id) if boxes is None else boxes, self.grid.shape).view(np.uint8)
        return self.units(float(_compiled.leakage_share(scoremap, np.ascontiguousarray(mask))), image_id)

    @staticmethod
    def units(share: float, image_id: str) -> int:
        """A share from the kernel in units of 2**-52 (NaN, the kernel's answer to a NaN or inf in the
        map: a :class:`ScoremapError` naming the image)."""
        if math.isnan(share):
            raise ScoremapError(image_id, "contains NaN or inf")
        return round(share * _LEAKAGE_UNIT)

    def add_shares(self, shares: list[int]) -> None:
        self.total += sum(shares)
        self.count += len(shares)

    def add(self, scoremap: np.ndarray, image_id: str, mask: np.ndarray | None) -> None:
        self.add_shares([self.share(scoremap, image_id, mask)])

    def accumulate(self, scoremaps: np.ndarray, image_ids: Sequence[str], gt_masks: np.ndarray | None = None) -> None:
        maps, ids = self.grid.check_batch(scoremaps, image_ids)
        masks: list[np.ndarray | None] = [None] * len(ids)
        if gt_masks is not None:
            masks = list(_given_masks(gt_masks, ids, self.grid.shape))
        # share() raises on NaN or inf; all shares are taken before any is added
        self.add_shares([self.share(m, i, mask) for m, i, mask in zip(maps, ids, masks, strict=True)])

    def merge(self, other: ContextLeakage) -> None:
        self.total += other.total
        self.count += other.count

    def compute(self) -> dict[str, Any]:
        if self.count == 0:
            raise ValueError("no score maps were accumulated")
        return {"num_images": self.count, "context_leakage": self.total / _LEAKAGE_UNIT * 100.0 / self.count}


# ----------------------------------------------------------------------------------------- classes
class ClassificationAccuracy:
    """Top-1 / Top-5 classification accuracy in percent."""

    def __init__(self, k: int = 5):
        self.k = k
        self.top1 = 0
        self.topk = 0
        self.count = 0

    def accumulate(self, logits_or_topk: Any, labels: Sequence[int] | np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        topk = topk_from(logits_or_topk, len(labels), self.k)
        self.top1 += int((topk[:, 0] == labels).sum())
        self.topk += int((topk == labels[:, None]).any(axis=1).sum())
        self.count += len(labels)

    def merge(self, other: ClassificationAccuracy) -> None:
        if other.k != self.k:
            raise ValueError("cannot merge top-k accuracies of different k")
        self.top1 += other.top1
        self.topk += other.topk
        self.count += other.count

    def compute(self) -> dict[str, Any]:
        if self.count == 0:
            raise ValueError("nothing was accumulated")
        return {"top1_cls": self.top1 * 100.0 / self.count, f"top{self.k}_cls": self.topk * 100.0 / self.count}


# ----------------------------------------------------------------------------------------- all in one
class WSOLEvaluator:
    """Every WSOL metric in one pass per batch.

    Boxes (when the metadata has them): single-contour MaxBoxAcc with GT-known / Top-1 / Top-5
    Loc, and multi-contour MaxBoxAcc per reported IoU threshold, from one kernel run; MaxBoxAccV2 is
    always the multi-contour mean over IoU 30 / 50 / 70, its definition, whichever IoUs are reported. Masks
    (``masks="auto"``: when the metadata has them, or when ``gt_masks`` are given): PxAP, PIoU.
    Context leakage against the mask, else the GT boxes. Classification from logits or top-k.
    """

    def __init__(self, metadata: Metadata, cam_size: int | Sequence[int] = 224,
                 iou_thresholds: Sequence[int] = (30, 50, 70), cam_curve_interval: float = 0.01,
                 masks: bool | str = "auto", workers: int | None = None):
        self.grid = _Grid(metadata, cam_size, cam_curve_interval)
        self.iou_thresholds = _ious(iou_thresholds)
        if masks not in ("auto", True, False):
            raise ValueError(f"masks must be 'auto', True or False, got {masks!r}")
        self.masks = metadata.has_masks if masks == "auto" else bool(masks)
        self.boxes = metadata.has_boxes
        self.workers = workers
        nt = len(self.grid.thresholds)
        ious = sorted(set(self.iou_thresholds) | {50})
        self._gt = _GTBoxes(self.grid)
        self._single = _BoxCounts(ious, nt)
        self._multi = _BoxCounts(sorted(set(ious) | set(V2_IOU_THRESHOLDS)), nt)
        self._mask_counts = _MaskCounts(self.grid.thresholds)
        self._mask_reader = MaskEvaluator(metadata, cam_size, cam_curve_interval)
        self._leak = ContextLeakage(metadata, cam_size, use_masks=self.masks)
        self._cls = ClassificationAccuracy()
        self.count = 0
        self.count_masks = 0

    def metadata_masks(self, image_ids: Sequence[str]) -> list[np.ndarray] | None:
        """The GT masks :meth:`accumulate` would read from the metadata's files for these images
        (``None`` when it reads none): a reader thread can read them while the previous batch is
        scored, and hand them over as ``loaded_masks``."""
        return [self._mask_reader.mask(str(i)) for i in image_ids] if self.masks else None

    def accumulate(self, scoremaps: np.ndarray | MapSource, image_ids: Sequence[str], logits_or_topk: Any = None,
                   gt_masks: np.ndarray | None = None, *, loaded_masks: Sequence[np.ndarray] | None = None) -> None:
        """Score a batch of maps ``[B, H, W]`` in [0, 1] (or a :class:`~.engine.MapSource`: read map by map
        by the box kernel's workers when boxes are all it needs, else whole); ``logits_or_topk``: ``[B, C]``
        logits or ``[B, k]`` classes best first; ``gt_masks``: ``[B, H, W]`` (1 / 0 / 255 or bool);
        ``loaded_masks``: what :meth:`metadata_masks` returned for these images (used as they are)."""
        lazy, ids = self.grid.check_lazy(scoremaps, image_ids)
        if not ids:
            return
        classes = None if logits_or_topk is None else topk_from(logits_or_topk, len(ids), ids=ids)
        if self.count and (classes is None) != (self._cls.count == 0):
            raise ValueError("give logits / top-k classes for every batch or for none")
        labels = _labels(self.grid.metadata, ids)
        masks: list[np.ndarray | None] = [None] * len(ids)
        if loaded_masks is not None and gt_masks is None:
            if len(loaded_masks) != len(ids):
                raise ValueError(f"{len(ids)} score maps but {len(loaded_masks)} loaded masks")
            masks = list(loaded_masks)
        elif self.masks or gt_masks is not None:
            masks = list(self._mask_reader.masks_for(ids, gt_masks))
        # the pixel metrics run on a pool thread beside the box kernel's chunks (both release the
        # GIL); nothing is added to the counters until every part of the batch has succeeded. Without
        # masks, leakage is against the GT boxes: the box kernel computes it on each map it reads.
        workers = default_workers() if self.workers is None else max(1, int(self.workers))
        gts = [self._gt(i) for i in ids] if self.boxes else None  # for the box kernel and leakage alike
        leak_in_kernel = gts is not None and masks[0] is None
        pixel_work = not leak_in_kernel
        # the pixel metrics need the maps whole (a source is read here); the box kernel's workers read a source
        whole: np.ndarray | None = None
        if pixel_work:
            whole = read_all(lazy) if isinstance(lazy, MapSource) else lazy
        side = None
        if whole is not None and workers > 1:
            side = worker_pool(workers).submit(self._pixel_metrics, whole, ids, masks, gts)
        try:
            result = None
            if gts is not None:
                result = batch_box_ious(lazy if whole is None else whole, gts, self.grid.thresholds, ids, workers,
                                        multi_contour=True, leakage=leak_in_kernel)
            else:
                assert whole is not None  # no GT boxes: no leakage in the kernel, so pixel work
                self.grid.check_range(whole, ids)
            mask_counts, shares = None, None
            if side is not None:
                mask_counts, shares = side.result()
            elif whole is not None:
                mask_counts, shares = self._pixel_metrics(whole, ids, masks, gts)
            if leak_in_kernel:
                assert result is not None and result.leakage is not None  # leak_in_kernel implies GT boxes
                shares = [self._leak.units(float(v), i) for v, i in zip(result.leakage, ids, strict=True)]
        finally:
            if side is not None:
                wait([side])  # never leave it running into the next batch
        if result is not None:
            top1_ok, top5_ok = _class_hits(classes, labels)
            self._single.add(result.single, top1_ok, top5_ok)
            self._multi.add(result.multi, top1_ok, top5_ok)
        if mask_counts is not None:
            self._mask_counts.merge(mask_counts)
            self.count_masks += len(ids)
        if shares is not None:
            self._leak.add_shares(shares)
        if classes is not None:
            self._cls.accumulate(classes, labels)
        self.count += len(ids)

    def _pixel_metrics(self, maps: np.ndarray, ids: list[str], masks: list[np.ndarray | None],
                       gts: list[np.ndarray] | None) -> tuple[_MaskCounts | None, list[int] | None]:
        """A batch's mask histograms and leakage shares, not yet added to the counters."""
        counts = None
        if masks[0] is not None:
            counts = _MaskCounts(self.grid.thresholds)
            for scoremap, mask in zip(maps, masks, strict=True):
                assert mask is not None  # a batch has masks for every image or for none
                counts.add(scoremap, mask)
        shares = None
        if self.boxes or masks[0] is not None:
            boxes = gts if gts is not None else [None] * len(ids)
            shares = [self._leak.share(m, i, mask, b) for m, i, mask, b in zip(maps, ids, masks, boxes, strict=True)]
        return counts, shares

    def merge(self, other: WSOLEvaluator) -> None:
        """Add another evaluator's counts: the shards of a split scored apart (DDP ranks, several
        processes) give the metrics of the whole split. Evaluators pickle, so they can be gathered."""
        if other.iou_thresholds != self.iou_thresholds or not np.array_equal(other.grid.thresholds,
                                                                                self.grid.thresholds):
            raise ValueError("cannot merge evaluators with different IoU or CAM thresholds")
        if (self._cls.count and other.count and not other._cls.count) or \
                (other._cls.count and self.count and not self._cls.count):
            raise ValueError("cannot merge evaluators with and without logits / top-k classes")
        self._single.merge(other._single)
        self._multi.merge(other._multi)
        self._mask_counts.merge(other._mask_counts)
        self._leak.merge(other._leak)
        self._cls.merge(other._cls)
        self.count += other.count
        self.count_masks += other.count_masks

    def compute(self, threshold: float | None = None) -> dict[str, Any]:
        """Flat, JSON-friendly metrics in percent. ``threshold``: where Top-1 / Top-5 / GT-known Loc
        are read (e.g. the val split's ``best_threshold["used"]``); default: this split's best."""
        if self.count == 0:
            raise ValueError("no score maps were accumulated")
        with_classes = self._cls.count > 0
        out: dict[str, Any] = {"num_images": self.count, "iou_thresholds": list(self.iou_thresholds)}
        out.update(self._cls.compute() if with_classes else {"top1_cls": None, "top5_cls": None})
        if self.boxes:
            single = self._single.report(self.grid, self.iou_thresholds, self.count, with_classes, threshold)
            multi = self._multi.report(self.grid, self.iou_thresholds, self.count, with_classes, None)
            out.update({key: single[key] for key in ("top1_loc", "top5_loc", "gt_known_loc", "top1_loc_oracle",
                                                     "top5_loc_oracle", "gt_known_loc_oracle")})
            out["max_box_acc"] = single["max_box_acc"]
            out["max_box_acc_v2"] = float(np.mean([self._multi.max_acc(iou, self.count) for iou in V2_IOU_THRESHOLDS]))
            out["max_box_acc_v2_per_iou"] = multi["max_box_acc"]
            out["best_threshold"] = single["best_threshold"]
            out["best_threshold_v2"] = {k: v for k, v in multi["best_threshold"].items() if k != "used"}
            out["box_acc_curve"] = single["box_acc_curve"]
            out["box_acc_curve_v2"] = multi["box_acc_curve"]
        if self.count_masks:
            out.update(self._mask_counts.report())
        else:
            out.update({"pxap": None, "piou": None, "piou_threshold": None})
        out["context_leakage"] = self._leak.compute()["context_leakage"] if self._leak.count else None
        return out
