"""Checkpoints and run folders: find, read, check and load what training wrote.

Reading a checkpoint is not training, so this layer sits below both: training, ``kdcicam evaluate``,
the :class:`~kdcicam.inference.Localizer` and the report read checkpoints here, and the practitioner
path never imports :mod:`kdcicam.training`. The bare model is rebuilt from the run config through
:func:`kdcicam.models.registry.create_model`; wrapping it in the LightningModule is the training
layer's job (``kdcicam.training.module.load_module``).

A run folder, as :mod:`kdcicam.training.pipeline` writes it::

    RUN/config.yaml  RUN/checkpoints/{best,last}.ckpt  RUN/metrics.json
    KD-CI-CAM: one such stage folder per stage, RUN/{cls_teacher,loc_teacher,student}/
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import RunConfig, config_from_dict
from .errors import ConfigError, KdcicamError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

#: the LightningModule keeps the model as ``self.model``: its state-dict keys carry this prefix
MODEL_PREFIX = "model."


def resolve_checkpoint(run_or_ckpt: str | os.PathLike) -> Path:
    """A run folder (any method), a stage folder, or a .ckpt file → the checkpoint to use (best, else last)."""
    p = Path(run_or_ckpt)
    if p.is_file():
        return p
    if not p.is_dir():
        raise ConfigError(f"{p}: no such run folder or checkpoint")
    for stage_dir in (p / "student", p):
        for name in ("best.ckpt", "last.ckpt"):
            if (stage_dir / "checkpoints" / name).is_file():
                return stage_dir / "checkpoints" / name
    raise ConfigError(f"{p}: no checkpoints/best.ckpt or last.ckpt (nor under student/)")


def stage_folder(ckpt: Path) -> Path:
    """The folder a checkpoint's stage writes into (config.yaml, metrics.json): ``STAGE/checkpoints/x.ckpt``."""
    return Path(ckpt).parent.parent


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint safely: tensors and plain containers only (``weights_only=True``)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise KdcicamError(f"{p}: checkpoint not found")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file raises many types (UnpicklingError, RuntimeError, EOFError ...)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise KdcicamError(f"{p}: refused or unreadable checkpoint ({reason}). Only tensors and plain data are "
                           "loaded (weights_only=True); a file that needs arbitrary code to load is refused.") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise KdcicamError(f"{p}: not a kdcicam checkpoint (no state_dict / hyper_parameters)")
    return ckpt


def run_config(ckpt: Path) -> RunConfig:
    """The config of a checkpoint's run: the stage folder's config.yaml, else the one stored in the checkpoint."""
    from .config import load_config

    saved = stage_folder(ckpt) / "config.yaml"
    if saved.is_file():
        return load_config(saved)
    return config_from_dict(read_checkpoint(ckpt)["hyper_parameters"]["config"], str(ckpt))


def threshold_from_run(ckpt: Path, stored: float | None) -> tuple[float | None, str]:
    """The threshold chosen on val: the checkpoint's (set by the last validation before it was
    saved), else the ``box_threshold`` that ``kdcicam evaluate`` wrote into the run's metrics.json."""
    if stored is not None:
        return float(stored), "checkpoint (chosen on the validation split)"
    metrics = stage_folder(ckpt) / "metrics.json"
    if metrics.is_file():
        try:
            data = json.loads(metrics.read_text())
            value, chosen_on = data.get("box_threshold"), data.get("box_threshold_chosen_on")
        except (OSError, ValueError, AttributeError):
            value = chosen_on = None
        if value is not None:
            how = "given to kdcicam evaluate" if chosen_on == "given" else "chosen on the validation split"
            return float(value), f"{metrics} ({how})"
    return None, ""


def model_options(cfg: RunConfig) -> dict[str, Any]:
    """Options for :func:`kdcicam.create_model` from a run config."""
    m = cfg.model
    opts: dict[str, Any] = {"output_stride": m.output_stride, "freeze_stages": m.freeze_stages,
                            "combination": m.combination}
    if cfg.method in ("ci-cam", "kd-ci-cam"):
        opts.update(pool_rate=m.pool_rate, soft_intervention=m.soft_intervention)
    if cfg.method == "ci-cam":
        opts.update(recipe=m.recipe, intervention=m.intervention, aux=m.aux, aux_weight=m.aux_weight, mask_threshold=m.mask_threshold,
                    sparsity=m.sparsity, sparsity_upsampled=m.sparsity_upsampled)
    if cfg.method == "kd-ci-cam":
        cam_t = cfg.kd.cam_temperature  # "auto" is resolved by the pipeline before the student is built
        opts.update(alpha=cfg.kd.alpha, temperature=cfg.kd.temperature,
                    kd_mode=cfg.kd.kd_mode, kd_t_squared=cfg.kd.kd_t_squared, teachers=cfg.kd.teachers,
                    cam_temperature=None if cam_t in (None, "auto") else float(cam_t),
                    cam_loss=cfg.kd.cam_loss, cam_weight=cfg.kd.cam_weight)
    return opts


def build_model(cfg: RunConfig, num_classes: int, pretrained: Any = None) -> nn.Module:
    """The model a run config describes (``pretrained=None``: as the config says)."""
    from .models.registry import create_model

    return create_model(cfg.method, backbone=cfg.model.backbone, num_classes=num_classes,
                        pretrained=cfg.model.pretrained if pretrained is None else pretrained,
                        **model_options(cfg))


