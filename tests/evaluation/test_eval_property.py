"""The fast evaluator equals the plain per-threshold findContours loop, exactly, on many maps:
smooth blobs, flat maps, rings (holes), several blobs, few grey levels (ties), pixel noise."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from _eval_helpers import make_metadata
from hypothesis import given, settings
from hypothesis import strategies as st

from kdcicam.evaluation import BoxEvaluator, batch_box_ious, scoremap_to_boxes, threshold_list
from kdcicam.evaluation.reference import ReferenceBoxEvaluator, reference_best_ious, reference_boxes

KINDS = ("smooth", "flat", "rings", "blobs", "levels", "noise", "sparse")


def make_map(kind: str, seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == "smooth":
        low = int(rng.integers(2, 8))
        m = cv2.resize(rng.random((low, low)), (w, h), interpolation=cv2.INTER_CUBIC)
    elif kind == "flat":
        return np.full((h, w), float(rng.choice([0.0, 1.0, rng.random()])))
    elif kind == "rings":
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = np.hypot(yy - cy, xx - cx)
        m = np.cos(r / rng.uniform(0.8, 4.0)) + 0.3 * rng.random((h, w))
    elif kind == "blobs":
        m = np.zeros((h, w))
        for _ in range(int(rng.integers(2, 6))):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            s = rng.uniform(0.5, max(h, w) / 3)
            m += rng.uniform(0.2, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    elif kind == "levels":
        m = np.floor(rng.random((h, w)) * int(rng.integers(2, 5))) / 4
        if rng.random() < 0.5:
            m = cv2.resize(np.floor(rng.random((4, 4)) * 3), (w, h), interpolation=cv2.INTER_NEAREST) / 2
    elif kind == "sparse":
        m = (rng.random((h, w)) < 0.1) * rng.choice([0.5, 1.0], size=(h, w))
    else:
        m = rng.random((h, w))
    m = m - m.min()
    return m / m.max() if m.max() > 0 else m


def gt_boxes(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        x0, x1 = sorted(rng.integers(0, w, 2))
        y0, y1 = sorted(rng.integers(0, h, 2))
        boxes.append([x0, y0, x1, y1])
    return np.array(boxes, dtype=np.int64)


maps = st.tuples(st.sampled_from(KINDS), st.integers(0, 2**31 - 1), st.integers(1, 40), st.integers(1, 40))
intervals = st.sampled_from([0.01, 0.05, 0.2, 0.003])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(maps, min_size=1, max_size=3), intervals)
def test_fast_equals_reference_per_threshold(specs, interval):
    thresholds = threshold_list(interval)
    for kind, seed, h, w in specs:
        scoremap = make_map(kind, seed, h, w)
        gt = gt_boxes(seed, h, w)
        fast = batch_box_ious(scoremap[None], [gt], thresholds, workers=1)
        want_single = reference_best_ious(scoremap, gt, thresholds, False)
        assert np.array_equal(fast.single[0], want_single), (kind, seed)
        assert np.array_equal(fast.multi[0], reference_best_ious(scoremap, gt, thresholds, True)), (kind, seed)
        # the single-contour mode alone stops its pass where the answer is settled for every lower threshold
        alone = batch_box_ious(scoremap[None], [gt], thresholds, workers=1, multi_contour=False)
        assert np.array_equal(alone.single[0], want_single), (kind, seed)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.sampled_from(KINDS), st.integers(0, 2**31 - 1), st.integers(3, 30), st.integers(3, 30), st.booleans())
def test_boxes_equal_reference_boxes(kind, seed, h, w, multi):
    """scoremap_to_boxes traces each distinct binary map once; boxes and their order stay the same."""
    scoremap = make_map(kind, seed, h, w)
    thresholds = threshold_list(0.01)
    fast = scoremap_to_boxes(scoremap, thresholds, multi)
    ref = reference_boxes(scoremap, thresholds, multi)
    assert [b.tolist() for b in fast] == [b.tolist() for b in ref]


@settings(max_examples=20, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 2**31 - 1)), min_size=2, max_size=6),
       st.booleans(), st.sampled_from([(24, 24), (31, 17)]))
def test_box_evaluator_equals_reference_evaluator(specs, multi, size):
    """Whole evaluator (GT rescaled from odd original sizes, several batches, thread pool) against
    the plain per-image evaluator: the same MaxBoxAcc and the same curves, bit for bit."""
    w, h = size
    rng = np.random.default_rng(len(specs))
    ids = [f"img{i}.jpg" for i in range(len(specs))]
    sizes = {i: (int(rng.integers(20, 500)), int(rng.integers(20, 500))) for i in ids}
    boxes = {}
    for i in ids:
        iw, ih = sizes[i]
        x0, x1 = sorted(rng.uniform(0, iw, 2))
        y0, y1 = sorted(rng.uniform(0, ih, 2))
        boxes[i] = [(round(x0), round(y0), round(x1) + 1, round(y1) + 1)]
        boxes[i] = [tuple(min(v, lim) for v, lim in zip(boxes[i][0], (iw, ih, iw, ih), strict=True))]
    metadata = make_metadata(boxes=boxes, sizes=sizes)
    fast = BoxEvaluator(metadata, cam_size=(w, h), multi_contour=multi, workers=2)
    ref = ReferenceBoxEvaluator(metadata, cam_size=(w, h), multi_contour=multi)
    scoremaps = np.stack([make_map(kind, seed, h, w) for kind, seed in specs])
    for first in range(0, len(ids), 4):
        fast.accumulate(scoremaps[first:first + 4], ids[first:first + 4])
    for scoremap, image_id in zip(scoremaps, ids, strict=True):
        ref.accumulate(scoremap, image_id)
    result = fast.compute()
    assert [result["max_box_acc"][str(i)] for i in (30, 50, 70)] == ref.compute()
    for iou, curve in ref.curves().items():
        assert result["box_acc_curve"][str(iou)] == curve.tolist()


@settings(max_examples=15, deadline=None, derandomize=True)
@given(st.integers(0, 2**31 - 1), st.integers(1, 3), st.sampled_from(["hole", "around_hole", "plateau"]))
def test_holes_beyond_the_background_pass_are_traced(seed, holes, gt_kind):
    """224 x 224 maps whose holes sit in a small high plateau: the background pass would have to
    sweep almost the whole map to reach them, so the kernel flags those thresholds and the engine
    traces them with findContours. The answers still equal the plain loop's, hole boxes included
    (``gt_kind="hole"``: the GT box is a hole's contour box, so the hole decides MaxBoxAccV2;
    ``"around_hole"``: a box inside the plateau around it). With the plateau's own box as GT
    (``"plateau"``) no hole can beat the plateau's box (a hole's box lies inside it), so nothing is
    traced for the holes, and the answers are the same."""
    rng = np.random.default_rng(seed)
    scoremap = np.tile(np.linspace(0.1, 0.2, 224), (224, 1))  # a ramp: no holes of its own
    y0, x0 = (int(v) for v in rng.integers(10, 120, 2))
    size = int(rng.integers(30, 90))
    top = rng.uniform(0.8, 1.0)
    scoremap[y0:y0 + size, x0:x0 + size] = top
    hole_boxes = []
    for _ in range(holes):
        hy, hx = (int(v) for v in rng.integers(3, size - 8, 2))
        hh, hw = (int(v) for v in rng.integers(1, 5, 2))
        # shallow: the holes live at the top threshold only (0.99; their value normalises to 0.981-0.988),
        # cheaper to trace once than to sweep to
        scoremap[y0 + hy:y0 + hy + hh, x0 + hx:x0 + hx + hw] = top * rng.uniform(0.981, 0.988)
        hole_boxes.append([x0 + hx - 1, y0 + hy - 1, x0 + hx + hw + 1, y0 + hy + hh + 1])  # contour's box
    scoremap /= scoremap.max()
    hx0, hy0, hx1, hy1 = hole_boxes[0]
    gt = np.array({"hole": [hole_boxes[0]],
                   "around_hole": [[max(hx0 - 2, x0), max(hy0 - 2, y0), min(hx1 + 2, x0 + size - 1),
                                    min(hy1 + 2, y0 + size - 1)]],
                   "plateau": [[x0, y0, x0 + size, y0 + size]]}[gt_kind], dtype=np.int64)
    thresholds = threshold_list(0.01)
    fast = batch_box_ious(scoremap[None], [gt], thresholds, workers=1)
    if gt_kind == "plateau":
        assert fast.traced == 0  # the holes could not matter: neither swept to nor traced
    else:
        assert fast.traced > 0  # the flagged branch ran
    assert np.array_equal(fast.multi[0], reference_best_ious(scoremap, gt, thresholds, True))
    assert np.array_equal(fast.single[0], reference_best_ious(scoremap, gt, thresholds, False))
    if gt_kind == "hole" and holes == 1:
        assert fast.multi[0].max() == 1.0  # the hole's contour box is the GT box


@pytest.mark.parametrize("gt_on_a_blob", [False, True])
def test_tied_components_are_traced_only_when_their_boxes_score_apart(gt_on_a_blob):
    """Two blobs of the same shape and height tie for the largest contour, which only findContours'
    order decides; when both boxes score the same IoU (0: the GT box is elsewhere) the single-contour
    answer is known without it, else the threshold is traced. Either way it equals the plain loop's."""
    scoremap = np.tile(np.linspace(0.0, 0.3, 96), (96, 1))
    scoremap[10:30, 12:40] = 0.9
    scoremap[60:80, 50:78] = 0.9
    gt = np.array([[14, 12, 36, 28]] if gt_on_a_blob else [[80, 2, 94, 12]], dtype=np.int64)
    thresholds = threshold_list(0.01)
    fast = batch_box_ious(scoremap[None], [gt], thresholds, workers=1)
    assert (fast.traced > 0) == gt_on_a_blob
    assert np.array_equal(fast.single[0], reference_best_ious(scoremap, gt, thresholds, False))
    assert np.array_equal(fast.multi[0], reference_best_ious(scoremap, gt, thresholds, True))


