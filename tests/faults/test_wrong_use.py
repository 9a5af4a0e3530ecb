"""Wrong use: checkpoints of another method or class count, unknown backbones and methods, a run
folder reused without --resume, a diverged checkpoint. Each must be a clear error, not a traceback
or silently wrong numbers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kdcicam.errors import KdcicamError

from .conftest import FAST, train_args

CAT = "wrong use"


def _save_variant(src: Path, dst: Path, edit) -> Path:
    """A copy of checkpoint ``src`` changed by ``edit(ckpt)`` (plain data only, so it stays loadable)."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    edit(ckpt)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dst)
    return dst


def _teacher(path: Path, data_root: Path, num_classes: int, *extra: str) -> Path:
    """A CI-CAM checkpoint with ``num_classes`` classes, as load_module reads them (no training)."""
    from kdcicam.config import config_to_dict, load_config
    from kdcicam.training.module import WSOLModule

    cfg = config_to_dict(load_config(None, [f"data.root={data_root}", *FAST, *extra], method="ci-cam"))
    module = WSOLModule(cfg, num_classes=num_classes, load_teachers=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {
        "config": cfg, "num_classes": num_classes, "class_names": None, "teacher_checkpoints": None}}, path)
    return path


def _error(r, command: str) -> str:
    return (r.error_lines(command) or [f"exit {r.rc}: {r.err.strip().splitlines()[-1] if r.err.strip() else ''}"])[0]


# ------------------------------------------------------------------------------------------ checkpoints
def test_load_module_with_mismatched_state_dict(fault_run: Path, tmp_path: Path, fault):
    from kdcicam.training.module import load_module

    rec = fault("`load_module` on a checkpoint whose weights do not fit its model (5 classes claimed, 4 stored)",
                CAT, "KdcicamError naming the file and the mismatch")
    bad = _save_variant(fault_run / "checkpoints" / "last.ckpt", tmp_path / "bad.ckpt",
                        lambda c: c["hyper_parameters"].update(num_classes=5))
    with pytest.raises(KdcicamError) as e:
        load_module(str(bad))
    rec.observed = str(e.value)[:300]
    assert str(bad) in str(e.value) and "does not fit" in str(e.value)


def test_checkpoint_of_another_method(fault_run: Path, tmp_path: Path, cli, fault):
    rec = fault("a CAM checkpoint relabelled as CI-CAM, given to `kdcicam evaluate`", CAT,
                "exit 2, one line naming the file (missing CI-CAM weights), no traceback")

    def relabel(c: dict) -> None:
        c["hyper_parameters"]["config"]["method"] = "ci-cam"

    bad = _save_variant(fault_run / "checkpoints" / "best.ckpt", tmp_path / "run" / "checkpoints" / "best.ckpt", relabel)
    r = cli("evaluate", bad, "--device", "cpu")
    rec.observed = _error(r, "evaluate")[:300]
    assert str(bad) in r.one_line_error("evaluate")


