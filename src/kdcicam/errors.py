"""User-facing errors. The CLI prints these as one line and exits 2 (a traceback only with --debug)."""
from __future__ import annotations


class KdcicamError(Exception):
    """Base class for errors caused by input (files, arguments, configs), not by bugs."""


class ConfigError(KdcicamError, ValueError):
    """A bad configuration file or override."""


class MetadataError(KdcicamError, ValueError):
    """A problem in a metadata file, located by file and (1-based) line."""

    def __init__(self, file: object, line: int | None, problem: str):
        self.file = str(file)
        self.line = line
        self.problem = problem
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {problem}")


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


class NoBoxThresholdError(KdcicamError):
    """Top-1 / Top-5 / GT-known Loc need a box threshold, chosen on a validation split with boxes;
    this run's has none. Raised by ``kdcicam evaluate``, ``Localizer`` and ``kdcicam localize`` alike."""

    def __init__(self, where: object, val_split: str, flag: str = "--box-threshold T"):
        self.where = str(where)
        super().__init__(
            f"{self.where}: the validation split {val_split!r} has no boxes, so no box threshold could be chosen on "
            f"it (Top-1 / Top-5 / GT-known Loc and predicted boxes need one); pass {flag} with T in [0, 1), "
            "or import val boxes (`kdcicam data import --val-boxes`) and evaluate again")
