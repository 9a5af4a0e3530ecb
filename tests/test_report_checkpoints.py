"""benchmarks/report.py (benchmarks/reporting/): every table shows each run at its `best_cls`, `best_loc` and `last` checkpoints with the
val SE of the score that chose it; older results files (no `last`, no `by_monitor`) render as "–", never fail; the
val split's size comes from the data, the results files or the suite's settings; an ablation without a `default`
run is compared with the main run's own val curve; a spent test draw renders only as a labelled superseded section."""
from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import report
from reporting import document, loading
from reporting.ablations import ablation_section
from reporting.notes import notes
from reporting.runs import CHECKPOINTS, CHOSEN_BY, val_images
from reporting.tables import chosen_cell, table, val_se_line
from reporting.targets import dilemma_target


def _metrics(cls: float, v2: float) -> dict:
    return {"top1_cls": cls, "top1_loc": cls / 2, "gt_known_loc": v2 + 10, "max_box_acc_v2": v2, "pxap": None,
            "context_leakage": 50.0, "max_box_acc_v2_per_iou": {"30": v2 + 20, "50": v2, "70": v2 - 20}}


def _run(method: str = "cam", seed: int = 0, *, by_monitor: dict | None = None, summary: dict | None = None,
         curves: list[dict] | None = None, split: str = "test", tag: str = "") -> dict:
    """A results file as benchmarks/accuracy.py writes it (only the keys the report reads)."""
    r = {"suite": "cub50", "method": method, "seed": seed, "tag": tag, "overrides": [],
         "metrics": {split: _metrics(60.0, 70.0)}, "wall_seconds": {"train": 600.0, "total": 700.0},
         "config": {"eval": {"monitor": "val/max_box_acc_v2"}}, "train_summary": summary or {}}
    if by_monitor is not None:
        r["by_monitor"] = by_monitor
    if curves is not None:
        r["diagnostics"] = {"model": {"curves": curves}}
    return r


def _monitor(cls: float, v2: float, split: str = "test") -> dict:
    return {"metrics": {split: _metrics(cls, v2)}}


def _rows(lines: list[str], method: str) -> dict[str, list[str]]:
    """checkpoint -> cells of ``method``'s rows in a rendered table."""
    out = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == method:
            out[cells[1]] = cells[2:]
    return out


def test_every_checkpoint_row_with_the_se_of_the_score_that_chose_it():
    new = _run(seed=0, by_monitor={"best_cls": _monitor(68.0, 69.0), "best_loc": _monitor(60.0, 70.0),
                                   "last": _monitor(67.0, 68.5)},
               summary={"monitor": "val/max_box_acc_v2", "best_score": 71.11111,
                        "by_monitor": {"best_cls": {"score": 73.3333}, "best_loc": {"score": 71.11111}}})
    rows = _rows(table({"cam": [new]}, "test", n=150), "CAM")
    assert list(rows) == ["best_cls", "best_loc", "last"]
    se_cls, se_loc = (100 * math.sqrt(p * (1 - p) / 150) for p in (0.733333, 0.7111111))
    assert rows["best_cls"][:3] == ["0", f"73.33 (SE {se_cls:.2f})", "68.00"]
    assert rows["best_loc"][:3] == ["0", f"71.11 (SE {se_loc:.2f})", "60.00"] and f"{se_loc:.2f}" == "3.70"
    assert rows["last"][:3] == ["0", "–", "67.00"]  # chosen by no val reading: no SE


