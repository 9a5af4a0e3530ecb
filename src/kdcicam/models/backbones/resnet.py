"""ResNet50 as clovaai/wsolevaluation modifies it for CAM (``ResNetCam``): layer4 keeps stride 1,
so F is 2048×14×14 at 224 px (stride 16); ``output_stride=8`` also sets layer3 to stride 1
(wsolevaluation's ``large_feature_map``), ``32`` is the unmodified torchvision network.

The stride sits on the 3×3 conv of each stage's first bottleneck (and its downsample 1×1 conv),
as in torchvision, and only the stride changes (no dilation), so torchvision's state_dict loads
unchanged (its ``fc.*`` is unused).
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from .common import Pretrained, WSOLBackbone, load_matching_state_dict, read_state_dict, weights_path
from .registry import register_backbone


class ResNet50Backbone(WSOLBackbone):
    """Stem = conv1 + bn1 (+ maxpool); blocks = the 16 bottlenecks of layer1–layer4."""

    def __init__(self, weights: str | os.PathLike | None = None, output_stride: int | None = None):
        super().__init__()
        import torchvision

        output_stride = 16 if output_stride is None else output_stride
        if output_stride not in (8, 16, 32):
            raise ConfigError(f"resnet50: output_stride must be 8, 16 or 32, got {output_stride!r}")
        net = torchvision.models.resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if output_stride <= 16:
            self._stride_one(self.layer4)
        if output_stride == 8:
            self._stride_one(self.layer3)
        self.out_channels = 2048
        self.stride = output_stride
        if weights is not None:
            self.load_report = load_matching_state_dict(self, read_state_dict(weights), str(weights))

    @staticmethod
    def _stride_one(layer: nn.Sequential) -> None:
        first: Any = layer[0]
        first.conv2.stride = (1, 1)
        first.downsample[0].stride = (1, 1)
        first.stride = 1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def freeze_units(self) -> list[list[nn.Module]]:
        blocks = [[b] for layer in (self.layer1, self.layer2, self.layer3, self.layer4) for b in layer]
        return [[self.conv1, self.bn1], *blocks]


@register_backbone("resnet50")
def resnet50(name: str, pretrained: Pretrained, output_stride: int | None) -> WSOLBackbone:
    return ResNet50Backbone(weights=weights_path(name, pretrained), output_stride=output_stride)
