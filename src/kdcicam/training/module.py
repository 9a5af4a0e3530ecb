"""One LightningModule for all three methods: the method-specific parts live in the model
(its forward, losses and context pool) and in the distillation objective, so the training loop,
validation and checkpointing are written once."""
from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch
from torch import nn

from ..checkpoints import build_model, load_model, read_checkpoint
from ..config import RunConfig, config_from_dict
from ..errors import KdcicamError
from ..scoremaps import scoremaps_for_evaluation

log = logging.getLogger(__name__)


class NonFiniteLossError(KdcicamError, FloatingPointError):
    """The loss became NaN or inf; training stops and the last good checkpoint is kept."""


def lr_factor(epoch: int, cfg: RunConfig) -> float:
    """docs/method.md §4: poly decay × step decay (× 0.1 for InceptionV3 from epoch 85)."""
    o = cfg.optim
    factor = (1.0 - epoch / o.epochs) ** o.poly_power
    if o.step > 0:
        factor *= o.decay ** (epoch // o.step)
    if cfg.model.backbone.startswith("inception") and epoch >= 85:
        factor *= 0.1
    return factor


class WSOLModule(L.LightningModule):
    """Trains and validates one model. For the KD student, the frozen teachers are held outside the
    module's state (they are not saved in the student's checkpoint; they come from their own)."""

    def __init__(self, config: dict, num_classes: int, class_names: list[str] | None = None,
                 teacher_checkpoints: dict[str, str] | None = None, load_teachers: bool = True):
        super().__init__()
        self.save_hyperparameters(ignore=["load_teachers"])
        self.cfg: RunConfig = config_from_dict(config)
        self.num_classes = num_classes
        self.class_names = class_names
        # CAM, CI-CAM or the KD student, each with its own parts (objective, update_pool, pool, ...)
        self.model: Any = build_model(self.cfg, num_classes, pretrained=None if load_teachers else False)
        if self.cfg.trainer.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._teachers: dict[str, nn.Module] = {}
        if self.is_student and load_teachers:
            from ..models.distill import freeze_teacher

            for role, path in (teacher_checkpoints or {}).items():
                teacher = load_model(path)
                classes = getattr(teacher, "num_classes", num_classes)
                if classes != num_classes:  # else a shape error at the first distillation step
                    raise KdcicamError(f"{path}: the {role} teacher has {classes} classes but the student has "
                                       f"{num_classes}; train the teachers on the student's dataset")
                self._teachers[role] = freeze_teacher(teacher)
        self.box_threshold: float | None = None
        self.val_has_boxes: bool | None = None  # None: no validation has run
        self._evaluator: Any = None  # a WSOLEvaluator during a validation epoch
        self._intervention: Any = None

    @property
    def is_student(self) -> bool:
        return self.cfg.method == "kd-ci-cam"

    # ------------------------------------------------------------------ training
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.cfg.trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def on_fit_start(self) -> None:
        for teacher in self._teachers.values():
            teacher.to(self.device)

    def _teacher_outputs(self, x: torch.Tensor, routes: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Run each teacher only on the samples whose route needs it; scatter into full-batch tensors."""
        outputs: dict[str, torch.Tensor | None] = {"cls_teacher_logits": None, "loc_teacher_cams": None,
                                                   "loc_teacher_logits": None}
        with torch.no_grad():
            for role, route, fields in (("cls", 1, {"cls_teacher_logits": "logits"}),
                                        ("loc", 2, {"loc_teacher_cams": "cams", "loc_teacher_logits": "logits"})):
                teacher = self._teachers.get(role)
                idx = (routes == route).nonzero(as_tuple=True)[0]
                if teacher is None or idx.numel() == 0:
                    continue
                result = teacher(x[idx])
                for key, field in fields.items():
                    value = result[field].float()
                    full = value.new_zeros((x.shape[0], *value.shape[1:]))
                    full[idx] = value
                    outputs[key] = full
        return outputs

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x, y = batch["image"], batch["label"]
        if self.cfg.trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.model(x)
        if hasattr(self.model, "update_pool"):
            self.model.update_pool(out, y)
        if self.is_student:
            teacher = self._teacher_outputs(x, batch["route"])
            terms, logs = self.model.objective.terms(out, y, batch["route"], **teacher)
            if self.cfg.kd.counterfactual > 0 and teacher["loc_teacher_cams"] is not None:
                terms["counterfactual"] = self._counterfactual(x, y, out, batch["route"], teacher)
        else:
            terms, logs = self.model.loss_terms(x, y, out)
        loss = sum(terms.values())
        k = self.cfg.trainer.diag_every_n_steps
        if k > 0 and self.global_step % k == 0 and torch.is_grad_enabled():
            self._log_gradient_shares(terms, y.shape[0])
        if self.is_student and self.cfg.kd.cam_grad_share is not None and torch.is_grad_enabled() \
                and self.global_step % self.cfg.kd.cam_share_every == 0 and "cam" in terms:
            self._adapt_cam_weight(terms)
        if self.cfg.trainer.fail_on_nonfinite_loss and not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(
                f"loss is {loss.item()} at global step {self.global_step} (epoch {self.current_epoch}, batch "
                f"{batch_idx}); stopped — the last good checkpoint is kept. Lower optim.lr or check the data.")
        acc = (out["logits"].argmax(1) == y).float().mean()
        bs = y.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/acc", acc * 100, prog_bar=True, batch_size=bs)
        for key, value in logs.items():
            if key == "fg_coverage":  # a diagnostic: the epoch's mean, whatever log_every_n_steps is
                self.log(f"train/{key}", value, on_step=False, on_epoch=True, batch_size=bs)
            elif key != "loss":
                self.log(f"train/{key}", value, batch_size=bs)
        return loss

    def _counterfactual(self, x: torch.Tensor, y: torch.Tensor, out: dict[str, torch.Tensor], routes: torch.Tensor,
                        teacher: dict[str, torch.Tensor | None]) -> torch.Tensor:
        """ρ·[CE(z(x⊙m) − z(x⊙(1−m))) + CE((diff + z)/2)] on the route-2 rows, m the loc teacher's foreground on the
        same view: the student must classify from the object and not from what surrounds it (the loc teacher's own
        diff_aux loss, with the teacher's mask)."""
        import torch.nn.functional as F

        from ..models.cam import combinational_cam

        idx = (routes.to(x.device) == 2).nonzero(as_tuple=True)[0]
        if idx.numel() == 0:
            return out["logits"].sum() * 0.0
        model = self.model
        logits, cams = teacher["loc_teacher_logits"], teacher["loc_teacher_cams"]
        assert logits is not None and cams is not None  # called only when the loc teacher ran
        with torch.no_grad():
            s = combinational_cam(logits[idx], cams[idx],
                                  model.combination, model.combination_m)
            s = F.interpolate(s[:, None].float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
            fg = (s > self.cfg.kd.counterfactual_mask * s.flatten(1).amax(1).view(-1, 1, 1, 1)).to(x.dtype)
        xn = model.backbone.normalize(x[idx])
        z_fg = model.head(model.backbone.forward_features(xn * fg))
        z_bg = model.head(model.backbone.forward_features(xn * (1.0 - fg)))
        diff = z_fg - z_bg
        yi = y[idx]
        loss = F.cross_entropy(diff, yi) + F.cross_entropy((diff + out["logits"][idx]) / 2.0, yi)
        return self.cfg.kd.counterfactual * loss

    def _log_gradient_shares(self, terms: dict[str, torch.Tensor], batch_size: int) -> None:
        """Each loss term's gradient norm at the trainable parameters and its share of their sum, averaged
        over the sampled steps of an epoch (train/grad_norm_*, train/grad_share_*)."""
        from ..diagnostics import gradient_norms, gradient_shares

        params = [p for p in self.model.parameters() if p.requires_grad]
        norms = gradient_norms(terms, params)
        for name, share in gradient_shares(norms).items():
            self.log(f"train/grad_norm_{name}", norms[name], on_step=False, on_epoch=True, batch_size=batch_size)
            self.log(f"train/grad_share_{name}", share, on_step=False, on_epoch=True, batch_size=batch_size)

    def _adapt_cam_weight(self, terms: dict[str, torch.Tensor]) -> None:
        """Move route 2's weight towards kd.cam_grad_share of the summed gradient norms (the share measured by
        the diagnostics); the weight is saved in every checkpoint, so a resumed run goes on from it."""
        from ..diagnostics import gradient_norms, gradient_shares
        from ..models.distill import adapted_weight

        objective = self.model.objective
        params = [p for p in self.model.parameters() if p.requires_grad]
        norms = gradient_norms(terms, params)
        if norms.get("cam", 0.0) <= 0.0:
            return  # no route-2 sample in this batch
        target = self.cfg.kd.cam_grad_share
        assert target is not None  # called only when kd.cam_grad_share is set
        objective.cam_weight = adapted_weight(objective.cam_weight, gradient_shares(norms)["cam"],
                                              float(target))

    def on_train_epoch_end(self) -> None:
        pool = getattr(self.model, "pool", None)
        if pool is None:
            return
        from ..diagnostics import pool_stats

        for key, value in pool_stats(pool, self._object_prior(pool)).items():
            if value is not None:
                self.log(f"train/{key}", float(value), on_step=False, on_epoch=True, sync_dist=False)

    def _object_prior(self, pool) -> Any:
        """Each class's object-location prior on the pool's grid, from the GT boxes of the train split (or,
        when it has none, of val); None when neither has boxes or there is no datamodule."""
        if not pool.is_materialized:
            return None
        shape = tuple(pool.maps.shape[1:])
        cached = getattr(self, "_prior_cache", None)
        if cached is not None and cached[0] == shape:
            return cached[1]
        prior = None
        dm = getattr(getattr(self, "_trainer", None), "datamodule", None)
        if dm is not None:
            from ..diagnostics import box_prior

            for split in (self.cfg.data.train_split, self.cfg.data.val_split):
                try:
                    md = dm.metadata(split)
                except KdcicamError:
                    continue
                if md.boxes:
                    prior = box_prior(md, *shape)[0]
                    break
        self._prior_cache = (shape, prior)
        return prior

    # ------------------------------------------------------------------ validation
    def _new_evaluator(self, metadata):
        from ..evaluation import WSOLEvaluator

        e = self.cfg.eval
        return WSOLEvaluator(metadata, cam_size=self.cfg.data.image_size, iou_thresholds=tuple(e.iou_thresholds),
                             cam_curve_interval=e.cam_curve_interval)

    def on_validation_epoch_start(self) -> None:
        dm = self.trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning at fit time, undeclared
        self._evaluator = self._new_evaluator(dm.metadata(self.cfg.data.val_split))
        from ..diagnostics import InterventionStats

        self._intervention = InterventionStats()

    def validation_step(self, batch: dict | None, batch_idx: int) -> None:
        if batch is None:  # every image of this batch was unreadable and skipped (data.skip_bad_images)
            return
        out = self(batch["image"])
        maps = self.model.localization_map(out, kind=self.cfg.model.localization_map)
        scoremaps = scoremaps_for_evaluation(maps, self.cfg.data.image_size)
        self._evaluator.accumulate(scoremaps, batch["image_id"], out["logits"].float().cpu().numpy())
        if self._intervention is not None:
            self._intervention.add(out, self.model.combination, self.model.combination_m)

    def on_validation_epoch_end(self) -> None:
        if self._intervention is not None:
            for key, value in self._intervention.compute().items():
                self.log(f"val/diag_{key}", float(value), sync_dist=False, rank_zero_only=False)
            self._intervention = None
        evaluator = self._evaluator
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, evaluator)
            evaluator = gathered[0]
            for other in gathered[1:]:
                evaluator.merge(other)
        metrics = evaluator.compute()
        # a val split without boxes chooses no threshold: Localizer / evaluate then ask for one
        self.box_threshold = float(metrics["best_threshold"]["50"]) if "best_threshold" in metrics else None
        self.val_has_boxes = bool(evaluator.boxes)
        for key in ("top1_cls", "top5_cls", "gt_known_loc", "top1_loc", "max_box_acc_v2", "context_leakage", "pxap"):
            value = metrics.get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                self.log(f"val/{key}", float(value), prog_bar=key in ("top1_cls", "gt_known_loc", "max_box_acc_v2"),
                         sync_dist=False, rank_zero_only=False)
        if "max_box_acc" in metrics:
            self.log("val/max_box_acc", float(metrics["max_box_acc"]["50"]))
        self._evaluator = None

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        o = self.cfg.optim
        extra = {}  # CAM has no intervention: the setting is ignored there, so one config serves all three methods
        if o.intervention_lr_mult is not None and hasattr(self.model, "mask2attention"):
            extra["intervention_lr_mult"] = o.intervention_lr_mult
        groups = self.model.param_groups(o.lr, o.backbone_lr_mult, **extra)
        optimizer = torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, self.cfg))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["kdcicam"] = {"box_threshold": self.box_threshold, "val_has_boxes": self.val_has_boxes,
                                 "num_classes": self.num_classes,
                                 "class_names": self.class_names, "method": self.cfg.method,
                                 "torch_rng_state": torch.get_rng_state()}
        if self.is_student:
            checkpoint["kdcicam"]["cam_weight"] = float(self.model.objective.cam_weight)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        extra = checkpoint.get("kdcicam", {})
        self.box_threshold = extra.get("box_threshold")
        self.val_has_boxes = extra.get("val_has_boxes")
        if extra.get("torch_rng_state") is not None:
            torch.set_rng_state(extra["torch_rng_state"])
        if self.is_student and extra.get("cam_weight") is not None:
            self.model.objective.cam_weight = float(extra["cam_weight"])


def load_module(path: str, load_teachers: bool = False) -> WSOLModule:
    """Rebuild a WSOLModule from a checkpoint without touching pretrained-weight files."""
    ckpt = read_checkpoint(path)
    hp = dict(ckpt["hyper_parameters"])
    module = WSOLModule(config=hp["config"], num_classes=hp["num_classes"], class_names=hp.get("class_names"),
                        teacher_checkpoints=hp.get("teacher_checkpoints"), load_teachers=load_teachers)
    try:
        module.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise KdcicamError(f"{path}: checkpoint does not fit the model it describes: {str(e).splitlines()[0]}") from None
    module.on_load_checkpoint(ckpt)
    module.eval()
    return module
