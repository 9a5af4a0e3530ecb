"""benchmarks/seam_check.py: where a CAM's mass lies, against where the pasted region is."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

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



@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    from _datasets import make_cub_tree
    from kdcicam.data.conflict import ConflictConfig, make_conflict

    tree = tmp_path_factory.mktemp("cub") / "CUB"
    make_cub_tree(tree)
    out = tmp_path_factory.mktemp("probe") / "p"
    make_conflict(tree, out, ConflictConfig(control=True, image_format="png"))
    return out


def _save_split(cams: Path, probe: Path, split: str, maker) -> None:
    md = read_metadata(probe / split)
    reader = MaskEvaluator(md, (32, 32))
    for image_id in md.image_ids:  # as `kdcicam evaluate --save-cams CAMS` lays them out: CAMS/<split>/<image id>
        path = cams / split / f"{image_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, maker(reader.mask(image_id) == 1).astype(np.float32))


def _ring(region: np.ndarray, width: int = 2) -> np.ndarray:
    return seam_check.border_band(region, width).astype(float)


@pytest.mark.parametrize("seam_maker,pull,band_pull", [
    (lambda region, rng: rng.random(region.shape) * 0.2, (-0.1, 0.1), (-0.1, 0.1)),           # blind to the paste
    (lambda region, rng: region + rng.random(region.shape) * 0.2, (0.9, 1.1), (0.3, 1.0)),    # a patch is a bird
    (lambda region, rng: _ring(region) + rng.random(region.shape) * 0.2, (-1.0, 0.6), (0.8, 3.0)),  # fires on seams
])
def test_paste_pull_against_the_bare_canvas(probe, tmp_path, seam_maker, pull, band_pull):
    rng = np.random.default_rng(0)
    _save_split(tmp_path, probe, "test_canvas", lambda region: rng.random(region.shape) * 0.2)
    _save_split(tmp_path, probe, "test_conflict", lambda region: region + rng.random(region.shape) * 0.2)
    _save_split(tmp_path, probe, "test_seam", lambda region: seam_maker(region, rng))
    r = seam_check.paste_pull(tmp_path, probe, "test", 1 / 8, resamples=200)
    assert r["num_images"] == 16 and r["bird_gain_inside"] > 0.3 and r["bird_gain_inside_ci95"][0] > 0
    assert pull[0] < r["pull_inside"] < pull[1] and band_pull[0] < r["pull_band"] < band_pull[1]
    for key in ("pull_inside", "pull_band"):
        lo, hi = r[f"{key}_ci95"]
        assert lo <= r[key] <= hi


def test_paste_pull_refuses_unpaired_splits(probe, tmp_path):
    import shutil

    broken = tmp_path / "probe"
    shutil.copytree(probe, broken)
    sources = broken / "test_canvas" / "paste_sources.txt"
    sources.write_text("".join(reversed(sources.read_text().splitlines(keepends=True))))
    with pytest.raises(SystemExit, match="same objects"):
        seam_check.paste_pull(tmp_path, broken, "test", 1 / 8)
