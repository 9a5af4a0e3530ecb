"""A run killed with SIGKILL and resumed with --resume ends with exactly the weights of an
uninterrupted run (CPU, same seed), also when killed mid-epoch after a step checkpoint."""
from __future__ import annotations

import csv
import pickle
import signal
from pathlib import Path

import torch

import _proc  # `kdcicam` commands as killable processes forked from one preloaded server

from .conftest import FAST


def _cmd(tiny_data: Path, out: Path, *extra: str) -> list[str]:
    # 32 px and one torch thread (as the fault suite's runs): what is resumed (weights, optimizer, pool,
    # sampler, step) depends on neither, and a second thread only spins on a busy 2-core machine
    return ["train", "none", "--method", "ci-cam", "--out", str(out), f"data.root={tiny_data}", *FAST,
            "data.image_size=32", "data.augment.resize=36", "trainer.num_threads=1", "optim.epochs=3",
            "trainer.checkpoint_every_n_steps=3", *extra]


def _mid_epoch_step_checkpoint(last: Path):
    """True once ``last`` holds step 6 or later: a step checkpoint inside epoch 1 (4 steps per epoch). Each
    version of the file (a write replaces it: a new inode) is read once."""
    seen: set[tuple[int, int]] = set()

    def check() -> bool:
        try:
            st = last.stat()
        except FileNotFoundError:
            return False
        if (st.st_ino, st.st_mtime_ns) in seen:
            return False
        try:
            step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
        except (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError):  # not written yet
            return False
        seen.add((st.st_ino, st.st_mtime_ns))
        return step >= 6
    return check


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_kill_and_resume_gives_identical_weights(tiny_data: Path, tmp_path: Path):
    cfg_file = tmp_path / "none"
    cfg_file.write_text("{}\n")
    ref = tmp_path / "ref"
    assert _proc.start(_cmd(tiny_data, ref), tmp_path, tmp_path / "ref.log").wait() == 0, \
        (tmp_path / "ref.log").read_text()[-2000:]

    killed = tmp_path / "killed"
    last = killed / "checkpoints" / "last.ckpt"
    proc = _proc.start(_cmd(tiny_data, killed), tmp_path, tmp_path / "killed.log")
    # wait for a step checkpoint inside epoch 1 (step 3 of 4 is mid-epoch), then kill
    assert proc.when(_mid_epoch_step_checkpoint(last), signal.SIGKILL, poll=0.05), "the run ended before the kill"
    proc.wait()
    assert last.is_file()
    assert not (killed / "done.json").is_file(), "the run finished before it could be killed"
    torch.load(last, map_location="cpu", weights_only=True)  # what a kill leaves is loadable
    assert _proc.start([*_cmd(tiny_data, killed), "--resume"], tmp_path, tmp_path / "resume.log").wait() == 0, \
        (tmp_path / "resume.log").read_text()[-2000:]
    with open(killed / "metrics.csv") as f:
        epochs = {r["epoch"] for r in csv.DictReader(f)}
    assert {"0", "2"} <= epochs  # the resumed run appended to the log instead of replacing it
    a, b = _state(ref / "checkpoints" / "last.ckpt"), _state(killed / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
