"""Model factory: ``create_model(method, backbone, num_classes, pretrained, **options)``.

Methods register themselves with ``@register_model(name)`` (timm style) in the modules that define
them; this module stays import-light (no torch at top) and imports those modules on first use, so
``import kdcicam`` remains fast.
"""
from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["register_model", "create_model", "list_models", "model_options"]

T = TypeVar("T")
_REGISTRY: dict[str, Callable[..., Any]] = {}
#: modules whose import registers the built-in methods
_MODEL_MODULES = ("kdcicam.models.cam", "kdcicam.models.causal")
#: options that go to the backbone, not to the method
_BACKBONE_KEYS = ("backbone_options", "output_stride")


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
                    backbone_options: dict[str, Any]) -> tuple[Any, str]:
    from .base import Backbone

    if isinstance(backbone, Backbone):
        if pretrained not in (False, None) or output_stride is not None or backbone_options:
            raise ConfigError("pretrained/output_stride/backbone_options cannot be applied to a backbone instance")
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
    valid = list(backbones.list_backbones())
    if backbone not in valid:
        raise ConfigError(f"unknown backbone {backbone!r}; valid: {', '.join(valid)}")
    kwargs = dict(backbone_options)
    if output_stride is not None:
        kwargs["output_stride"] = output_stride
    return backbones.create_backbone(backbone, pretrained=pretrained, **kwargs), backbone


def create_model(method: str, backbone: Any = "efficientnet_lite0", *, num_classes: int,
                 pretrained: bool | str = False, **options: Any) -> "nn.Module":
    """Build a CAM / CI-CAM / KD-CI-CAM model.

    ``backbone`` is a name from ``kdcicam.models.backbones.list_backbones()`` or a ready
    ``Backbone`` instance. ``options`` are the method's keyword options (see
    :func:`model_options`) plus ``backbone_options`` (a dict for ``create_backbone``) and
    ``output_stride``. ``create_model(**model.hparams())`` rebuilds a model of the same shape.
    Unknown methods, backbones or options raise :class:`~kdcicam.errors.ConfigError` naming the
    valid choices.
    """
    _ensure_registered()
    name = _normalise_method(method)
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {method!r}; valid: {', '.join(sorted(_REGISTRY))}")
    cls = _REGISTRY[name]
    valid_options = model_options(name)
    for key in options:
        if key not in valid_options and key not in _BACKBONE_KEYS:
            raise ConfigError(f"unknown option {key!r} for method {name!r}; valid: "
                              f"{', '.join(sorted([*valid_options, *_BACKBONE_KEYS]))}")
    try:
        n = int(num_classes)
    except (TypeError, ValueError):
        raise ConfigError(f"num_classes must be an integer, got {num_classes!r}") from None
    if n < 1 or n != num_classes:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    backbone_options = dict(options.pop("backbone_options", None) or {})
    output_stride = options.pop("output_stride", None)
    net, backbone_name = _build_backbone(backbone, pretrained, output_stride, backbone_options)
    model = cls(net, n, **options)
    model.backbone_name = backbone_name
    model.backbone_options = backbone_options
    model.output_stride = output_stride
    return model