def _plain_mask_metrics(maps: list[np.ndarray], masks: list[np.ndarray], thresholds: np.ndarray) -> tuple[float, float]:
    """PxAP by the plain histogram formula and PIoU by counting pixels at every threshold."""
    from kdcicam.evaluation.reference import reference_pxap

    ious = []
    for t in thresholds:
        tp = sum(int(((m >= t) & (g == 1)).sum()) for m, g in zip(maps, masks, strict=True))
        fp = sum(int(((m >= t) & (g == 0)).sum()) for m, g in zip(maps, masks, strict=True))
        fn = sum(int(((m < t) & (g == 1)).sum()) for m, g in zip(maps, masks, strict=True))
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else 0.0)
    return reference_pxap(maps, masks, thresholds[1] - thresholds[0]), max(ious) * 100


@settings(max_examples=20, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 2**31 - 1)), min_size=2, max_size=7),
       st.sampled_from([(24, 24), (31, 17)]), st.sampled_from([0.01, 0.05]))
def test_wsol_evaluator_equals_plain_metrics(specs, size, interval):
    """The combined evaluator (what ``kdcicam evaluate`` and ``kdcicam score`` run) against plain
    computations of every metric: MaxBoxAcc and its best thresholds, GT-known / Top-1 / Top-5 Loc,
    MaxBoxAccV2 (multi-contour, mean over IoU 30/50/70), Top-1 / Top-5 Cls, PxAP and PIoU."""
    from kdcicam.evaluation import WSOLEvaluator

    w, h = size
    rng = np.random.default_rng(len(specs) * 7 + w)
    ids = [f"img{i}.jpg" for i in range(len(specs))]
    sizes = {i: (int(rng.integers(20, 400)), int(rng.integers(20, 400))) for i in ids}
    boxes = {}
    for i in ids:
        iw, ih = sizes[i]
        x0, x1 = sorted(int(v) for v in rng.integers(0, iw + 1, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, ih + 1, 2))
        boxes[i] = [(x0, y0, x1, y1)]
    labels = {i: int(rng.integers(0, 8)) for i in ids}
    metadata = make_metadata(boxes=boxes, sizes=sizes, labels=labels)
    maps = [make_map(kind, seed, h, w) for kind, seed in specs]
    masks = [(make_map("blobs", seed + 1, h, w) > 0.5).astype(np.uint8) for _, seed in specs]
    for m in masks:
        m[rng.random((h, w)) < 0.05] = 255  # ignored pixels count nowhere
    logits = rng.normal(size=(len(ids), 8))

    ev = WSOLEvaluator(metadata, cam_size=(w, h), cam_curve_interval=interval, workers=2)
    for first in range(0, len(ids), 3):
        part = slice(first, first + 3)
        ev.accumulate(np.stack(maps[part]), ids[part], logits[part], np.stack(masks[part]))
    out = ev.compute()

    thresholds = threshold_list(interval)
    single = ReferenceBoxEvaluator(metadata, cam_size=(w, h), cam_curve_interval=interval)
    multi = ReferenceBoxEvaluator(metadata, cam_size=(w, h), multi_contour=True, cam_curve_interval=interval)
    best50 = np.stack([single.accumulate(m, i) for m, i in zip(maps, ids, strict=True)])[:, :] >= 0.5
    for m, i in zip(maps, ids, strict=True):
        multi.accumulate(m, i)
    curves = single.curves()
    assert [out["max_box_acc"][str(k)] for k in (30, 50, 70)] == single.compute()
    for k, curve in curves.items():
        assert out["box_acc_curve"][str(k)] == curve.tolist()
        assert out["best_threshold"][str(k)] == float(thresholds[int(np.argmax(curve))])
    assert out["max_box_acc_v2"] == float(np.mean(multi.compute()))
    assert [out["max_box_acc_v2_per_iou"][str(k)] for k in (30, 50, 70)] == multi.compute()

    best = int(np.argmax(curves[50]))
    order = np.argsort(-logits, axis=1, kind="stable")
    truth = np.array([labels[i] for i in ids])
    top1 = order[:, 0] == truth
    top5 = (order[:, :5] == truth[:, None]).any(axis=1)
    n = len(ids)
    assert out["gt_known_loc"] == float(curves[50][best])
    assert out["top1_loc"] == float((best50[:, best] & top1).sum() * 100.0 / n)
    assert out["top5_loc"] == float((best50[:, best] & top5).sum() * 100.0 / n)
    assert out["top1_cls"] == top1.sum() * 100.0 / n and out["top5_cls"] == top5.sum() * 100.0 / n

    pxap, piou = _plain_mask_metrics(maps, masks, thresholds)
    assert out["pxap"] == pytest.approx(pxap, abs=1e-9)
    assert out["piou"] == pytest.approx(piou, abs=1e-9)


