"""The fast engine: best IoU per image and threshold for a batch of score maps, both contour modes.

The compiled kernel (:mod:`._kernels`, loaded by :mod:`._compiled`) answers almost every threshold;
the few it flags (a tie for the largest contour, inconclusive areas around holes, sparse thresholds
with holes) are answered by the plain ``cv2.findContours`` on that threshold's binary map, so the
result always equals the reference loop. Images are split over a thread pool in contiguous chunks: the kernel
releases the GIL.

The maps come as one array ``[B, H, W]``, or as a :class:`MapSource` that each worker reads from map by
map into a buffer of its own (saved CAM files: ``kdcicam score``). A source's map is scored while it is
still in the core's cache, and no batch of maps is ever held: reading 1,389 files into batch buffers
first cost a fifth of the command's CPU time (the copies, and the kernel zeroing the buffers' fresh
pages), more than the kernel's answer for a third of them.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Protocol, runtime_checkable

import numpy as np

from . import _compiled
from .boxes import ScoremapError

__all__ = ["BoxIoUs", "MapSource", "batch_box_ious", "default_workers", "invalid_maps", "read_all", "worker_pool"]


@runtime_checkable
class MapSource(Protocol):
    """Score maps read one at a time, on the thread that scores them (e.g. saved CAM files)."""

    #: (height, width) of every map
    shape: tuple[int, int]

    def __len__(self) -> int: ...

    def read_into(self, index: int, out: np.ndarray) -> None:
        """Fill ``out`` (float64, C order, ``shape``) with map ``index``; raise an error naming its source
        when it cannot be read. Values need not be checked: the kernel checks them."""

    def invalid(self, index: int) -> Exception:
        """The error for map ``index``, found by the kernel to hold NaN, inf or a value outside [0, 1]."""


def read_all(source: MapSource) -> np.ndarray:
    """A source's maps as one float64 array ``[B, H, W]`` (for the metrics that need them whole), every value
    checked: the first bad map in order is reported, unreadable (its read error) or holding NaN, inf or a value
    outside [0, 1] (``source.invalid``), as the kernel's workers report it."""
    maps = np.empty((len(source), *source.shape), dtype=np.float64)
    for i in range(len(source)):
        try:
            source.read_into(i, maps[i])
        except Exception:
            _raise_first_invalid(source, maps[:i])
            raise
    _raise_first_invalid(source, maps)
    return maps


def invalid_maps(maps: np.ndarray) -> np.ndarray:
    """Indices of the maps ``[B, ...]`` holding NaN, inf or a value outside [0, 1], in order."""
    if len(maps) == 0:
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(~((maps >= 0.0) & (maps <= 1.0)).reshape(len(maps), -1).all(axis=1))


def _raise_first_invalid(source: MapSource, maps: np.ndarray) -> None:
    bad = invalid_maps(maps)
    if bad.size:
        raise source.invalid(int(bad[0]))


def default_workers() -> int:
    """Cores this process may use (the thread pool's size)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def worker_pool(workers: int) -> ThreadPoolExecutor:
    """One long-lived pool per size: starting threads for every batch costs more than the work
    of a small batch."""
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kdcicam-eval")
        return pool


class BoxIoUs:
    """Per image and threshold, the best IoU of the single-contour box and of the multi-contour
    boxes (arrays ``[B, T]``), plus how many binary maps needed the plain contour tracing, and
    when asked, each map's context leakage against its GT boxes (``[B]``, else ``None``)."""

    def __init__(self, single: np.ndarray, multi: np.ndarray, traced: int, leakage: np.ndarray | None = None):
        self.single = single
        self.multi = multi
        self.traced = traced
        self.leakage = leakage


def _plain(q: np.ndarray, level: int, gt: np.ndarray, single: bool = True) -> tuple[float, float]:
    """Best IoU of the largest contour's box (0.0 unless ``single``) and of all contours' boxes,
    by findContours."""
    import cv2  # here: OpenCV's import (some 30 ms) is paid only when a map needs tracing, on a pool thread

    height, width = q.shape
    binary = cv2.threshold(q, level, 255, cv2.THRESH_BINARY)[1]
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if len(contours) == 0:
        iou = float(_compiled.best_ious(np.zeros((1, 4), dtype=np.int64), gt)[0])
        return iou, iou
    boxes = np.array([cv2.boundingRect(c) for c in contours], dtype=np.int64)  # x, y, w, h
    boxes[:, 2] = np.minimum(boxes[:, 0] + boxes[:, 2], width - 1)
    boxes[:, 3] = np.minimum(boxes[:, 1] + boxes[:, 3], height - 1)
    ious = _compiled.best_ious(boxes, gt)
    if not single:  # the areas are only needed to pick the single-contour box
        return 0.0, float(ious.max())
    largest = max(range(len(contours)), key=lambda i: cv2.contourArea(contours[i]))
    return float(ious[largest]), float(ious.max())


