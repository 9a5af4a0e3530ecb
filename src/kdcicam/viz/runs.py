"""Run folders as the HTML report sees them: checkpoint, config and metrics.json, with missing splits
evaluated by the function the CLI passes in (this package stands beside training, not on it)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import KdcicamError

log = logging.getLogger(__name__)


#: ``evaluate(run_dir, splits, device=..., progress=...) -> results`` (``kdcicam evaluate``'s function)
Evaluate = Callable[..., dict[str, Any]]


@dataclass
class RunInfo:
    """A run folder as the report sees it."""

    path: Path
    label: str
    checkpoint: Path
    config: Any
    metrics: dict[str, Any] = field(default_factory=dict)
    metrics_file: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        return str(self.metrics.get("method") or self.config.method)


def _metrics_path(run: Path, ckpt: Path) -> Path:
    """``kdcicam evaluate`` writes metrics.json beside the evaluated stage (run/ or run/student/)."""
    for candidate in (ckpt.parent.parent / "metrics.json", run / "metrics.json"):
        if candidate.is_file():
            return candidate
    return ckpt.parent.parent / "metrics.json"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise KdcicamError(f"{path}: unreadable metrics file ({e})") from None
    if not isinstance(data, dict):
        raise KdcicamError(f"{path}: expected a JSON object")
    return data


def _labels(paths: list[Path]) -> list[str]:
    """Short unique names: the folder name, with its parents added where names collide."""
    parts = [p.resolve().parts for p in paths]
    depth = 1
    while True:
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels) or depth >= max(len(p) for p in parts):
            break
        depth += 1
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def load_runs(
    run_dirs: Sequence[str | os.PathLike],
    splits: Sequence[str] | None,
    device: str | None = None,
    evaluate: Evaluate | None = None,
) -> tuple[list[RunInfo], list[str]]:
    """Each run with its metrics for ``splits`` (default: the first run's test splits). A run whose
    metrics.json lacks a split is evaluated now with ``evaluate`` (the ``kdcicam evaluate`` function,
    :func:`kdcicam.training.evaluate.evaluate`, which writes metrics.json; the CLI passes it, since this
    module stands beside training, not on it); without it, the report notes the missing split."""
    from ..checkpoints import resolve_checkpoint, run_config

    if not run_dirs:
        raise KdcicamError("report: give at least one run folder")
    paths = [Path(p) for p in run_dirs]
    runs = []
    for path, label in zip(paths, _labels(paths), strict=False):
        ckpt = resolve_checkpoint(path)
        runs.append(RunInfo(path=path, label=label, checkpoint=ckpt, config=run_config(ckpt)))
    splits = list(splits) if splits else list(runs[0].config.data.test_splits)
    for run in runs:
        mpath = _metrics_path(run.path, run.checkpoint)
        run.metrics = _read_json(mpath) if mpath.is_file() else {}
        missing = [s for s in splits if not isinstance(run.metrics.get(s), dict)]
        if missing and evaluate is None:
            run.notes.append(
                f"no metrics for {', '.join(missing)} in {mpath}; run `kdcicam evaluate {run.path} "
                f"--split {' '.join(missing)}` first"
            )
        elif missing and evaluate is not None:
            log.info("%s: no metrics for %s in %s; evaluating now", run.path, ", ".join(missing), mpath)
            try:
                result = evaluate(run.path, missing, device=device, progress=False)
            except KdcicamError as e:
                run.notes.append(f"could not evaluate {', '.join(missing)}: {e}")
                log.warning("%s: could not evaluate %s: %s", run.path, ", ".join(missing), e)
            else:
                mpath = Path(result.get("metrics_file", mpath))
                run.metrics = _read_json(mpath) if mpath.is_file() else result
        run.metrics_file = mpath if mpath.is_file() else None
    return runs, splits
