"""The checkpoint layer: run folders resolved, checkpoints read safely, the bare model rebuilt from its
config exactly as the training module holds it, without importing kdcicam.training."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdcicam.checkpoints import (
    load_checkpoint,
    read_checkpoint,
    resolve_checkpoint,
    run_config,
    threshold_from_run,
)
from kdcicam.config import save_config
from kdcicam.errors import ConfigError, KdcicamError


def test_resolve_run_stage_and_file(trained_run: Path, tmp_path: Path):
    best = trained_run / "checkpoints" / "best.ckpt"
    assert resolve_checkpoint(trained_run) == best
    assert resolve_checkpoint(best) == best
    kd = tmp_path / "kd"
    shutil.copytree(trained_run / "checkpoints", kd / "student" / "checkpoints")
    (kd / "student" / "checkpoints" / "best.ckpt").unlink()
    assert resolve_checkpoint(kd) == kd / "student" / "checkpoints" / "last.ckpt"  # the student, best else last
    for bad, words in ((tmp_path / "nope", "no such run folder"), (tmp_path, "no checkpoints/best.ckpt")):
        with pytest.raises(ConfigError, match=words) as e:
            resolve_checkpoint(bad)
        assert str(bad) in str(e.value)


def test_bare_model_equals_the_training_modules(trained_run: Path):
    from kdcicam.training.module import load_module

    loaded = load_checkpoint(trained_run)
    module = load_module(str(loaded.path))
    assert loaded.num_classes == module.num_classes and loaded.class_names == module.class_names
    assert loaded.box_threshold == pytest.approx(module.box_threshold) and loaded.method == "cam"
    assert not loaded.model.training
    state, expected = loaded.model.state_dict(), module.model.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x)["logits"], module(x)["logits"])


def test_weights_that_do_not_fit_are_named(trained_run: Path, tmp_path: Path):
    ckpt = torch.load(trained_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["num_classes"] = 5  # 4 stored
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(KdcicamError, match="does not fit the model it describes") as e:
        load_checkpoint(bad)
    assert str(bad) in str(e.value)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(KdcicamError, match="refused or unreadable checkpoint"):
        read_checkpoint(tmp_path / "junk.ckpt")


def test_run_config_and_threshold_fall_back(trained_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(trained_run / "checkpoints", run / "checkpoints")
    ckpt = run / "checkpoints" / "best.ckpt"
    config = run_config(ckpt)  # no config.yaml: the checkpoint's own
    assert config.method == "cam" and config.name != "renamed"
    config.name = "renamed"
    save_config(config, run / "config.yaml")
    assert run_config(ckpt).name == "renamed"  # the stage folder's config.yaml comes first
    assert threshold_from_run(ckpt, 0.25) == (0.25, "checkpoint (chosen on the validation split)")
    assert threshold_from_run(ckpt, None) == (None, "")
    (run / "metrics.json").write_text(json.dumps({"box_threshold": 0.4}))
    assert threshold_from_run(ckpt, None)[0] == 0.4


def test_the_practitioner_path_does_not_import_training(trained_run: Path):
    code = ("import sys, kdcicam, kdcicam.viz\n"
            f"loc = kdcicam.Localizer.from_checkpoint({str(trained_run)!r}, device='cpu')\n"
            "loc.predict([__import__('numpy').zeros((40, 50, 3), 'uint8')])\n"
            "print(sorted(m for m in sys.modules if m.startswith(('kdcicam.training', 'lightning'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
