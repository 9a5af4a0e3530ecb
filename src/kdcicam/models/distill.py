"""KD-CI-CAM losses: teachers → student (docs/method.md §3).

Each sample draws a route every epoch: 0 = cross-entropy only, 1 = distil the classification
teacher's logits, 2 = distil the localization teacher's class CAMs. The student's loss is
``(1−α)·CE(z_down, y)`` over the batch ``+ α·KD`` on route-1 samples ``+ α·MSE`` on route-2 samples.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

KD_MODES = ("official", "kl")
#: the route-2 (localization teacher) loss: ``mse`` as coded by the authors (all C raw class CAMs through a
#: sigmoid); ``at``: attention transfer on the scored map itself (docs/method.md §9, "Map-first distillation")
CAM_LOSSES = ("mse", "at")
TEACHERS = ("both", "cls", "loc", "none")
_ALLOWED = {"both": (0, 1, 2), "cls": (0, 1), "loc": (0, 2), "none": (0,)}
#: the teacher (its KD stage's name) that a distillation route needs
ROUTE_TEACHER = {1: "cls_teacher", 2: "loc_teacher"}


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float, mode: str = "official",
            t_squared: bool = False) -> torch.Tensor:
    """Logit distillation on the given rows.

    ``official`` is what the KD-CI-CAM code computes: ``KLDivLoss(reduction="batchmean")`` fed
    the student's *probabilities* (not log-probabilities), i.e. ``(1/n)·Σ p_t·(log p_t − p_s)``
    with ``p = softmax(z/T)``; the published α and T were tuned with it. ``kl`` is the standard
    Hinton KL divergence (log-softmax student), times T² when ``t_squared``.
    An empty selection gives 0.
    """
    if mode not in KD_MODES:
        raise ConfigError(f"unknown kd_mode {mode!r}; valid: {', '.join(KD_MODES)}")
    if T <= 0:
        raise ConfigError(f"distillation temperature must be > 0, got {T}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    p_t = F.softmax(teacher_logits.detach().float() / T, dim=1)
    if mode == "official":
        return F.kl_div(F.softmax(student_logits.float() / T, dim=1), p_t, reduction="batchmean")
    loss = F.kl_div(F.log_softmax(student_logits.float() / T, dim=1), p_t, reduction="batchmean")
    return loss * (T * T) if t_squared else loss


def cam_distill_loss(student_cams: torch.Tensor, teacher_cams: torch.Tensor, T: float) -> torch.Tensor:
    """``MSE(σ(CAM_s/T), σ(CAM_t/T))`` over all C raw class CAMs, averaged over every element.
    Teacher CAMs of another spatial size are resized (bilinear) to the student's."""
    if T <= 0:
        raise ConfigError(f"distillation temperature must be > 0, got {T}")
    if student_cams.shape[:2] != teacher_cams.shape[:2]:
        raise ValueError(f"student CAMs {tuple(student_cams.shape)} and teacher CAMs "
                         f"{tuple(teacher_cams.shape)} differ in batch or class count")
    if student_cams.shape[0] == 0:
        return student_cams.sum() * 0.0
    teacher = teacher_cams.detach().float()
    if teacher.shape[-2:] != student_cams.shape[-2:]:
        teacher = F.interpolate(teacher, size=student_cams.shape[-2:], mode="bilinear", align_corners=False)
    return F.mse_loss(torch.sigmoid(student_cams.float() / T), torch.sigmoid(teacher / T))


def scored_map_loss(student_cams: torch.Tensor, teacher_cams: torch.Tensor, teacher_logits: torch.Tensor,
                    combination: str = "quadratic", m: int = 20, eps: float = 1e-6) -> torch.Tensor:
    """Attention transfer on the map kdcicam scores: both combinational CAMs are built with the *teacher's*
    class ranking (so the student is taught the teacher's map, not asked to copy its classification), flattened,
    L2-normalised and compared by squared distance (0..4 per image, batch mean). Scale-free: the student's CAM
    magnitude, which also carries its logits, is left alone; only the map's shape is taught."""
    from .cam import combinational_cam

    if student_cams.shape[:2] != teacher_cams.shape[:2] or teacher_logits.shape != student_cams.shape[:2]:
        raise ValueError(f"student CAMs {tuple(student_cams.shape)}, teacher CAMs {tuple(teacher_cams.shape)} and "
                         f"teacher logits {tuple(teacher_logits.shape)} differ in batch or class count")
    if student_cams.shape[0] == 0:
        return student_cams.sum() * 0.0
    teacher = teacher_cams.detach().float()
    if teacher.shape[-2:] != student_cams.shape[-2:]:
        teacher = F.interpolate(teacher, size=student_cams.shape[-2:], mode="bilinear", align_corners=False)
    t_logits = teacher_logits.detach().float()
    s = combinational_cam(t_logits, student_cams.float(), combination, m).flatten(1)
    t = combinational_cam(t_logits, teacher, combination, m).flatten(1)
    s = s / (s.norm(dim=1, keepdim=True) + eps)
    t = t / (t.norm(dim=1, keepdim=True) + eps)
    return (s - t).pow(2).sum(dim=1).mean()


