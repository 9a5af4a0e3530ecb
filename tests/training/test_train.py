"""Two-epoch runs of every method on a tiny synthetic set: the loss falls, checkpoints reload to
identical outputs, evaluate writes the full table, and a KD run reuses finished stages."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from kdcicam.training.evaluate import evaluate, evaluate_official_protocol
from kdcicam.training.module import load_module
from kdcicam.training.pipeline import train


def _losses(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def _reload_matches(ckpt: Path, data_root: Path) -> None:
    a, b = load_module(str(ckpt)), load_module(str(ckpt))
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        oa, ob = a(x), b(x)
    assert torch.equal(oa["logits"], ob["logits"]) and torch.equal(oa["cams"], ob["cams"])


@pytest.mark.parametrize("method", ["cam", "ci-cam"])
def test_two_epochs_loss_falls_and_checkpoint_reloads(method: str, fast_config, tiny_data: Path, tmp_path: Path):
    cfg = fast_config(method, "optim.epochs=3")
    summary = train(cfg, tmp_path / method)
    run = tmp_path / method
    assert (run / "config.yaml").is_file() and (run / "done.json").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file() and Path(summary["best"]).is_file()
    losses = _losses(run)
    assert len(losses) >= 6
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first, f"loss did not fall: {losses}"
    _reload_matches(run / "checkpoints" / "last.ckpt", tiny_data)
    if method == "ci-cam":
        pool = load_module(str(run / "checkpoints" / "last.ckpt")).model.pool
        assert pool.maps.abs().sum() > 0  # the pool was updated and saved
    results = evaluate(run, ["test"], progress=False)
    for key in ("top1_cls", "top5_cls", "top1_loc", "gt_known_loc", "max_box_acc_v2", "pxap", "context_leakage"):
        assert key in results["test"]
    assert json.loads((run / "metrics.json").read_text())["test"]["max_box_acc_v2"] == results["test"]["max_box_acc_v2"]
    official = evaluate_official_protocol(run, ["test"])
    assert official["protocol"] == "official" and 0 <= official["test"]["gt_known"] <= 100
    assert official["test"]["top1_cls"] == pytest.approx(results["test"]["top1_cls"], abs=25)  # other crop


def test_kd_pipeline_runs_three_stages_and_skips_finished(fast_config, tmp_path: Path):
    cfg = fast_config("kd-ci-cam", "optim.epochs=1")
    out = tmp_path / "kd"
    summary = train(cfg, out)
    for stage in ("cls_teacher", "loc_teacher", "student"):
        assert (out / stage / "done.json").is_file(), stage
    student = load_module(str(out / "student" / "checkpoints" / "last.ckpt"))
    assert student.cfg.method == "kd-ci-cam"
    assert not any(k.startswith("_teachers") for k in student.state_dict())  # teachers live in their own ckpts
    losses = _losses(out / "student")
    assert not any(math.isnan(loss) for loss in losses)
    mtime = (out / "cls_teacher" / "checkpoints" / "last.ckpt").stat().st_mtime
    again = train(cfg, out, resume=True)  # every stage finished: nothing is retrained
    assert (out / "cls_teacher" / "checkpoints" / "last.ckpt").stat().st_mtime == mtime
    assert again["student"]["best"] == summary["student"]["best"]


def test_existing_run_needs_resume(fast_config, tmp_path: Path):
    from kdcicam.errors import KdcicamError

    cfg = fast_config("cam", "optim.epochs=1")
    out = tmp_path / "r"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(KdcicamError, match="--resume"):
        train(cfg, out)
