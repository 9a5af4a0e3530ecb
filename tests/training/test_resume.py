"""A run killed with SIGKILL and resumed with --resume ends with exactly the weights of an
uninterrupted run (CPU, same seed), also when killed mid-epoch after a step checkpoint."""
from __future__ import annotations

import csv
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from .conftest import FAST, cli_env


def _cmd(tiny_data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kdcicam.cli", "train", "none", "--method", "ci-cam", "--out", str(out),
            f"data.root={tiny_data}", *FAST, "optim.epochs=3", "trainer.checkpoint_every_n_steps=3", *extra]


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_kill_and_resume_gives_identical_weights(tiny_data: Path, tmp_path: Path):
    cfg_file = tmp_path / "none"
    cfg_file.write_text("{}\n")
    env = cli_env()
    ref = tmp_path / "ref"
    subprocess.run([*_cmd(tiny_data, ref)], check=True, env=env, cwd=tmp_path, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(tiny_data, killed), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    # wait for a step checkpoint inside epoch 1 (4 steps per epoch: step 3 is mid-epoch), then kill
    while time.time() < deadline:
        if last.is_file():
            try:
                step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
            except (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError):  # not written yet
                step = -1
            if step >= 6:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.is_file()
    assert not (killed / "done.json").is_file(), "the run finished before it could be killed"
    torch.load(last, map_location="cpu", weights_only=True)  # what a kill leaves is loadable
    subprocess.run([*_cmd(tiny_data, killed), "--resume"], check=True, env=env, cwd=tmp_path, capture_output=True)
    with open(killed / "metrics.csv") as f:
        epochs = {r["epoch"] for r in csv.DictReader(f)}
    assert {"0", "2"} <= epochs  # the resumed run appended to the log instead of replacing it
    a, b = _state(ref / "checkpoints" / "last.ckpt"), _state(killed / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
