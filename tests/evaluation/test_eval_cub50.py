"""On real metadata (CUB-50 test, converted on the fly): the evaluator equals the plain loop."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _eval_helpers import smooth_map

from kdcicam.evaluation import WSOLEvaluator
from kdcicam.evaluation.reference import ReferenceBoxEvaluator

CUB50 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cub50"

pytestmark = pytest.mark.cub50


@pytest.mark.skipif(not CUB50.is_dir(), reason="../shared/data/cub50 not present")
def test_cub50_test_split_equals_reference(tmp_path: Path):
    from kdcicam.data.cub import convert_cub
    from kdcicam.data.metadata import read_metadata

    convert_cub(CUB50, tmp_path / "cub50")
    metadata = read_metadata(tmp_path / "cub50" / "test", check_images=False)
    assert len(metadata) == 1389
    ids = metadata.image_ids[::35]  # 40 images across the classes
    rng = np.random.default_rng(0)
    maps = np.stack([smooth_map(rng, low=int(rng.choice([7, 14]))) for _ in ids])
    ev = WSOLEvaluator(metadata)
    ev.accumulate(maps, ids)
    out = ev.compute()
    for multi, key in ((False, "max_box_acc"), (True, "max_box_acc_v2_per_iou")):
        ref = ReferenceBoxEvaluator(metadata, multi_contour=multi)
        for scoremap, image_id in zip(maps, ids, strict=True):
            ref.accumulate(scoremap, image_id)
        assert [out[key][k] for k in ("30", "50", "70")] == ref.compute()
