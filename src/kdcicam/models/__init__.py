"""Models: backbones, the CAM head, CI-CAM and the KD-CI-CAM student.

Names are resolved lazily so importing :mod:`kdcicam.models` does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_model": "registry", "list_models": "registry", "register_model": "registry",
    "model_options": "registry",
    "create_backbone": "backbones", "list_backbones": "backbones",
    "Backbone": "base",
    "CAMHead": "cam", "CAMModel": "cam", "combinational_cam": "cam", "combination_weights": "cam",
    "top1_cam": "cam", "gt_cam": "cam",
    "CausalContextPool": "causal", "CICAMModel": "causal", "KDCICAMModel": "causal",
    "StudentObjective": "distill", "kd_loss": "distill", "cam_distill_loss": "distill",
    "draw_routes": "distill", "allowed_routes": "distill", "freeze_teacher": "distill",
    "evaluate_official": "official_protocol", "OfficialBoxMetrics": "official_protocol",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'kdcicam.models' has no attribute {name!r}")