def test_plain_state_dict_is_not_a_checkpoint(fault_run: Path, tmp_path: Path, cli, fault):
    rec = fault("a bare model state_dict (torch.save(model.state_dict())) given to `kdcicam evaluate`", CAT,
                "exit 2: not a kdcicam checkpoint")
    sd = torch.load(fault_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    path = tmp_path / "weights.pth"
    torch.save(sd, path)
    r = cli("evaluate", path, "--device", "cpu")
    rec.observed = _error(r, "evaluate")
    assert "not a kdcicam checkpoint" in r.one_line_error("evaluate")


def test_kd_teacher_with_another_class_count(fault_data: Path, empty_config: Path, tmp_path: Path, cli, fault):
    rec = fault("KD-CI-CAM teacher checkpoint with 5 classes for a 4-class student", CAT,
                "exit 2 with one line naming the teacher checkpoint and both class counts, before training")
    teacher = _teacher(tmp_path / "teacher.ckpt", fault_data, 5)
    out = tmp_path / "kd"
    for stage in ("cls_teacher", "loc_teacher"):
        (out / stage).mkdir(parents=True)
        (out / stage / "done.json").write_text(json.dumps({"best": str(teacher), "stage_dir": str(out / stage)}))
    r = cli(*train_args(empty_config, fault_data, out, method="kd-ci-cam"))
    rec.observed = _error(r, "train")[:300]
    line = r.one_line_error("train")
    assert str(teacher) in line and "5" in line and "4" in line
    assert not (out / "student" / "checkpoints" / "last.ckpt").exists()


def test_evaluate_on_a_dataset_with_other_classes(run_copy: Path, dataset: Path, cli, fault):
    rec = fault("`kdcicam evaluate --data-root` at a dataset with 6 classes for a 4-class checkpoint", CAT,
                "exit 2 naming both class counts (metrics against the wrong label space would be meaningless)")
    yaml_path = dataset / "dataset.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("- star\n", "- star\n- moon\n- sun\n"))
    r = cli("evaluate", run_copy, "--split", "test", "--data-root", dataset, "--device", "cpu")
    rec.observed = _error(r, "evaluate")[:300]
    line = r.one_line_error("evaluate")
    assert "4" in line and "6" in line


def _diverged(fault_run: Path, tmp_path: Path) -> Path:
    """A run whose head weights are inf, as a run that diverged before the NaN check would leave."""
    def blow_up(c: dict) -> None:
        c["state_dict"]["model.head.fc.weight"] = torch.full_like(c["state_dict"]["model.head.fc.weight"], float("inf"))

    run = tmp_path / "diverged"
    _save_variant(fault_run / "checkpoints" / "best.ckpt", run / "checkpoints" / "best.ckpt", blow_up)
    return run


def test_evaluate_a_diverged_checkpoint(fault_run: Path, fault_data: Path, tmp_path: Path, cli, fault):
    rec = fault("`kdcicam evaluate` on a checkpoint with inf weights (NaN logits)", CAT,
                "exit 2 with one line naming the checkpoint (non-finite outputs)")
    run = _diverged(fault_run, tmp_path)
    try:
        r = cli("evaluate", run, "--split", "test", "--data-root", fault_data, "--device", "cpu")
    except Exception as e:
        rec.observed = f"{type(e).__name__} escapes the CLI (traceback): {e}"
        raise
    rec.observed = _error(r, "evaluate")
    assert str(run) in r.one_line_error("evaluate")


def test_localize_with_a_diverged_checkpoint(fault_run: Path, fault_data: Path, tmp_path: Path, cli, fault):
    rec = fault("`kdcicam localize` with a checkpoint with inf weights (NaN scores)", CAT,
                "exit 2 naming the checkpoint, or valid JSON without NaN")
    run = _diverged(fault_run, tmp_path)
    image = next((fault_data / "images" / "test").rglob("*.png"))
    r = cli("localize", run, image, "--out", tmp_path / "out", "--device", "cpu", "--no-overlays",
            "--threshold", "0.5")
    boxes = tmp_path / "out" / "boxes.json"
    text = boxes.read_text() if boxes.is_file() else ""
    rec.observed = f"exit {r.rc}; boxes.json {'contains NaN' if 'NaN' in text else 'ok' if text else 'absent'}"
    if r.rc != 2:
        json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"{c} in boxes.json")))


# ------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("how", ["override", "yaml"])
def test_unknown_backbone(how: str, fault_data: Path, tmp_path: Path, cli, fault):
    rec = fault(f"unknown backbone ({how})", CAT, "exit 2, one line listing the valid backbones")
    config = tmp_path / "c.yaml"
    config.write_text("model: {backbone: resnet9000}\n" if how == "yaml" else "{}\n")
    extra = ["model.backbone=resnet9000"] if how == "override" else []
    args = [a for a in train_args(config, fault_data, tmp_path / "run") if not a.startswith("model.backbone=")]
    r = cli(*args, *extra)
    rec.observed = _error(r, "train")[:300]
    line = r.one_line_error("train")
    assert "resnet9000" in line and "efficientnet_lite0" in line and "vgg16" in line


