"""Evaluators: what they report, how thresholds and classes are applied, masks, leakage, input errors."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from _eval_helpers import make_metadata, smooth_map

from kdcicam.evaluation import (
    BoxEvaluator,
    ClassificationAccuracy,
    ContextLeakage,
    MaskEvaluator,
    ScoremapError,
    WSOLEvaluator,
    leakage,
    load_gt_mask,
    normalize_scoremap,
    prepare_scoremap,
    topk_from,
)
from kdcicam.evaluation.reference import ReferenceBoxEvaluator, reference_pxap


def box_map(box: tuple[int, int, int, int], size: int = 224) -> np.ndarray:
    """1 inside an inclusive box, 0 outside: its box at every threshold > 0 is the box itself
    (x1/y1 as ``boundingRect`` gives them: one past the last pixel, clipped to the grid)."""
    m = np.zeros((size, size))
    x0, y0, x1, y1 = box
    m[y0:y1 + 1, x0:x1 + 1] = 1.0
    return m


@pytest.fixture
def four_images():
    """Four 448 x 448 images, one GT box each; maps that find the box exactly on the 224 grid."""
    ids = [f"c{i}/img{i}.jpg" for i in range(4)]
    boxes = {i: [(40.0 + 20 * k, 60.0, 300.0 + 10 * k, 380.0)] for k, i in enumerate(ids)}
    md = make_metadata(boxes=boxes, sizes={i: (448, 448) for i in ids}, labels={i: k for k, i in enumerate(ids)})
    maps = np.stack([box_map((20 + 10 * k, 30, 150 + 5 * k - 1, 190 - 1)) for k in range(4)])
    return md, ids, maps


def test_box_evaluator_reports_and_perfect_maps(four_images):
    md, ids, maps = four_images
    ev = BoxEvaluator(md)
    ev.accumulate(maps, ids)
    out = ev.compute()
    assert out["num_images"] == 4 and out["multi_contour"] is False
    assert out["max_box_acc"] == {"30": 100.0, "50": 100.0, "70": 100.0}
    assert out["gt_known_loc"] == 100.0 and out["top1_loc"] is None
    curve = out["box_acc_curve"]
    assert len(curve["thresholds"]) == 100 and curve["thresholds"][1] == np.arange(0, 1, 0.01)[1]
    assert out["best_threshold"]["50"] == curve["thresholds"][int(np.argmax(curve["50"]))]
    assert out["best_threshold"]["used"] == out["best_threshold"]["50"]


def test_threshold_from_val_is_applied(four_images):
    rng = np.random.default_rng(5)
    md, ids, _ = four_images
    maps = np.stack([smooth_map(rng) for _ in ids])
    ev = BoxEvaluator(md)
    ev.accumulate(maps, ids)
    curve = ev.compute()["box_acc_curve"]["50"]
    at = ev.compute(threshold=0.37)
    assert at["best_threshold"]["used"] == pytest.approx(0.37)
    assert at["gt_known_loc"] == curve[37]
    assert at["gt_known_loc_oracle"] == max(curve)
    with pytest.raises(ValueError, match="not on the evaluated grid"):
        ev.compute(threshold=0.375)


def test_top1_top5_loc(four_images):
    md, ids, maps = four_images
    # labels are 0..3; top-1 right for images 0 and 1, the label in the top-5 for 0, 1, 2
    topk = np.array([[0, 9, 9, 9, 9], [1, 0, 2, 3, 4], [5, 2, 7, 8, 9], [6, 7, 8, 9, 10]])
    ev = BoxEvaluator(md)
    ev.accumulate(maps[:2], ids[:2], topk[:2])
    ev.accumulate(maps[2:], ids[2:], topk[2:])
    out = ev.compute()
    assert (out["top1_loc"], out["top5_loc"], out["gt_known_loc"]) == (50.0, 75.0, 100.0)
    with pytest.raises(ValueError, match="every batch or for none"):
        ev.accumulate(maps[:1], ids[:1])


def test_topk_from_logits_and_classes():
    logits = np.array([[0.1, 0.9, 0.5], [2.0, 2.0, -1.0]])
    assert topk_from(logits, 2).tolist() == [[1, 2, 0], [0, 1, 2]]  # ties: lower class first
    assert topk_from(np.array([[3, 1], [2, 0]]), 2).tolist() == [[3, 1], [2, 0]]
    with pytest.raises(ValueError):
        topk_from(np.ones((3, 4)), 2)


def test_nan_logits_are_a_clear_error_naming_the_image():
    from kdcicam.errors import KdcicamError

    logits = np.array([[0.1, 0.9], [np.nan, 0.0]])
    with pytest.raises(KdcicamError, match=r"'b\.png'.*NaN or inf"):
        topk_from(logits, 2, ids=["a.png", "b.png"])


def test_multi_contour_sees_every_blob():
    """Object B is the smaller, dimmer blob: the largest contour is always A, but multi-contour
    evaluation also boxes B."""
    md = make_metadata(boxes={"a.jpg": [(150, 150, 189, 189)]})
    m = np.zeros((224, 224))
    m[10:70, 10:70] = 1.0
    m[150:190, 150:190] = 0.9
    single, multi = BoxEvaluator(md), BoxEvaluator(md, multi_contour=True)
    single.accumulate(m[None], ["a.jpg"])
    multi.accumulate(m[None], ["a.jpg"])
    assert single.compute()["max_box_acc"] == {"30": 0.0, "50": 0.0, "70": 0.0}
    assert multi.compute()["max_box_acc"] == {"30": 100.0, "50": 100.0, "70": 100.0}
    assert multi.compute()["best_threshold"]["70"] == 0.0


def test_input_errors_name_the_image(four_images):
    md, ids, maps = four_images
    ev = BoxEvaluator(md)
    with pytest.raises(ScoremapError, match="expected \\(224, 224\\)"):
        ev.accumulate(maps[:, :100], ids)
    with pytest.raises(ScoremapError, match=r"nope\.jpg"):
        ev.accumulate(maps[:1], ["nope.jpg"])
    with pytest.raises(ScoremapError, match="floating"):
        ev.accumulate(maps.astype(np.int64), ids)
    bad = maps.copy()
    bad[2, 5, 5] = np.nan
    with pytest.raises(ScoremapError, match=r"c2/img2\.jpg.*NaN"):
        ev.accumulate(bad, ids)
    bad[2, 5, 5] = 1.5
    with pytest.raises(ScoremapError, match=r"c2/img2\.jpg.*\[0, 1\]"):
        ev.accumulate(bad, ids)
    with pytest.raises(ValueError):
        BoxEvaluator(md, iou_thresholds=(0, 50))


def test_float32_maps_score_like_float64(four_images):
    rng = np.random.default_rng(9)
    md, ids, _ = four_images
    maps = np.stack([smooth_map(rng) for _ in ids]).astype(np.float32)
    a, b = BoxEvaluator(md), ReferenceBoxEvaluator(md)
    a.accumulate(maps, ids)
    for m, i in zip(maps, ids, strict=True):
        b.accumulate(m.astype(np.float64), i)
    assert [a.compute()["max_box_acc"][k] for k in ("30", "50", "70")] == b.compute()


def test_wsol_evaluator_matches_the_single_evaluators(four_images):
    rng = np.random.default_rng(11)
    md, ids, _ = four_images
    maps = np.stack([smooth_map(rng) for _ in ids])
    logits = rng.normal(size=(4, 4))
    ev = WSOLEvaluator(md)
    ev.accumulate(maps[:3], ids[:3], logits[:3])
    ev.accumulate(maps[3:], ids[3:], logits[3:])
    out = ev.compute()
    single, multi = BoxEvaluator(md), BoxEvaluator(md, multi_contour=True)
    single.accumulate(maps, ids, logits)
    multi.accumulate(maps, ids, logits)
    s, m = single.compute(), multi.compute()
    assert out["max_box_acc"] == s["max_box_acc"] and out["box_acc_curve"] == s["box_acc_curve"]
    assert out["max_box_acc_v2_per_iou"] == m["max_box_acc"]
    assert out["max_box_acc_v2"] == pytest.approx(np.mean(list(m["max_box_acc"].values())), abs=0)
    assert (out["top1_loc"], out["top5_loc"], out["gt_known_loc"]) == (s["top1_loc"], s["top5_loc"], s["gt_known_loc"])
    cls = ClassificationAccuracy()
    cls.accumulate(logits, [0, 1, 2, 3])
    assert out["top1_cls"] == cls.compute()["top1_cls"] and out["top5_cls"] == 100.0
    assert out["pxap"] is None and 0.0 <= out["context_leakage"] <= 100.0
    for key in ("best_threshold", "best_threshold_v2", "box_acc_curve_v2", "num_images", "piou"):
        assert key in out


def test_masks_pxap_piou_and_leakage_from_files(tmp_path: Path):
    rng = np.random.default_rng(3)
    ids = ["a.jpg", "b.jpg"]
    truth = {}
    for k, image_id in enumerate(ids):
        labels = np.zeros((448, 448), dtype=np.uint8)  # files at twice the grid: nearest resize
        labels[100 + 20 * k:300, 80:260] = 1
        cv2.imwrite(str(tmp_path / f"{k}.png"), labels * 255)
        ignore = np.zeros_like(labels)
        ignore[60:340, 40:300] = 255  # a band around the object is ignored
        cv2.imwrite(str(tmp_path / f"{k}_ignore.png"), ignore)
        truth[image_id] = cv2.resize(labels, (224, 224), interpolation=cv2.INTER_NEAREST)
        truth[image_id][(cv2.resize(ignore, (224, 224), interpolation=cv2.INTER_NEAREST) > 0)
                        & (truth[image_id] == 0)] = 255
    md = make_metadata(masks={i: [f"{k}.png"] for k, i in enumerate(ids)},
                       ignore={i: f"{k}_ignore.png" for k, i in enumerate(ids)}, image_root=tmp_path,
                       sizes={i: (448, 448) for i in ids})
    maps = np.stack([smooth_map(rng) for _ in ids])
    ev = MaskEvaluator(md)
    ev.accumulate(maps, ids)
    assert ev.mask("b.jpg").tolist() == truth["b.jpg"].tolist()
    assert ev.compute()["pxap"] == pytest.approx(reference_pxap(list(maps), [truth[i] for i in ids]), abs=1e-9)
    # the same masks given by the caller
    given = MaskEvaluator(md)
    given.accumulate(maps, ids, gt_masks=np.stack([truth[i] for i in ids]))
    assert given.compute() == ev.compute()
    # WSOLEvaluator: masks found automatically, leakage against the mask with the ignore band left out
    wsol = WSOLEvaluator(md)
    wsol.accumulate(maps, ids)
    out = wsol.compute()
    assert out["pxap"] == ev.compute()["pxap"] and "max_box_acc" not in out
    expected = np.mean([leakage(maps[k], truth[i] == 1, truth[i] == 255) for k, i in enumerate(ids)]) * 100
    assert out["context_leakage"] == pytest.approx(expected)


def test_piou_on_a_perfect_map():
    md = make_metadata(masks={"a.jpg": ["a.png"]})
    mask = np.zeros((224, 224), dtype=np.uint8)
    mask[:, :112] = 1
    ev = MaskEvaluator(md)
    ev.accumulate(mask[None].astype(np.float64), ["a.jpg"], gt_masks=mask[None])
    out = ev.compute()
    assert out["pxap"] == 100.0 and out["piou"] == 100.0
    assert out["piou_threshold"] == np.arange(0, 1, 0.01)[1]  # t = 0 keeps every pixel: IoU 0.5


def test_leakage_on_hand_made_maps():
    region = np.zeros((10, 10), dtype=bool)
    region[2:5, 2:6] = True  # 12 object pixels, 88 outside
    inside = region.astype(np.float64)
    assert leakage(inside, region) == 0.0
    assert leakage(1.0 - inside, region) == 1.0
    assert leakage(np.full((10, 10), 0.3), region) == pytest.approx(88 / 100)  # flat: uniform
    half = inside + 0.5 * ~region  # min-max normalised: 1 inside, 0 outside
    assert leakage(half, region) == 0.0
    ramp = np.zeros((10, 10))
    ramp[0, 0] = 1.0
    ramp[3, 3] = 3.0
    assert leakage(ramp, region) == pytest.approx(1.0 / 4.0)
    ignore = np.zeros_like(region)
    ignore[0, 0] = True
    assert leakage(ramp, region, ignore) == 0.0


def test_compiled_leakage_equals_the_definition():
    """ContextLeakage's compiled pass against :func:`leakage` (numpy), with masks (ignored pixels
    left out), with boxes, and on flat maps."""
    from kdcicam.evaluation import _kernels

    rng = np.random.default_rng(11)
    for k in range(30):
        m = smooth_map(rng, size=48) if k % 5 else np.full((48, 48), rng.random())
        mask = (rng.random((48, 48)) < 0.4).astype(np.uint8)
        mask[rng.random((48, 48)) < 0.1] = 255
        got = _kernels.leakage_share(m, mask)
        assert got == pytest.approx(leakage(m, mask == 1, mask == 255), rel=1e-12, abs=1e-15)
    md = make_metadata(boxes={"a.jpg": [(3, 4, 20, 30), (15, 2, 40, 10)]}, sizes={"a.jpg": (48, 48)})
    ev = ContextLeakage(md, cam_size=48)
    ev.accumulate(m[None], ["a.jpg"])
    region = np.zeros((48, 48), bool)
    region[4:31, 3:21] = region[2:11, 15:41] = True
    assert ev.compute()["context_leakage"] == pytest.approx(leakage(m, region) * 100, rel=1e-12)


def test_context_leakage_uses_boxes_without_masks():
    md = make_metadata(boxes={"a.jpg": [(0, 0, 111, 223)]}, sizes={"a.jpg": (224, 224)})
    m = np.zeros((224, 224))
    m[:, :112] = 1.0
    m[:, 112:] = 0.25
    ev = ContextLeakage(md)
    ev.accumulate(np.stack([m, np.fliplr(m)]), ["a.jpg", "a.jpg"])
    # image 1: normalised outside mass 0 ; image 2: all mass outside -> 100 ; mean 50
    assert ev.compute()["context_leakage"] == pytest.approx(50.0)


def test_classification_accuracy():
    acc = ClassificationAccuracy()
    acc.accumulate(np.array([[5.0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 9]]), [0, 1])
    acc.accumulate(np.array([[1], [2]]), [1, 3])
    assert acc.compute() == {"top1_cls": 50.0, "top5_cls": 75.0}


def test_normalize_and_prepare_scoremap():
    cam = np.array([[1.0, 3.0], [5.0, 2.0]])
    out = normalize_scoremap(cam)
    assert out.tolist() == [[0.0, 0.5], [1.0, 0.25]] and cam[0, 1] == 3.0  # input untouched
    assert (normalize_scoremap(np.full((3, 3), 7.0)) == 0).all()
    assert (normalize_scoremap(np.array([[np.nan, 1.0]])) == 0).all()
    low = np.random.default_rng(0).random((7, 7))
    prepared = prepare_scoremap(low, 224)
    expected = cv2.resize(low, (224, 224), interpolation=cv2.INTER_CUBIC)
    expected = (expected - expected.min()) / (expected - expected.min()).max()
    assert prepared.shape == (224, 224) and np.array_equal(prepared, expected)
    assert prepare_scoremap(low, (32, 16)).shape == (16, 32)


def test_load_gt_mask_merges_instances_and_ignore(tmp_path: Path):
    a = np.zeros((20, 20), dtype=np.uint8)
    a[:10, :10] = 255
    b = np.zeros_like(a)
    b[10:, 10:] = 255
    ig = np.zeros_like(a)
    ig[:, :15] = 255
    for name, img in (("a", a), ("b", b), ("ig", ig)):
        cv2.imwrite(str(tmp_path / f"{name}.png"), img)
    mask = load_gt_mask([str(tmp_path / "a.png"), str(tmp_path / "b.png")], str(tmp_path / "ig.png"), 20)
    assert set(np.unique(mask)) == {0, 1, 255}
    assert (mask[:10, :10] == 1).all() and (mask[10:, 10:] == 1).all()
    assert (mask[10:, :10] == 255).all() and (mask[:10, 15:] == 0).all()
    with pytest.raises(Exception, match=r"missing\.png"):
        load_gt_mask([str(tmp_path / "missing.png")], None, 20)


def test_counters_do_not_grow(four_images):
    md, ids, maps = four_images
    ev = WSOLEvaluator(md)
    ev.accumulate(maps, ids)
    sizes = [a.nbytes for a in (ev._single.correct, ev._multi.correct, ev._mask_counts.fg)]
    for _ in range(3):
        ev.accumulate(maps, ids)
    assert [a.nbytes for a in (ev._single.correct, ev._multi.correct, ev._mask_counts.fg)] == sizes
    assert ev.compute()["num_images"] == 16


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failed_batch_adds_nothing(four_images, workers):
    """The box kernel and the pixel metrics (leakage, masks) run side by side; when any map of a
    batch is bad, none of the batch reaches the counters, and the next batch scores normally."""
    md, ids, maps = four_images
    ev = WSOLEvaluator(md, workers=workers)
    ev.accumulate(maps[:2], ids[:2], gt_masks=np.ones((2, 224, 224), np.uint8))
    before = ev.compute()
    bad = maps[2:].copy()
    bad[1, 5, 5] = np.nan
    with pytest.raises(ScoremapError, match=ids[3]):
        ev.accumulate(bad, ids[2:], gt_masks=np.ones((2, 224, 224), np.uint8))
    assert ev.compute() == before
    ev.accumulate(maps[2:], ids[2:], gt_masks=np.ones((2, 224, 224), np.uint8))
    whole = WSOLEvaluator(md, workers=workers)
    whole.accumulate(maps, ids, gt_masks=np.ones((4, 224, 224), np.uint8))
    assert ev.compute() == whole.compute()


def test_a_failed_side_job_adds_nothing(four_images, monkeypatch):
    """The pixel metrics (with masks: without, leakage is the box kernel's) fail on their pool thread
    while the box kernel succeeds: nothing is added."""
    md, ids, maps = four_images
    ev = WSOLEvaluator(md, workers=2)
    ev.accumulate(maps[:2], ids[:2], gt_masks=np.ones((2, 224, 224), np.uint8))
    before = ev.compute()

    def broken(*args):
        raise RuntimeError("side job failed")

    monkeypatch.setattr(ev, "_pixel_metrics", broken)
    with pytest.raises(RuntimeError, match="side job failed"):
        ev.accumulate(maps[2:], ids[2:], gt_masks=np.ones((2, 224, 224), np.uint8))
    assert ev.compute() == before


@pytest.mark.parametrize("workers", [1, 2])
def test_empty_batches_are_no_ops(four_images, workers):
    md, ids, maps = four_images
    empty = np.zeros((0, 224, 224))
    evaluators = [WSOLEvaluator(md, workers=workers), BoxEvaluator(md, workers=workers),
                  BoxEvaluator(md, multi_contour=True, workers=workers), MaskEvaluator(md), ContextLeakage(md)]
    for ev in evaluators:
        ev.accumulate(empty, [])
        ev.accumulate(maps, ids, *([np.ones((4, 224, 224), np.uint8)] if isinstance(ev, MaskEvaluator) else []))
        assert ev.compute()["num_images"] == 4


def test_leakage_of_a_nan_map_names_the_image(four_images):
    md, ids, maps = four_images
    bad = maps[0].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ScoremapError, match=ids[0]):
        ContextLeakage(md).add(bad, ids[0], None)
    bad[0, 0] = np.inf  # inside or outside the object: never a silent number
    with pytest.raises(ScoremapError, match=ids[0]):
        ContextLeakage(md).add(bad, ids[0], None)


def test_merge_shards_equals_one_pass(four_images):
    """DDP ranks score shards and merge (after pickling, as all_gather_object does): same metrics."""
    import pickle

    md, ids, _ = four_images
    rng = np.random.default_rng(21)
    maps = np.stack([smooth_map(rng) for _ in ids])
    logits = rng.normal(size=(4, 4))
    whole = WSOLEvaluator(md)
    whole.accumulate(maps, ids, logits)
    a, b = WSOLEvaluator(md), WSOLEvaluator(md)
    a.accumulate(maps[:1], ids[:1], logits[:1])
    b.accumulate(maps[1:], ids[1:], logits[1:])
    a.merge(pickle.loads(pickle.dumps(b)))
    assert a.compute() == whole.compute()
    box_a, box_b, box = BoxEvaluator(md), BoxEvaluator(md), BoxEvaluator(md)
    box_a.accumulate(maps[:2], ids[:2])
    box_b.accumulate(maps[2:], ids[2:])
    box.accumulate(maps, ids)
    box_a.merge(box_b)
    assert box_a.compute() == box.compute()
    with pytest.raises(ValueError):
        box_a.merge(BoxEvaluator(md, multi_contour=True))