def _frame_map(seed: int, h: int, w: int) -> np.ndarray:
    """A plateau over the whole grid at a middle value, with high islands, a high ring (a hole) and low
    pits (components that appear only at lower thresholds, once the plateau spans the grid)."""
    rng = np.random.default_rng(seed)
    m = np.full((h, w), 0.5) + 0.05 * rng.random((h, w))
    for _ in range(int(rng.integers(1, 4))):
        y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        m[y:y + int(rng.integers(2, 8)), x:x + int(rng.integers(2, 8))] = rng.uniform(0.7, 1.0)
    y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
    m[y:y + 7, x:x + 7] = 0.9
    m[y + 2:y + 5, x + 2:x + 5] = 0.3  # the ring's hole
    for _ in range(int(rng.integers(0, 6))):
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        m[y:y + 3, x:x + 3] = rng.uniform(0.0, 0.4)
    if rng.random() < 0.5:
        m[0, :] = 0.45  # the frame's first row enters later
    return (m - m.min()) / (m.max() - m.min())


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(0, 2**31 - 1), st.integers(10, 40), st.integers(10, 40), intervals)
def test_settled_single_contour_answers_equal_reference(seed, h, w, interval):
    """Maps whose largest component spans the grid while other components still appear below: the
    single-contour pass, stopped where the answer is settled, equals the plain loop at every threshold."""
    scoremap = _frame_map(seed, h, w)
    thresholds = threshold_list(interval)
    gt = gt_boxes(seed, h, w)
    alone = batch_box_ious(scoremap[None], [gt], thresholds, workers=1, multi_contour=False)
    assert np.array_equal(alone.single[0], reference_best_ious(scoremap, gt, thresholds, False)), seed