def adapted_weight(weight: float, share: float, target: float, max_step: float = 4.0) -> float:
    """The route-2 weight that moves the CAM term's gradient share towards ``target``: the share a term of weight
    w takes is w·g / (w·g + G), so the weight that gives ``target`` is w·(target/(1−target))·(1−share)/share;
    the step is taken in the square root (damped) and bounded by ``max_step`` either way."""
    if not 0.0 < target < 1.0:
        raise ConfigError(f"the CAM term's gradient share target must lie in (0, 1), got {target}")
    if share <= 0.0 or share >= 1.0 or weight <= 0.0:
        return weight
    ratio = (target / (1.0 - target)) * (1.0 - share) / share
    step = min(max(ratio ** 0.5, 1.0 / max_step), max_step)
    return weight * step


def allowed_routes(teachers: str) -> tuple[int, ...]:
    """Routes a student may draw: both → (0, 1, 2), cls → (0, 1), loc → (0, 2), none → (0,)."""
    if teachers not in _ALLOWED:
        raise ConfigError(f"unknown teachers setting {teachers!r}; valid: {', '.join(TEACHERS)}")
    return _ALLOWED[teachers]


def needed_teachers(teachers: str) -> tuple[str, ...]:
    """The KD stages to train before the student: the teachers of its allowed routes, in route order."""
    return tuple(ROUTE_TEACHER[r] for r in allowed_routes(teachers) if r in ROUTE_TEACHER)


def draw_routes(n: int, generator: torch.Generator | None = None,
                allowed: Sequence[int] = (0, 1, 2)) -> torch.Tensor:
    """One route per sample, uniform over ``allowed`` (int64 [n], on CPU)."""
    allowed_t = torch.as_tensor(list(allowed), dtype=torch.long)
    if allowed_t.numel() == 0 or not set(allowed_t.tolist()) <= {0, 1, 2}:
        raise ValueError(f"allowed routes must be a non-empty subset of (0, 1, 2), got {tuple(allowed)}")
    return allowed_t[torch.randint(len(allowed_t), (n,), generator=generator)]