@pytest.mark.parametrize("how", ["--method", "override", "yaml"])
def test_unknown_method(how: str, fault_data: Path, tmp_path: Path, cli, fault):
    rec = fault(f"unknown method ({how})", CAT, "exit 2, the message lists cam, ci-cam, kd-ci-cam")
    config = tmp_path / "c.yaml"
    config.write_text("method: gradcam\n" if how == "yaml" else "{}\n")
    args = ["train", config, "--out", tmp_path / "run", f"data.root={fault_data}", *FAST]
    if how == "--method":
        args[2:2] = ["--method", "gradcam"]
    elif how == "override":
        args.append("method=gradcam")
    r = cli(*args)
    message = r.err.strip().splitlines()[-1] if r.err.strip() else ""
    rec.observed = f"exit {r.rc}: {message[:300]}"
    assert r.rc == 2 and "Traceback" not in r.err
    assert "gradcam" in message and all(m in message for m in ("cam", "ci-cam", "kd-ci-cam"))


def test_unknown_split(run_copy: Path, fault_data: Path, cli, fault):
    rec = fault("`kdcicam evaluate --split` of a split the dataset does not have", CAT,
                "exit 2 listing the available splits")
    r = cli("evaluate", run_copy, "--split", "tset", "--data-root", fault_data, "--device", "cpu")
    rec.observed = _error(r, "evaluate")
    line = r.one_line_error("evaluate")
    assert "tset" in line and "test" in line and "val" in line


def test_train_into_an_existing_run_without_resume(run_copy: Path, fault_data: Path, empty_config: Path, cli, fault):
    rec = fault("`kdcicam train --out` at a folder holding an unfinished run, without --resume", CAT,
                "exit 2 suggesting --resume; the existing checkpoints are untouched")
    (run_copy / "done.json").unlink()
    last = run_copy / "checkpoints" / "last.ckpt"
    before = (last.stat().st_ino, last.stat().st_mtime_ns)
    r = cli(*train_args(empty_config, fault_data, run_copy))
    rec.observed = _error(r, "train")
    rec.data_lost = (last.stat().st_ino, last.stat().st_mtime_ns) != before
    assert "--resume" in r.one_line_error("train")
    assert not rec.data_lost


@pytest.mark.parametrize("keep", ["masks", "none"])
def test_evaluate_with_a_val_split_without_boxes(keep: str, run_copy: Path, dataset: Path, cli, fault):
    from _datasets import reduce_localization

    what = "mask-only (the wsolevaluation OpenImages layout)" if keep == "masks" else "labels only"
    rec = fault(f"`kdcicam evaluate` on a run whose val split has no boxes: {what}", CAT,
                "exit 2, one line naming the val split and --box-threshold; with --box-threshold T the metrics "
                "are written and say the threshold was given")
    reduce_localization(dataset / "val", keep)
    r = cli("evaluate", run_copy, "--split", "test", "--data-root", dataset, "--device", "cpu")
    rec.observed = _error(r, "evaluate")[:300]
    line = r.one_line_error("evaluate")
    assert "'val' has no boxes" in line and "--box-threshold" in line
    assert not (run_copy / "metrics.json").exists()
    r = cli("evaluate", run_copy, "--split", "test", "--data-root", dataset, "--device", "cpu", "--box-threshold", "0.3")
    assert r.rc == 0, r.err[-2000:]
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert metrics["box_threshold"] == 0.3 and metrics["box_threshold_chosen_on"] == "given"
    rec.observed += f" / with --box-threshold 0.3: exit {r.rc}, test GT-known Loc {metrics['test']['gt_known_loc']:.2f}"


def test_score_a_split_with_nothing_to_score(dataset: Path, tmp_path: Path, cli, fault):
    import numpy as np

    from _datasets import reduce_localization
    from kdcicam.data.metadata import read_metadata

    rec = fault("`kdcicam score` on a split with neither boxes nor masks", CAT,
                "exit 2, one line: nothing to score (not 'images N' and exit 0)")
    reduce_localization(dataset / "test", "none")
    cams = tmp_path / "cams"
    for image_id in read_metadata(dataset / "test").image_ids:
        (cams / image_id).parent.mkdir(parents=True, exist_ok=True)
        np.save(cams / f"{image_id}.npy", np.zeros((64, 64)))
    r = cli("score", cams, "--metadata", dataset / "test")
    rec.observed = _error(r, "score")[:300]
    assert "neither boxes nor masks" in r.one_line_error("score")
