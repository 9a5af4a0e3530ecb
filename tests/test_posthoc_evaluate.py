"""`kdcicam evaluate / localize --cam-method`: a post-hoc map is scored by the same evaluator as the native one,
its box threshold is chosen on val for that map (never the checkpoint's, chosen for the native map), its
results sit beside the native ones in metrics.json, and the CLI's bad inputs exit 2 with one line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kdcicam.cli import main

pytest.importorskip("torchcam")


@pytest.fixture()
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """The one-epoch CAM run, copied, with the checkpoint's stored (native) threshold set to 0.93: a value val
    would hardly choose, so a post-hoc result that reused it would show."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    ckpt_path = run / "checkpoints" / "best.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    ckpt["kdcicam"]["box_threshold"] = 0.93
    torch.save(ckpt, ckpt_path)
    return run


def test_posthoc_evaluate_chooses_its_own_threshold_on_val(run_copy: Path, tmp_path: Path, capsys):
    from kdcicam import Localizer
    from kdcicam.evaluation import prepare_scoremap
    from kdcicam.posthoc import create_posthoc
    from kdcicam.training.datamodule import WSOLDataModule
    from kdcicam.training.module import load_module

    native = main(["evaluate", str(run_copy), "--split", "val", "--device", "cpu"])
    assert native == 0
    before = json.loads((run_copy / "metrics.json").read_text())
    cams = tmp_path / "cams"
    code = main(["evaluate", str(run_copy), "--split", "val", "test", "--device", "cpu", "--cam-method", "GradCAM",
                 "--save-cams", str(cams)])
    out = capsys.readouterr().out
    assert code == 0 and "grad-cam at layer backbone" in out and "chosen on val" in out
    metrics = json.loads((run_copy / "metrics.json").read_text())
    posthoc = metrics["cam_methods"]["grad-cam"]
    # chosen on val, for this map: the val split's own best threshold at IoU 0.5, not the checkpoint's 0.93
    assert posthoc["box_threshold_chosen_on"] == "val" and posthoc["target_layer"] == "backbone"
    assert posthoc["box_threshold"] == posthoc["val"]["best_threshold"]["50"] != 0.93
    # the native results are untouched
    assert {k: v for k, v in metrics.items() if k != "cam_methods"} == before

    # what was scored is the post-hoc map through the native map's resize and normalisation, nothing else
    module = load_module(str(run_copy / "checkpoints" / "best.ckpt"))
    ds = WSOLDataModule(module.cfg).eval_dataset("test", load_masks=False)
    samples = [ds[i] for i in (0, 7, 19)]
    cam = create_posthoc(module.model.eval(), "grad-cam", image_size=64)
    _, raw = cam(torch.stack([s["image"] for s in samples]))
    for s, m in zip(samples, raw, strict=True):
        saved = np.load(cams / "test" / f"{s['image_id']}.npy")
        np.testing.assert_allclose(saved, prepare_scoremap(m.double().numpy(), 64), atol=1e-6)

    # the Localizer takes that threshold, and the same maps
    loc = Localizer.from_checkpoint(run_copy, device="cpu", cam_method="grad-cam")
    assert loc.threshold == posthoc["box_threshold"] and "grad-cam" in loc.threshold_source
    [r] = loc.predict(ds.metadata.image_path(samples[1]["image_id"]))
    np.testing.assert_allclose(r.cam, np.load(cams / "test" / f"{samples[1]['image_id']}.npy"), atol=1e-5)


def test_localize_with_a_posthoc_method(trained_run: Path, tiny_data: Path, tmp_path: Path, capsys):
    images = sorted((tiny_data / "images" / "test").rglob("*.png"))
    images = [str(p) for p in images if not p.stem.endswith("_mask")][:3]
    # no threshold chosen for layer-cam yet: one line naming the way to get one, exit 2
    code = main(["localize", str(trained_run), *images, "--out", str(tmp_path / "o1"), "--cam-method", "layer-cam"])
    err = capsys.readouterr().err
    assert code == 2 and "no box threshold for --cam-method layer-cam" in err and "--threshold" in err
    assert len(err.strip().splitlines()) == 1
    code = main(["localize", str(trained_run), *images, "--out", str(tmp_path / "o2"), "--cam-method", "layer-cam",
                 "--threshold", "0.3", "--no-overlays"])
    assert code == 0
    doc = json.loads((tmp_path / "o2" / "boxes.json").read_text())
    assert doc["cam_method"] == "layer-cam" and doc["target_layer"] == "backbone" and doc["threshold"] == 0.3
    assert doc["num_images"] == 3


@pytest.mark.parametrize("args,message", [
    (["--cam-method", "gradcom"], "unknown CAM method 'gradcom' (--cam-method); valid: native, cam, grad-cam"),
    (["--cam-method", "grad-cam", "--target-layer", "backbone.nett"], "target layer 'backbone.nett' does not exist"),
    (["--cam-method", "score-cam", "--target-layer", "head.fc"], ("target layer 'head.fc' outputs [4] per image: no "
                                                                 "spatial feature map")),
    (["--target-layer", "backbone"], "only post-hoc methods take one"),
])
def test_evaluate_usage_errors_exit_two(trained_run: Path, args: list[str], message: str, capsys):
    code = main(["evaluate", str(trained_run), "--split", "val", "--device", "cpu", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1


def test_benchmark_script_scores_resumes_and_records(trained_run: Path, tmp_path: Path, capsys):
    """benchmarks/posthoc.py on a tiny run laid out like a benchmark one (best_cls / best_loc)."""
    import sys

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "benchmarks"))
    import posthoc as bench

    run = tmp_path / "runs" / "synthetic-v2" / "cam-seed0"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(trained_run / "config.yaml", run / "config.yaml")
    for name in ("best_cls", "best_loc"):
        shutil.copy(trained_run / "checkpoints" / "best.ckpt", run / "checkpoints" / f"{name}.ckpt")
    args = ["--suite", "synthetic-v2", "--seeds", "0", "--methods", "native", "grad-cam", "--splits", "test",
            "--run-root", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    assert bench.main(args) == 0
    path = tmp_path / "out" / "posthoc_synthetic-v2_cam_seed0.json"
    doc = json.loads(path.read_text())
    assert set(doc["entries"]) == {"best_cls", "best_loc"} and doc["machine"]["cpu"]
    for name in ("best_cls", "best_loc"):
        native, grad = doc["entries"][name]["native"], doc["entries"][name]["grad-cam"]
        assert grad["box_threshold_chosen_on"] == "val" and grad["target_layer"] == "backbone"
        assert set(grad["images_per_second"]) == {"val", "test"} and grad["images"] == {"val": 32, "test": 32}
        assert grad["images_per_second"]["test"] > 0 and grad["commit"] and "posthoc.py" in grad["command"]
        assert native["cam_method"] == "native" and native["target_layer"] is None
        assert 0 <= grad["metrics"]["test"]["max_box_acc_v2"] <= 100
    capsys.readouterr()
    assert bench.main(args) == 0  # resumable: every entry is done, nothing is recomputed
    assert capsys.readouterr().out.count("done, skipped") == 4
    assert json.loads(path.read_text())["entries"] == doc["entries"]