def _invalid(scoremap: np.ndarray, image_id: object) -> ScoremapError:
    if not np.isfinite(scoremap).all():
        return ScoremapError(image_id, "contains NaN or inf")
    return ScoremapError(image_id, f"values must lie in [0, 1], got min {scoremap.min():g}, "
                         f"max {scoremap.max():g} (min-max normalise it first)")


def batch_box_ious(scoremaps: np.ndarray | MapSource, gt_boxes: Sequence[np.ndarray], thresholds: np.ndarray,
                   image_ids: Sequence[object] | None = None, workers: int | None = None,
                   pool: ThreadPoolExecutor | None = None, multi_contour: bool = True,
                   single_contour: bool = True, leakage: bool = False) -> BoxIoUs:
    """Best IoU per image and threshold for score maps ``[B, H, W]`` (float, in [0, 1]; or a
    :class:`MapSource`) against each image's GT boxes ``[k, 4]`` on the same grid. Either mode can be left
    out, which is faster: ``multi_contour=False`` leaves ``multi`` unspecified (except where a threshold was
    traced), ``single_contour=False`` leaves ``single`` unresolved where it needs tracing. ``leakage``: also
    each map's share of mass outside its GT boxes (:func:`~.metrics.leakage`, in the same pass)."""
    source = scoremaps if isinstance(scoremaps, MapSource) else None
    if source is not None:
        maps = np.empty((0, *source.shape), dtype=np.float64)  # only its shape is read: maps come one by one
        b = len(source)
    else:
        maps = np.ascontiguousarray(scoremaps, dtype=np.float64)
        if maps.ndim != 3:
            raise ValueError(f"score maps must be [B, H, W], got shape {maps.shape}")
        b = maps.shape[0]
    if maps.shape[1] >= 1 << 15 or maps.shape[2] >= 1 << 15:
        raise ValueError(f"score maps up to 32767 x 32767 are supported, got {maps.shape[1:]}")
    if len(gt_boxes) != b:
        raise ValueError(f"{b} score maps but {len(gt_boxes)} GT box sets")
    thresholds = np.ascontiguousarray(thresholds, dtype=np.float64)
    nt = len(thresholds)
    gts = [np.asarray(g, dtype=np.int64).reshape(-1, 4) for g in gt_boxes]
    offsets = np.zeros(b + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(g) for g in gts])
    flat_gt = np.ascontiguousarray(np.concatenate(gts, axis=0) if b else np.zeros((0, 4), np.int64))
    single = np.zeros((b, nt), dtype=np.float64)
    multi = np.zeros((b, nt), dtype=np.float64)
    flags = np.zeros((b, nt), dtype=np.uint8)
    levels = np.zeros((b, nt), dtype=np.int64)
    valid = np.ones(b, dtype=np.bool_)
    leak = np.zeros(b, dtype=np.float64) if leakage else None
    read_errors: dict[int, Exception] = {}  # a source's maps that could not be read, by index

    ids = list(image_ids) if image_ids is not None else list(range(b))
    wanted = np.uint8((_compiled.FLAG_SINGLE if single_contour else 0) | (_compiled.FLAG_MULTI if multi_contour else 0))

    def trace(i: int, scoremap: np.ndarray, q: np.ndarray, hist: np.ndarray) -> int:
        """Answer image i's flagged thresholds with findContours; returns how many maps it traced."""
        _compiled.quantize(scoremap, q, hist)  # the kernel's grey image (quantize_scoremap, compiled)
        done: dict[int, tuple[float, float, bool]] = {}  # level -> (single IoU, multi IoU, single known)
        traced = 0
        for t in np.flatnonzero(flags[i] & wanted):
            level = int(levels[i, t])
            need_single = bool(flags[i, t] & wanted & _compiled.FLAG_SINGLE)
            if level not in done or (need_single and not done[level][2]):
                done[level] = (*_plain(q, level, gts[i], need_single), need_single)
                traced += 1
            if need_single:
                single[i, t] = done[level][0]
            if flags[i, t] & _compiled.FLAG_MULTI:
                multi[i, t] = done[level][1]
        return traced

    def run(first: int, stop: int) -> int:
        _compiled.batch_box_ious(maps, thresholds, flat_gt, offsets, first, stop, single, multi, flags,
                                levels, valid, multi_contour, leak)
        if not valid[first:stop].all():
            return 0  # reported below
        flagged = first + np.flatnonzero((flags[first:stop] & wanted).any(axis=1))
        if flagged.size == 0:
            return 0
        q = np.empty(maps.shape[1:], dtype=np.uint8)
        hist = np.empty((4, 256), dtype=np.int64)
        return sum(trace(int(i), maps[i], q, hist) for i in flagged)

    todo_lock = threading.Lock()
    first_bad = [b]  # the lowest index found unreadable or invalid so far: no worker scores beyond it

    def run_source(todo: Iterator[int]) -> int:
        """``run`` for a source, on the images this worker takes from ``todo`` (shared by the workers, in
        increasing order): each map read into this worker's buffer, scored (and traced) while it is there.
        A worker stops at an unreadable or invalid map, and every worker at an image after the lowest such
        one; the images handed out before it are still scored, so the earliest one is known below."""
        assert source is not None
        one = np.empty((1, *maps.shape[1:]), dtype=np.float64)
        q = np.empty(maps.shape[1:], dtype=np.uint8)
        hist = np.empty((4, 256), dtype=np.int64)
        base = np.zeros(2, dtype=np.int64)  # the image's GT boxes are flat_gt[offsets[i]:], base[1] of them
        traced = 0
        while True:
            with todo_lock:  # next() on a shared iterator: atomic only under the GIL
                i = next(todo, b)
            if i >= min(b, first_bad[0]):  # nothing left, or only images after a bad one (not reported)
                return traced
            try:
                source.read_into(i, one[0])
            except Exception as e:  # noqa: BLE001 - raised below, after earlier images are known to be valid
                read_errors[i] = e
                with todo_lock:
                    first_bad[0] = min(first_bad[0], i)
                return traced
            base[1] = offsets[i + 1] - offsets[i]
            _compiled.batch_box_ious(one, thresholds, flat_gt[offsets[i]:], base, 0, 1, single[i:i + 1],
                                     multi[i:i + 1], flags[i:i + 1], levels[i:i + 1], valid[i:i + 1], multi_contour,
                                     None if leak is None else leak[i:i + 1])
            if not valid[i]:
                with todo_lock:
                    first_bad[0] = min(first_bad[0], i)
                return traced
            if (flags[i] & wanted).any():
                traced += trace(i, one[0], q, hist)

    workers = default_workers() if workers is None else max(1, int(workers))
    if source is not None:
        # one map at a time from a shared counter: no worker idles while another finishes a chunk
        todo = iter(range(b))
        if workers == 1 or b < 2:
            traced = run_source(todo)
        else:
            executor = pool or worker_pool(workers)
            running = [executor.submit(run_source, todo) for _ in range(min(workers, b))]
            wait(running)  # all done before any error is raised: none runs on into the next call
            traced = sum(f.result() for f in running)
    else:
        # a few chunks per worker, so that one slow chunk does not leave a core idle (chunks of 2 images
        # measured 5-8 % more CPU on a loaded 2-core machine: each chunk's Python and work buffers)
        chunks = min(b, 1 if workers == 1 else 4 * workers)
        if chunks <= 1:
            traced = run(0, b)
        else:
            bounds = np.linspace(0, b, chunks + 1).astype(int)
            traced = sum((pool or worker_pool(workers)).map(run, bounds[:-1], bounds[1:]))

    bad = sorted([*read_errors, *np.flatnonzero(~valid).tolist()])
    if bad:
        i = bad[0]
        if i in read_errors:
            raise read_errors[i]
        raise _invalid(maps[i], ids[i]) if source is None else source.invalid(i)
    return BoxIoUs(single, multi, traced, leak)
