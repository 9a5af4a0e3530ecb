"""benchmarks/report_confounding.py: the probe's seam verdicts follow the rule of docs/confounding.md, and
the sections render from partial results (one seed, an old file without the paste pull) without failing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

import report_confounding as rc


def _pull(bird=(0.2, 0.3), inside=(0.0, 0.1), band=(-0.05, 0.05)) -> dict:
    return {"bird_gain_inside": sum(bird) / 2, "bird_gain_inside_ci95": list(bird),
            "pull_inside": sum(inside) / 2, "pull_inside_ci95": list(inside),
            "pull_band": sum(band) / 2, "pull_band_ci95": list(band)}


@pytest.mark.parametrize("pull,verdict", [
    (_pull(), "sound"),
    (_pull(inside=(0.1, 0.3)), "undetermined"),      # the interval straddles the limit
    (_pull(inside=(0.3, 0.5)), "unsound"),
    (_pull(band=(0.26, 0.4)), "unsound"),            # drawn to the border band
    (_pull(bird=(-0.01, 0.1)), "undetermined"),      # the CAM does not find the bird: nothing to compare
    (None, "undetermined"),
])
def test_pull_verdict(pull, verdict):
    assert rc.pull_verdict(pull) == verdict


def _metrics(cls: float) -> dict:
    return {"top1_cls": cls, "context_leakage": 20.0, "max_box_acc_v2": 70.0, "num_images": 10}


def _probe_file(folder: Path, method: str, seed: int, pull: dict | None) -> None:
    splits = ("test_original", "test_same", "test_conflict", "test_seam", "test_canvas")
    r = {"method": method, "seed": seed, "commit": "abc" * 14, "probe_settings": {"seed": 0, "split": "test"},
         "metrics": {s: _metrics(60.0 - 5 * (s == "test_conflict")) for s in splits}}
    if pull is not None:
        r["paste_pull"] = pull
    (folder / f"cub50_{method}_seed{seed}.json").write_text(json.dumps(r))


def test_probe_section_from_partial_results(tmp_path):
    floor = {s: {"context_leakage": 19.0, "max_box_acc_v2": 60.0} for s in rc.PROBE_SPLITS}
    (tmp_path / "floors.json").write_text(json.dumps({
        "probe_settings": {"seed": 0, "split": "test"},
        "centre_gaussian": {"splits": floor}, "oracle_coverage": {"grid": [14, 14], "splits": floor}}))
    _probe_file(tmp_path, "cam", 1, _pull())
    _probe_file(tmp_path, "ci-cam", 1, None)  # written before the paste pull existed
    lines = rc.probe_section({"cam": "CAM", "ci-cam": "CI-CAM"}, ("cam", "ci-cam"), tmp_path)
    text = "\n".join(lines)
    assert "| CAM | 1 | 60.00 | 60.00 | 55.00 | 5.00 |" in text
    assert "oracle box map, 14×14 (reference)" in text
    assert "| CI-CAM | 1 | – | – | – | undetermined (no paste pull in this file) |" in text
    assert "the probe is **undetermined** for seams" in text and "sound 1" in text


def test_probe_section_refuses_mixed_probes(tmp_path):
    (tmp_path / "floors.json").write_text(json.dumps({"probe_settings": {"seed": 1, "split": "test"}}))
    _probe_file(tmp_path, "cam", 1, _pull())
    assert "different probes" in "\n".join(rc.probe_section({"cam": "CAM"}, ("cam",), tmp_path))


def test_calibration_section_orders_points_and_marks_passes(tmp_path):
    def record(point: str, passes: bool) -> dict:
        m = {"top1_cls": 90.0, "context_leakage": 60.0, "max_box_acc_v2": 70.0}
        return {"point": point, "knobs": {"rho": 0.99} if point == "rho99" else {}, "seed": 0, "cam_grid": [12, 12],
                "commit": "f" * 40, "metrics": {"val": m, "val_conflict": {**m, "top1_cls": 70.0}},
                "criteria": {"target": 15.0, "cls_drop": 20.0, "leak_gap": {"val": 16.0, "val_conflict": 14.0},
                             "passes": passes},
                "oracle": {"val": {"coverage": {"context_leakage": 44.0}}},
                "floor_centre_gaussian": {"splits": {"val": {"max_box_acc_v2": 55.0}}},
                "wall_seconds": {"total": 360.0}}
    for point, passes in (("rho99", True), ("preset", False)):
        (tmp_path / f"{point}_seed0.json").write_text(json.dumps(record(point, passes)))
    rows = [ln for ln in rc.calibration_section(tmp_path) if ln.startswith(("| preset", "| rho99"))]
    assert [r.split(" | ")[0] for r in rows] == ["| preset", "| rho99"]  # the order synthetic_calibration runs them
    assert rows[1].endswith("| **yes** | 6.0 |") and "| nan |" in rows[0]  # no habitat_following: shown as nan
