"""The DDP path for real: 2 CPU processes over gloo on a tiny set. The context pool is updated from
the sum over ranks, so both ranks must end with the same pool, and it must be non-zero."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from .conftest import FAST, cli_env


def test_ddp_two_cpu_processes_share_one_pool(tiny_data: Path, tmp_path: Path):
    out = tmp_path / "ddp"
    script = Path(__file__).with_name("ddp_run.py")
    proc = subprocess.run([sys.executable, str(script), str(tiny_data), str(out), *FAST], env=cli_env(),
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    p0 = torch.load(out / "pool_rank0.pt", weights_only=True)
    p1 = torch.load(out / "pool_rank1.pt", weights_only=True)
    assert p0["world_size"] == p1["world_size"] == 2
    assert p0["memory"].abs().sum() > 0
    assert torch.equal(p0["memory"], p1["memory"])
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "done.json").is_file()
