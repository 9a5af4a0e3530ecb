"""Score a folder of saved CAMs with the wsolevaluation protocol (what ``kdcicam score`` runs).

Layout as wsolevaluation reads (and its ``inference.py`` writes) them: the map of image id
``cls/img.jpg`` is ``CAM_DIR/cls/img.jpg.npy`` (``np.save`` appends ``.npy`` to the id, extension
and sub-folders kept), a 2-D float array in [0, 1] on the evaluation grid (by default, the grid is
the maps' own size: ``kdcicam evaluate --save-cams`` writes them at the run's ``data.image_size``).

There is no validation split here, so GT-known Loc is read at the threshold best on the scored split
itself and named for it (``gt_known_loc_oracle``); ``gt_known_loc`` appears only when a threshold
chosen elsewhere is given (``box_threshold``), as in ``kdcicam evaluate`` (docs/method.md §5).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import KdcicamError

BATCH = 64  #: maps per evaluator call when PxAP needs them whole (memory stays flat however many images)
#: images per evaluator call when the kernel's workers read the maps themselves (boxes and leakage: no map is
#: held, only the per-threshold IoUs, 32 bytes per image and threshold)
SOURCE_BATCH = 512
#: splits of at least this many images are scored on every core; smaller ones on one thread. Measured
#: (benchmarks/results/evaluator_speed.json, parallel_from, 2 cores): two workers were already faster at 4
#: maps (2.8 vs 3.7 ms), the smallest size tried; below that a split is too small for either to matter
PARALLEL_FROM = 4


class CamFileError(KdcicamError, ValueError):
    """A saved score map that cannot be scored; the message names the image id and the file."""

    def __init__(self, image_id: str | None, path: Path, problem: str):
        self.image_id = image_id
        self.path = path
        who = f"image {image_id!r} ({path})" if image_id is not None else str(path)
        super().__init__(f"{who}: {problem}")


def cam_path(cam_dir: Path, image_id: str) -> Path:
    """Where wsolevaluation looks for an image's map: ``CAM_DIR/<image_id>.npy``."""
    return cam_dir / (image_id + ".npy")


def load_cam(cam_dir: Path, image_id: str, shape: tuple[int, int] | None, normalize: bool):
    """Load and check one map (never unpickles); ``shape=None`` takes any 2-D map."""
    import numpy as np

    from .boxes import normalize_scoremap

    path = cam_path(cam_dir, image_id)
    if not path.is_file():
        raise CamFileError(image_id, path, "score map file not found")
    try:
        cam = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise CamFileError(image_id, path, f"cannot load without unpickling (dtype object?): {e}") from None
    except (OSError, EOFError) as e:
        raise CamFileError(image_id, path, f"not a readable .npy file: {e}") from None
    except Exception as e:  # a file that starts like an .npz: np.load imported zipfile to open it
        import zipfile  # here, not above: ``kdcicam score`` loads one map this way, and never needs it

        if not isinstance(e, zipfile.BadZipFile):
            raise
        raise CamFileError(image_id, path, f"not a readable .npy file: {e}") from None
    if not isinstance(cam, np.ndarray):
        raise CamFileError(image_id, path, "not a single array")
    if cam.dtype == object or not np.issubdtype(cam.dtype, np.floating):
        raise CamFileError(image_id, path, f"dtype {cam.dtype}, expected a float array")
    if shape is None and cam.ndim != 2:
        raise CamFileError(image_id, path, f"shape {cam.shape}: expected a 2-D map (height, width)")
    if shape is not None and cam.shape != shape:
        raise CamFileError(image_id, path, f"shape {cam.shape}, expected {shape} (height, width); "
                           "resize CAMs to the evaluation grid (--cam-size) first")
    cam = cam.astype(np.float64, copy=False)
    if not np.isfinite(cam).all():
        raise CamFileError(image_id, path, "contains NaN or inf")
    if normalize:
        return normalize_scoremap(cam)
    lo, hi = float(cam.min()), float(cam.max())
    if lo < 0.0 or hi > 1.0:
        raise CamFileError(image_id, path, f"values must lie in [0, 1], got min {lo:g}, max {hi:g} "
                           "(use --normalize for raw CAMs)")
    return cam


