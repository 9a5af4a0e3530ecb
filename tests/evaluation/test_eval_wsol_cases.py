"""Every case of clovaai/wsolevaluation's ``evaluation_test.py``, with its inputs and expected numbers.

Their mask PNGs are binary files we do not ship; the mask cases are rebuilt with masks of the same
pixel counts (object / background / ignored, 224 x 224), which is all their expected numbers
depend on. Their box/size cases read their metadata files; we write the same rows (the first
three images of each split) and read them back.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from _eval_helpers import make_metadata

from kdcicam.data.metadata import read_metadata, write_metadata
from kdcicam.evaluation import (
    BoxConventionError,
    BoxEvaluator,
    MaskEvaluator,
    MetricUndefinedError,
    ScoremapError,
    batch_box_ious,
    box_iou_matrix,
    resize_box,
    scoremap_to_boxes,
)
from kdcicam.evaluation.reference import reference_boxes, reference_pxap

THRESHOLDS_02 = np.arange(0, 1, 0.2)


# ----------------------------------------------------------------------------------- calculate_multiple_iou
def test_iou_shape_type_degenerate_zero():
    ious = box_iou_matrix(np.zeros((3, 4), dtype=int), np.zeros((5, 4), dtype=int))
    assert isinstance(ious, np.ndarray)
    assert ious.dtype == np.float64
    assert ious.shape == (3, 5)
    assert (ious == 1.0).all()


def test_iou_box_convention():
    with pytest.raises(RuntimeError):  # BoxConventionError is a RuntimeError, as theirs
        box_iou_matrix(np.array([[1, 1, 0, 0]]), np.array([[1, 1, 2, 2]]))
    with pytest.raises(BoxConventionError):
        box_iou_matrix(np.array([[-1, 0, 2, 2]]), np.array([[1, 1, 2, 2]]))


def test_iou_eye_boxes():
    boxes = np.array([[1, 1, 3, 3], [4, 4, 5, 5]])
    assert (box_iou_matrix(boxes, boxes) == np.eye(2)).all()


def test_iou_realistic_values():
    ious = box_iou_matrix(np.array([[1, 2, 5, 6]]), np.array([[3, 1, 4, 5]]))
    assert ious[0, 0] == pytest.approx(8.0 / 27, abs=1e-6)


# ----------------------------------------------------------------------------------- resize_bbox
def test_resize_bbox_case():
    assert resize_box((1, 2, 4, 3), (10, 20), (35, 10)) == (3, 1, 14, 1)


def test_resize_bbox_degenerate():
    assert resize_box((1, 2, 1, 2), (3, 3), (3, 3)) == (1, 2, 1, 2)


# ----------------------------------------------------------------------------------- compute_bboxes_from_scoremaps
UNIMODAL = np.array([[0.0, 0.0, 0.0, 0.0, 0.0],
                     [0.0, 0.4, 0.4, 0.4, 0.6],
                     [0.0, 0.4, 1.0, 0.8, 0.6],
                     [0.0, 0.4, 0.4, 0.4, 0.6]])
MULTIMODAL = np.array([[0.4, 0.0, 0.2, 0.2, 0.2],
                       [0.4, 0.4, 0.0, 0.4, 0.0],
                       [0.0, 0.0, 0.0, 0.4, 0.0],
                       [1.0, 0.6, 0.8, 0.2, 0.2]])
CASES = {
    "degenerate": (np.zeros((3, 3)), [[0, 0, 0, 0]] * 5),
    "unimodal": (UNIMODAL, [[1, 1, 4, 3], [1, 1, 4, 3], [2, 1, 4, 3], [2, 2, 4, 3], [2, 2, 3, 3]]),
    "multimodal": (MULTIMODAL, [[0, 0, 4, 3], [0, 0, 2, 2], [0, 3, 3, 3], [2, 3, 3, 3], [0, 3, 1, 3]]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("boxes_fn", [scoremap_to_boxes, reference_boxes], ids=["fast", "reference"])
def test_compute_bboxes(case, boxes_fn):
    scoremap, expected = CASES[case]
    boxes = boxes_fn(scoremap, THRESHOLDS_02)
    assert [b[0].tolist() for b in boxes] == expected


@pytest.mark.parametrize("case", sorted(CASES))
def test_compute_bboxes_evaluator_agrees(case):
    """The evaluator's kernel reaches the same boxes: IoU 1 with each expected box at its threshold."""
    scoremap, expected = CASES[case]
    for t, box in enumerate(expected):
        result = batch_box_ious(scoremap[None], [np.array([box])], THRESHOLDS_02, multi_contour=False)
        assert result.single[0, t] == 1.0


