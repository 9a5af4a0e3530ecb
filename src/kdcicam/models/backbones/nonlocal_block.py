"""The self-attention ("non-local") block that KD-CI-CAM inserts into VGG16 and InceptionV3.

It lets every position of a feature map see the whole image before the classifier, which spreads
the CAM over the object instead of its most discriminative part. The block starts as the exact
identity (its output BatchNorm has γ = β = 0), so inserting it leaves a pretrained network's
function unchanged at initialisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NonLocalBlock(nn.Module):
    """``x + BN(W_mix · attend(x))`` with ``attend = v · softmax(qᵀk)ᵀ`` (softmax over key positions).

    Layout as in the official code (``Self_Attn`` in shaofeifei11/KG-CI-CAM): q, k are 1×1 convs
    D → D/``reduction``, v is a 1×1 conv D → D, all with bias; the attention logits are *not* scaled
    by 1/√d; then a 1×1 conv D → D (with bias) and a BatchNorm whose weight and bias start at zero.
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        if channels < reduction or channels % reduction:
            raise ValueError(
                f"NonLocalBlock: channels ({channels}) must be a multiple of reduction ({reduction})"
            )
        inner = channels // reduction
        self.query_conv = nn.Conv2d(channels, inner, kernel_size=1)
        self.key_conv = nn.Conv2d(channels, inner, kernel_size=1)
        self.value_conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.mix_conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # [B, N, d] queries/keys and [B, N, C] values, N = h·w positions
        q = self.query_conv(x).flatten(2).transpose(1, 2)
        k = self.key_conv(x).flatten(2).transpose(1, 2)
        v = self.value_conv(x).flatten(2).transpose(1, 2)
        # softmax(q kᵀ) v with scale 1 is the official (unscaled) attention; the fused kernel avoids
        # materialising the N×N matrix where the device allows (N = 3136 after pool2 at 224 px).
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        out = out.transpose(1, 2).reshape(b, c, h, w)
        return x + self.bn(self.mix_conv(out))
