"""Where a benchmark number came from: the CPU and the commit. Shared by every script in benchmarks/."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path


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
