"""Maps that need no model, scored by the same evaluator as the models: what a localizer must beat, and what
its CAM resolution allows (``kdcicam baseline``).

- **The centre-Gaussian floor**: every image gets the same isotropic Gaussian centred on the evaluation grid;
  its width σ (a fraction of the grid side) is chosen on the val split by MaxBoxAccV2, and the box threshold
  for GT-known Loc there too; then each other split is scored once. A localizer is worth its compute only by
  what it adds above this number.
- **The oracle CAM**: the GT object region itself (the mask, or the union of boxes where a split has no
  masks), averaged onto a CAM grid ``h×w`` (the run's feature grid) and upsampled as a model's CAM is
  (:func:`~kdcicam.evaluation.prepare_scoremap`): a CAM that is exactly the object, as that resolution shows
  it. Several ways to turn coverage into a map are offered (:data:`ORACLE_MODES`).

Floors are cached per (split metadata, val metadata, evaluation grid) under :func:`cache_dir`, so that
``kdcicam evaluate`` and ``kdcicam report`` can print the floor row beside the methods without recomputing it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.atomic import atomic_write_text
from ..data.metadata import Metadata, read_metadata

__all__ = ["FLOOR_KEEP", "ORACLE_MODES", "SIGMAS", "cache_dir", "cached_floor", "centre_gaussian",
           "centre_gaussian_floor", "oracle_maps", "score_centre_gaussian", "score_oracle"]

#: the σ grid searched on val (fractions of the grid side)
SIGMAS = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)
#: the metrics a floor keeps per split
FLOOR_KEEP = ("max_box_acc", "max_box_acc_v2", "max_box_acc_v2_per_iou", "gt_known_loc", "gt_known_loc_oracle",
              "pxap", "context_leakage")
#: how the object region becomes a map on the CAM grid: each cell's object coverage ("coverage"), the
#: coverage sharpened by a power (peaked on the object's inner cells), or only the cells of largest coverage
ORACLE_MODES = ("coverage", "coverage^2", "coverage^4", "inner")
CACHE_ENV = "KDCICAM_CACHE_DIR"


def centre_gaussian(size: int, sigma: float) -> np.ndarray:
    """An isotropic Gaussian of std ``sigma·size`` centred on a size×size grid, min-max normalised."""
    c = (np.arange(size) + 0.5) / size - 0.5
    g = np.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * sigma * sigma))
    return (g - g.min()) / (g.max() - g.min())


def _save_maps(save_dir: Path, ids: Sequence[str], maps: np.ndarray) -> None:
    """``save_dir/<image_id>.npy`` per map, in the maps' own dtype (the evaluator scores in float64, so
    ``kdcicam score`` gives the same numbers): the layout ``kdcicam score`` reads."""
    from .saved_cams import cam_path

    for image_id, m in zip(ids, maps, strict=True):
        path = cam_path(save_dir, image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, m)


def _score(metadata: Metadata, size: int, maps_for: Callable[[list[str]], np.ndarray], threshold: float | None,
           save_dir: Path | None, batch: int = 64) -> dict[str, Any]:
    from .metrics import WSOLEvaluator

    evaluator = WSOLEvaluator(metadata, cam_size=size)
    ids = list(metadata.image_ids)
    for first in range(0, len(ids), batch):
        part = ids[first:first + batch]
        maps = maps_for(part)
        if save_dir is not None:
            _save_maps(save_dir, part, maps)
        evaluator.accumulate(maps, part)
    return evaluator.compute(threshold=threshold) if threshold is not None else evaluator.compute()


def score_centre_gaussian(metadata: Metadata, size: int, sigma: float, threshold: float | None = None,
                          save_dir: Path | None = None) -> dict[str, Any]:
    """The evaluator's metrics of the same centred Gaussian for every image of a split."""
    g = centre_gaussian(size, sigma)
    return _score(metadata, size, lambda ids: np.broadcast_to(g, (len(ids), size, size)).copy(), threshold, save_dir)


