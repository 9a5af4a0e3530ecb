"""A conv stack standing in for a real network in the model tests (shared by test_cam, test_causal and
test_registry; not a test module itself)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdcicam.models.base import Backbone


class TinyBackbone(Backbone):
    """A conv stack standing in for a real network: [0, 1] images → [B, D, H/4, W/4]."""

    def __init__(self, d: int = 6):
        super().__init__()
        self.out_channels, self.stride = d, 4
        self.conv = nn.Conv2d(3, d, 3, padding=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(torch.tanh(self.conv(x)), 4)
