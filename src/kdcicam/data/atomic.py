"""Atomic file writes: every file kdcicam writes (metadata, images, configs, metrics, reports, checkpoints)
goes through :func:`atomic_write`, so a crash or a Ctrl-C never leaves a half-written file, and a reader
sees the old file or the new one, never part of one.

The temp file is created beside the target with ``os.open(..., 0o666)``, so it gets the permissions
``open()`` would give (the process's umask applies), not ``mkstemp``'s 0600; then it is renamed over the
target. Its name is ``.NAME.<random>.tmp``, which a cleaner can recognise (see
``kdcicam.training.pipeline.remove_stale_temp_files``).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text"]


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new, exclusive temp file in ``folder`` (mode 0o666 less the umask), as ``(fd, path)``."""
    for _ in range(100):
        # os.urandom, as secrets.token_hex does, without importing secrets (hmac, hashlib: OpenSSL), which
        # cost ``kdcicam score`` a few milliseconds of its start
        tmp = folder / f".{name}.{os.urandom(4).hex()}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free temp file name for {name}")  # pragma: no cover


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], *, fsync: bool = False) -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, then rename it to ``path``. ``fsync``: flush it to
    the disk before the rename (checkpoints: the rename must not land before the data after a power cut).
    On any exception, or a KeyboardInterrupt, the temp file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, as UTF-8 with ``\\n`` line ends on every platform."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