def _rows(t: torch.Tensor, idx: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """Teacher outputs may cover the whole batch (indexed here) or only the route's rows."""
    if t.shape[0] == batch:
        return t[idx.to(t.device)]
    if t.shape[0] == idx.numel():
        return t
    raise ValueError(f"{what} has {t.shape[0]} rows; expected the batch ({batch}) or the route's samples "
                     f"({idx.numel()})")


class StudentObjective:
    """The KD-CI-CAM student loss (docs/method.md §3.2), with the code's ablations:
    ``teachers="cls"`` (routes {0, 1}), ``"loc"`` ({0, 2}), ``"none"`` (route 0 and α = 0, i.e.
    plain ``CE(z_down)``; the official code kept the (1−α) factor there, which only rescales the
    loss)."""

    def __init__(self, alpha: float = 0.8, T: float = 15.0, kd_mode: str = "official", teachers: str = "both",
                 t_squared: bool = False, cam_T: float | None = None, cam_loss: str = "mse",
                 cam_weight: float = 1.0, combination: str = "quadratic", combination_m: int = 20):
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must lie in [0, 1], got {alpha}")
        if T <= 0:
            raise ConfigError(f"temperature T must be > 0, got {T}")
        if cam_T is not None and cam_T <= 0:
            raise ConfigError(f"CAM temperature must be > 0, got {cam_T}")
        if kd_mode not in KD_MODES:
            raise ConfigError(f"unknown kd_mode {kd_mode!r}; valid: {', '.join(KD_MODES)}")
        if cam_loss not in CAM_LOSSES:
            raise ConfigError(f"unknown cam_loss {cam_loss!r}; valid: {', '.join(CAM_LOSSES)}")
        if not cam_weight > 0:
            raise ConfigError(f"cam_weight must be > 0, got {cam_weight}")
        self.cam_loss = cam_loss
        #: multiplies the route-2 term; adapted during training when kd.cam_grad_share is set
        self.cam_weight = float(cam_weight)
        self.combination, self.combination_m = combination, int(combination_m)
        self.routes = allowed_routes(teachers)
        self.teachers = teachers
        self.alpha = 0.0 if teachers == "none" else float(alpha)
        self.T = float(T)
        self.cam_T = float(cam_T) if cam_T is not None else None
        self.kd_mode = kd_mode
        self.t_squared = bool(t_squared)

    @property
    def cam_temperature(self) -> float:
        """The CAM distillation's temperature: ``cam_T`` when set, else the logits' ``T`` (as coded)."""
        return self.cam_T if self.cam_T is not None else self.T

    def config(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "T": self.T, "kd_mode": self.kd_mode, "teachers": self.teachers,
                "t_squared": self.t_squared, "cam_T": self.cam_T, "cam_loss": self.cam_loss,
                "cam_weight": self.cam_weight}

    def draw_routes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return draw_routes(n, generator, self.routes)

    def terms(self, student_out: dict[str, torch.Tensor], labels: torch.Tensor, routes: torch.Tensor,
              cls_teacher_logits: torch.Tensor | None = None, loc_teacher_cams: torch.Tensor | None = None,
              loc_teacher_logits: torch.Tensor | None = None
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The weighted terms ``(1−α)·CE``, ``α·KD``, ``α·w·CAM`` (they sum to the loss) and the logs; ``w`` is
        :attr:`cam_weight`, and the CAM loss is ``cam_loss`` (``at`` needs the loc teacher's logits)."""
        logits, cams = student_out["logits"], student_out["cams"]
        b = logits.shape[0]
        routes = torch.as_tensor(routes).to(logits.device).long()
        if routes.shape != (b,):
            raise ValueError(f"routes must have shape ({b},), got {tuple(routes.shape)}")
        bad = set(routes.unique().tolist()) - set(self.routes)
        if bad:
            raise ValueError(f"route(s) {sorted(bad)} are not allowed with teachers={self.teachers!r} "
                             f"(allowed: {self.routes})")
        ce = F.cross_entropy(logits, labels)
        zero = logits.sum() * 0.0
        i1 = torch.nonzero(routes == 1).flatten()
        i2 = torch.nonzero(routes == 2).flatten()
        kd = cam = zero
        if i1.numel():
            if cls_teacher_logits is None:
                raise ValueError("cls_teacher_logits is required: the batch has route-1 (cls-KD) samples")
            kd = kd_loss(logits[i1], _rows(cls_teacher_logits, i1, b, "cls_teacher_logits"), self.T,
                         self.kd_mode, self.t_squared)
        if i2.numel():
            if loc_teacher_cams is None:
                raise ValueError("loc_teacher_cams is required: the batch has route-2 (loc-KD) samples")
            t_cams = _rows(loc_teacher_cams, i2, b, "loc_teacher_cams")
            if self.cam_loss == "mse":
                cam = cam_distill_loss(cams[i2], t_cams, self.cam_temperature)
            else:
                if loc_teacher_logits is None:
                    raise ValueError("loc_teacher_logits is required by cam_loss='at' (the teacher's class ranking)")
                cam = scored_map_loss(cams[i2], t_cams, _rows(loc_teacher_logits, i2, b, "loc_teacher_logits"),
                                      self.combination, self.combination_m)
        a = self.alpha
        terms = {"ce": (1.0 - a) * ce, "kd": a * kd, "cam": a * self.cam_weight * cam}
        logs = {"loss_ce": ce.detach(), "loss_kd": kd.detach(), "loss_cam": cam.detach(),
                "cam_weight": torch.tensor(self.cam_weight),
                "n_route1": torch.tensor(float(i1.numel())), "n_route2": torch.tensor(float(i2.numel()))}
        return terms, logs

    def __call__(self, student_out: dict[str, torch.Tensor], labels: torch.Tensor, routes: torch.Tensor,
                 cls_teacher_logits: torch.Tensor | None = None, loc_teacher_cams: torch.Tensor | None = None,
                 loc_teacher_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms, logs = self.terms(student_out, labels, routes, cls_teacher_logits, loc_teacher_cams, loc_teacher_logits)
        loss = terms["ce"] + terms["kd"] + terms["cam"]
        return loss, {"loss": loss.detach(), **logs}


class FrozenTeacher(nn.Module):
    """A trained model kept in eval mode (its BatchNorm statistics and context pool frozen) even
    when a parent module calls ``.train()``, run without gradients."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        model.requires_grad_(False)
        model.eval()

    def train(self, mode: bool = True) -> FrozenTeacher:
        super().train(False)
        self.model.eval()
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> Any:
        self.model.eval()
        return self.model(x)


def freeze_teacher(model: nn.Module) -> FrozenTeacher:
    """Freeze a teacher: no gradients, eval mode for good (see :class:`FrozenTeacher`)."""
    return FrozenTeacher(model)
