"""The paper-scale cub50 suite for a GPU (configs/cub50_gpu.yaml, `benchmarks/accuracy.py --suite cub50-gpu`):
its config is what it claims, it is wired into the benchmark and report, and its first training step runs
on CPU (workers and the decoded-image cache included) with a handful of images."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from kdcicam.config import kd_stage_configs, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "cub50_gpu.yaml"
CUB50 = REPO / ".." / "shared" / "data" / "cub50"


@pytest.mark.parametrize("method", ["cam", "ci-cam", "kd-ci-cam"])
def test_the_config_is_paper_scale(method: str):
    cfg = load_config(CONFIG, method=method)
    assert cfg.model.freeze_stages == -1 and cfg.model.output_stride == 16 and cfg.data.image_size == 224
    assert cfg.optim.epochs == 100 and (cfg.optim.step, cfg.optim.decay) == (14, 0.5)
    assert cfg.data.cache_images and cfg.data.num_workers > 0 and cfg.trainer.precision == "bf16-mixed"
    assert cfg.model.pretrained is True and cfg.model.backbone == "efficientnet_lite0"
    if method == "kd-ci-cam":
        stages = kd_stage_configs(cfg)
        assert stages["student"].optim.step == 40 and stages["cls_teacher"].optim.step == 14
        assert all(s.model.freeze_stages == -1 and s.model.output_stride == 16 for s in stages.values())


def test_the_suite_is_wired_into_the_benchmark():
    import accuracy

    assert accuracy.SUITES["cub50-gpu"] == {"config": "configs/cub50_gpu.yaml", "data": "data/cub50"}
    assert accuracy.result_path("cub50-gpu", "cam", 0, "").name == "accuracy_cub50-gpu_cam_seed0.json"


def _fake_run(suite: str, method: str, device: str, cpu: str, v2: float) -> dict:
    metrics = {"top1_cls": 60.0, "top1_loc": 40.0, "gt_known_loc": 60.0, "max_box_acc_v2": v2, "pxap": None,
               "max_box_acc_v2_per_iou": {"30": v2, "50": v2, "70": v2}}
    return {"suite": suite, "method": method, "seed": 0, "tag": "", "metrics": {"test": metrics},
            "wall_seconds": {"train": 60.0, "total": 70.0}, "machine": {"cpu": cpu, "cores": 2}, "device": device,
            "config": {"eval": {"monitor": "val/max_box_acc_v2"}}}  # best.ckpt = best_loc


def test_the_report_shows_gpu_rows_beside_the_cpu_rows():
    from reporting.tables import device_comparison

    groups = {("cub50", ""): {"cam": [_fake_run("cub50", "cam", "CPU: AMD EPYC", "AMD EPYC", 50.0)]}}
    assert device_comparison(groups) == []  # one device: nothing to set side by side
    groups[("cub50-gpu", "")] = {m: [_fake_run("cub50-gpu", m, "NVIDIA H200 (x1)", "Intel Xeon", 60.0 + i)]
                                 for i, m in enumerate(("cam", "ci-cam", "kd-ci-cam"))}
    lines = device_comparison(groups)
    rows = [ln for ln in lines if ln.startswith("| cub50")]
    assert len(rows) == 12  # each run at best_cls, best_loc and last
    assert rows[0].startswith("| cub50 | AMD EPYC, 2 cores | CAM | best_cls |")
    assert rows[3].startswith("| cub50-gpu | NVIDIA H200 (x1) (host: Intel Xeon, 2 cores) | CAM | best_cls |")
    assert "62.00" in rows[10] and rows[10].split(" | ")[3] == "best_loc"  # KD-CI-CAM's best.ckpt


@pytest.mark.cub50
@pytest.mark.skipif(not CUB50.is_dir(), reason="../shared/data/cub50 not present")
def test_the_first_training_step_runs_on_cpu(tmp_path: Path):
    from kdcicam.data.cub import convert_cub
    from kdcicam.training.pipeline import train_stage

    data = tmp_path / "cub50"
    convert_cub(CUB50, data)
    cfg = load_config(CONFIG, [f"data.root={data}", "data.limit_train_images=8", "data.batch_size=4",
                               "data.num_workers=2", "optim.epochs=1", "trainer.accelerator=cpu",
                               "trainer.precision=32-true", "trainer.progress_bar=false", "trainer.log_every_n_steps=1"],
                      method="ci-cam")
    summary = train_stage(cfg, tmp_path / "run")
    assert summary["epochs"] == 1 and Path(summary["last"]).is_file()
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    losses = [float(r.split(",")[header.index("train/loss")]) for r in rows[1:] if r.split(",")[header.index("train/loss")]]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)  # 2 steps, finite losses
    assert json.loads((tmp_path / "run" / "done.json").read_text())["method"] == "ci-cam"
