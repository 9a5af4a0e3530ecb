"""Backbones: a name (and optional weights) in, a :class:`WSOLBackbone` out.

Every network here takes [0, 1] images, normalises them itself and returns the final feature map
F [B, D, h, w] that the CAM head, the causal pool and distillation share. Each backbone file
registers its builders with :func:`register_backbone`; importing this package imports them (in
the order :func:`list_backbones` reports), while :mod:`.registry` imports none of them.
"""
from __future__ import annotations

import importlib

from .common import (
    LoadReport,
    Pretrained,
    WSOLBackbone,
    load_matching_state_dict,
    read_state_dict,
    weights_path,
)
from .registry import DEFAULT_BACKBONE, create_backbone, list_backbones, register_backbone
from .timm_models import TIMM_PREFIX, TimmBackbone

#: the backbone files, imported so that they register; this order is list_backbones()'s
BACKBONE_MODULES = ("efficientnet_lite", "vgg", "inception", "resnet", "timm_models")
for _module in BACKBONE_MODULES:
    importlib.import_module(f".{_module}", __name__)

__all__ = [
    "DEFAULT_BACKBONE", "TIMM_PREFIX", "LoadReport", "Pretrained", "TimmBackbone", "WSOLBackbone", "create_backbone",
    "list_backbones", "load_matching_state_dict", "read_state_dict", "register_backbone", "weights_path",
]