def test_compute_bboxes_nan():
    with pytest.raises(ValueError):
        scoremap_to_boxes(np.full((3, 3), np.nan), THRESHOLDS_02)
    with pytest.raises(ScoremapError):
        reference_boxes(np.full((3, 3), np.nan), THRESHOLDS_02)


# ----------------------------------------------------------------------------------- BoxEvaluator boxes and sizes
# The first three images of each split of their metadata: boxes (x0, y0, x1, y1) and sizes (w, h).
BOX_VERIFICATION = {
    ("CUB", "val"): [[(176, 136, 459, 291)], [(44, 183, 426, 254)], [(437, 42, 834, 422)]],
    ("CUB", "test"): [[(60, 27, 385, 331)], [(14, 112, 402, 298)], [(33, 53, 284, 448)]],
    ("ILSVRC", "val"): [[(156, 163, 318, 230)], [(143, 142, 394, 248)], [(28, 94, 485, 303)]],
    ("ILSVRC", "test"): [[(111, 108, 441, 193)], [(45, 49, 499, 162), (2, 69, 437, 207)], [(38, 19, 385, 373)]],
}
SIZE_VERIFICATION = {
    ("CUB", "val"): [(560, 419), (576, 432), (999, 587)],
    ("CUB", "test"): [(500, 335), (500, 347), (500, 470)],
    ("ILSVRC", "val"): [(500, 375)] * 3,
    ("ILSVRC", "test"): [(500, 375)] * 3,
}
CUB_VAL_IDS = ["001.Black_footed_Albatross/30107316117.jpg", "001.Black_footed_Albatross/33844942958.jpg",
               "001.Black_footed_Albatross/44272303765.jpg"]


@pytest.mark.parametrize("split", sorted(BOX_VERIFICATION))
def test_box_evaluator_boxes_and_sizes(tmp_path: Path, split):
    ids = CUB_VAL_IDS if split == ("CUB", "val") else [f"{split[0]}/{split[1]}/{i}.JPEG" for i in range(3)]
    written = make_metadata(boxes=dict(zip(ids, BOX_VERIFICATION[split], strict=True)), sizes=dict(zip(ids, SIZE_VERIFICATION[split], strict=True)))
    write_metadata(written, tmp_path / "split")
    metadata = read_metadata(tmp_path / "split", check_images=False)
    assert [metadata.boxes[i] for i in ids] == BOX_VERIFICATION[split]
    assert [metadata.image_sizes[i] for i in ids] == SIZE_VERIFICATION[split]
    for image_id in metadata.image_ids:  # their _check_box_sizes
        width, height = metadata.image_sizes[image_id]
        for x0, y0, x1, y1 in metadata.boxes[image_id]:
            assert 0 <= x0 <= x1 <= width - 1 and 0 <= y0 <= y1 <= height - 1
    # and the evaluator rescales them to the 224 grid with int(), as resize_bbox does
    evaluator = BoxEvaluator(metadata)
    for image_id in ids:
        expected = [resize_box(b, metadata.image_sizes[image_id], (224, 224)) for b in metadata.boxes[image_id]]
        assert evaluator._gt(image_id).tolist() == [list(b) for b in expected]


# ----------------------------------------------------------------------------------- MaskEvaluator
# Pixel counts of their three test masks on the 224 x 224 grid: (object, background); the rest is ignored.
MASK_COUNTS = {0: (43031, 7145), 1: (833, 49342), 2: (347, 13909)}


