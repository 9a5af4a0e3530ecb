"""`kdcicam` commands in child processes that can be killed, without paying Python + torch +
Lightning start-up (~10 s on a loaded 2-core machine) per process.

A multiprocessing *forkserver* imports kdcicam's training stack once; every command is a fork of
that clean server (no torch thread pool has started in it, so forking is safe), runs
``kdcicam.cli.main(argv)`` in its own folder with stdout/stderr in a log file, and can be sent
SIGKILL or SIGINT at any moment like a real process. Shared by the fault suite, the kill-and-resume test
(tests/training/test_resume.py) and `kdcicam app` (tests/test_app.py): the server starts once a session.
Waits give up after 900 s, pytest's own per-test limit (pyproject), not earlier: a loaded machine is slow.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

_PRELOAD = ["kdcicam.cli", "kdcicam.cli.train", "kdcicam.training.pipeline", "_proc"]
_CTX = None


def _context():
    global _CTX
    if _CTX is None:
        _CTX = mp.get_context("forkserver")
        _CTX.set_forkserver_preload(_PRELOAD)
    return _CTX


def _child(argv: list[str], cwd: str, log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.chdir(cwd)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C behaves as in a terminal
    from kdcicam.cli import main

    try:
        code = main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


class Command:
    """One running ``kdcicam ARGV``."""

    def __init__(self, argv: list[str], cwd: Path, log: Path):
        self.log = log
        self.started = time.monotonic()
        self.process = _context().Process(target=_child, args=([str(a) for a in argv], str(cwd), str(log)),
                                          daemon=True)
        self.process.start()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def alive(self) -> bool:
        return self.process.is_alive()

    def signal(self, sig: int) -> None:
        if self.process.pid is not None and self.process.is_alive():
            os.kill(self.process.pid, sig)

    def wait(self, timeout: float = 900) -> int:
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
            raise TimeoutError(f"kdcicam did not finish in {timeout} s; log: {self.output()[-2000:]}")
        return int(self.process.exitcode)

    def when(self, condition: Callable[[], bool], sig: int, timeout: float = 900, poll: float = 0.002) -> bool:
        """Send ``sig`` as soon as ``condition()`` holds; False if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            if condition():
                self.signal(sig)
                return True
            time.sleep(poll)
        raise TimeoutError(f"condition not met in {timeout} s; log: {self.output()[-2000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""


def start(argv: list[str], cwd: Path, log: Path) -> Command:
    return Command(argv, cwd, log)
