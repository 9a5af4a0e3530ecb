"""The contract every backbone keeps, so CAM heads, the causal pool and distillation never need
to know which network produced the feature map."""
from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    """Images in [0, 1] → final feature map F of shape [B, D, h, w].

    Each backbone owns its input normalisation (ImageNet mean/std for torchvision networks,
    mean 127 / std 128 on the 0–255 scale for the TF EfficientNet-Lite weights), so data pipelines
    hand over plain [0, 1] tensors and a checkpoint carries everything inference needs.
    """

    out_channels: int
    stride: int
    #: per-channel mean and std on the [0, 1] scale
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # normalised input
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(self.normalize(x))
