"""`ensure_synthetic`: the benchmark, the calibration and the demo reuse a generated synthetic tree only when it
was made with exactly their settings; another variant or an older preset is refused (or, for the calibration's
own folders, regenerated), never trained on as if it were theirs."""
from __future__ import annotations

import pytest

from kdcicam.cli import main
from kdcicam.data.metadata import read_dataset_info
from kdcicam.data.synthetic import SyntheticConfig, ensure_synthetic
from kdcicam.data.synthetic_v2 import v2_config
from kdcicam.errors import ConfigError

TINY = {"size": 48, "n_train": 8, "n_val": 8, "n_test": 8, "n_test_conflict": 8, "workers": 1}


def test_generated_once_then_reused(tmp_path):
    cfg = v2_config(**TINY, n_val_conflict=8)
    root = ensure_synthetic(tmp_path / "d", cfg)
    stamp = (root / "dataset.yaml").stat().st_mtime_ns
    assert ensure_synthetic(root, cfg) == root and (root / "dataset.yaml").stat().st_mtime_ns == stamp


def test_other_settings_are_refused_or_regenerated(tmp_path):
    root = ensure_synthetic(tmp_path / "d", SyntheticConfig(**TINY))
    wanted = v2_config(**TINY, n_val_conflict=8)
    with pytest.raises(ConfigError, match=r"d: a synthetic dataset made with other settings.*variant 'v1' "
                                          r"\(expected 'v2'\)"):
        ensure_synthetic(root, wanted)
    (root / "images" / "stale.png").write_bytes(b"")
    ensure_synthetic(root, wanted, regenerate=True)
    assert read_dataset_info(root).extra["variant"] == "v2" and not (root / "images" / "stale.png").exists()


def test_a_v2_tree_with_v1s_values_is_not_v1(tmp_path):
    """v1's settings leave out the v2 knobs; the variant still tells the two apart."""
    root = ensure_synthetic(tmp_path / "d", v2_config(**TINY, n_val_conflict=0, rho=0.9, min_radius=0.16,
                                                      max_radius=0.30))
    with pytest.raises(ConfigError, match=r"variant 'v2' \(expected 'v1'\)"):
        ensure_synthetic(root, SyntheticConfig(**TINY))


def test_the_demo_refuses_a_tree_of_other_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "synthetic_v2.yaml").write_text("name: x\n")
    ensure_synthetic(tmp_path / "data" / "synth_v2", SyntheticConfig(**TINY))  # v1 data where v2's belongs
    assert main(["demo", "--out", str(tmp_path / "out")]) == 2
    assert "synth_v2: a synthetic dataset made with other settings" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
