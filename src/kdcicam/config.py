"""Typed run configuration: dataclasses, YAML in, YAML saved next to every run.

Parsing, merging and ``key.sub=value`` overrides go through OmegaConf structured configs, so a
typo is an error that lists the valid keys instead of a silently ignored setting. YAML is only
ever loaded with ``yaml.safe_load`` (no object-constructing tags).
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from .errors import ConfigError

KD_STAGES = ("cls_teacher", "loc_teacher", "student")


@dataclass
class AugmentSettings:
    """Training augmentation (docs/method.md §4). ``kind``: ``resize_crop`` = Resize(resize) + RandomCrop(crop);
    ``rrc`` = RandomResizedCrop(crop, scale=(scale_min, scale_max)). A horizontal flip is always on."""

    kind: str = "resize_crop"
    resize: Optional[int] = None  # default: crop * 8 / 7 (e.g. 256 for 224)
    scale_min: float = 0.2
    scale_max: float = 1.0
    color_jitter: float = 0.0
    lighting: float = 0.0
    randaugment: bool = False


@dataclass
class DataConfig:
    root: str = "data/synth"  # folder with dataset.yaml and one metadata folder per split
    train_split: str = "train"
    val_split: str = "val"
    test_splits: list[str] = field(default_factory=lambda: ["test"])
    image_size: int = 128  # training crop and evaluation size (CAMs are scored on this grid)
    batch_size: int = 32
    eval_batch_size: int = 64
    num_workers: int = 0  # > 0: that many loader processes, kept across epochs
    cache_images: bool = False  # decode every image once and keep it in memory (w*h*3 bytes each)
    skip_bad_images: bool = False
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    limit_train_images: Optional[int] = None  # a deterministic subset, for smoke tests


@dataclass
class ModelConfig:
    backbone: str = "efficientnet_lite0"
    pretrained: Any = True  # true | false | path to a state_dict
    output_stride: Optional[int] = None
    freeze_stages: int = -1  # -1: train everything; 0: freeze the stem; N: stem + first N blocks (CPU recipe)
    combination: str = "quadratic"  # combinational CAM: quadratic | sum_1
    localization_map: str = "combinational"  # combinational | top1
    # CI-CAM
    pool_rate: float = 0.01
    # when set, pool_rate is derived from it: the target r·N, with N the expected number of pool updates
    # per class over the run (docs/method.md, "Scaling the recipes down"); the derived rate is saved
    pool_rate_target: Optional[float] = None
    pool_correct_fraction: float = 0.8  # share of a class's samples assumed correctly classified in that estimate
    soft_intervention: bool = False
    intervention: bool = True  # false: no F*(1+A) (CI-CAM's down branch = its up branch); an ablation switch
    recipe: str = "mm21"  # mm21: CE(up)+CE(down); kd: CE(down) only
    # teacher extras (docs/method.md §3.1)
    aux: Optional[str] = None  # fore | diff_aux
    aux_weight: float = 1.0
    mask_threshold: float = 0.08
    sparsity: float = 0.0
    sparsity_upsampled: bool = True


@dataclass
class OptimConfig:
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1
    # CI-CAM's intervention conv (mask2attention): null = with the backbone at lr·backbone_lr_mult (official);
    # a number = its own group at lr·intervention_lr_mult
    intervention_lr_mult: Optional[float] = None
    epochs: int = 10
    poly_power: float = 0.9
    step: int = 0  # multiply by `decay` every `step` epochs (0: never)
    decay: float = 0.5
    weight_decay: float = 0.0


@dataclass
class EvalConfig:
    cam_curve_interval: float = 0.01
    iou_thresholds: list[int] = field(default_factory=lambda: [30, 50, 70])
    monitor: str = "val/max_box_acc_v2"
    monitor_mode: str = "max"
    protocol: str = "wsol"  # wsol (clovaai/wsolevaluation) | official (paper parity, docs/method.md §5)
    official_resize: int = 0  # official protocol: resize R before the centre crop (0: image_size * 8/7)
    official_seg_threshold: float = 0.14


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"  # auto: bf16-mixed on CUDA (16-mixed where bf16 is missing), 32 on CPU
    seed: int = 0
    channels_last: bool = True
    checkpoint_every_n_steps: int = 0  # besides every epoch; 0 = epoch ends only
    keep_epoch_checkpoints: bool = False  # checkpoints/epoch<k>.ckpt (weights only) for every epoch, kept
    log_every_n_steps: int = 10
    num_threads: int = 0  # torch CPU threads, 0 = library default
    progress_bar: bool = True
    val_every_n_epochs: int = 1
    fail_on_nonfinite_loss: bool = True
    diag_every_n_steps: int = 25  # gradient share of every loss term, sampled every N steps (0: off)


@dataclass
class StageOverrides:
    """Settings a KD-CI-CAM stage changes relative to the shared config."""

    model: dict = field(default_factory=dict)
    optim: dict = field(default_factory=dict)
    augment: dict = field(default_factory=dict)
    monitor: Optional[str] = None


@dataclass
class KDConfig:
    alpha: float = 0.8
    temperature: float = 15.0
    kd_mode: str = "official"  # official | kl
    kd_t_squared: bool = False
    # the CAM distillation's temperature: null = kd.temperature (as coded); a number; or "auto" = the
    # localization teacher's raw-CAM standard deviation on the first training batches (measured when the
    # student starts, saved in the student's config.yaml)
    cam_temperature: Any = None
    # route 2's loss: mse (the authors': MSE of sigmoid(CAM/T) over all class CAMs) | at (attention transfer on
    # the scored map, built with the loc teacher's class ranking; docs/method.md §9, map-first distillation)
    cam_loss: str = "mse"
    cam_weight: float = 1.0  # multiplies route 2's term (its start value when cam_grad_share adapts it)
    # when set, route 2's weight adapts during training so that its term takes this share of the student's
    # summed gradient norms (measured every cam_share_every steps, the trainer.diag measurement)
    cam_grad_share: Optional[float] = None
    cam_share_every: int = 5
    # teachers taken from finished runs instead of trained (e.g. a CAM run's best_loc / best_cls checkpoints:
    # the dilemma's own specialists); null: the recipe trains kd.cls_teacher / kd.loc_teacher
    cls_teacher_checkpoint: Optional[str] = None
    loc_teacher_checkpoint: Optional[str] = None
    # the student's starting weights: null = ImageNet backbone (as the papers); "loc_teacher" or a checkpoint path:
    # every student parameter of the same name and shape is copied from that model (its pool starts empty)
    student_init: Optional[str] = None
    # E4, a counterfactual loss in the student on route-2 samples: with m the loc teacher's fg mask on the same view
    # (its scored map > counterfactual_mask * max), rho * [CE(z(x*m) - z(x*(1-m))) + CE((diff + z) / 2)]; 0 = off
    counterfactual: float = 0.0
    counterfactual_mask: float = 0.25
    teachers: str = "both"  # both | cls | loc | none
    # true: the authors' student whatever the keys above say (PAPER_STUDENT: their logit KD, MSE of all class CAMs
    # at T, route 2 on 10 % crops, trained teachers, ImageNet start) -- paper parity one switch away from the
    # shipped map-first recipe (docs/method.md §9)
    paper_student: bool = False
    route_augment: list[AugmentSettings] = field(default_factory=lambda: [
        AugmentSettings(kind="rrc", scale_min=0.2, randaugment=True),
        AugmentSettings(kind="rrc", scale_min=0.2),
        AugmentSettings(kind="rrc", scale_min=0.1),
    ])
    cls_teacher: StageOverrides = field(default_factory=lambda: StageOverrides(
        model={"aux": "fore", "aux_weight": 1.0, "mask_threshold": 0.08, "sparsity": 0.04},
        augment={"kind": "rrc", "scale_min": 0.2, "color_jitter": 0.4, "lighting": 0.1},
        monitor="val/top1_cls"))
    loc_teacher: StageOverrides = field(default_factory=lambda: StageOverrides(
        model={"aux": "diff_aux", "aux_weight": 0.5},
        augment={"kind": "resize_crop"},
        monitor="val/gt_known_loc"))
    student: StageOverrides = field(default_factory=lambda: StageOverrides(model={"pool_rate": 0.002}))


#: the KD keys ``kd.paper_student=true`` sets: the student as the authors' code trains it
PAPER_STUDENT = {"kd_mode": "official", "kd_t_squared": False, "temperature": 15.0, "cam_temperature": None,
                 "cam_loss": "mse", "cam_weight": 1.0, "cam_grad_share": None, "counterfactual": 0.0,
                 "cls_teacher_checkpoint": None, "loc_teacher_checkpoint": None, "student_init": None}


@dataclass
class RunConfig:
    method: str = "cam"
    name: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    kd: KDConfig = field(default_factory=KDConfig)


# ------------------------------------------------------------------------------------------ helpers
def _valid_keys(node: Any, prefix: str = "") -> list[str]:
    out = []
    for f in fields(node):
        value = getattr(node, f.name)
        if is_dataclass(value):
            out += _valid_keys(value, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


#: what to give for a value a shipped config leaves open (``???``), so that a run never starts on a silent default
REQUIRED_HINTS = {
    "model.pretrained": "the path of the backbone's ImageNet state_dict (e.g. torchvision's vgg16-397923af.pth), "
                        "or false to train from random weights",
}


def _missing(key: str, where: str) -> ConfigError:
    hint = REQUIRED_HINTS.get(key, "a value")
    return ConfigError(f"{where}: {key} must be set (the config leaves it as ???): add {key}=VALUE to the "
                       f"command line, VALUE being {hint}")


def _explain(e: OmegaConfBaseException, where: str) -> ConfigError:
    key = getattr(e, "full_key", None) or ""
    if isinstance(e, MissingMandatoryValue):
        return _missing(key, where)
    if isinstance(e, (ConfigKeyError, ConfigAttributeError)):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node: Any = RunConfig()
        for part in parent.split(".") if parent else []:
            node = getattr(node, part, None)
            if not is_dataclass(node):
                node = RunConfig()
                parent = ""
                break
        valid = ", ".join(_valid_keys(node, f"{parent}." if parent else ""))
        return ConfigError(f"{where}: unknown key {key!r}; valid keys: {valid}")
    if isinstance(e, ValidationError):
        return ConfigError(f"{where}: bad value for {key!r}: {str(e.msg).splitlines()[0]}")
    return ConfigError(f"{where}: {e}")


def _safe_load_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{line}: invalid or unsafe YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _required_keys(data: Any, prefix: str = "") -> list[str]:
    """Dotted keys a YAML file leaves as ``???`` (OmegaConf's "must be given" marker)."""
    if isinstance(data, dict):
        return [k for key, value in data.items() for k in _required_keys(value, f"{prefix}{key}.")]
    return [prefix[:-1]] if data == "???" else []


def _finish(cfg: DictConfig, where: str) -> RunConfig:
    try:
        run: RunConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except OmegaConfBaseException as e:
        raise _explain(e, where) from None
    if run.kd.paper_student:
        for key, value in PAPER_STUDENT.items():
            setattr(run.kd, key, value)
        run.kd.route_augment[2] = AugmentSettings(kind="rrc", scale_min=0.1)
    validate(run, where)
    return run


def _check_index(cfg: DictConfig, key: str, item: str) -> None:
    """A list element named by index must exist: ``kd.route_augment.7.kind`` names no route."""
    node: Any = cfg
    for part in key.split("."):
        if part.isdigit():
            if not OmegaConf.is_list(node) or int(part) >= len(node):
                size = len(node) if OmegaConf.is_list(node) else 0
                raise ConfigError(f"override {item!r}: index {part} is out of range (the list has {size} entries)")
            node = node[int(part)]
        elif OmegaConf.is_dict(node) and part in node:
            node = node[part]
        else:
            return  # an unknown key: OmegaConf names it, with the valid keys


def method_names() -> list[str]:
    """The methods a config may name: those registered with ``@register_model`` (the model registry is the
    one list; importing it loads the model modules, hence torch)."""
    from .models.registry import list_models

    return list_models()


def _check_method(method: str, where: str) -> None:
    names = method_names()
    if method not in names:
        raise ConfigError(f"{where}: method {method!r} is not a registered method; valid: {', '.join(names)}")


def shipped_configs() -> dict[str, Path]:
    """The configs that ship inside the package (``kdcicam/configs/NAME.yaml``), by name. They are package
    data, so an installed kdcicam finds them without a checkout (a checkout's top-level ``configs/`` is a link
    to the same folder)."""
    folder = Path(__file__).resolve().parent / "configs"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def resolve_config(name_or_path: str | os.PathLike) -> Path:
    """A config given as a path (used when that file exists) or as the name of a shipped config
    (``synthetic_v2`` or ``synthetic_v2.yaml``). Anything else is a :class:`ConfigError` naming the
    shipped configs, so a typo does not silently fall back to another file."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_configs()
    text = str(name_or_path)
    if "/" not in text and os.sep not in text:
        name = text.removesuffix(".yaml")
        if name in shipped:
            return shipped[name]
    if path.exists():
        raise ConfigError(f"{path}: not a config file")
    raise ConfigError(f"config {text!r}: no such file, and not the name of a shipped config "
                      f"({', '.join(shipped) or 'none found'})")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = (),
                method: str | None = None) -> RunConfig:
    """Defaults ← YAML file ← ``method`` ← ``key.sub=value`` overrides (each layer checked). ``path`` is
    a file or the name of a shipped config (:func:`resolve_config`)."""
    cfg = OmegaConf.structured(RunConfig)
    where = "config"
    required: list[str] = []
    if path is not None:
        path = resolve_config(path)
        where = str(path)
        data = _safe_load_yaml(path)
        required = _required_keys(data)
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.create(data))
        except OmegaConfBaseException as e:
            raise _explain(e, where) from None
    if method is not None:
        _check_method(method, "--method")
        cfg.method = method
    given = {item.split("=", 1)[0].strip() for item in overrides}
    for key in required:
        if key not in given:
            raise _missing(key, where)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        key, value = item.split("=", 1)
        try:
            if any(part.strip().isdigit() for part in key.split(".")):  # a list element (kd.route_augment.2.kind)
                _check_index(cfg, key.strip(), item)
                parsed = OmegaConf.from_dotlist([f"value={value}"])["value"]
                OmegaConf.update(cfg, key.strip(), parsed, merge=True)
            else:
                cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as e:
            raise _explain(e, f"override {item!r}") from None
    return _finish(cfg, where)


def config_from_dict(data: dict, where: str = "config") -> RunConfig:
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.create(data))
    except OmegaConfBaseException as e:
        raise _explain(e, where) from None
    assert isinstance(cfg, DictConfig)  # merged into a structured DictConfig
    return _finish(cfg, where)


def config_to_dict(config: RunConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)  # type: ignore[return-value]


def save_config(config: RunConfig, path: str | os.PathLike) -> Path:
    from .data.metadata import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return Path(path)


def with_overrides(config: RunConfig, section: str, values: dict, where: str) -> RunConfig:
    """A copy of ``config`` with ``values`` merged into one section (used by the KD stages)."""
    data = config_to_dict(config)
    data[section] = {**data[section], **copy.deepcopy(dict(values))}
    return config_from_dict(data, where)


_CHOICES = {
    "model.combination": ("quadratic", "sum_1"),
    "model.localization_map": ("combinational", "top1"),
    "model.recipe": ("mm21", "kd"),
    "model.aux": (None, "fore", "diff_aux"),
    "kd.kd_mode": ("official", "kl"),
    "kd.cam_loss": ("mse", "at"),
    "kd.teachers": ("both", "cls", "loc", "none"),
    "eval.protocol": ("wsol", "official"),
    "eval.monitor_mode": ("max", "min"),
    "data.augment.kind": ("resize_crop", "rrc"),
}


def validate(config: RunConfig, where: str = "config") -> None:
    """Check values OmegaConf's types cannot: choices and ranges."""
    _check_method(config.method, where)
    for dotted, choices in _CHOICES.items():
        value: Any = config
        for part in dotted.split("."):
            value = getattr(value, part)
        if value not in choices:
            shown = ", ".join("null" if c is None else str(c) for c in choices)
            raise ConfigError(f"{where}: {dotted}={value!r} is not one of: {shown}")
    positive = {"data.image_size": config.data.image_size, "data.batch_size": config.data.batch_size,
                "data.eval_batch_size": config.data.eval_batch_size, "optim.epochs": config.optim.epochs,
                "optim.lr": config.optim.lr}
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{where}: {key} must be positive, got {value}")
    if not 0.0 <= config.kd.alpha <= 1.0:
        raise ConfigError(f"{where}: kd.alpha must be in [0, 1], got {config.kd.alpha}")
    if config.kd.temperature <= 0:
        raise ConfigError(f"{where}: kd.temperature must be positive, got {config.kd.temperature}")
    ct = config.kd.cam_temperature
    if not (ct is None or ct == "auto" or (isinstance(ct, (int, float)) and not isinstance(ct, bool) and ct > 0)):
        raise ConfigError(f"{where}: kd.cam_temperature must be null, \"auto\" or a positive number, got {ct!r}")
    share = config.kd.cam_grad_share
    if share is not None and not 0 < share < 1:
        raise ConfigError(f"{where}: kd.cam_grad_share must be in (0, 1) or null, got {share}")
    if not config.kd.cam_weight > 0:
        raise ConfigError(f"{where}: kd.cam_weight must be positive, got {config.kd.cam_weight}")
    if config.kd.counterfactual < 0 or not 0 <= config.kd.counterfactual_mask < 1:
        raise ConfigError(f"{where}: kd.counterfactual must be >= 0 and kd.counterfactual_mask in [0, 1), got "
                          f"{config.kd.counterfactual}, {config.kd.counterfactual_mask}")
    if config.kd.cam_share_every < 1:
        raise ConfigError(f"{where}: kd.cam_share_every must be >= 1, got {config.kd.cam_share_every}")
    if config.model.pool_rate_target is not None and config.model.pool_rate_target < 0:
        raise ConfigError(f"{where}: model.pool_rate_target must be >= 0, got {config.model.pool_rate_target}")
    if config.optim.intervention_lr_mult is not None and config.optim.intervention_lr_mult < 0:
        raise ConfigError(f"{where}: optim.intervention_lr_mult must be >= 0, got {config.optim.intervention_lr_mult}")
    if not 0 < config.model.pool_correct_fraction <= 1:
        raise ConfigError(f"{where}: model.pool_correct_fraction must be in (0, 1], got "
                          f"{config.model.pool_correct_fraction}")
    if len(config.kd.route_augment) != 3:
        raise ConfigError(f"{where}: kd.route_augment needs 3 entries (routes 0, 1, 2), got "
                          f"{len(config.kd.route_augment)}")
    for i, aug in enumerate(config.kd.route_augment):
        if aug.kind not in _CHOICES["data.augment.kind"]:
            raise ConfigError(f"{where}: kd.route_augment.{i}.kind={aug.kind!r} is not one of: "
                              f"{', '.join(map(str, _CHOICES['data.augment.kind']))}")
    if not 0 < config.eval.cam_curve_interval < 1:
        raise ConfigError(f"{where}: eval.cam_curve_interval must be in (0, 1)")


def kd_stage_configs(config: RunConfig) -> dict[str, RunConfig]:
    """The three KD-CI-CAM stages, each the shared config with its own overrides (kd.<stage>):
    teachers are CI-CAM with their extra losses and augmentation; the student keeps method kd-ci-cam."""
    stages: dict[str, RunConfig] = {}
    for stage in KD_STAGES:
        overrides = getattr(config.kd, stage)
        cfg = with_overrides(config, "model", overrides.model, f"kd.{stage}.model")
        cfg = with_overrides(cfg, "optim", overrides.optim, f"kd.{stage}.optim")
        data = config_to_dict(cfg)["data"]
        data["augment"] = {**data["augment"], **dict(overrides.augment)}
        cfg = with_overrides(cfg, "data", data, f"kd.{stage}.augment")
        cfg = with_overrides(cfg, "eval", {"monitor": overrides.monitor or cfg.eval.monitor}, f"kd.{stage}.monitor")
        if stage != "student":
            cfg.method = "ci-cam"
        stages[stage] = cfg
    return stages
