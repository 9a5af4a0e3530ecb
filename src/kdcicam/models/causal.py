"""CI-CAM: the causal context pool and the intervention on the feature map (docs/method.md §2), and the
KD-CI-CAM student built on it (§3).

The pool ``M ∈ R^{C×h×w}`` is a per-class running "context prior" accumulated from the up-branch
CAMs of correctly classified training samples. The down branch re-weights the feature map with the
context of the *predicted* class: ``F' = F ⊙ (1 + A)``, ``A = W_m[:, ĉ] ⊗ M[ĉ] + b_m``, where
``(W_m, b_m)`` is the 1×1 conv "mask2attention" from C to D channels.

Choices made here (see docs for the rest):

- **Pool size.** The pool follows the feature map: it is created empty (``[C, 0, 0]``) and
  materialised with zeros at the first training forward (or from ``pool_size``, or by
  :meth:`CICAMModel.init_pool`, which is the safe choice before wrapping the model in DDP).
  Loading a state dict resizes an empty pool to the stored shape first, so a fresh model loads a
  checkpoint *strictly*. At eval time a pool of another size is resized bilinearly to the feature
  map; during training a mismatch is an error (it would silently mix two geometries).
- **When the pool is updated.** The trainer calls :meth:`CICAMModel.update_pool` once per training
  step, after the forward and before backward, as the official code does. ``loss()`` never touches
  the pool (it is a pure function of the forward's outputs, so calling it twice is harmless); the
  update is a no-op in eval mode, so teachers and evaluation never change their pools.
- **DDP.** The per-class sums ``E`` are all-reduced (SUM) across ranks before the update, so all
  ranks hold the same pool, equal to a single process's update on the concatenated batch.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import Backbone
from .cam import CAMModel, _check_choice, combinational_cam
from .distill import KD_MODES, TEACHERS, StudentObjective
from .registry import register_model

RECIPES = ("mm21", "kd")
AUX_TYPES = (None, "fore", "diff_aux")
BRANCHES = ("down", "up")


def standardize(maps: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-class standardisation over the h·w positions: ``(x − mean)/sqrt(var + eps)`` with the
    *biased* variance — exactly the official ``BatchNorm2d(C)`` in training mode on a ``[1, C, h, w]``
    map (γ = 1, β = 0, never trained). An all-zero map stays zero."""
    flat = maps.flatten(1)
    mean = flat.mean(dim=1, keepdim=True)
    var = flat.var(dim=1, unbiased=False, keepdim=True)
    return ((flat - mean) / torch.sqrt(var + eps)).view_as(maps)


