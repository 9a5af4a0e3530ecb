"""Where a benchmark number came from: the CPU, the machine and the commit. Shared by every script in
benchmarks/ (one place: a results file's ``machine`` and ``commit`` mean the same in every suite)."""
from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def git_commit(root: Path, mark_dirty: bool = True) -> str:
    """HEAD of the repository at ``root``, with ``-dirty`` when tracked files differ from it (results and
    generated docs aside: the benchmarks rewrite those themselves)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        if mark_dirty:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                    ":(exclude)benchmarks/results", ":(exclude)docs"], cwd=root,
                                   capture_output=True, text=True, check=False).stdout.strip()
            head += "-dirty" if dirty else ""
        return head
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def stamp(root: Path, script: str) -> dict:
    """Where a results file came from: the commit, the UTC time and the command that wrote it."""
    return {"commit": git_commit(root), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", script, *sys.argv[1:]])}


def machine() -> dict:
    """The training machine of a results file: CPU, cores, torch, Python, platform, CUDA, the malloc setting."""
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cuda": torch.cuda.is_available(),
            "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_")}


def commit(root: Path = REPO) -> str:
    """HEAD (``-dirty`` as :func:`git_commit`); in a copied tree without .git (a GPU machine), what
    KDCICAM_COMMIT says."""
    head = git_commit(root)
    return os.environ.get("KDCICAM_COMMIT", head) if head == "unknown" else head
