"""benchmarks/synthetic_calibration.py without training: the criteria, the point list, the table. (Its end-to-end
path is checked with `--tiny`, a minute of CPU; see docs/confounding.md.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

import synthetic_calibration as cal


def _oracle(val: float, vc: float) -> dict:
    modes = ("coverage", "coverage^2", "coverage^4", "inner")
    return {"val": {m: {"context_leakage": val + i} for i, m in enumerate(modes)},
            "val_conflict": {m: {"context_leakage": vc + i} for i, m in enumerate(modes)}}


def test_criteria_need_both_targets_on_val():
    metrics = {"val": {"top1_cls": 95.0, "context_leakage": 80.0},
               "val_conflict": {"top1_cls": 70.0, "context_leakage": 70.0}}
    c = cal.criteria(metrics, _oracle(60.0, 60.0))
    assert c["cls_drop"] == 25.0 and c["leak_gap"] == {"val": 20.0, "val_conflict": 10.0}
    assert c["leak_gap_ok"] == {"val": True, "val_conflict": False} and c["passes"]
    metrics["val_conflict"]["top1_cls"] = 85.0  # a drop of 10: the confounder does not bite enough
    assert not cal.criteria(metrics, _oracle(60.0, 60.0))["passes"]
    metrics["val_conflict"]["top1_cls"] = 70.0
    assert not cal.criteria(metrics, _oracle(70.0, 60.0))["passes"]  # leakage no worse than the oracle's + 10


def test_points_are_valid_v2_configs_without_test_splits():
    for name, knobs in cal.load_points(None, None).items():
        cfg = cal.point_config(knobs, tiny=False)
        cfg.validate()
        assert cfg.variant == "v2" and cfg.n_test == cfg.n_test_conflict == 0, name  # calibration never makes test
        assert cfg.n_val_conflict > 0
    assert cal.point_config({}, tiny=False).size == 192  # the starting point: a 12x12 CAM grid at stride 16


def test_the_v2_preset_is_the_chosen_point_as_measured():
    """V2_PRESET is grid8 exactly as its calibration results file records it (docs/confounding.md)."""
    from kdcicam.data.synthetic_v2 import v2_config

    recorded = json.loads((cal.REPO / "benchmarks/results/synthetic_calibration/grid8_seed0.json").read_text())
    assert v2_config(**cal.SIZES, seed=0, test_draw=0).settings() == recorded["data"]
    assert v2_config().test_draw == 2  # draws 0 and 1 were read (docs/confounding.md): the preset's is fresh
    assert recorded["cam_grid"] == [8, 8] and recorded["criteria"]["passes"]


def test_points_file_and_selection(tmp_path):
    path = tmp_path / "points.json"
    path.write_text(json.dumps({"a": {"rho": 0.99}, "b": {"shape_detail": 0.05}}))
    assert cal.load_points("b", path) == {"b": {"shape_detail": 0.05}}
    path.write_text(json.dumps({"a": {"rhoo": 0.99}}))
    with pytest.raises(SystemExit, match="point 'a': unknown knob"):
        cal.load_points(None, path)
    with pytest.raises(SystemExit, match="unknown point"):
        cal.load_points("nope", None)
    path.write_text(json.dumps({"a": {"n_test": 5}}))  # the split sizes are the script's, not a knob
    with pytest.raises(SystemExit, match="n_test"):
        cal.load_points(None, path)


def test_summary_table_reads_results(tmp_path):
    metrics = {"val": {"top1_cls": 95.0, "context_leakage": 80.0},
               "val_conflict": {"top1_cls": 70.0, "context_leakage": 75.0}}
    oracle = _oracle(60.0, 61.0)
    record = {"point": "rho99", "seed": 1, "knobs": {"rho": 0.99}, "metrics": metrics, "oracle": oracle,
              "criteria": cal.criteria(metrics, oracle), "habitat_following": {"val": 90.0, "val_conflict": 41.5}}
    (tmp_path / "r.json").write_text(json.dumps(record))
    table = cal.summary_table([tmp_path / "r.json"])
    assert "rho99" in table and "25.00" in table and "20.00" in table and "yes" in table and "rho=0.99" in table and "41.50" in table
