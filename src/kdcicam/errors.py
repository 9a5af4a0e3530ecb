"""User-facing errors. The CLI prints these as one line and exits 2 (a traceback only with --debug)."""
from __future__ import annotations


class KdcicamError(Exception):
    """Base class for errors caused by input (files, arguments, configs), not by bugs."""


class ConfigError(KdcicamError, ValueError):
    """A bad configuration file or override."""


class ImageReadError(KdcicamError, OSError):
    """An image that cannot be decoded; the message names the file."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: cannot read image ({reason})")


class TrainingInterrupted(KdcicamError):
    """Ctrl-C during training. The CLI exits 130 (the shell's code for SIGINT) with the message,
    which says how to resume; the last complete checkpoint is intact."""

    exit_code = 130
