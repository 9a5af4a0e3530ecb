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
