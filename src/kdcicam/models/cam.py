"""CAM head, class activation maps and the combinational CAM (docs/method.md §1).

One shared ``Linear(D, C)`` after global average pooling gives both the logits and, by applying its
weights position-wise, the CAM of every class (``CAM_k = W_kᵀ F``, no bias, no ReLU). The
localisation map of the baseline and of CI-CAM is the *combinational* CAM: the class CAMs ranked by
the logits and mixed with fixed rank weights, then shifted so its minimum is 0.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import Backbone
from .registry import register_model

COMBINATION_MODES = ("quadratic", "sum_1")
MAP_KINDS = ("combinational", "top1", "gt")


class CAMHead(nn.Module):
    """GAP + one ``Linear(D, C)`` with bias; the same weights give the class CAMs."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ConfigError(f"CAMHead needs in_channels >= 1 and num_classes >= 1, got {in_channels}, {num_classes}")
        self.fc = nn.Linear(in_channels, num_classes)

    @property
    def weight(self) -> torch.Tensor:
        return self.fc.weight

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] from F [B, D, h, w]."""
        return self.fc(features.mean(dim=(2, 3)))

    def class_cams(self, features: torch.Tensor) -> torch.Tensor:
        """``W_kᵀ F`` for every class k: [B, C, h, w], without bias or ReLU."""
        return torch.einsum("cd,bdhw->bchw", self.fc.weight.to(features.dtype), features)


# ------------------------------------------------------------------------------ combinational CAM
def combination_weights(num_classes: int, mode: str = "quadratic", m: int = 20,
                        device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Weight ``h_r`` of the class ranked r (0 = highest logit), shape [C].

    ``quadratic``: ``h_r = −(r/(C−1))²`` (the top-1 class gets 0).
    ``sum_1``: ``h_0 = 1`` and the last m ranks get ``−(2j/(m−1))/m``, j = 0…m−1 (the official
    code's ``linspace(0, 2, m)``). m is clamped to C so a small synthetic dataset still works; the
    official code would fail for m > C.
    """
    if mode not in COMBINATION_MODES:
        raise ConfigError(f"unknown combination mode {mode!r}; valid: {', '.join(COMBINATION_MODES)}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    c = num_classes
    if mode == "quadratic":
        if c == 1:
            return torch.zeros(1, device=device, dtype=dtype)
        r = torch.arange(c, device=device, dtype=torch.float64)
        return (-(r / (c - 1)) ** 2).to(dtype)
    if m < 1:
        raise ConfigError(f"combination m (mean_num) must be >= 1, got {m}")
    m = min(m, c)
    h = torch.zeros(c, device=device, dtype=torch.float64)
    h[0] = 1.0
    ramp = torch.linspace(0.0, 2.0, m, device=device, dtype=torch.float64) if m > 1 else torch.zeros(1, device=device,
                                                                                                     dtype=torch.float64)
    h[c - m:] -= ramp / m
    return h.to(dtype)


def rank_weights(logits: torch.Tensor, mode: str = "quadratic", m: int = 20) -> torch.Tensor:
    """Per-sample class weights [B, C]: class ``c`` gets ``h_{rank of c}`` (ranked by ``logits``)."""
    b, c = logits.shape
    order = torch.sort(logits.detach(), dim=1, descending=True, stable=True).indices
    h = combination_weights(c, mode, m, device=logits.device, dtype=torch.float32)
    return torch.zeros(b, c, device=logits.device, dtype=torch.float32).scatter_(1, order, h.expand(b, c))


def combinational_cam(logits: torch.Tensor, maps: torch.Tensor, mode: str = "quadratic", m: int = 20,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """Combinational CAM ``S = Σ_r h_r CAM_(r)``, then ``S ← S − min S`` per image: [B, h, w].

    ``maps`` is either the class CAMs [B, C, h, w] (``weight`` None) or the feature map F
    [B, D, h, w] with the classifier ``weight`` [C, D]; the latter is the fast form
    ``S = (Σ_r h_r W_(r))ᵀ F``, which never materialises the C class maps.
    """
    w = rank_weights(logits, mode, m)
    if weight is None:
        if maps.shape[:2] != logits.shape:
            raise ValueError(f"cams {tuple(maps.shape)} do not match logits {tuple(logits.shape)}")
        s = torch.einsum("bc,bchw->bhw", w.to(maps.dtype), maps)
    else:
        if weight.shape[0] != logits.shape[1] or weight.shape[1] != maps.shape[1]:
            raise ValueError(f"weight {tuple(weight.shape)} does not match logits {tuple(logits.shape)} "
                             f"and features {tuple(maps.shape)}")
        mixed = w.to(weight.dtype) @ weight  # [B, D]
        s = torch.einsum("bd,bdhw->bhw", mixed.to(maps.dtype), maps)
    return s - s.flatten(1).amin(dim=1).view(-1, 1, 1)


def top1_cam(cams: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Plain CAM of the predicted class: [B, h, w], raw."""
    idx = logits.argmax(dim=1)
    return cams[torch.arange(cams.shape[0], device=cams.device), idx]


def gt_cam(cams: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Plain CAM of the ground-truth class: [B, h, w], raw."""
    labels = torch.as_tensor(labels, device=cams.device).long()
    return cams[torch.arange(cams.shape[0], device=cams.device), labels]


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"option {name}={value!r} is invalid; valid: {', '.join(map(str, choices))}")


# ---------------------------------------------------------------------------------------- model
@register_model("cam")
class CAMModel(nn.Module):
    """Backbone + CAM head, trained with cross-entropy (the NL-CCAM baseline when the backbone
    has non-local blocks, plain CAM with ``kind="top1"|"gt"`` maps)."""

    method = "cam"

    def __init__(self, backbone: Backbone, num_classes: int, *, combination: str = "quadratic",
                 combination_m: int = 20):
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise ConfigError(f"backbone must be a kdcicam.models.base.Backbone, got {type(backbone).__name__}")
        _check_choice("combination", combination, COMBINATION_MODES)
        if int(combination_m) < 1:
            raise ConfigError(f"option combination_m={combination_m!r} must be >= 1")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.head = CAMHead(backbone.out_channels, self.num_classes)
        self.combination = combination
        self.combination_m = int(combination_m)
        self.backbone_name: str = getattr(backbone, "name", type(backbone).__name__)
        self.backbone_options: dict[str, Any] = {}
        self.output_stride: int | None = None
        self.freeze_stages: int | None = None

    # -- configuration ---------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """The method options this model was built with (what ``create_model`` accepts)."""
        return {"combination": self.combination, "combination_m": self.combination_m}

    def hparams(self) -> dict[str, Any]:
        """Everything ``create_model(**hparams)`` needs to rebuild this model (weights aside)."""
        return {"method": self.method, "backbone": self.backbone_name, "num_classes": self.num_classes,
                **self.options(), "backbone_options": dict(self.backbone_options),
                "output_stride": self.output_stride, "freeze_stages": self.freeze_stages}

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {"logits": self.head(features), "cams": self.head.class_cams(features), "features": features}

    def localization_map(self, out: dict[str, torch.Tensor], kind: str = "combinational",
                         labels: torch.Tensor | None = None, mode: str | None = None) -> torch.Tensor:
        """Score map [B, h, w] of the test branch: the combinational CAM (min-shifted, ranked by
        the test logits) or the raw top-1 / GT-class CAM."""
        _check_choice("kind", kind, MAP_KINDS)
        if kind == "combinational":
            return combinational_cam(out["logits"], out["cams"], mode or self.combination, self.combination_m)
        if kind == "top1":
            return top1_cam(out["cams"], out["logits"])
        if labels is None:
            raise ValueError("localization_map(kind='gt') needs labels")
        return gt_cam(out["cams"], labels)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, out: dict[str, torch.Tensor]
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The loss as its weighted terms (they sum to the loss) and the logs."""
        ce = F.cross_entropy(out["logits"], y)
        return {"ce": ce}, {"loss_ce": ce.detach()}

    def loss(self, x: torch.Tensor, y: torch.Tensor, out: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms, logs = self.loss_terms(x, y, out)
        total = sum(terms.values())
        return total, {"loss": total.detach(), **logs}  # type: ignore[return-value,union-attr]

    def param_groups(self, lr: float, backbone_lr_mult: float = 1.0) -> list[dict[str, Any]]:
        """Adam groups per docs/method.md §4: classifier at ``lr``; mask2attention (if any) and the
        backbone at ``lr·backbone_lr_mult``. Frozen parameters are left out; ``lr_mult`` lets a
        scheduler rescale each group."""
        head = [p for p in self.head.parameters() if p.requires_grad]
        rest = [p for p in self._non_head_parameters() if p.requires_grad]
        groups = [{"name": "classifier", "params": head, "lr": lr, "lr_mult": 1.0},
                  {"name": "backbone", "params": rest, "lr": lr * backbone_lr_mult, "lr_mult": backbone_lr_mult}]
        return [g for g in groups if g["params"]]

    def _non_head_parameters(self) -> list[nn.Parameter]:
        head_ids = {id(p) for p in self.head.parameters()}
        return [p for p in self.parameters() if id(p) not in head_ids]
