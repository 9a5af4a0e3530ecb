"""Crashes: SIGKILL at random points (mid-epoch, mid-checkpoint-write), Ctrl-C, a NaN loss, an output
folder that cannot be written, a nearly full disk. Nothing the user already had may be lost, and a
killed run resumed with --resume must end with exactly the weights of an uninterrupted one."""
from __future__ import annotations

import os
import random
import shutil
import signal
import time
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import _proc

from .conftest import train_args

CAT = "crashes"
SEED_ENV = "KDCICAM_FAULT_SEED"


def _load(path: Path) -> dict | None:
    """The checkpoint as a resume would read it, or None if it is not there."""
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def _temp_files(folder: Path) -> set[str]:
    try:
        return {n for n in os.listdir(folder) if n.startswith(".") and n.endswith(".tmp")}
    except FileNotFoundError:
        return set()


def writing(folder: Path, need: Path | None = None) -> Callable[[], bool]:
    """True once a *new* checkpoint temp file (``.last.ckpt.*.tmp``) appears, i.e. during a write
    (temp files left by earlier kills do not count); with ``need``, only once that file exists."""
    old = _temp_files(folder)
    return lambda: (need is None or need.is_file()) and bool(_temp_files(folder) - old)


def written(path: Path, times: int) -> Callable[[], bool]:
    """True once ``path`` has been replaced ``times`` times since this call (each atomic write is a
    rename, i.e. a new inode)."""
    seen: list[int] = []

    def check() -> bool:
        try:
            inode = os.stat(path).st_ino
        except FileNotFoundError:
            return False
        if not seen or seen[-1] != inode:
            seen.append(inode)
        return len(seen) >= times
    return check


def after(condition: Callable[[], bool], delay: float) -> Callable[[], bool]:
    """True ``delay`` seconds after ``condition`` first held."""
    first: list[float] = []

    def check() -> bool:
        if not first and condition():
            first.append(time.monotonic())
        return bool(first) and time.monotonic() - first[0] >= delay
    return check


Kill = namedtuple("Kill", "name sig when")


def test_kills_at_random_points_leave_a_loadable_checkpoint_and_resume_exactly(fault_data: Path, tmp_path: Path,
                                                                              fault):
    """One run, interrupted six times (each process resumes the last), then finished; every kill
    point is a separate record. Kill points are events (a temp file appearing, a checkpoint being
    replaced) or random delays scaled to the uninterrupted run's duration on this machine."""
    seed = int(os.environ.get(SEED_ENV) or time.time_ns() % 100_000)
    rng = random.Random(seed)
    config = tmp_path / "empty.yaml"
    config.write_text("{}\n")
    # CI-CAM (it also checkpoints its context pool); 5 epochs of 2 steps, a checkpoint after every step
    args = lambda out: train_args(config, fault_data, out, "optim.epochs=5",
                                  "trainer.checkpoint_every_n_steps=1", method="ci-cam")
    # the uninterrupted run first: its checkpoint times scale the random delays to this machine's speed
    reference = _proc.start(args(tmp_path / "ref"), tmp_path, tmp_path / "ref.log")
    ref_last = tmp_path / "ref" / "checkpoints" / "last.ckpt"
    first_write = written(ref_last, 1)
    reference.when(first_write, 0)  # signal 0: no signal, just wait for the first checkpoint
    t_first = reference.elapsed
    assert reference.wait() == 0, reference.output()[-2000:]
    span = reference.elapsed - t_first  # from the first checkpoint to the end of the run
    run = tmp_path / "killed"
    ckpts = run / "checkpoints"
    last = ckpts / "last.ckpt"
    d1, d2 = rng.uniform(0.05, 0.3) * span, rng.uniform(0.05, 0.2) * span
    # each kill's condition is made when its process starts (temp files left by earlier kills are old)
    kills = [
        Kill("SIGKILL during the first checkpoint write", signal.SIGKILL, lambda: writing(ckpts)),
        Kill("SIGKILL just after the second checkpoint write (epoch 0's last step; a step checkpoint there "
             "used to resume one epoch short)", signal.SIGKILL, lambda: written(last, 2)),
        Kill(f"SIGKILL at a random moment mid-run ({d1:.2f} s after this process's first checkpoint write; "
             f"seed {seed})", signal.SIGKILL, lambda: after(writing(ckpts), d1)),
        Kill("SIGKILL while a checkpoint write replaces an existing last.ckpt", signal.SIGKILL,
             lambda: writing(ckpts, need=last)),
        Kill("Ctrl-C (SIGINT) while a checkpoint write replaces an existing last.ckpt", signal.SIGINT,
             lambda: writing(ckpts, need=last)),
        Kill(f"Ctrl-C (SIGINT) at a random moment mid-run ({d2:.2f} s after a checkpoint write)", signal.SIGINT,
             lambda: after(writing(ckpts), d2)),
    ]
    for k, kill in enumerate(kills):
        rec = fault(kill.name, CAT, "the last complete checkpoint stays loadable (or none exists yet); no checkpoint "
                    "the run had is lost; --resume continues" +
                    ("; the CLI exits 130 or 2 saying how to resume" if kill.sig == signal.SIGINT else ""))
        before = _load(last)
        when = kill.when()
        cmd = _proc.start(args(run) + (["--resume"] if k else []), tmp_path, tmp_path / f"kill{k}.log")
        hit = cmd.when(when, kill.sig)
        rc = cmd.wait()
        assert hit, f"the run ended before the fault could be injected (exit {rc}): {cmd.output()[-1500:]}"
        assert not (run / "done.json").exists()
        leftovers = sorted(n for n in os.listdir(ckpts) if n.endswith(".tmp")) if ckpts.is_dir() else []
        left = _load(last)  # raises if a kill left a half-written last.ckpt
        step = lambda c: None if c is None else c["global_step"]
        rec.observed = (f"exit {rc}; last.ckpt before: step {step(before)}, after: step {step(left)}"
                        f"{'; leftover temp files: ' + ', '.join(leftovers) if leftovers else ''}")
        rec.data_lost = before is not None and (left is None or left["global_step"] < before["global_step"])
        assert not rec.data_lost
        if kill.sig == signal.SIGINT:
            tail = cmd.output().strip().splitlines()[-1:] or [""]
            rec.observed += f"; last line: {tail[0][:200]}"
            rec.handled = rc in (2, 130) and "--resume" in cmd.output()  # the data is safe either way
        else:
            rec.handled = True
    final = fault("resume after the kills above", CAT, "the resumed run ends with the same weights (every tensor "
                  "equal) as an uninterrupted run with the same seed; no temp file of a killed write is left")
    rc = _proc.start([*args(run), "--resume"], tmp_path, tmp_path / "final.log").wait()
    assert rc == 0, (tmp_path / "final.log").read_text()[-2000:]
    a, b = _load(ref_last), _load(last)
    different = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    stale = sorted(n for n in os.listdir(ckpts) if n.endswith(".tmp"))
    final.observed = (f"{len(a['state_dict'])} tensors, {len(different)} differ; global step {b['global_step']} vs "
                      f"{a['global_step']}; temp files left: {len(stale)}")
    assert not stale, stale
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert not different, different[:5]
    assert a["global_step"] == b["global_step"]