def test_the_single_contour_pass_stops_early_on_cam_like_maps():
    """The stop is taken (the thresholds below it are filled, not computed: their hole counts are left as
    they were), and the answers are the plain loop's."""
    from _eval_helpers import smooth_map

    from kdcicam.evaluation import _kernels

    rng = np.random.default_rng(7)
    thresholds = threshold_list(0.01)
    stopped = 0
    for _ in range(6):
        scoremap = smooth_map(rng, size=64)
        gt = gt_boxes(int(rng.integers(0, 1000)), 64, 64)
        q = np.empty((64, 64), dtype=np.uint8)
        hist = np.empty((4, 256), dtype=np.int64)
        top = _kernels.quantize(scoremap, q, hist)
        levels = _kernels.threshold_levels(top, thresholds)
        ws = _kernels.workspace(64, 64)
        start = _kernels._band_order(q, hist, levels, ws[2], ws[0], ws[3])
        nt = len(thresholds)
        single, multi = np.zeros(nt), np.zeros(nt)
        flags, holes, need = np.zeros(nt, np.uint8), np.full(nt, -1, np.int64), np.zeros(nt, np.uint8)
        _kernels._foreground_pass(q.shape, ws[2], start, gt, single, multi, flags, holes, need, ws, False)
        stopped += int(holes[0] == -1)
        assert np.array_equal(single, reference_best_ious(scoremap, gt, thresholds, False))
    assert stopped >= 3