@dataclass
class LoadedCheckpoint:
    """A checkpoint's bare model (eval mode, on the CPU) with what is needed to use it."""

    path: Path
    model: nn.Module
    config: RunConfig
    num_classes: int
    class_names: list[str] | None = None
    box_threshold: float | None = None  #: chosen on val by the last validation before the save
    val_has_boxes: bool | None = None  #: False: val had no boxes to choose it on; None: unknown (no validation)
    hyper_parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.config.method


def load_checkpoint(run_or_ckpt: str | os.PathLike) -> LoadedCheckpoint:
    """A run folder (KD runs: the student) or a .ckpt → its model, rebuilt from the stored config without
    touching pretrained-weight files, and the weights checked to fit it exactly."""
    path = resolve_checkpoint(run_or_ckpt)
    ckpt = read_checkpoint(path)
    hp = dict(ckpt["hyper_parameters"])
    try:
        config = config_from_dict(hp["config"], str(path))
        num_classes = int(hp["num_classes"])
    except (KeyError, TypeError, ValueError) as e:
        raise KdcicamError(f"{path}: not a kdcicam checkpoint (hyper_parameters: {e})") from None
    # the model's weights, strictly; other keys belong to the training wrapper
    state = {k[len(MODEL_PREFIX):]: v for k, v in ckpt["state_dict"].items() if str(k).startswith(MODEL_PREFIX)}
    model = build_model(config, num_classes, pretrained=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise KdcicamError(f"{path}: checkpoint does not fit the model it describes: {str(e).splitlines()[0]}") from None
    if config.trainer.channels_last:  # the memory format it was trained in, as the training module holds it
        import torch

        model = model.to(memory_format=torch.channels_last)
    model.eval()
    extra = ckpt.get("kdcicam") or {}
    stored = extra.get("box_threshold") if isinstance(extra, dict) else None
    val_has_boxes = extra.get("val_has_boxes") if isinstance(extra, dict) else None
    names = hp.get("class_names")
    return LoadedCheckpoint(path=path, model=model, config=config, num_classes=num_classes,
                            class_names=list(names) if names else None,
                            box_threshold=None if stored is None else float(stored),
                            val_has_boxes=None if val_has_boxes is None else bool(val_has_boxes), hyper_parameters=hp)


def load_model(run_or_ckpt: str | os.PathLike) -> nn.Module:
    """The bare model of a checkpoint (the KD teachers are loaded this way)."""
    return load_checkpoint(run_or_ckpt).model


def copy_matching_weights(model: nn.Module, run_or_ckpt: str | os.PathLike, skip: tuple[str, ...] = ("pool.",)) -> int:
    """Copy into ``model`` every parameter and buffer of the checkpoint's model that has the same name and shape
    (a KD student started from a CAM or CI-CAM run); names starting with ``skip`` are left as they are (the
    context pool starts empty). Returns how many tensors were copied; none is an error."""
    import torch

    source = load_model(run_or_ckpt).state_dict()
    target = model.state_dict()
    copied = {k: v for k, v in source.items()
              if k in target and not k.startswith(skip) and tuple(v.shape) == tuple(target[k].shape)}
    if not copied:
        raise KdcicamError(f"{run_or_ckpt}: no weight of this checkpoint fits the model to initialise "
                           "(another backbone?)")
    with torch.no_grad():
        for k, v in copied.items():
            target[k].copy_(v.to(target[k].dtype))
    return len(copied)


def average_checkpoints(paths: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """The uniform weight average of checkpoints of one run (e.g. its ``epoch<k>.ckpt``), written atomically as a
    checkpoint of the same kind (the first one's config and metadata; floating tensors averaged, integer buffers
    such as BatchNorm's step count taken from the last). Its box threshold is cleared: choose one on val."""
    import tempfile

    import torch

    if not paths:
        raise ConfigError("average_checkpoints: no checkpoint given")
    ckpts = [read_checkpoint(resolve_checkpoint(p)) for p in paths]
    first, last = ckpts[0], ckpts[-1]
    keys = set(first["state_dict"])
    for p, c in zip(paths, ckpts, strict=True):
        if set(c["state_dict"]) != keys:
            raise KdcicamError(f"{p}: its weights do not match those of {paths[0]}; average checkpoints of one run")
    state = {}
    for k in first["state_dict"]:
        if first["state_dict"][k].is_floating_point():
            state[k] = sum(c["state_dict"][k].double() for c in ckpts).div(len(ckpts)).to(first["state_dict"][k].dtype)
        else:
            state[k] = last["state_dict"][k]
    averaged = {key: first[key] for key in ("hyper_parameters", "pytorch-lightning_version") if key in first}
    averaged["state_dict"] = state
    averaged["kdcicam"] = {**first.get("kdcicam", {}), "box_threshold": None,
                           "averaged_from": [str(p) for p in paths]}
    averaged["kdcicam"].pop("torch_rng_state", None)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(averaged, f)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


__all__ = ["LoadedCheckpoint", "average_checkpoints", "build_model", "copy_matching_weights", "load_checkpoint", "load_model", "model_options", "read_checkpoint",
           "resolve_checkpoint", "run_config", "stage_folder", "threshold_from_run"]
