"""Any timm model as a backbone: ``timm/<name>`` (its last feature map)."""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from ..base import Backbone
from .common import LoadReport, Pretrained, WSOLBackbone, _short, read_state_dict, weights_path
from .registry import register_backbone

TIMM_PREFIX = "timm/"


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
        self.mean = tuple(cfg.get("mean", Backbone.mean))
        self.std = tuple(cfg.get("std", Backbone.std))
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


@register_backbone(TIMM_PREFIX, prefix=True)
def timm_backbone(name: str, pretrained: Pretrained, output_stride: int | None, **options: Any) -> WSOLBackbone:
    """``timm/<name>``: options go to ``timm.create_model``."""
    import timm

    timm_name = name[len(TIMM_PREFIX):]
    if not timm_name or not timm.is_model(timm_name):
        raise ConfigError(f"backbone {name!r}: {timm_name!r} is not a timm model name")
    return TimmBackbone(timm_name, weights=weights_path(name, pretrained), output_stride=output_stride, **options)
