"""VGG16 as KD-CI-CAM modifies it (``Non_Local_VGG16`` / ``Non_Local_VGG16_ImageNet`` in
shaofeifei11/KG-CI-CAM).

- conv1_1 … conv5_3 of torchvision's vgg16, every ReLU replaced by LeakyReLU(0.2), pool5 removed
  (stride 16: 512×14×14 at 224 px);
- ``variant="cub"``: non-local blocks after pool2, pool3, pool4 and after conv5_3's activation;
- ``variant="imagenet"``: no block after pool2; after the conv5_3 block two new 3×3 convs
  512→1024→1024, each followed by LeakyReLU(0.2) (F: 1024×14×14).

The convolutions keep torchvision's ``features.<index>`` names and indices, so a torchvision
vgg16 state_dict loads as is; its ``classifier.*`` is simply unused.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ...errors import ConfigError
from .common import Pretrained, WSOLBackbone, load_matching_state_dict, read_state_dict, weights_path
from .nonlocal_block import NonLocalBlock
from .registry import register_backbone

VARIANTS = ("cub", "imagenet")
# torchvision's vgg16 "D" configuration without the final "M" (pool5)
_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
# index in ``features`` after which each non-local block runs (pools 2–4, conv5_3's activation)
_NONLOCAL_AFTER = {"pool2": 9, "pool3": 16, "pool4": 23, "conv5_3": 29}
_NONLOCAL_CHANNELS = {"pool2": 128, "pool3": 256, "pool4": 512, "conv5_3": 512}
# ``features`` slices of the five conv stages (stage k ends with pool k; stage 5 with conv5_3's activation)
_STAGES = [(0, 5), (5, 10), (10, 17), (17, 24), (24, 30)]
NEGATIVE_SLOPE = 0.2


def _make_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            conv = nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1)
            # torchvision's VGG initialisation, so a random-init network matches torchvision's
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)  # type: ignore[arg-type]  # bias=True
            layers += [conv, nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)]
            in_ch = int(v)
    return nn.Sequential(*layers)


class VGG16Backbone(WSOLBackbone):
    """Non-local VGG16 of KD-CI-CAM. Stem = conv stage 1 (to pool1); blocks = conv stages 2–5,
    each with the non-local block that follows it."""

    def __init__(self, variant: str = "cub", weights: str | os.PathLike | None = None,
                 output_stride: int | None = None, nonlocal_blocks: bool = True):
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"vgg16: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if output_stride not in (None, 16):
            raise ConfigError(f"vgg16: output_stride is 16 (pool5 removed), got {output_stride!r}")
        self.variant = variant
        self.features = _make_features()
        positions = [p for p in _NONLOCAL_AFTER if not (variant == "imagenet" and p == "pool2")]
        self.nonlocal_blocks = nn.ModuleDict(
            {p: NonLocalBlock(_NONLOCAL_CHANNELS[p]) for p in positions} if nonlocal_blocks else {}
        )
        self._nonlocal_at = {_NONLOCAL_AFTER[p]: p for p in self.nonlocal_blocks}
        if variant == "imagenet":
            self.extra: nn.Module = nn.Sequential(
                nn.Conv2d(512, 1024, kernel_size=3, padding=1), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
                nn.Conv2d(1024, 1024, kernel_size=3, padding=1), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
            )
            self.out_channels = 1024
        else:
            self.extra = nn.Identity()
            self.out_channels = 512
        self.stride = 16
        if weights is not None:
            self.load_report = load_matching_state_dict(self, read_state_dict(weights), str(weights))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._nonlocal_at:
                x = self.nonlocal_blocks[self._nonlocal_at[i]](x)
        return self.extra(x)

    def new_modules(self) -> list[nn.Module]:
        return [self.nonlocal_blocks, self.extra]

    def freeze_units(self) -> list[list[nn.Module]]:
        units = []
        for start, end in _STAGES:
            unit: list[nn.Module] = list(self.features[start:end])
            unit += [self.nonlocal_blocks[p] for i, p in self._nonlocal_at.items() if start <= i < end]
            units.append(unit)
        return units


def _build_vgg16(name: str, pretrained: Pretrained, output_stride: int | None, variant: str,
                 nonlocal_blocks: bool) -> WSOLBackbone:
    return VGG16Backbone(variant, weights=weights_path(name, pretrained), output_stride=output_stride,
                         nonlocal_blocks=nonlocal_blocks)


@register_backbone("vgg16")
def vgg16(name: str, pretrained: Pretrained, output_stride: int | None, *,
          variant: str | None = None, nonlocal_blocks: bool = True) -> WSOLBackbone:
    return _build_vgg16(name, pretrained, output_stride, variant or "cub", nonlocal_blocks)


@register_backbone("vgg16_imagenet")
def vgg16_imagenet(name: str, pretrained: Pretrained, output_stride: int | None, *,
                   variant: str | None = None, nonlocal_blocks: bool = True) -> WSOLBackbone:
    if variant is not None and variant != "imagenet":
        raise ConfigError(f"backbone 'vgg16_imagenet' contradicts option variant={variant!r}")
    return _build_vgg16(name, pretrained, output_stride, "imagenet", nonlocal_blocks)