class CausalContextPool(nn.Module):
    """The context pool ``M`` [C, h, w]: a persistent buffer (saved in checkpoints), zero at start,
    updated only in training mode as ``M ← N(M + r·N(E))``.

    Two more buffers record whether it moved (see :mod:`kdcicam.diagnostics`): ``updates`` [C], the
    number of steps in which class c had a correctly classified sample (the ``N`` of ``r·N``), and
    ``first`` [C, h, w], each class's first non-zero map. Checkpoints written before they existed load
    with both at zero."""

    maps: torch.Tensor
    updates: torch.Tensor
    first: torch.Tensor

    def __init__(self, num_classes: int, h: int | None = None, w: int | None = None, rate: float = 0.01,
                 eps: float = 1e-5):
        super().__init__()
        if rate < 0:
            raise ConfigError(f"pool_rate must be >= 0, got {rate}")
        if (h is None) != (w is None) or (h is not None and (h < 1 or w < 1)):  # type: ignore[operator]
            raise ConfigError(f"pool size must be two positive integers or None, got ({h}, {w})")
        self.num_classes = int(num_classes)
        self.rate = float(rate)
        self.eps = float(eps)
        self.register_buffer("maps", torch.zeros(self.num_classes, h or 0, w or 0), persistent=True)
        self.register_buffer("updates", torch.zeros(self.num_classes, dtype=torch.float64), persistent=True)
        self.register_buffer("first", torch.zeros(self.num_classes, h or 0, w or 0), persistent=True)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, size={tuple(self.maps.shape[1:])}, rate={self.rate}"

    @property
    def is_materialized(self) -> bool:
        return self.maps.numel() > 0

    def materialize(self, h: int, w: int) -> None:
        """Create the zero pool for an h×w feature map (in place, so DDP's buffer list stays valid)."""
        with torch.no_grad():
            self.maps.resize_(self.num_classes, h, w).zero_()
            self.first.resize_(self.num_classes, h, w).zero_()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        stored = state_dict.get(prefix + "maps")
        if (isinstance(stored, torch.Tensor) and stored.dim() == 3 and stored.shape[0] == self.num_classes
                and not self.is_materialized):
            self.materialize(int(stored.shape[1]), int(stored.shape[2]))
        if isinstance(stored, torch.Tensor):  # a checkpoint from before the diagnostics buffers
            state_dict.setdefault(prefix + "updates", torch.zeros_like(self.updates))
            state_dict.setdefault(prefix + "first", torch.zeros_like(stored))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def context(self, h: int, w: int) -> torch.Tensor:
        """The pool at feature size h×w. An empty pool is materialised with zeros by the first
        *training* forward; in eval mode it reads as zeros without fixing its size, so a sanity
        validation at another image size cannot pin the pool to the wrong geometry."""
        if not self.is_materialized:
            if not self.training:
                return self.maps.new_zeros(self.num_classes, h, w)
            self.materialize(h, w)
        if tuple(self.maps.shape[1:]) == (h, w):
            return self.maps
        if self.training:
            raise ValueError(f"context pool is {tuple(self.maps.shape[1:])} but the feature map is {(h, w)}; "
                             "train at one input size (or rebuild the pool)")
        return F.interpolate(self.maps[None], size=(h, w), mode="bilinear", align_corners=False)[0]

    @staticmethod
    def class_sums(cams: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
        """``E_c = Σ CAM[i, c]`` over the samples with ``y_i = ĉ_i = c`` (float32 [C, h, w])."""
        h, w = cams.shape[-2:]
        labels = labels.to(cams.device).long()
        preds = preds.to(cams.device).long()
        correct = torch.nonzero(labels == preds).flatten()
        e = torch.zeros(num_classes, h, w, device=cams.device, dtype=torch.float32)
        if correct.numel():
            cls = labels[correct]
            e.index_add_(0, cls, cams[correct, cls].detach().float())
        return e

    @torch.no_grad()
    def update(self, cams_up: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor) -> bool:
        """One pool update from the batch's (detached) up-branch CAMs; a no-op outside training.
        Returns whether the pool changed."""
        if not self.training:
            return False
        h, w = cams_up.shape[-2:]
        if not self.is_materialized:
            self.materialize(h, w)
        if tuple(self.maps.shape[1:]) != (h, w):
            raise ValueError(f"context pool is {tuple(self.maps.shape[1:])} but the CAMs are {(h, w)}")
        e = self.class_sums(cams_up, labels, preds, self.num_classes)
        labels, preds = labels.to(e.device).long(), preds.to(e.device).long()
        hits = torch.bincount(labels[labels == preds], minlength=self.num_classes).float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(e, op=dist.ReduceOp.SUM)
            dist.all_reduce(hits, op=dist.ReduceOp.SUM)
        m = self.maps.float()
        new = standardize(m + self.rate * standardize(e, self.eps), self.eps)
        self.maps.copy_(new.to(self.maps.dtype))
        seen = hits > 0
        fresh = seen & (self.updates.to(seen.device) == 0) & (new.flatten(1).abs().amax(1) > 0)
        if fresh.any():
            self.first[fresh] = new[fresh].to(self.first.dtype)
        self.updates += seen.to(self.updates.device, self.updates.dtype)
        return True


def context_attention(conv: nn.Conv2d, context: torch.Tensor, pred: torch.Tensor,
                      probs: torch.Tensor | None = None) -> torch.Tensor:
    """The intervention ``A`` [B, D, h, w].

    One-hot (default): ``A = W_m[:, ĉ] ⊗ M[ĉ] + b_m`` — the 1×1 conv applied to a C-channel map that
    is zero except at channel ĉ, done as a column lookup. Soft: ``A = Σ_c p_c W_m[:, c] ⊗ M[c] + b_m``.
    """
    weight = conv.weight.flatten(1)  # [D, C]
    ctx = context.to(weight.dtype)
    if probs is None:
        cols = weight[:, pred.long()].t()  # [B, D]
        a = cols[:, :, None, None] * ctx[pred.long()][:, None]
    else:
        a = torch.einsum("bc,dc,chw->bdhw", probs.to(weight.dtype), weight, ctx)
    if conv.bias is not None:
        a = a + conv.bias.view(1, -1, 1, 1)
    return a


@register_model("ci-cam")
class CICAMModel(CAMModel):
    """CI-CAM: two branches, one shared classifier, the causal context pool in between.

    ``recipe="mm21"`` trains with ``CE(z_up) + CE(z_down)``; ``"kd"`` with ``CE(z_down)`` only.
    Teacher extras (KD-CI-CAM §3.1): ``aux`` fg/bg auxiliary CE with weight ``aux_weight`` and
    binarisation ``mask_threshold``, and ``sparsity`` λ·mean(S) (at feature size, or upsampled to
    the input when ``sparsity_upsampled``). As in the official code, the fg/bg mask comes from the
    down branch's combinational map ranked by ``z_down`` (``aux_mask_branch="up"`` uses S_up, as
    the paper words it), upsampled bilinearly to the input size, ``S > thr·max S``, and it masks the
    *normalised* image (masked pixels become the dataset mean, not black).
    """

    method = "ci-cam"

    def __init__(self, backbone: Backbone, num_classes: int, *, combination: str = "quadratic",
                 combination_m: int = 20, pool_rate: float = 0.01, pool_size: Any = None,
                 soft_intervention: bool = False, recipe: str = "mm21", aux: str | None = None,
                 aux_weight: float = 1.0, mask_threshold: float = 0.0, aux_mask_branch: str = "down",
                 sparsity: float = 0.0, sparsity_upsampled: bool = True, intervention: bool = True):
        super().__init__(backbone, num_classes, combination=combination, combination_m=combination_m)
        _check_choice("recipe", recipe, RECIPES)
        _check_choice("aux", aux, AUX_TYPES)
        _check_choice("aux_mask_branch", aux_mask_branch, BRANCHES)
        if aux_weight < 0 or sparsity < 0:
            raise ConfigError(f"aux_weight and sparsity must be >= 0, got {aux_weight}, {sparsity}")
        if not 0.0 <= mask_threshold < 1.0:
            raise ConfigError(f"option mask_threshold={mask_threshold!r} must lie in [0, 1)")
        if pool_size is not None:
            try:
                ph, pw = (int(v) for v in pool_size)
            except (TypeError, ValueError):
                raise ConfigError(f"option pool_size={pool_size!r} must be two integers [h, w]") from None
            pool_size = [ph, pw]
        ph_, pw_ = pool_size if pool_size is not None else (None, None)
        self.pool = CausalContextPool(num_classes, ph_, pw_, rate=pool_rate)
        self.mask2attention = nn.Conv2d(num_classes, backbone.out_channels, kernel_size=1)
        self.pool_size = pool_size
        self.soft_intervention = bool(soft_intervention)
        self.recipe = recipe
        self.aux = aux
        self.aux_weight = float(aux_weight)
        self.mask_threshold = float(mask_threshold)
        self.aux_mask_branch = aux_mask_branch
        self.sparsity = float(sparsity)
        self.sparsity_upsampled = bool(sparsity_upsampled)
        #: False: the down branch is the up branch (F unchanged; the pool is still kept and updated), so that
        #: a teacher's extra losses can be measured on a plain CAM (docs/method.md §9, E1)
        self.intervention = bool(intervention)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "pool_rate": self.pool.rate, "pool_size": self.pool_size,
                "intervention": self.intervention,
                "soft_intervention": self.soft_intervention, "recipe": self.recipe, "aux": self.aux,
                "aux_weight": self.aux_weight, "mask_threshold": self.mask_threshold,
                "aux_mask_branch": self.aux_mask_branch, "sparsity": self.sparsity,
                "sparsity_upsampled": self.sparsity_upsampled}

    def param_groups(self, lr: float, backbone_lr_mult: float = 1.0,
                     intervention_lr_mult: float | None = None) -> list[dict[str, Any]]:
        """As CAM's groups, mask2attention with the backbone (the official grouping), or in a group of its own
        at ``lr·intervention_lr_mult`` when that is given (a scaled-down recipe takes far fewer Adam steps, and
        the intervention's weights then hardly leave their initialisation)."""
        groups = super().param_groups(lr, backbone_lr_mult)
        if intervention_lr_mult is None:
            return groups
        ids = {id(p) for p in self.mask2attention.parameters()}
        for g in groups:
            g["params"] = [p for p in g["params"] if id(p) not in ids]
        own = [p for p in self.mask2attention.parameters() if p.requires_grad]
        groups = [g for g in groups if g["params"]]
        if own:
            groups.append({"name": "intervention", "params": own, "lr": lr * intervention_lr_mult,
                           "lr_mult": intervention_lr_mult})
        return groups

    @torch.no_grad()
    def init_pool(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """Materialise the pool for images of ``input_size`` (H, W) before training starts (e.g.
        before wrapping in DDP); returns the feature size."""
        if self.pool.is_materialized:
            return int(self.pool.maps.shape[1]), int(self.pool.maps.shape[2])
        was_training = self.training
        self.eval()
        try:
            p = next(self.backbone.parameters(), None)
            x = torch.zeros(1, 3, *input_size, device=p.device if p is not None else "cpu")
            h, w = self.backbone(x).shape[-2:]
        finally:
            self.train(was_training)
        self.pool.materialize(int(h), int(w))
        return int(h), int(w)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        logits_up = self.head(features)
        cams_up = self.head.class_cams(features)
        pred_up = logits_up.argmax(dim=1)
        context = self.pool.context(*features.shape[-2:])
        probs = F.softmax(logits_up.detach().float(), dim=1) if self.soft_intervention else None
        attention = context_attention(self.mask2attention, context, pred_up, probs)
        if not self.intervention:
            attention = torch.zeros_like(attention)
            return {"logits": logits_up, "cams": cams_up, "features": features, "features_down": features,
                    "logits_up": logits_up, "cams_up": cams_up, "pred_up": pred_up, "attention": attention}
        features_down = features * (1.0 + attention.to(features.dtype))
        return {"logits": self.head(features_down), "cams": self.head.class_cams(features_down),
                "features": features, "features_down": features_down, "logits_up": logits_up,
                "cams_up": cams_up, "pred_up": pred_up, "attention": attention}

    def update_pool(self, out: dict[str, torch.Tensor], labels: torch.Tensor) -> bool:
        """Update the context pool from a training forward's up branch (no-op in eval mode)."""
        return self.pool.update(out["cams_up"].detach(), labels, out["pred_up"])

    # -- losses ----------------------------------------------------------------------------
    def _fg_bg_logits(self, x: torch.Tensor, out: dict[str, torch.Tensor], need_bg: bool
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """z_fg (and z_bg): the masked images through the backbone, no intervention, shared head."""
        branch = "" if self.aux_mask_branch == "down" else "_up"
        with torch.no_grad():
            s = combinational_cam(out["logits" + branch], out["cams" + branch], self.combination,
                                  self.combination_m)
            s = F.interpolate(s[:, None].float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
            thr = self.mask_threshold * s.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
            fg = (s > thr).to(x.dtype)
        xn = self.backbone.normalize(x)
        z_fg = self.head(self.backbone.forward_features(xn * fg))
        z_bg = self.head(self.backbone.forward_features(xn * (1.0 - fg))) if need_bg else None
        return z_fg, z_bg, fg.float().mean().detach()

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, out: dict[str, torch.Tensor]
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The CI-CAM / teacher loss as its weighted terms (they sum to the loss), and the logs: the
        unweighted terms and ``fg_coverage``, the share of pixels the fg/bg mask calls foreground."""
        ce_down = F.cross_entropy(out["logits"], y)
        terms: dict[str, torch.Tensor] = {"ce_down": ce_down}
        logs: dict[str, torch.Tensor] = {"loss_ce_down": ce_down.detach()}
        if self.recipe == "mm21":
            ce_up = F.cross_entropy(out["logits_up"], y)
            terms["ce_up"] = ce_up
            logs["loss_ce_up"] = ce_up.detach()
        if self.aux is not None and self.aux_weight > 0:
            z_fg, z_bg, coverage = self._fg_bg_logits(x, out, need_bg=self.aux == "diff_aux")
            logs["fg_coverage"] = coverage
            if self.aux == "fore":
                fore = F.cross_entropy(z_fg, y)
                terms["fore"] = self.aux_weight * fore
                logs["loss_fore"] = fore.detach()
            else:
                assert z_bg is not None
                diff = z_fg - z_bg
                l_diff = F.cross_entropy(diff, y)
                l_aux = F.cross_entropy((diff + out["logits"]) / 2.0, y)
                terms["diff"] = self.aux_weight * l_diff
                terms["aux"] = self.aux_weight * l_aux
                logs["loss_diff"] = l_diff.detach()
                logs["loss_aux"] = l_aux.detach()
        if self.sparsity > 0:
            s = combinational_cam(out["logits"], out["cams"], self.combination, self.combination_m)
            if self.sparsity_upsampled:
                s = F.interpolate(s[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
            spa = s.mean()
            terms["sparsity"] = self.sparsity * spa
            logs["loss_sparsity"] = spa.detach()
        return terms, logs

    def loss(self, x: torch.Tensor, y: torch.Tensor, out: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The CI-CAM / teacher loss (the pool is updated separately, by :meth:`update_pool`)."""
        terms, logs = self.loss_terms(x, y, out)
        total = sum(terms.values())
        logs["loss"] = total.detach()  # type: ignore[union-attr]
        return total, logs  # type: ignore[return-value]


@register_model("kd-ci-cam")
class KDCICAMModel(CICAMModel):
    """The KD-CI-CAM student: a CI-CAM with recipe ``kd`` and the distillation objective stored on
    it (``self.objective``). Teachers are separate CI-CAM models (``create_model("ci-cam", ...)``),
    frozen with :func:`kdcicam.models.distill.freeze_teacher`."""

    method = "kd-ci-cam"

    def __init__(self, backbone: Backbone, num_classes: int, *, combination: str = "quadratic",
                 combination_m: int = 20, pool_rate: float = 0.002, pool_size: Any = None,
                 soft_intervention: bool = False, alpha: float = 0.8, temperature: float = 15.0,
                 kd_mode: str = "official", teachers: str = "both", kd_t_squared: bool = False,
                 cam_temperature: float | None = None, cam_loss: str = "mse", cam_weight: float = 1.0):
        super().__init__(backbone, num_classes, combination=combination, combination_m=combination_m,
                         pool_rate=pool_rate, pool_size=pool_size, soft_intervention=soft_intervention,
                         recipe="kd")
        _check_choice("kd_mode", kd_mode, KD_MODES)
        _check_choice("teachers", teachers, TEACHERS)
        self.objective = StudentObjective(alpha=alpha, T=temperature, kd_mode=kd_mode, teachers=teachers,
                                          t_squared=kd_t_squared, cam_T=cam_temperature, cam_loss=cam_loss,
                                          cam_weight=cam_weight, combination=combination,
                                          combination_m=combination_m)
        self._cam_weight = float(cam_weight)
        self._alpha = float(alpha)

    def options(self) -> dict[str, Any]:
        base = super().options()
        keep = ("combination", "combination_m", "pool_rate", "pool_size", "soft_intervention")
        return {**{k: base[k] for k in keep}, "alpha": self._alpha, "temperature": self.objective.T,
                "kd_mode": self.objective.kd_mode, "teachers": self.objective.teachers,
                "kd_t_squared": self.objective.t_squared, "cam_temperature": self.objective.cam_T,
                "cam_loss": self.objective.cam_loss, "cam_weight": self._cam_weight}

    @property
    def allowed_routes(self) -> tuple[int, ...]:
        return self.objective.routes

    def loss(self, x: torch.Tensor, y: torch.Tensor, out: dict[str, torch.Tensor], *,
             routes: torch.Tensor | None = None, cls_teacher_logits: torch.Tensor | None = None,
             loc_teacher_cams: torch.Tensor | None = None, loc_teacher_logits: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The student loss (see :class:`StudentObjective`); ``routes=None`` means route 0 for all.
        The pool is updated separately, as for CI-CAM."""
        if routes is None:
            routes = torch.zeros(out["logits"].shape[0], dtype=torch.long)
        return self.objective(out, y, routes, cls_teacher_logits, loc_teacher_cams, loc_teacher_logits)