def test_old_files_show_dashes_and_the_main_metrics_as_best_loc():
    # no by_monitor at all (the oldest files): best.ckpt is best_loc by its monitor; its score from the summary
    old = _run(seed=1, summary={"monitor": "val/max_box_acc_v2", "best_score": 62.25})
    # best_cls / best_loc scored, no last (files before the last epoch was scored); the score from the val curve
    mid = _run(seed=2, by_monitor={"best_cls": _monitor(68.0, 69.0), "best_loc": _monitor(60.0, 70.0)},
               curves=[{"epoch": 0, "val/top1_cls": 50.0, "val/max_box_acc_v2": 62.0},
                       {"epoch": 1, "val/top1_cls": 70.0, "val/max_box_acc_v2": 64.0}])
    rows = _rows(table({"cam": [old]}, "test", n=400), "CAM")
    assert rows["best_cls"] == ["–"] * len(rows["best_cls"]) and rows["last"] == ["–"] * len(rows["last"])
    assert rows["best_loc"][:3] == ["1", f"62.25 (SE {100 * math.sqrt(0.6225 * 0.3775 / 400):.2f})", "60.00"]
    rows = _rows(table({"cam": [mid]}, "test", n=400), "CAM")
    assert rows["best_cls"][1].startswith("70.00 (SE") and rows["best_loc"][1].startswith("64.00 (SE")
    assert rows["last"][0] == "–"
    # a val-chosen checkpoint whose score no file records: the SE's bound, p = 0.5
    assert chosen_cell([_run()], "best_loc", 100) == "– (SE ≤ 5.00)"


def test_the_monitor_names_match_the_trainer():
    from kdcicam.training.pipeline import DILEMMA_MONITORS

    assert {k: v[0] for k, v in CHOSEN_BY.items()} == DILEMMA_MONITORS
    assert set(CHOSEN_BY) < set(CHECKPOINTS) and "last" in CHECKPOINTS


def test_val_size_from_metadata_then_results_then_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "REPO", tmp_path)
    assert val_images("cub50") == (150, [])  # the suite's settings: 3 per class, 50 classes
    val_run = _run(split="val", tag="x")
    val_run["metrics"]["val"]["num_images"] = 149
    n, disagree = val_images("cub50", {"cam": [val_run]})
    assert n == 149 and disagree == ["the suite's data settings says 150"]
    meta = tmp_path / "data" / "cub50" / "val" / "class_labels.txt"
    meta.parent.mkdir(parents=True)
    meta.write_text("".join(f"{i}.jpg,{i % 50}\n" for i in range(150)))
    n, disagree = val_images("cub50", {"cam": [val_run]})
    assert n == 150 and disagree == ["the results file of cub50 x cam seed 0 says 149"]
    assert "**The sources of n disagree**" in val_se_line("cub50", n, disagree)
    assert val_images("no-such-suite") == (None, [])


def test_ablation_without_default_is_compared_with_the_main_runs_val_curve():
    curves = [{"epoch": 0, "val/max_box_acc_v2": 60.0, "val/top1_cls": 50.0, "val/context_leakage": 30.0,
               "val/gt_known_loc": 70.0},
              {"epoch": 1, "val/max_box_acc_v2": 68.0, "val/top1_cls": 64.0, "val/context_leakage": 27.0,
               "val/gt_known_loc": 80.0},
              {"epoch": 2, "val/max_box_acc_v2": 68.0, "val/top1_cls": 70.0, "val/context_leakage": 26.0,
               "val/gt_known_loc": 81.0}]  # a tie: the checkpoint callback keeps the first (epoch 1)
    main = _run("ci-cam", 0, curves=curves)
    main["config"]["optim"] = {"lr": 5e-4}
    ablation = _run("ci-cam", 0, split="val", tag="lr-x")
    ablation["overrides"] = ["optim.intervention_lr_mult=1"]
    ablation["config"]["optim"] = {"lr": 5e-4, "intervention_lr_mult": 1.0}
    lines = ablation_section("cub50", {"lr-x": {"ci-cam": [ablation]}}, {"ci-cam": [main]})
    text = "\n".join(lines)
    assert "else the main run of the same seed, read from its own per-epoch val curve at its `best_loc` epoch" in text
    assert ("- `lr-x` (CI-CAM, val, seeds 0): MaxBoxAccV2 +2.00, leakage +23.00, Top-1 Cls -4.00, "
            "GT-known Loc +0.00.") in lines
    assert "| lr-x | CI-CAM | last | – |" in text  # the file predates the last epoch's scoring
    # neither a default run nor a main run with curves: said so, no empty block
    lines = ablation_section("cub50", {"lr-x": {"ci-cam": [ablation]}}, {})
    assert "No comparison with the shipped config" in "\n".join(lines)
    assert not any(line.startswith("Against") for line in lines)


