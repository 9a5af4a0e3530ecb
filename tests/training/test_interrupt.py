"""Ctrl-C during a checkpoint write is held until the write is complete, then delivered."""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
import torch

from kdcicam.training.pipeline import AtomicCheckpointIO, deferred_sigint, remove_stale_temp_files


@pytest.fixture
def python_sigint():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_inside_the_block_is_delivered_after_it(python_sigint):
    done = []
    with pytest.raises(KeyboardInterrupt), deferred_sigint():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("the block ran to its end")
    assert done == ["the block ran to its end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_ctrl_c_no_interrupt(python_sigint):
    with deferred_sigint():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_checkpoint_written_completely_despite_ctrl_c(python_sigint, tmp_path: Path):
    path = tmp_path / "last.ckpt"
    original = torch.save

    def save_and_interrupt(obj, f):  # Ctrl-C arrives in the middle of torch.save
        os.kill(os.getpid(), signal.SIGINT)
        original(obj, f)

    torch.save = save_and_interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            AtomicCheckpointIO().save_checkpoint({"w": torch.arange(4)}, path)
    finally:
        torch.save = original
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(4))
    assert not list(tmp_path.glob("*.tmp"))


def test_outside_the_main_thread_the_block_still_runs():
    ran = []
    thread = threading.Thread(target=lambda: ran.append(deferred_sigint().__enter__() is None))
    thread.start()
    thread.join()
    assert ran == [True]


def test_stale_temp_files_of_killed_writes_are_removed(tmp_path: Path):
    (tmp_path / ".last.ckpt.ab12cd.tmp").write_bytes(b"half")
    (tmp_path / ".best.ckpt.x.tmp").write_bytes(b"half")
    (tmp_path / "last.ckpt").write_bytes(b"keep")
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == [".best.ckpt.x.tmp", ".last.ckpt.ab12cd.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert remove_stale_temp_files(tmp_path / "missing") == []
