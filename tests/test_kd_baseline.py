"""The KD paper's own baseline in the benchmark (`benchmarks/accuracy.py --methods kd-baseline`): it trains the
KD-CI-CAM student pipeline with no teacher, and the report shows it beside the three methods and says what
the teachers add over it, seed by seed."""
from __future__ import annotations

from pathlib import Path

from kdcicam.config import kd_stage_configs, load_config

REPO = Path(__file__).resolve().parents[1]


def test_the_baseline_is_the_student_without_teachers():
    import accuracy

    from kdcicam.models.distill import allowed_routes, needed_teachers

    method, overrides = accuracy.training_recipe("kd-baseline")
    cfg = load_config(REPO / "configs" / "cub50.yaml", overrides, method=method)
    assert method == "kd-ci-cam" and cfg.kd.teachers == "none"
    assert needed_teachers(cfg.kd.teachers) == () and allowed_routes(cfg.kd.teachers) == (0,)
    full = load_config(REPO / "configs" / "cub50.yaml", method="kd-ci-cam")
    # everything the student trains with is the full method's student, teachers aside
    assert kd_stage_configs(cfg)["student"].model == kd_stage_configs(full)["student"].model
    assert kd_stage_configs(cfg)["student"].optim == kd_stage_configs(full)["student"].optim
    assert accuracy.training_recipe("cam") == ("cam", [])
    assert accuracy.result_path("cub50", "kd-baseline", 1, "").name == "accuracy_cub50_kd-baseline_seed1.json"


def _run(method: str, seed: int, cls: float, loc: float, v2: float) -> dict:
    metrics = {"top1_cls": cls, "top1_loc": loc, "gt_known_loc": 70.0, "max_box_acc_v2": v2, "pxap": None,
               "context_leakage": None, "max_box_acc_v2_per_iou": {"30": v2, "50": v2, "70": v2}}
    return {"suite": "cub50", "method": method, "seed": seed, "tag": "", "metrics": {"test": metrics},
            "wall_seconds": {"train": 60.0, "total": 70.0}, "config": {"eval": {"monitor": "val/max_box_acc_v2"}}}


def test_the_report_rows_and_the_teachers_contribution():
    from reporting import runs as run_queries
    from reporting import tables, targets

    runs = {m: [_run(m, s, 60.0 + s, 50.0, 70.0 + s) for s in (0, 1)] for m in ("cam", "ci-cam", "kd-ci-cam")}
    assert targets.teachers_contribution(runs, "test") == []  # no baseline run: nothing to say
    runs["kd-baseline"] = [_run("kd-baseline", 0, 58.0, 51.0, 69.0), _run("kd-baseline", 1, 62.0, 49.0, 70.0)]
    rows = [ln for ln in tables.table(runs, "test") if ln.startswith("| ")][1:]
    names = ["| CAM", "| CI-CAM", "| KD-CI-CAM", "| KD baseline (no teachers)"]
    assert [r.split(" | ")[:2] for r in rows] == [[n, k] for n in names for k in ("best_cls", "best_loc", "last")]
    (line,) = targets.teachers_contribution(runs, "test")
    # seed 0: 60-58 = +2, seed 1: 61-62 = -1 -> mean +0.50; Top-1 Loc -1, +1 -> 0; V2 +1, +1 -> +1
    assert "seeds 0,1" in line and "Top-1 Cls +0.50" in line and "MaxBoxAccV2 +1.00" in line
    # a seed's budget counts the three methods only: the baseline is extra
    assert run_queries.seeds_of(runs) == [0, 1] and run_queries.seed_minutes(runs) == [70.0 * 3 / 60] * 2