def _write_mask_set(root: Path) -> tuple[MaskEvaluator, dict[str, np.ndarray]]:
    """Three images with masks of their counts (image 1 with two instance masks), plus an all-background
    and an all-object image, as PNG files read back through the metadata."""
    rng = np.random.default_rng(0)
    paths, ignore, truth = {}, {}, {}
    for k, (n_fg, n_bg) in MASK_COUNTS.items():
        labels = np.full(224 * 224, 255, dtype=np.uint8)
        order = rng.permutation(224 * 224)
        labels[order[:n_fg]] = 1
        labels[order[n_fg:n_fg + n_bg]] = 0
        labels = labels.reshape(224, 224)
        image_id = f"val/m{k}.jpg"
        fg = (labels == 1).astype(np.uint8) * 255
        if k == 1:  # two instances, merged by the reader
            half = np.zeros_like(fg)
            half[:112] = fg[:112]
            cv2.imwrite(str(root / f"m{k}_a.png"), half)
            rest = fg.copy()
            rest[:112] = 0
            cv2.imwrite(str(root / f"m{k}_b.png"), rest)
            paths[image_id] = [f"m{k}_a.png", f"m{k}_b.png"]
        else:
            cv2.imwrite(str(root / f"m{k}.png"), fg)
            paths[image_id] = [f"m{k}.png"]
        cv2.imwrite(str(root / f"m{k}_ignore.png"), (labels == 255).astype(np.uint8) * 255)
        ignore[image_id] = f"m{k}_ignore.png"
        truth[image_id] = labels
    for name, value in (("zero_gt", 0), ("one_gt", 255)):
        cv2.imwrite(str(root / f"{name}.png"), np.full((224, 224), value, dtype=np.uint8))
        paths[f"val/{name}.jpg"] = [f"{name}.png"]
        truth[f"val/{name}.jpg"] = np.full((224, 224), 1 if value else 0, dtype=np.uint8)
    metadata = make_metadata(masks=paths, ignore=ignore, image_root=root)
    return MaskEvaluator(metadata), truth


def _auc(root: Path, image_id: str, scoremap: np.ndarray) -> float:
    evaluator, _ = _write_mask_set(root)
    evaluator.accumulate(scoremap[None], [image_id])
    return evaluator.compute()["pxap"]


def test_mask_reader_rebuilds_the_counts(tmp_path: Path):
    evaluator, truth = _write_mask_set(tmp_path)
    for image_id, labels in truth.items():
        assert (evaluator.mask(image_id) == labels).all()


@pytest.mark.parametrize("k", sorted(MASK_COUNTS))
@pytest.mark.parametrize("ignore_score", [0.0, 1.0])
def test_mask_evaluator_perfect_scoremap(tmp_path: Path, k, ignore_score):
    _, truth = _write_mask_set(tmp_path)
    labels = truth[f"val/m{k}.jpg"]
    scoremap = labels.astype(np.float64)
    scoremap[labels == 255] = ignore_score
    assert _auc(tmp_path, f"val/m{k}.jpg", scoremap) == 100.0


@pytest.mark.parametrize("k", sorted(MASK_COUNTS))
@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_mask_evaluator_constant_scoremap(tmp_path: Path, k, value):
    n_fg, n_bg = MASK_COUNTS[k]
    auc = _auc(tmp_path, f"val/m{k}.jpg", np.full((224, 224), value))
    assert auc == pytest.approx(100.0 * n_fg / (n_fg + n_bg), abs=0.1)
    _, truth = _write_mask_set(tmp_path)
    assert auc == pytest.approx(reference_pxap([np.full((224, 224), value)], [truth[f"val/m{k}.jpg"]]), abs=1e-9)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_mask_evaluator_zero_gt(tmp_path: Path, value):
    with pytest.raises(RuntimeError):  # MetricUndefinedError is a RuntimeError, as theirs
        _auc(tmp_path, "val/zero_gt.jpg", np.full((224, 224), value))
    with pytest.raises(MetricUndefinedError):
        _auc(tmp_path, "val/zero_gt.jpg", np.full((224, 224), value))


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_mask_evaluator_one_gt(tmp_path: Path, value):
    assert _auc(tmp_path, "val/one_gt.jpg", np.full((224, 224), value)) == pytest.approx(100.0, abs=0.1)


def test_mask_evaluator_nan_scoremap(tmp_path: Path):
    with pytest.raises(ValueError):
        _auc(tmp_path, "val/one_gt.jpg", np.full((224, 224), np.nan))