def test_dilemma_target_per_checkpoint_kind():
    def run(method: str, seed: int, cls_loc: tuple[float, float], loc: tuple[float, float],
            last: tuple[float, float] | None = None) -> dict:
        by = {"best_cls": _monitor(*cls_loc), "best_loc": _monitor(*loc)}
        if last:
            by["last"] = _monitor(*last)
        return _run(method, seed, by_monitor=by)

    runs = {"cam": [run("cam", 0, (68.0, 70.0), (64.0, 71.0))],
            "kd-ci-cam": [run("kd-ci-cam", 0, (64.0, 69.0), (52.0, 69.0), last=(68.0, 71.5))]}
    (line,) = dilemma_target("cub50", runs, "test")
    assert "`last` (seeds 0) MaxBoxAccV2 71.50 vs CAM's `best_loc` 71.00, Top-1 Cls 68.00 vs CAM's `best_cls` 68.00 (both)" in line
    assert line.endswith("**met**.") and "`best`" not in line


def test_intervention_lr_ablation_is_not_called_not_run_once_its_file_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "RESULTS", tmp_path)
    groups = {("cub50", ""): {m: [_run(m, 0)] for m in loading.METHODS}}
    text = "\n".join(notes(groups))
    assert "the intervention trained at the classifier's lr (`optim.intervention_lr_mult=1`, chosen on val)" in text
    (tmp_path / "accuracy_cub50_intervention-lr-1_ci-cam_seed0.json").write_text(json.dumps(
        _run("ci-cam", 0, split="val", tag="intervention-lr-1")))
    text = "\n".join(notes(groups))
    assert "not run here (CPU time): the intervention" not in text and "chosen on val), since" not in text
    assert "- Run: the intervention trained at the classifier's lr" in text and "cub50 seed 0" in text


SPENT = REPO / "benchmarks" / "results" / "archive" / "synthetic-v2-draw0"


@pytest.mark.skipif(not SPENT.is_dir(), reason="the archived synthetic-v2 draw 0 results are not in this checkout")
def test_a_spent_draw_renders_only_as_superseded(tmp_path, monkeypatch):
    results = tmp_path / "results"
    shutil.copytree(SPENT, results / "archive" / SPENT.name)
    cub = REPO / "benchmarks" / "results" / "accuracy_cub50_cam_seed0.json"
    if cub.is_file():
        shutil.copy(cub, results / cub.name)
    monkeypatch.setattr(loading, "RESULTS", results)
    monkeypatch.setattr(loading, "OUT", tmp_path / "benchmarks.md")
    monkeypatch.setattr(document, "calibration_section", list)
    monkeypatch.setattr(document, "probe_section", lambda *a: [])
    assert report.main() == 0
    text = (tmp_path / "benchmarks.md").read_text()
    current = text.split("## synthetic-v2\n", 1)[1].split("\n## ", 1)[0]
    assert "No results on the current test pair yet (test draw 2" in current and "|" not in current
    spent = text.split("## Superseded: synthetic-v2, test draw 0 (read by a diagnostic; spent)\n", 1)[1]
    spent = spent.split("\n## ", 1)[0]
    assert "this test pair is **spent**" in spent and "target ≥ 30 %" in spent
    assert "| CAM | last | – |" in spent and "| CAM | best_cls | 0,1,2 |" in spent
    assert "### The reading that spent this test pair" in spent and "| loc teacher | 0,1,2 |" in spent
    assert "`synthetic-v2-draw0`" not in text  # not also listed among the superseded recipes
    assert text.count("## Superseded: synthetic-v2") == 1
