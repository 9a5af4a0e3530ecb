"""The pixel order that the union-find passes rely on: every pixel once, grouped by the threshold at
which it turns foreground, and in raster order inside a group (the passes bound a stretch's rows
by its first and last pixels, which is exact only then)."""
from __future__ import annotations

import numpy as np
import pytest

from kdcicam.evaluation import _kernels as K


@pytest.mark.parametrize(("h", "w", "seed"), [(1, 1, 0), (3, 5, 1), (7, 2, 2), (40, 33, 3), (64, 64, 4)])
def test_band_order_groups_pixels_in_raster_order(h: int, w: int, seed: int):
    rng = np.random.default_rng(seed)
    scoremap = np.floor(rng.random((h, w)) * 7) / 6 if seed % 2 else rng.random((h, w))
    q = np.empty((h, w), dtype=np.uint8)
    hist = np.empty((4, 256), dtype=np.int64)
    top = K.quantize(scoremap, q, hist)
    thresholds = np.arange(0, 1, 0.05)
    levels = K.threshold_levels(top, thresholds)
    ws = K.workspace(h, w)
    start = K._band_order(q, hist, levels, ws[2], ws[0], ws[3])
    p = (ws[2] >> np.uint64(33)).astype(np.int64)
    y, x = p // (w + 2) - 1, p % (w + 2) - 1
    assert np.array_equal(np.sort(y * w + x), np.arange(h * w))
    assert np.array_equal(x, (ws[2] >> np.uint64(18)).astype(np.int64) & 0x7FFF)
    nt = len(thresholds)
    for b in range(nt + 1):
        group = slice(start[b], start[b + 1])
        assert np.all(np.diff(p[group]) > 0)
        # group b: foreground from threshold nt - 1 - b on, not at nt - b (group nt: never)
        values = q[y[group], x[group]]
        if b < nt:
            assert np.all(values > levels[nt - 1 - b])
        if b > 0:
            assert np.all(values <= levels[nt - b])
