"""kdcicam: weakly-supervised object localization with CAM, CI-CAM and KD-CI-CAM.

Heavy modules (torch models, Lightning) are imported lazily so that `import kdcicam` and the
CLI's data commands stay fast.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Localizer", "OnnxLocalizer", "__version__", "create_model", "evaluation", "list_models"]


def __getattr__(name: str) -> Any:
    if name in ("create_model", "list_models"):
        from .models import registry

        return getattr(registry, name)
    if name == "Localizer":
        from .inference import Localizer

        return Localizer
    if name == "OnnxLocalizer":  # the ONNX backend: numpy and onnxruntime, never torch
        from .onnx_backend import OnnxLocalizer

        return OnnxLocalizer
    if name == "evaluation":
        import importlib

        return importlib.import_module(".evaluation", __name__)
    raise AttributeError(f"module 'kdcicam' has no attribute {name!r}")