# ------------------------------------------------------------------------------------------ NaN loss
def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(fault_data: Path, empty_config: Path,
                                                                        tmp_path: Path, cli, fault):
    from kdcicam.training.module import load_module

    rec = fault("loss becomes NaN/inf (optim.lr=1e30)", CAT, "exit 2 with one line naming the step; last.ckpt "
                "(written before the bad step) loads and holds finite weights")
    out = tmp_path / "run"
    r = cli(*train_args(empty_config, fault_data, out, "optim.epochs=2", "optim.lr=1e30",
                        "trainer.checkpoint_every_n_steps=1"))
    rec.observed = (r.error_lines("train") or [f"exit {r.rc}: {r.err[-300:]}"])[0]
    line = r.one_line_error("train")
    assert "global step" in line and ("nan" in line or "inf" in line)
    step = int(line.split("global step ")[1].split()[0])
    last = out / "checkpoints" / "last.ckpt"
    ckpt = _load(last)
    rec.data_lost = ckpt is None
    assert ckpt is not None and ckpt["global_step"] <= step
    module = load_module(str(last))
    assert all(torch.isfinite(p).all() for p in module.state_dict().values() if p.is_floating_point())
    assert not (out / "done.json").exists()


# ------------------------------------------------------------------------------------------ output folder
@pytest.mark.parametrize("where", ["under a regular file", "in /proc"])
def test_unwritable_output_folder_fails_before_training(where: str, fault_data: Path, empty_config: Path,
                                                        tmp_path: Path, cli, fault):
    rec = fault(f"output folder that cannot be created ({where})", CAT,
                "exit 2 with one line naming the folder, before any training step")
    if where == "in /proc":
        out = Path("/proc/kdcicam-fault-test/run")
    else:
        blocker = tmp_path / "a_file"
        blocker.write_text("not a folder\n")
        out = blocker / "run"
    start = time.monotonic()
    r = cli(*train_args(empty_config, fault_data, out))
    rec.observed = (r.error_lines("train") or [f"exit {r.rc}: {r.err[-300:]}"])[0] + \
        f" ({time.monotonic() - start:.1f} s)"
    line = r.one_line_error("train")
    assert str(out) in line and "not writable" in line
    assert "Epoch" not in r.err


@pytest.mark.parametrize("method", ["cam", "kd-ci-cam"])
def test_nearly_full_disk_fails_before_training(method: str, fault_data: Path, empty_config: Path, tmp_path: Path,
                                               cli, fault, monkeypatch: pytest.MonkeyPatch):
    rec = fault(f"disk with 50 MiB free ({method})", CAT,
                "exit 2 with one line saying how much space is free and needed, before any training step")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=50 * 2**20))
    out = tmp_path / "run"
    r = cli(*train_args(empty_config, fault_data, out, method=method))
    rec.observed = (r.error_lines("train") or [f"exit {r.rc}: {r.err[-300:]}"])[0]
    line = r.one_line_error("train")
    assert "50 MiB free" in line and str(out) in line
    assert not list(out.rglob("*.ckpt"))
