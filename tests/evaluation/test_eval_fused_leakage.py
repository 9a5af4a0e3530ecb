"""Context leakage against the GT boxes, computed by the box kernel on the map it is reading, gives the
per-map pass's bits (:func:`kdcicam.evaluation._compiled.leakage_share` over the boxes' mask); and the
evaluator's numbers do not depend on how many threads share a batch."""
from __future__ import annotations

import numpy as np
import pytest
from _eval_helpers import make_metadata, smooth_map

from kdcicam.evaluation import _compiled
from kdcicam.evaluation.boxes import threshold_list
from kdcicam.evaluation.masks import boxes_mask
from kdcicam.evaluation.metrics import ContextLeakage, WSOLEvaluator, leakage


def _maps(n: int, seed: int, size: int = 224) -> np.ndarray:
    rng = np.random.default_rng(seed)
    maps = np.stack([smooth_map(rng, size=size, low=int(rng.choice([7, 14]))) for _ in range(n)])
    maps[1] = np.floor(maps[1] * 8) / 8  # plateaus
    maps[2] = 0.25  # flat: uniform
    return maps


def test_kernel_leakage_equals_the_per_map_pass():
    """Bit for bit, with overlapping boxes, a box reaching the grid's edge, and odd-sized maps (the lane
    split's tail)."""
    maps = _maps(6, 3, size=37)
    boxes = np.array([[0, 0, 5, 9], [3, 4, 20, 30], [15, 2, 36, 10], [10, 10, 10, 10], [0, 20, 36, 36],
                      [2, 3, 30, 33], [5, 5, 8, 8]], dtype=np.int64)
    offsets = np.array([0, 1, 3, 4, 5, 6, 7], dtype=np.int64)
    thresholds = threshold_list(0.01)
    b, nt = len(maps), len(thresholds)
    out = (np.zeros((b, nt)), np.zeros((b, nt)), np.zeros((b, nt), np.uint8), np.zeros((b, nt), np.int64),
           np.ones(b, np.bool_))
    leak = np.full(b, np.nan)
    _compiled.batch_box_ious(maps, thresholds, boxes, offsets, 0, b, *out, True, leak)
    for i in range(b):
        region = boxes_mask(boxes[offsets[i]:offsets[i + 1]], maps.shape[1:]).view(np.uint8)
        assert leak[i] == _compiled.leakage_share(maps[i], region)
        assert leak[i] == pytest.approx(leakage(maps[i], region.astype(bool)), rel=1e-12, abs=1e-15)
    with pytest.raises(ValueError, match="leak"):
        _compiled.batch_box_ious(maps, thresholds, boxes, offsets, 0, b, *out, True, np.zeros(b - 1))


@pytest.mark.parametrize("workers", [1, 2])
def test_evaluator_leakage_from_the_box_kernel(workers: int):
    """WSOLEvaluator without masks (leakage from the box kernel) against ContextLeakage (the per-map
    pass), exactly."""
    maps = _maps(12, 4)
    ids = [f"c/{k}.jpg" for k in range(len(maps))]
    md = make_metadata(boxes={i: [(10 + 7 * k, 20, 300 - 5 * k, 250)] + [(0, 0, 40, 40)] * (k % 2)
                              for k, i in enumerate(ids)}, sizes={i: (320, 280) for i in ids})
    ev = WSOLEvaluator(md, workers=workers)
    ev.accumulate(maps, ids)
    per_map = ContextLeakage(md)
    per_map.accumulate(maps, ids)
    assert ev.compute()["context_leakage"] == per_map.compute()["context_leakage"]


def test_threads_give_one_threads_numbers():
    """One thread and every chunk size the pool may use: the same curves, leakage and counts."""
    maps = _maps(19, 5)
    ids = [f"c/{k}.jpg" for k in range(len(maps))]
    md = make_metadata(boxes={i: [(30 + 3 * k, 40, 200, 180 + 2 * k)] for k, i in enumerate(ids)})
    results = []
    for workers in (1, 2, 3):
        ev = WSOLEvaluator(md, workers=workers)
        ev.accumulate(maps[:13], ids[:13])
        ev.accumulate(maps[13:], ids[13:])
        results.append(ev.compute())
    assert results[0] == results[1] == results[2]
