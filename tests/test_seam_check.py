"""benchmarks/seam_check.py: where a CAM's mass lies, against where the pasted region is."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import seam_check

from kdcicam.data.metadata import read_metadata
from kdcicam.data.synthetic import SyntheticConfig, generate_synthetic
from kdcicam.evaluation.metrics import MaskEvaluator


def test_border_band_straddles_the_border():
    region = np.zeros((20, 20), bool)
    region[5:15, 5:15] = True
    band = seam_check.border_band(region, 2)
    assert band[5, 10] and band[3, 10] and band[6, 10] and not band[10, 10] and not band[1, 10]
    assert not band[2, 10] and band.sum() == 14 * 14 - 6 * 6


def test_shares_of_blind_and_drawn_maps():
    region = np.zeros((20, 20), bool)
    region[5:15, 5:15] = True
    band = seam_check.border_band(region, 2)
    flat = seam_check.region_shares(np.full((20, 20), 0.3), region, band)
    assert flat[0] == pytest.approx(flat[1]) and flat[2] == pytest.approx(flat[3])  # constant: uniform
    ramp = np.zeros((20, 20))
    ramp[band] = 1.0
    _, _, on_band, band_area = seam_check.region_shares(ramp, region, band)
    assert on_band == 1.0 and on_band / band_area > 2


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seam") / "ds"
    generate_synthetic(out, SyntheticConfig(size=48, num_classes=2, n_train=2, n_val=0, n_test=6, n_test_conflict=0,
                                            workers=1))
    return out / "test"


def _save(cams: Path, md, maker) -> None:
    reader = MaskEvaluator(md, (32, 32))
    for image_id in md.image_ids:
        path = cams / f"{image_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, maker(reader.mask(image_id) == 1).astype(np.float32))


def test_score_split_ratios(split, tmp_path):
    md = read_metadata(split)
    _save(tmp_path / "object", md, lambda region: region * 1.0)
    on_object = seam_check.score_split(tmp_path / "object", split, 0.08)
    assert on_object["grid"] == [32, 32] and on_object["band_px"] == 3
    assert on_object["inside_mass"] == pytest.approx(1.0) and on_object["inside_ratio"] > 2
    rng = np.random.default_rng(0)
    _save(tmp_path / "blind", md, lambda region: rng.random(region.shape))
    blind = seam_check.score_split(tmp_path / "blind", split, 0.08)
    assert 0.8 < blind["inside_ratio"] < 1.2 and 0.8 < blind["band_ratio"] < 1.2


def test_score_maps_gives_the_centre_bias_reference(split, tmp_path):
    """The same ratios for one map shared by every image (conflict_probe's centre-Gaussian reference), equal to
    score_split on that map saved per image."""
    from floors import centre_gaussian

    md = read_metadata(split)
    g = centre_gaussian(32, 0.25)
    _save(tmp_path / "gauss", md, lambda region: g)
    saved = seam_check.score_split(tmp_path / "gauss", split, 0.08)
    shared = seam_check.score_maps(md, g.shape, lambda _: g, 0.08)
    assert shared == saved
