"""The one atomic-write helper: whole files or none, open()'s permissions, no temp file left behind."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kdcicam.data.atomic import atomic_write, atomic_write_bytes, atomic_write_text


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_get_the_permissions_open_would_give(tmp_path: Path, umask: int):
    before = os.umask(umask)
    try:
        written = atomic_write_text(tmp_path / "a" / "b.txt", "x\n")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x\n")
    finally:
        os.umask(before)
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask


def test_text_is_utf8_with_lf_and_bytes_are_as_given(tmp_path: Path):
    atomic_write_text(tmp_path / "t.txt", "é\nz\n")
    assert (tmp_path / "t.txt").read_bytes() == "é\nz\n".encode()
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\r\n")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\r\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path):
    target = tmp_path / "keep.json"
    target.write_text("old")

    def fail(f):
        f.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fail, fsync=True)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]
    atomic_write(target, lambda f: f.write(b"new"), fsync=True)
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]
