"""Model factory: ``create_model(method, backbone, num_classes, pretrained, **options)``.

Methods register themselves with ``@register_model(name)`` (timm style) in the modules that define
them; this module stays import-light (no torch at top) and imports those modules on first use, so
``import kdcicam`` remains fast.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["create_model", "list_models", "model_options", "register_model"]

T = TypeVar("T")
_REGISTRY: dict[str, Callable[..., Any]] = {}
#: modules whose import registers the built-in methods
_MODEL_MODULES = ("kdcicam.models.cam", "kdcicam.models.causal")


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator: make ``create_model(name, ...)`` build this class. The class takes
    ``(backbone, num_classes, *, **options)``; its keyword-only parameters are its options."""

    def decorate(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model {name!r} is already registered by {_REGISTRY[name]!r}")
        _REGISTRY[name] = cls  # type: ignore[assignment]
        return cls

    return decorate


def _ensure_registered() -> None:
    for module in _MODEL_MODULES:
        importlib.import_module(module)


def list_models() -> list[str]:
    """Registered method names, sorted."""
    _ensure_registered()
    return sorted(_REGISTRY)


def _normalise_method(method: str) -> str:
    return str(method).strip().lower().replace("_", "-")


def model_options(method: str) -> dict[str, Any]:
    """Option names of a method with their defaults (for configs and error messages)."""
    _ensure_registered()
    name = _normalise_method(method)
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {method!r}; valid: {', '.join(sorted(_REGISTRY))}")
    sig = inspect.signature(_REGISTRY[name])
    return {p.name: p.default for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _build_backbone(backbone: Any, pretrained: bool | str, output_stride: int | None,
                    backbone_options: dict[str, Any], method: str, method_options: list[str]) -> tuple[Any, str]:
    from .base import Backbone

    if isinstance(backbone, Backbone):
        if backbone_options:
            key = next(iter(backbone_options))
            raise ConfigError(f"unknown option {key!r} for method {method!r}; valid: {', '.join(method_options)}")
        if pretrained not in (False, None) or output_stride is not None:
            raise ConfigError("pretrained/output_stride cannot be applied to a ready Backbone instance")
        return backbone, getattr(backbone, "name", type(backbone).__name__)
    if not isinstance(backbone, str):
        raise ConfigError(f"backbone must be a name or a Backbone instance, got {type(backbone).__name__}")
    try:
        backbones = importlib.import_module("kdcicam.models.backbones")
    except ModuleNotFoundError as e:
        if e.name != "kdcicam.models.backbones":
            raise
        raise ConfigError(f"backbone {backbone!r}: no backbones are available (kdcicam.models.backbones "
                          "is missing in this installation)") from None
    # create_backbone validates the name (built-ins and timm/<name>) and its own options,
    # raising ConfigError with the valid choices
    try:
        net = backbones.create_backbone(backbone, pretrained=pretrained if pretrained is not None else False,
                                        output_stride=output_stride, **backbone_options)
    except ConfigError as e:
        if backbone_options and "option" in str(e):
            raise ConfigError(f"{e} (options of method {method!r}: {', '.join(method_options)})") from None
        raise
    return net, backbone


def create_model(method: str, backbone: Any = "efficientnet_lite0", *, num_classes: int,
                 pretrained: bool | str = False, **options: Any) -> nn.Module:
    """Build a CAM / CI-CAM / KD-CI-CAM model.

    ``backbone`` is a name for ``kdcicam.models.backbones.create_backbone`` or a ready
    ``Backbone`` instance. ``options`` are the method's keyword options (see
    :func:`model_options`); ``freeze_stages`` (an int, or None) calls ``backbone.freeze(n)``
    (stem + the first n blocks get no gradient; −1 nothing); any other option, the
    ``backbone_options`` dict and ``output_stride`` go to ``create_backbone``, which rejects what it
    does not know.
    ``create_model(**model.hparams())`` rebuilds a model of the same shape. Unknown methods,
    backbones or options raise :class:`~kdcicam.errors.ConfigError` naming the valid choices.
    """
    _ensure_registered()
    name = _normalise_method(method)
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {method!r}; valid: {', '.join(sorted(_REGISTRY))}")
    cls = _REGISTRY[name]
    valid_options = model_options(name)
    try:
        n = int(num_classes)
    except (TypeError, ValueError):
        raise ConfigError(f"num_classes must be an integer, got {num_classes!r}") from None
    if n < 1 or n != num_classes:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    backbone_options = dict(options.pop("backbone_options", None) or {})
    output_stride = options.pop("output_stride", None)
    freeze_stages = options.pop("freeze_stages", None)
    for key in [k for k in options if k not in valid_options]:
        backbone_options[key] = options.pop(key)
    net, backbone_name = _build_backbone(backbone, pretrained, output_stride, backbone_options, name,
                                         sorted(valid_options))
    if freeze_stages is not None:
        if not callable(getattr(net, "freeze", None)):
            raise ConfigError(f"option freeze_stages={freeze_stages!r}: backbone {backbone_name!r} cannot freeze layers")
        net.freeze(freeze_stages)
    model = cls(net, n, **options)
    model.freeze_stages = freeze_stages
    model.backbone_name = backbone_name
    model.backbone_options = backbone_options
    model.output_stride = output_stride
    return model
