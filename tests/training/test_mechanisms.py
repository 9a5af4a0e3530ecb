"""One tiny KD-CI-CAM run (loc teacher + student, one epoch of two steps each) with every mechanism
diagnostic on:
best_cls / best_loc checkpoints beside best.ckpt (and their resumable state), the pool rate derived
from a target r·N, the CAM temperature measured on the loc teacher, and the diagnostics columns of
metrics.csv."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
import torch

from kdcicam.checkpoints import load_model
from kdcicam.config import load_config
from kdcicam.diagnostics import dilemma, epoch_curves
from kdcicam.training.datamodule import WSOLDataModule
from kdcicam.training.module import load_module
from kdcicam.training.pipeline import train
from kdcicam.training.scaling import cam_scale, expected_pool_updates

TERMS = {"loc_teacher": ("ce_down", "ce_up", "diff", "aux"), "student": ("ce", "kd", "cam")}
STEPS = 2
DIAG = ("attention_abs", "logit_change", "pred_agreement", "map_corr", "map_change")


def _check_stage(stage_dir: Path, summary: dict, target: float) -> None:
    cfg = load_config(stage_dir / "config.yaml")
    ckpts = stage_dir / "checkpoints"
    # the dilemma's two checkpoints, next to best.ckpt, each with its own resumable state in last.ckpt
    for name in ("best", "best_cls", "best_loc"):
        assert (ckpts / f"{name}.ckpt").is_file(), name
    assert summary["by_monitor"]["best_cls"]["monitor"] == "val/top1_cls"
    assert summary["by_monitor"]["best_loc"]["monitor"] == "val/max_box_acc_v2"
    states = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)["callbacks"]
    paths = sorted(Path(s["best_model_path"]).name for k, s in states.items() if "best_model_path" in s)
    assert paths == ["best.ckpt", "best_cls.ckpt", "best_loc.ckpt"]

    # the pool rate derived from the target r·N on the training images, batch size and epoch count, and saved
    labels = WSOLDataModule(cfg).train_dataset().metadata.class_labels
    counts = Counter(labels.values())
    assert sum(counts.values()) == cfg.data.limit_train_images
    n = expected_pool_updates([counts[c] for c in range(4)], cfg.data.batch_size, cfg.optim.epochs,
                              cfg.model.pool_correct_fraction)
    assert cfg.model.pool_rate_target == target and cfg.model.pool_rate == pytest.approx(target / n)
    model = load_model(str(ckpts / "last.ckpt"))
    assert model.pool.rate == pytest.approx(cfg.model.pool_rate)

    # metrics.csv: gradient shares of every loss term, pool and intervention diagnostics
    curves = epoch_curves(stage_dir / "metrics.csv")
    assert [c["epoch"] for c in curves] == [0]
    row = curves[0]
    shares = {t: row[f"train/grad_share_{t}"] for t in TERMS[stage_dir.name]}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-4) and all(row[f"train/grad_norm_{t}"] >= 0 for t in shares)
    updates = model.pool.updates
    assert 0 < float(updates.max()) <= STEPS  # at most one update per step and class
    assert row["train/pool_updates_mean"] == pytest.approx(float(updates.mean()))
    assert row["train/pool_rn_mean"] == pytest.approx(cfg.model.pool_rate * float(updates.mean()))
    assert -1 <= row["train/pool_corr_first"] <= 1 and -1 <= row["train/pool_corr_prior"] <= 1
    assert row["val/diag_attention_abs"] > 0 and 0 <= row["val/diag_pred_agreement"] <= 1
    assert all(f"val/diag_{k}" in row for k in DIAG)
    assert dilemma(curves)["epoch_best_cls"] == 0


def test_kd_run_keeps_dilemma_checkpoints_derives_rates_and_logs_diagnostics(fast_config, tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture):
    cfg = fast_config("kd-ci-cam", "optim.epochs=1", "data.batch_size=8", f"data.limit_train_images={8 * STEPS}",
                      "kd.teachers=loc", "kd.cam_temperature=auto", "model.pool_rate_target=2.0",
                      "trainer.diag_every_n_steps=1")
    out = tmp_path / "kd"
    summary = train(cfg, out)
    for stage in ("loc_teacher", "student"):
        _check_stage(out / stage, summary[stage], 2.0)
    teacher_rate = load_config(out / "loc_teacher" / "config.yaml").model.pool_rate
    teacher_row = epoch_curves(out / "loc_teacher" / "metrics.csv")[0]
    assert 0 < teacher_row["train/fg_coverage"] <= 1
    student_row = epoch_curves(out / "student" / "metrics.csv")[0]
    assert student_row["train/grad_share_kd"] == 0  # teachers=loc: no route-1 (logit KD) sample
    assert student_row["train/grad_share_cam"] > 0

    # kd.cam_temperature auto: the loc teacher's raw-CAM std, saved as a number in the student's config
    student_cfg = load_config(out / "student" / "config.yaml")
    cam_t = student_cfg.kd.cam_temperature
    assert isinstance(cam_t, float) and cam_t > 0
    loader = WSOLDataModule(student_cfg).eval_dataloader(student_cfg.data.train_split)
    assert cam_t == pytest.approx(cam_scale(load_model(summary["loc_teacher"]["best"]), loader), abs=1e-4)
    assert load_module(str(out / "student" / "checkpoints" / "last.ckpt")).model.objective.cam_T == cam_t
    assert load_config(out / "config.yaml").kd.cam_temperature == "auto"  # the run's own config as given

    # resume the finished loc teacher: its three best-by-metric checkpoints get their own state back
    # from last.ckpt, and the derived pool rate is not mistaken for a changed config
    for done in (out / "done.json", out / "loc_teacher" / "done.json"):
        done.unlink()
    caplog.set_level(logging.WARNING, logger="kdcicam")
    again = train(cfg, out, resume=True)
    assert not [r for r in caplog.records if "not the one given" in r.getMessage()]
    assert again["loc_teacher"]["best_score"] == summary["loc_teacher"]["best_score"] is not None
    assert again["loc_teacher"]["by_monitor"] == summary["loc_teacher"]["by_monitor"]
    assert all(v["score"] is not None for v in again["loc_teacher"]["by_monitor"].values())
    assert load_config(out / "loc_teacher" / "config.yaml").model.pool_rate == teacher_rate