def _npy_entries(cam_dir: Path) -> list[str]:
    """The entries named ``*.npy`` under ``cam_dir`` as ``cam_dir.rglob("*.npy")`` finds them (folders
    entered unless they are symbolic links), as POSIX paths relative to it: one ``os.scandir`` per
    folder and no ``Path`` per file (rglob's cost two thirds of the check on 1,389 maps)."""
    found: list[str] = []
    stack = [("", str(cam_dir))]
    while stack:
        prefix, folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    name = entry.name
                    if name.endswith(".npy"):
                        found.append(prefix + name)
                    try:
                        if entry.is_dir() and not entry.is_symlink():
                            stack.append((f"{prefix}{name}/", entry.path))
                    except OSError:
                        continue
        except OSError:
            continue
    return found


def check_no_strays(cam_dir: Path, image_ids: list[str]) -> None:
    """A .npy under CAM_DIR that belongs to no image id is an error: scoring a different split or
    a renamed dataset must not pass silently. A file whose path under CAM_DIR is literally an id's
    ``<id>.npy`` is that id's map; only the others are compared after resolving links and ``..``
    (resolving every path cost a tenth of a second on 1,389 maps, more than reading the metadata),
    in path order, so that the error names the first stray one."""
    names = {image_id + ".npy" for image_id in image_ids}
    others = sorted(cam_dir / relative for relative in _npy_entries(cam_dir) if relative not in names)
    if not others:
        return
    expected = {cam_path(cam_dir, i).resolve() for i in image_ids}
    for path in others:
        if path.resolve() not in expected:
            relative = path.relative_to(cam_dir).as_posix()
            raise CamFileError(relative[: -len(".npy")], path, "a score map for an image id that is not in the metadata")


