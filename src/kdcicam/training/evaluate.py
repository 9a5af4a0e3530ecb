"""`kdcicam evaluate`: the full metrics table of a trained model on a split.

The box threshold used for Top-1 / Top-5 / GT-known Loc is chosen on the validation split (the
threshold of best BoxAcc at IoU 0.5) and then applied unchanged to the test split: no number on
test is ever the result of a choice made on test. A val split without boxes cannot choose it: then
the threshold must be given (``box_threshold``), and the results say so (``box_threshold_chosen_on``
is ``"given"``). MaxBoxAcc / MaxBoxAccV2 / PxAP are threshold-free by definition; the ``*_oracle``
keys are read at each split's own best threshold (see :mod:`kdcicam.evaluation.metrics`).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoints import resolve_checkpoint, stage_folder
from ..data.metadata import atomic_write_text
from ..errors import ConfigError, KdcicamError, NoBoxThresholdError
from ..evaluation.baselines import cached_floor
from ..posthoc import NATIVE, PosthocCAM, check_method, create_posthoc
from ..scoremaps import scoremaps_for_evaluation
from .datamodule import WSOLDataModule
from .module import WSOLModule, load_module

log = logging.getLogger(__name__)


def _device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.inference_mode()
def run_split(module: WSOLModule, datamodule: WSOLDataModule, split: str, device: torch.device,
              save_cams: Path | None = None, progress: bool = True, source: str = "the model",
              posthoc: PosthocCAM | None = None, timing: dict[str, float] | None = None):
    """Score one split; returns the evaluator (so thresholds can be applied after). ``posthoc``: score its maps
    (and its forward's logits) instead of the model's native map, through the same resize and evaluator.
    ``timing`` gets ``images`` and ``seconds`` of the map computation (forward, method, resize; not the data
    loading nor the scoring)."""
    cfg = module.cfg
    evaluator = module._new_evaluator(datamodule.metadata(split))
    loader = datamodule.eval_dataloader(split)
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc=f"evaluate {split}", unit="batch", leave=False)
    for batch in loader:
        if batch is None:  # only unreadable images, skipped (data.skip_bad_images)
            continue
        start = time.perf_counter()
        if posthoc is not None:  # leaves inference mode itself: gradient methods need a graph
            logits, maps = posthoc(batch["image"].to(device))
            out = {"logits": logits}
        else:
            out = module(batch["image"].to(device))
        if not torch.isfinite(out["logits"]).all():
            raise KdcicamError(f"{source}: the model's outputs are NaN or inf on split {split!r} (first batch: "
                               f"{batch['image_id'][0]}); the checkpoint has diverged")
        if posthoc is None:
            maps = module.model.localization_map(out, kind=cfg.model.localization_map)
        scoremaps = scoremaps_for_evaluation(maps, cfg.data.image_size)
        if timing is not None:
            timing["seconds"] = timing.get("seconds", 0.0) + time.perf_counter() - start
            timing["images"] = timing.get("images", 0) + len(scoremaps)
        evaluator.accumulate(scoremaps, batch["image_id"], out["logits"].float().cpu().numpy())
        if save_cams is not None:
            for image_id, cam in zip(batch["image_id"], scoremaps, strict=True):
                path = save_cams / f"{image_id}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, cam)
    return evaluator


def _load_for_evaluation(run_or_ckpt: str | os.PathLike, device: str | None, data_root: str | None
                         ) -> tuple[Path, WSOLModule, torch.device, WSOLDataModule]:
    ckpt = resolve_checkpoint(run_or_ckpt)
    module = load_module(str(ckpt))
    if data_root is not None:
        module.cfg.data.root = data_root
    dev = _device(device)
    module.to(dev).eval()
    return ckpt, module, dev, WSOLDataModule(module.cfg)


def evaluate_official_protocol(run_or_ckpt: str | os.PathLike, splits: list[str], device: str | None = None,
                               data_root: str | None = None) -> dict[str, Any]:
    """The papers' own box protocol (docs/method.md §5), for parity with their tables only: resize R×R + centre
    crop, the segThr/mean box rule, +1 IoU. segThr and R come from the config (eval.official_*); they must be
    chosen on val, never on test."""
    from ..models.official_protocol import evaluate_official

    ckpt, module, dev, datamodule = _load_for_evaluation(run_or_ckpt, device, data_root)
    e, crop = module.cfg.eval, module.cfg.data.image_size
    resize = e.official_resize or round(crop * 8 / 7)
    results: dict[str, Any] = {"checkpoint": str(ckpt), "method": module.cfg.method, "protocol": "official",
                               "resize": resize, "crop": crop, "seg_threshold": e.official_seg_threshold}
    for split in splits:
        results[split] = evaluate_official(module.model, datamodule.metadata(split), resize=resize, crop=crop,
                                           seg_thr=e.official_seg_threshold, device=dev)
    return results


def check_box_threshold(threshold: float, interval: float) -> float:
    """A box threshold given by the user: in [0, 1) and on the evaluated grid ``np.arange(0, 1, interval)``."""
    t = float(threshold)
    grid = np.arange(0, 1, interval)
    if not (np.isfinite(t) and 0.0 <= t < 1.0) or np.abs(grid - t).min() > 1e-6:
        raise ConfigError(f"--box-threshold {threshold}: must be in [0, 1) on the threshold grid of step "
                          f"{interval:g} (eval.cam_curve_interval)")
    return float(grid[int(np.argmin(np.abs(grid - t)))])


def evaluate(run_or_ckpt: str | os.PathLike, splits: list[str], save_cams: str | os.PathLike | None = None,
             device: str | None = None, data_root: str | None = None, progress: bool = True,
             write: bool = True, box_threshold: float | None = None, cam_method: str = NATIVE,
             target_layer: str | None = None, score_batch_size: int = 32,
             timings: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """Evaluate on each split. The box threshold is ``box_threshold`` when given, else the one best on the
    val split (which needs boxes: :class:`NoBoxThresholdError` otherwise, when a split asked for has boxes).
    Writes metrics.json beside the run; ``save_cams`` gets ``<split>/<image_id>.npy`` for every split asked.

    ``cam_method``: a post-hoc method (:mod:`kdcicam.posthoc`) scored instead of the native map, at
    ``target_layer``. Its box threshold is chosen on val *for its own maps* (the checkpoint's threshold was
    chosen for the native map and is never read here), and its results go under ``cam_methods[<method>]`` in
    metrics.json, beside the native ones, which they never replace. ``timings`` (benchmarks) gets, per split
    scored, the images and seconds of the map computation (:func:`run_split`)."""
    cam_method = check_method(cam_method)
    if cam_method == NATIVE and target_layer is not None:
        raise ConfigError(f"--target-layer {target_layer}: only post-hoc methods take one (--cam-method)")
    ckpt, module, dev, datamodule = _load_for_evaluation(run_or_ckpt, device, data_root)
    posthoc = None
    if cam_method != NATIVE:
        posthoc = create_posthoc(module.model, cam_method, target_layer, image_size=module.cfg.data.image_size,
                                 score_batch_size=score_batch_size)
    if datamodule.num_classes != module.num_classes:  # metrics against another label space would be meaningless
        raise ConfigError(f"{datamodule.root}: the dataset has {datamodule.num_classes} classes but {ckpt} was "
                          f"trained on {module.num_classes}")
    val_split = module.cfg.data.val_split
    needs_threshold = any(datamodule.metadata(s).has_boxes for s in splits)

    def cams_dir(split: str) -> Path | None:
        return Path(save_cams) / split if save_cams is not None else None

    evaluators = {}
    if box_threshold is not None:
        threshold: float | None = check_box_threshold(box_threshold, module.cfg.eval.cam_curve_interval)
        chosen_on = "given"
    elif datamodule.metadata(val_split).has_boxes:
        evaluators[val_split] = run_split(module, datamodule, val_split, dev, progress=progress, source=str(ckpt),
                                          save_cams=cams_dir(val_split) if val_split in splits else None,
                                          posthoc=posthoc,
                                          timing=None if timings is None else timings.setdefault(val_split, {}))
        threshold = float(evaluators[val_split].compute()["best_threshold"]["50"])
        chosen_on = val_split
    elif needs_threshold:
        raise NoBoxThresholdError(datamodule.root / val_split, val_split)
    else:  # nothing to localize with boxes: classification, PxAP and leakage need no threshold
        threshold, chosen_on = None, None
    results: dict[str, Any] = {"checkpoint": str(ckpt), "method": module.cfg.method,
                               "box_threshold": threshold, "box_threshold_chosen_on": chosen_on}
    if posthoc is not None:
        results.update(posthoc.describe())
    for split in splits:
        evaluator = evaluators.get(split) or run_split(module, datamodule, split, dev, save_cams=cams_dir(split),
                                                       progress=progress, source=str(ckpt), posthoc=posthoc,
                                                       timing=None if timings is None else timings.setdefault(split, {}))
        results[split] = evaluator.compute(threshold=threshold)
    floors = {s: f for s in splits
              if (f := cached_floor(datamodule.root, s, val_split, module.cfg.data.image_size)) is not None}
    if floors:  # known from `kdcicam baseline`: printed beside the run, never written into its metrics
        results["floors"] = floors
    if posthoc is not None:
        posthoc.close()
    if write:
        run_dir = stage_folder(ckpt)
        path = run_dir / "metrics.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        if posthoc is None:
            previous.update({k: v for k, v in results.items() if k != "floors"})
        else:  # beside the native results, never over them (the report and the Localizer read those)
            previous.setdefault("cam_methods", {})[cam_method] = {k: v for k, v in results.items() if k != "floors"}
        atomic_write_text(path, json.dumps(previous, indent=2))
        results["metrics_file"] = str(path)
    return results
