"""A validation split without boxes (mask-only, or labels only): training still picks a best checkpoint,
`evaluate` says in one line (exit 2) that it needs --box-threshold and works with one, `score` refuses a
split with nothing to score, and the Localizer explains why it needs a threshold."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from _datasets import metadata_copy, reduce_localization
from kdcicam.cli import main
from kdcicam.errors import KdcicamError, NoBoxThresholdError
from kdcicam.training.pipeline import effective_monitor


def dataset_variant(src: Path, dst: Path, val: str) -> Path:
    """A metadata copy of ``src`` whose val split keeps only ``val`` ("masks" or "none")."""
    reduce_localization(metadata_copy(src, dst) / "val", val)
    return dst


def test_monitor_falls_back_to_what_val_can_compute():
    assert effective_monitor("val/max_box_acc_v2", "max", True, False)[:2] == ("val/max_box_acc_v2", "max")
    monitor, mode, why = effective_monitor("val/gt_known_loc", "max", False, True)
    assert (monitor, mode) == ("val/pxap", "max") and "masks but no boxes" in why
    assert effective_monitor("val/context_leakage", "min", False, False)[:2] == ("val/top1_cls", "max")
    assert effective_monitor("val/top1_cls", "max", False, False)[2] is None


@pytest.mark.parametrize("val", ["masks", "none"])
def test_evaluate_without_val_boxes(trained_run: Path, tiny_data: Path, tmp_path: Path, val: str, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    data = dataset_variant(tiny_data, tmp_path / "data", val)
    from kdcicam.training.evaluate import evaluate

    with pytest.raises(NoBoxThresholdError, match="--box-threshold"):
        evaluate(run, ["test"], data_root=str(data), progress=False, write=False)
    # the CLI: one line, exit 2, naming the val split; no traceback, nothing written
    code = main(["evaluate", str(run), "--split", "test", "--data-root", str(data)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "Traceback" not in err
    assert "validation split 'val' has no boxes" in err and str(data / "val") in err
    assert not (run / "metrics.json").exists()
    # with a threshold given: the box metrics are read there, and the results say it was given
    results = evaluate(run, ["test", "val"], data_root=str(data), progress=False, box_threshold=0.25,
                       save_cams=tmp_path / "cams")
    assert results["box_threshold"] == 0.25 and results["box_threshold_chosen_on"] == "given"
    assert results["test"]["best_threshold"]["used"] == 0.25 and results["test"]["gt_known_loc"] is not None
    assert "gt_known_loc" not in results["val"] and results["val"]["top1_cls"] is not None
    assert (results["val"]["pxap"] is not None) == (val == "masks")
    # --save-cams wrote every split asked for, val included, and `score` reads them with no flag: the same numbers
    assert len(list((tmp_path / "cams" / "val").rglob("*.npy"))) == 32
    from kdcicam.evaluation.saved_cams import score_saved_cams

    scored = score_saved_cams(tmp_path / "cams" / "test", data / "test", box_threshold=0.25)
    assert scored["cam_size"] == [64, 64]
    assert scored["gt_known_loc"] == results["test"]["gt_known_loc"]
    assert scored["gt_known_loc_oracle"] == results["test"]["gt_known_loc_oracle"]
    assert scored["max_box_acc_v2"] == results["test"]["max_box_acc_v2"]
    with pytest.raises(KdcicamError, match=r"--box-threshold 0\.255"):
        evaluate(run, ["test"], data_root=str(data), progress=False, box_threshold=0.255)
    # a split with nothing to localize needs no threshold
    only_val = evaluate(run, ["val"], data_root=str(data), progress=False, write=False)
    assert only_val["box_threshold"] is None and only_val["val"]["top1_cls"] is not None


def test_training_with_a_mask_only_val(fast_config, tiny_data: Path, tmp_path: Path, caplog):
    from kdcicam import Localizer
    from kdcicam.training.module import load_module
    from kdcicam.training.pipeline import train

    data = dataset_variant(tiny_data, tmp_path / "data", "masks")
    cfg = fast_config("cam", f"data.root={data}", "optim.epochs=1")
    with caplog.at_level("WARNING"):
        summary = train(cfg, tmp_path / "run")
    assert summary["monitor"] == "val/pxap" and summary["best_score"] is not None
    assert "best.ckpt is chosen by val/pxap" in caplog.text
    module = load_module(summary["best"])
    assert module.box_threshold is None and module.val_has_boxes is False
    with pytest.raises(NoBoxThresholdError, match=r"validation split 'val' has no boxes.*--threshold T"):
        Localizer.from_checkpoint(tmp_path / "run", device="cpu")
    loc = Localizer.from_checkpoint(tmp_path / "run", device="cpu", threshold=0.3)
    assert loc.threshold == 0.3
    # after `evaluate --box-threshold`, the run's metrics.json carries the threshold, and says it was given
    from kdcicam.training.evaluate import evaluate

    evaluate(tmp_path / "run", ["test"], progress=False, box_threshold=0.2)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["box_threshold_chosen_on"] == "given"
    loc = Localizer.from_checkpoint(tmp_path / "run", device="cpu")
    assert loc.threshold == 0.2 and "given to kdcicam evaluate" in loc.threshold_source
