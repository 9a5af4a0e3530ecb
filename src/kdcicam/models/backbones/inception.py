"""InceptionV3 as KD-CI-CAM modifies it for CUB (``Non_Local_InceptionV3`` in shaofeifei11/KG-CI-CAM).

torchvision's Inception3 layers unchanged (no stride or padding changes), cut after Mixed_6e, with
non-local blocks after maxpool2 (192 ch), Mixed_5d (288 ch) and Mixed_6e (768 ch). F is
768×17×17 at 299 px; the nominal stride is 16 (valid convs make 299 px give 17, not 18.7).
The smallest accepted input is 75 px.

Layer names follow torchvision, so its inception_v3 state_dict loads as is (``AuxLogits``,
``Mixed_7*`` and ``fc`` are unused).

Normalisation: the official code feeds ImageNet-normalised images with ``transform_input=False``
(our default, ``normalization="imagenet"``), although torchvision's ported weights expect inputs
scaled to [-1, 1]; ``normalization="inception"`` gives those weights their intended input.
"""
from __future__ import annotations

import os

import torch
from torch import nn
from torchvision.models.inception import BasicConv2d, InceptionA, InceptionB, InceptionC

from ...errors import ConfigError
from .common import Pretrained, WSOLBackbone, load_matching_state_dict, read_state_dict, weights_path
from .nonlocal_block import NonLocalBlock
from .registry import register_backbone

NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
MIN_INPUT = 75
_NONLOCAL_CHANNELS = {"maxpool2": 192, "Mixed_5d": 288, "Mixed_6e": 768}


class InceptionV3Backbone(WSOLBackbone):
    """Stem = Conv2d_1a … maxpool2 (+ its non-local block); blocks = Mixed_5b … Mixed_6e (8)."""

    def __init__(self, weights: str | os.PathLike | None = None, output_stride: int | None = None,
                 nonlocal_blocks: bool = True, normalization: str = "imagenet"):
        super().__init__()
        if output_stride not in (None, 16):
            raise ConfigError(
                f"inception_v3: output_stride is 16 (unmodified strides), got {output_stride!r}"
            )
        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"inception_v3: normalization must be one of {', '.join(NORMALIZATIONS)}, "
                              f"got {normalization!r}")
        self.mean, self.std = NORMALIZATIONS[normalization]
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self._init_like_torchvision()
        self.nonlocal_blocks = nn.ModuleDict(
            {p: NonLocalBlock(c) for p, c in _NONLOCAL_CHANNELS.items()} if nonlocal_blocks else {}
        )
        self.out_channels = 768
        self.stride = 16
        if weights is not None:
            self.load_report = load_matching_state_dict(self, read_state_dict(weights), str(weights))

    def _init_like_torchvision(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.1, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _nonlocal(self, position: str, x: torch.Tensor) -> torch.Tensor:
        return self.nonlocal_blocks[position](x) if position in self.nonlocal_blocks else x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < MIN_INPUT:
            raise ValueError(f"inception_v3 needs inputs of at least {MIN_INPUT}×{MIN_INPUT} px, got "
                             f"{tuple(x.shape[-2:])}")
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2"):
            x = getattr(self, name)(x)
        x = self._nonlocal("maxpool2", x)
        x = self._nonlocal("Mixed_5d", self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x))))
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))))
        return self._nonlocal("Mixed_6e", x)

    def new_modules(self) -> list[nn.Module]:
        return [self.nonlocal_blocks]

    def _with_nonlocal(self, module: nn.Module, position: str) -> list[nn.Module]:
        return [module] + ([self.nonlocal_blocks[position]] if position in self.nonlocal_blocks else [])

    def freeze_units(self) -> list[list[nn.Module]]:
        stem = [self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3, self.Conv2d_3b_1x1,
                self.Conv2d_4a_3x3]
        return [
            stem + self._with_nonlocal(self.maxpool2, "maxpool2"),
            [self.Mixed_5b], [self.Mixed_5c], self._with_nonlocal(self.Mixed_5d, "Mixed_5d"),
            [self.Mixed_6a], [self.Mixed_6b], [self.Mixed_6c], [self.Mixed_6d],
            self._with_nonlocal(self.Mixed_6e, "Mixed_6e"),
        ]


@register_backbone("inception_v3")
def inception_v3(name: str, pretrained: Pretrained, output_stride: int | None, *,
                 nonlocal_blocks: bool = True, normalization: str = "imagenet") -> WSOLBackbone:
    return InceptionV3Backbone(weights=weights_path(name, pretrained), output_stride=output_stride,
                               nonlocal_blocks=nonlocal_blocks, normalization=normalization)