def score_saved_cams(cam_dir: Path, metadata_dir: Path, multi_contour: bool = False, iou: list[int] | None = None,
                      interval: float = 0.01, cam_size: int | tuple[int, int] | None = None, normalize: bool = False,
                      mask_root: Path | None = None, box_threshold: float | None = None,
                      one_mode: bool = False) -> dict[str, Any]:
    """Score a folder of maps; returns the JSON-ready metrics. ``cam_size=None``: the first map's size (every
    map must have it); ``box_threshold``: also read GT-known Loc there (a threshold chosen on another split).

    By default every metric the split allows is computed in one pass: single-contour MaxBoxAcc and GT-known
    Loc, MaxBoxAccV2 (multi-contour), PxAP with masks, context leakage. ``one_mode``: only the boxes of the
    contour mode asked for, as one wsolevaluation run computes them (every key keeps its default meaning, so
    GT-known Loc, single-contour, only in that mode; no leakage, no PxAP); faster when only that mode is wanted
    (docs/benchmarks.md, evaluator speed)."""
    import numpy as np

    from ..data.metadata import read_metadata
    from .boxes import ScoremapError, as_size
    from .cam_batches import CamFiles, Headers, batches, value_error
    from .metrics import V2_IOU_THRESHOLDS, BoxEvaluator, WSOLEvaluator

    if not cam_dir.is_dir():
        raise KdcicamError(f"{cam_dir}: CAM folder not found")
    metadata = read_metadata(metadata_dir, check_images=False)
    if mask_root is not None:
        metadata.image_root = mask_root
    if metadata.has_masks and metadata.image_root is None:
        raise KdcicamError(f"{metadata_dir}: the split has masks but no image root to find them; pass --mask-root")
    if not (metadata.has_boxes or metadata.has_masks):
        raise KdcicamError(f"{metadata_dir}: the split has neither boxes nor masks (no localization.txt or masks.txt): "
                           "nothing to score")
    if one_mode and not metadata.has_boxes:
        raise KdcicamError(f"{metadata_dir}: --one-mode scores boxes, and the split has none (masks only): "
                           "drop --one-mode to get PxAP")
    iou = list(iou or [30, 50, 70])
    if one_mode and multi_contour and box_threshold is not None:
        raise KdcicamError("--box-threshold reads GT-known Loc, which is single-contour here: drop --one-mode or "
                           "--multi-contour")
    # IoU 50 is always counted (GT-known Loc and the oracle threshold are read there), and in the multi-contour
    # mode MaxBoxAccV2's IoUs (its definition); only the IoUs asked for are reported
    counted = sorted(set(iou) | {50} | (set(V2_IOU_THRESHOLDS) if multi_contour else set()))
    if cam_size is None:
        h, w = load_cam(cam_dir, metadata.image_ids[0], None, normalize).shape
        cam_size = (w, h)
    ids = metadata.image_ids
    workers = 1 if len(ids) < PARALLEL_FROM else None
    evaluator: WSOLEvaluator | BoxEvaluator
    try:
        if one_mode:
            evaluator = BoxEvaluator(metadata, cam_size, counted, multi_contour, interval, workers=workers)
        else:
            evaluator = WSOLEvaluator(metadata, cam_size, counted, interval, workers=workers)
    except ValueError as e:
        raise KdcicamError(str(e)) from None
    check_no_strays(cam_dir, ids)
    w, h = as_size(cam_size)
    if isinstance(evaluator, BoxEvaluator) or not evaluator.masks:
        # boxes and leakage only: the kernel's workers read each map into a buffer of their own and score it
        # there (cam_batches.CamFiles); a file's error is raised after the images before it are scored
        headers = Headers((h, w))
        for start in range(0, len(ids), SOURCE_BATCH):
            batch = ids[start:start + SOURCE_BATCH]
            evaluator.accumulate(CamFiles(cam_dir, batch, (h, w), normalize, headers), batch)
    else:
        # PxAP needs whole batches of maps and masks: the next batch's files and masks are read on a thread
        # while this one is scored
        for batch, maps, masks in batches(cam_dir, ids, (h, w), normalize, BATCH, evaluator.metadata_masks,
                                          reuse=True):
            try:
                evaluator.accumulate(maps, batch, loaded_masks=masks)
            except ScoremapError:
                found = value_error(cam_dir, batch, maps)  # NaN, inf or out of range: name the file
                if found is not None:
                    raise found from None
                raise
    if box_threshold is not None:
        try:
            evaluator.grid.threshold_index(box_threshold)
        except ValueError as e:
            raise KdcicamError(f"--box-threshold {box_threshold}: {e}") from None
    m = evaluator.compute(threshold=box_threshold)
    out: dict[str, Any] = {
        "cam_dir": str(cam_dir), "metadata": str(metadata_dir), "num_images": m["num_images"],
        "multi_contour": multi_contour, "iou_thresholds": iou, "cam_curve_interval": interval,
        "cam_size": list(as_size(cam_size)),
    }
    if one_mode:
        out["one_mode"] = True
    if metadata.has_boxes:
        wanted = [str(i) for i in iou]
        if one_mode:  # a BoxEvaluator's metrics are its mode's
            key, per_iou = "", m["max_box_acc"]
        else:
            key = "_v2" if multi_contour else ""
            per_iou = m["max_box_acc_v2_per_iou"] if multi_contour else m["max_box_acc"]
        out["max_box_acc"] = _only(per_iou, wanted)
        if not one_mode:
            out["max_box_acc_v2"] = m["max_box_acc_v2"]
        elif multi_contour:  # MaxBoxAccV2's IoUs were counted (above)
            out["max_box_acc_v2"] = float(np.mean([per_iou[str(i)] for i in V2_IOU_THRESHOLDS]))
        out.update({
            # per IoU threshold only, in both modes (GT-known Loc: single-contour, IoU 50)
            "best_threshold": _only(m["best_threshold" + key], wanted),
            "box_acc_curve": _only(m["box_acc_curve" + key], ["thresholds", *wanted]),
        })
        if not (one_mode and multi_contour):  # GT-known Loc is single-contour by definition
            out.update({"gt_known_loc_oracle": m["gt_known_loc_oracle"], "oracle_threshold": m["best_threshold"]["50"]})
            if box_threshold is not None:
                out.update({"gt_known_loc": m["gt_known_loc"], "box_threshold": m["best_threshold"]["used"]})
    if m.get("pxap") is not None:  # a BoxEvaluator (--one-mode) has neither PxAP nor leakage
        out.update({"pxap": m["pxap"], "piou": m["piou"], "piou_threshold": m["piou_threshold"]})
    out["context_leakage"] = m.get("context_leakage")
    return out


def _only(values: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """The entries of ``values`` for ``keys``, in that order (the IoUs asked for; the curve's thresholds)."""
    return {k: values[k] for k in keys}

