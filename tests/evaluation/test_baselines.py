"""`kdcicam baseline`: the centre-Gaussian floor (σ chosen on val) and the oracle CAM (the GT region on a CAM
grid) are scored by the evaluator, the maps they write score the same through `kdcicam score`, and the floor
shows beside the methods in `kdcicam evaluate` and `kdcicam report` once computed. The cub50 floor of
docs/benchmarks.md is reproduced where the data is."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from kdcicam.cli import main
from kdcicam.data.metadata import read_metadata
from kdcicam.evaluation.baselines import (
    SIGMAS,
    cached_floor,
    centre_gaussian,
    centre_gaussian_floor,
    oracle_maps,
    score_centre_gaussian,
)


def test_the_gaussian_is_centred_and_normalised():
    g = centre_gaussian(9, 0.2)
    assert g.shape == (9, 9) and g.max() == 1.0 and g.min() == 0.0 and g[4, 4] == 1.0
    assert np.allclose(g, g.T) and np.allclose(g, g[::-1, ::-1])


def test_sigma_is_the_best_on_val_and_each_split_is_scored_at_it(tiny_data: Path):
    floor = centre_gaussian_floor(tiny_data, ["test"], size=64)
    val = read_metadata(tiny_data / "val", check_images=False)
    on_val = {s: score_centre_gaussian(val, 64, s)["max_box_acc_v2"] for s in SIGMAS}
    assert floor["sigma"] == max(SIGMAS, key=lambda s: (on_val[s], -s)) and floor["chosen_on"] == "val"
    test = score_centre_gaussian(read_metadata(tiny_data / "test", check_images=False), 64, floor["sigma"],
                                 floor["box_threshold"])
    assert floor["splits"]["test"]["max_box_acc_v2"] == test["max_box_acc_v2"]
    assert floor["splits"]["test"]["gt_known_loc"] == test["gt_known_loc"]
    assert cached_floor(tiny_data, "test", "val", 64)["metrics"] == floor["splits"]["test"]
    assert cached_floor(tiny_data, "test", "val", 32) is None  # another grid is another floor


def test_the_oracle_is_the_object_on_the_grid():
    region = np.zeros((1, 64, 64), bool)
    region[0, 16:48, 8:40] = True
    fine = oracle_maps(region, (64, 64), 64)[0]
    assert fine.shape == (64, 64) and fine[32, 20] == 1.0 and fine[2, 60] == 0.0
    coarse = oracle_maps(region, (4, 4), 64)[0]  # a 4x4 CAM: the object blurred over its cells
    assert coarse[32, 20] > 0.5 > coarse[2, 60] and not np.array_equal(coarse, fine)


@pytest.mark.parametrize("kind,extra", [("centre-gaussian", []), ("oracle", ["--grid", "4", "4"])])
def test_baseline_maps_score_the_same_through_kdcicam_score(kind: str, extra: list[str], tiny_data: Path,
                                                           tmp_path: Path, capsys):
    assert main(["baseline", str(tiny_data), "--split", "test", "--kind", kind, "--size", "64", *extra,
                 "--save-maps", str(tmp_path / "maps"), "--json", str(tmp_path / "b.json")]) == 0
    printed = capsys.readouterr().out
    assert "MaxBoxAccV2" in printed and ("σ" in printed if kind == "centre-gaussian" else "4x4" in printed)
    baseline = json.loads((tmp_path / "b.json").read_text())
    threshold = baseline.get("box_threshold", 0.5)
    assert main(["score", str(tmp_path / "maps" / "test"), "--metadata", str(tiny_data / "test"),
                 "--box-threshold", str(threshold), "--json", str(tmp_path / "s.json")]) == 0
    scored = json.loads((tmp_path / "s.json").read_text())
    assert scored["num_images"] == 32
    assert scored["max_box_acc_v2"] == pytest.approx(baseline["splits"]["test"]["max_box_acc_v2"])
    assert scored["context_leakage"] == pytest.approx(baseline["splits"]["test"]["context_leakage"], abs=1e-4)


def test_oracle_reads_the_grid_from_a_run(trained_run: Path, tiny_data: Path, tmp_path: Path, capsys):
    assert main(["baseline", str(tiny_data), "--split", "test", "--kind", "oracle", "--run", str(trained_run),
                 "--json", str(tmp_path / "o.json")]) == 0
    result = json.loads((tmp_path / "o.json").read_text())
    # efficientnet_lite0 at its default output stride 32, 64 px images: a 2x2 CAM
    assert result["grid"] == [2, 2] and result["size"] == 64


def test_baseline_input_errors_are_one_line(tiny_data: Path, tmp_path: Path, capsys):
    assert main(["baseline", str(tiny_data), "--split", "test", "--kind", "oracle"]) == 2
    assert "--kind oracle needs the CAM grid" in capsys.readouterr().err
    assert main(["baseline", str(tiny_data), "--split", "nope", "--kind", "centre-gaussian"]) == 2
    assert "--split nope: no such split" in capsys.readouterr().err
    assert main(["baseline", str(tmp_path), "--split", "test", "--kind", "centre-gaussian"]) == 2
    assert "dataset.yaml" in capsys.readouterr().err


def test_evaluate_and_report_show_the_floor_once_computed(trained_run: Path, tiny_data: Path, tmp_path: Path,
                                                          capsys):
    from kdcicam.training.evaluate import evaluate
    from kdcicam.viz import write_report

    run = tmp_path / "run"  # the shared run stays as it is: evaluate writes metrics.json
    shutil.copytree(trained_run, run, copy_function=os.link)
    floor = centre_gaussian_floor(tiny_data, ["test"], size=64)  # what `kdcicam baseline` computes and caches
    result = evaluate(run, ["test"], progress=False, write=False)
    assert result["floors"]["test"]["metrics"] == floor["splits"]["test"]
    assert main(["evaluate", str(run), "--split", "test", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "floor/test" in printed and f"σ {floor['sigma']}" in printed
    assert "floors" not in json.loads((run / "metrics.json").read_text())  # never in the run's own metrics
    html = write_report([run], tmp_path / "r.html", splits=["test"], num_images=0).read_text()
    assert "floor: centre Gaussian" in html and f"{floor['splits']['test']['max_box_acc_v2']:.2f}" in html


@pytest.mark.cub50
@pytest.mark.slow
def test_baseline_reproduces_the_cub50_floor_of_the_benchmarks(cub50: Path, tmp_path: Path, capsys):
    """docs/benchmarks.md: the centre Gaussian scores MaxBoxAccV2 56.25 on cub50 test (224 px, σ on val)."""
    assert main(["data", "cub", str(cub50), "--out", str(tmp_path / "cub50")]) == 0
    assert main(["baseline", str(tmp_path / "cub50"), "--split", "test", "--kind", "centre-gaussian",
                 "--size", "224", "--json", str(tmp_path / "floor.json")]) == 0
    floor = json.loads((tmp_path / "floor.json").read_text())
    assert round(floor["splits"]["test"]["max_box_acc_v2"], 2) == 56.25
    assert floor["sigma"] == 0.15 and floor["box_threshold"] == pytest.approx(0.08)