def centre_gaussian_floor(data_root: str | os.PathLike, splits: Sequence[str], val_split: str = "val",
                          size: int = 224, save_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """σ chosen on ``val_split`` by MaxBoxAccV2 (ties: the smaller σ), the box threshold for GT-known Loc
    chosen there too; then every split scored once at that σ and threshold. ``save_dir``: also write the
    maps, ``save_dir/<split>/<image_id>.npy`` (``kdcicam score --box-threshold T`` gives the same numbers)."""
    root = Path(data_root)
    val_md = read_metadata(root / val_split, check_images=False)
    search = {s: score_centre_gaussian(val_md, size, s) for s in SIGMAS}
    sigma = max(SIGMAS, key=lambda s: (search[s]["max_box_acc_v2"], -s))
    threshold = float(search[sigma]["best_threshold"]["50"])
    out: dict[str, Any] = {"kind": "centre-gaussian", "sigma": sigma, "chosen_on": val_split,
                           "box_threshold": threshold, "grid": size,
                           "search": {str(s): round(float(search[s]["max_box_acc_v2"]), 4) for s in SIGMAS},
                           "splits": {}}
    for split in [val_split, *[s for s in splits if s != val_split]]:
        md = val_md if split == val_split else read_metadata(root / split, check_images=False)
        m = score_centre_gaussian(md, size, sigma, threshold,
                                  save_dir=Path(save_dir) / split if save_dir is not None and split in splits else None)
        out["splits"][split] = {k: m[k] for k in FLOOR_KEEP if k in m and m[k] is not None}
        store_floor(root, split, val_split, size, {**{k: v for k, v in out.items() if k not in ("splits", "search")},
                                                   "split": split, "metrics": out["splits"][split]})
    return out


# ------------------------------------------------------------------------------------------- oracle
def oracle_maps(regions: np.ndarray, grid: tuple[int, int], size: int, mode: str = "coverage") -> np.ndarray:
    """Object regions ``[B, S, S]`` (bool) → a map on ``grid`` (h, w) → evaluated score maps ``[B, size, size]``."""
    import cv2

    from .boxes import prepare_scoremap

    if mode not in ORACLE_MODES:
        raise ValueError(f"oracle mode {mode!r}; valid: {', '.join(ORACLE_MODES)}")
    h, w = grid
    out = []
    for r in regions:
        cover = cv2.resize(r.astype(np.float64), (w, h), interpolation=cv2.INTER_AREA)
        if mode == "inner":
            cover = (cover >= cover.max() - 1e-9).astype(np.float64) if cover.max() > 0 else cover
        elif mode.startswith("coverage^"):
            cover = cover ** float(mode.split("^")[1])
        out.append(prepare_scoremap(cover, size))
    return np.stack(out)


def score_oracle(data_root: str | os.PathLike, split: str, size: int, grid: tuple[int, int], mode: str = "coverage",
                 threshold: float | None = None, save_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The evaluator's metrics of the oracle CAM on ``grid`` for one split (``object_region`` says whether the
    split's masks or its boxes were the object)."""
    from .masks import boxes_mask
    from .metrics import MaskEvaluator, _GTBoxes

    md = read_metadata(Path(data_root) / split, check_images=False)
    if md.has_masks:
        reader = MaskEvaluator(md, size)

        def region(image_id: str) -> np.ndarray:
            return reader.mask(image_id) == 1
    else:
        from .metrics import WSOLEvaluator

        gt = _GTBoxes(WSOLEvaluator(md, cam_size=size).grid)

        def region(image_id: str) -> np.ndarray:
            return boxes_mask(gt(image_id), (size, size))

    m = _score(md, size, lambda ids: oracle_maps(np.stack([region(i) for i in ids]), grid, size, mode),
               threshold, Path(save_dir) if save_dir is not None else None)
    return m | {"object_region": "mask" if md.has_masks else "boxes", "grid": list(grid), "mode": mode}


# -------------------------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """Where computed floors are kept: ``$KDCICAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/kdcicam``, else
    ``~/.cache/kdcicam``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kdcicam"


def _fingerprint(split_dir: Path) -> str:
    """A split as the floor sees it: the bytes of its metadata files (ids, labels, sizes, boxes, masks)."""
    digest = hashlib.sha256()
    for name in ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt", "masks.txt"):
        path = split_dir / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"-") + b"\0")
    return digest.hexdigest()


def _floor_file(data_root: Path, split: str, val_split: str, size: int) -> Path | None:
    try:
        key = hashlib.sha256(f"centre-gaussian|{size}|{_fingerprint(data_root / val_split)}|"
                             f"{_fingerprint(data_root / split)}".encode()).hexdigest()[:32]
    except OSError:
        return None
    return cache_dir() / "floors" / f"{key}.json"


def store_floor(data_root: Path, split: str, val_split: str, size: int, record: dict[str, Any]) -> None:
    """Keep one split's floor for :func:`cached_floor` (a cache that cannot be written is skipped)."""
    path = _floor_file(Path(data_root), split, val_split, size)
    if path is not None:
        with contextlib.suppress(OSError):
            atomic_write_text(path, json.dumps({**record, "data_root": str(data_root)}, indent=2) + "\n")


def cached_floor(data_root: str | os.PathLike, split: str, val_split: str, size: int) -> dict[str, Any] | None:
    """The centre-Gaussian floor of ``split`` (σ chosen on ``val_split``, scored on a ``size`` grid) when
    ``kdcicam baseline`` has computed it for these very metadata files; else None. Cheap: hashes the two
    splits' metadata files and reads one small JSON file."""
    path = _floor_file(Path(data_root), split, val_split, size)
    if path is None or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("metrics"), dict) else None
