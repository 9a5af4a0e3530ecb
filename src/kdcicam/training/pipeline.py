"""Training runs: one stage (CAM, CI-CAM, a teacher or the student) on the Lightning Trainer, and the
whole KD-CI-CAM recipe (classification teacher → localization teacher → student) in one call.

A run folder holds everything needed to re-run it::

    runs/NAME/config.yaml            the full typed config
    runs/NAME/checkpoints/last.ckpt  written atomically every epoch (and every N steps)
    runs/NAME/checkpoints/best.ckpt  by eval.monitor on val
    runs/NAME/checkpoints/best_cls.ckpt, best_loc.ckpt  by val Top-1 Cls and by val MaxBoxAccV2
    runs/NAME/metrics.csv            CSV logger; tb/ holds TensorBoard events
    runs/NAME/done.json              written last: the stage finished

KD-CI-CAM puts one such folder per stage under runs/NAME/{cls_teacher,loc_teacher,student}/.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from ..config import RunConfig, config_to_dict, kd_stage_configs, save_config, with_overrides
from ..data.atomic import atomic_write, atomic_write_text
from ..errors import KdcicamError, TrainingInterrupted
from ..models.distill import allowed_routes, needed_teachers
from .datamodule import WSOLDataModule
from .module import WSOLModule

log = logging.getLogger(__name__)
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: "💡 Tip" not in str(r.msg))  # no ads
MIN_FREE_BYTES = 200 * 1024 * 1024
#: besides best.ckpt (by eval.monitor), every run keeps its best epoch by each of these val metrics
DILEMMA_MONITORS = {"best_cls": "val/top1_cls", "best_loc": "val/max_box_acc_v2"}


@contextlib.contextmanager
def deferred_sigint() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside the block until the block is done, then deliver it.

    A KeyboardInterrupt raised inside torch.save leaves its zip writer half-closed, and the writer
    then fails with an unrelated RuntimeError (exit 1, a traceback, no resume hint); a checkpoint
    write takes a second or less, so it is finished first. Only the main thread can do this;
    elsewhere the block runs unprotected (the write is still atomic)."""
    caught: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            os.kill(os.getpid(), signal.SIGINT)  # re-delivered under the restored handler


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temp file in the same folder, fsync, then rename: a run killed at any moment
    (even mid-write) leaves the previous checkpoint intact and loadable; a Ctrl-C during the write
    takes effect once it is complete."""

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any = None) -> None:
        with deferred_sigint():
            self._save(checkpoint, Path(path))

    @staticmethod
    def _save(checkpoint: dict, path: Path) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f), fsync=True)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        try:
            return torch.load(path, map_location=map_location or "cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - corrupt, or needs code to load: one clear line, not a traceback
            lines = str(e).splitlines() or [type(e).__name__]
            reason = next((ln.strip() for ln in lines if "GLOBAL" in ln), lines[0])  # what was refused, if that
            raise KdcicamError(f"{path}: cannot resume from this checkpoint ({reason}); only tensors and plain "
                               "data are loaded (weights_only=True)") from None


class LastCheckpoint(Checkpoint):
    """``last.ckpt`` at every epoch end and, optionally, every N optimizer steps.

    A :class:`~lightning.pytorch.callbacks.Checkpoint`, so that Lightning runs it after the best-by-metric
    checkpoints that precede it in the callback list: they update their state at the same epoch end, and
    last.ckpt must hold that state, or a resumed run would compare its next epochs with a stale best."""

    def __init__(self, path: Path, every_n_steps: int = 0):
        self.path = Path(path)
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch-end checkpoint follows; Lightning resumes a last-batch checkpoint wrongly
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; a resumed run must keep its history."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class ResumableCSVLogger(CSVLogger):
    """``metrics.csv`` in the run folder, appended to when the run is resumed."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.log_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return cast(ExperimentWriter, self._experiment)  # set here only: an _AppendingWriter


def check_output_folder(out: Path) -> None:
    """Fail before training, not after an hour, when the run folder cannot hold checkpoints."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise KdcicamError(f"{out}: output folder is not writable ({e.strerror})") from None
    free = shutil.disk_usage(out).free
    if free < MIN_FREE_BYTES:
        raise KdcicamError(f"{out}: only {free // 2**20} MiB free on this disk; need at least "
                           f"{MIN_FREE_BYTES // 2**20} MiB for checkpoints")


def _on_cuda(cfg: RunConfig) -> bool:
    return torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")


def _precision(cfg: RunConfig) -> str:
    """``auto``: bf16 mixed precision on a GPU that has it (fp32's range: no loss scaling, and the
    pool's sums and the T=15 distillation softmax cannot overflow), else fp16 mixed; fp32 on CPU."""
    if cfg.trainer.precision != "auto":
        return cfg.trainer.precision
    if not _on_cuda(cfg):
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def _strategy(cfg: RunConfig) -> Any:
    """``ddp`` with its backend named: NCCL between GPUs, gloo between CPU processes."""
    if cfg.trainer.strategy != "ddp":
        return cfg.trainer.strategy
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(process_group_backend="nccl" if _on_cuda(cfg) else "gloo")


#: val metrics that need GT boxes on val, and the one that needs masks
BOX_MONITORS = frozenset({"val/max_box_acc_v2", "val/max_box_acc", "val/gt_known_loc", "val/top1_loc"})
MASK_MONITORS = frozenset({"val/pxap"})


def effective_monitor(monitor: str, mode: str, val_has_boxes: bool, val_has_masks: bool) -> tuple[str, str, str | None]:
    """The checkpoint monitor this val split can compute: ``(monitor, mode, why it changed or None)``.
    A box metric without val boxes falls back to PxAP (val masks) or Top-1 Cls; so does leakage without either."""
    if (monitor in BOX_MONITORS and not val_has_boxes) or (monitor in MASK_MONITORS and not val_has_masks) or \
            (monitor == "val/context_leakage" and not (val_has_boxes or val_has_masks)):
        fallback = "val/pxap" if val_has_masks else "val/top1_cls"
        what = "masks but no boxes" if val_has_masks else "no boxes or masks"
        why = f"eval.monitor={monitor} needs val localization, and val has {what}: best.ckpt is chosen by {fallback} instead"
        return fallback, "max", why
    return monitor, mode, None


def train_stage(config: RunConfig, out: Path, resume: bool = False, teacher_checkpoints: dict[str, str] | None = None,
                routes: Sequence[int] | None = None, extra_callbacks: list[Callback] | None = None,
                init_checkpoint: str | None = None) -> dict[str, Any]:
    """Train one model into ``out``; returns the stage summary (also written to done.json). ``init_checkpoint``:
    start from that model's weights (those of the same name and shape) instead of the backbone's ImageNet ones."""
    out = Path(out)
    done = out / "done.json"
    if done.is_file():
        log.info("%s: finished before (done.json), skipped", out)
        return json.loads(done.read_text())
    last = out / "checkpoints" / "last.ckpt"
    if last.is_file() and not resume:
        raise KdcicamError(f"{out} already holds a run (checkpoints/last.ckpt); pass --resume to continue it, "
                           "or choose another --out")
    check_output_folder(out)
    if resume and (out / "config.yaml").is_file():
        from ..config import load_config

        saved = load_config(out / "config.yaml")
        given = config_to_dict(config)
        if config.model.pool_rate_target is not None:  # the saved rate was derived from the target
            given["model"]["pool_rate"] = saved.model.pool_rate
        if config_to_dict(saved) != given:
            log.warning("%s: resuming with the config saved in the run folder, not the one given", out)
        config = saved
    datamodule = WSOLDataModule(config, routes=routes)
    if config.model.pool_rate_target is not None and config.method in ("ci-cam", "kd-ci-cam"):
        config = _with_derived_pool_rate(config, datamodule)
        datamodule = WSOLDataModule(config, routes=routes)
    save_config(config, out / "config.yaml")

    cfg = config
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    info = datamodule.info
    module = WSOLModule(config_to_dict(cfg), num_classes=info.num_classes, class_names=info.class_names,
                        teacher_checkpoints=teacher_checkpoints)
    if init_checkpoint and not last.is_file():
        from ..checkpoints import copy_matching_weights

        n = copy_matching_weights(module.model, init_checkpoint)
        log.info("%s: %d tensors initialised from %s", out, n, init_checkpoint)
    if cfg.model.pretrained is False:
        log.warning("model.pretrained=false: the %s backbone starts from random weights (WSOL methods assume an "
                    "ImageNet-pretrained backbone; pass model.pretrained=PATH to a state_dict)", cfg.model.backbone)
    val = datamodule.metadata(cfg.data.val_split)
    monitor, monitor_mode, why = effective_monitor(cfg.eval.monitor, cfg.eval.monitor_mode, val.has_boxes, val.has_masks)
    if why:
        log.warning("%s: %s", out, why)
    best = _best_checkpoint(out, "best", monitor, monitor_mode)
    # the dilemma, measured: the best epoch for classification and the best for localization, both kept
    dilemma = {name: effective_monitor(m, "max", val.has_boxes, val.has_masks)[0] for name, m in DILEMMA_MONITORS.items()}
    by_monitor = {name: _best_checkpoint(out, name, m, "max") for name, m in dilemma.items()}
    callbacks: list[Callback] = [best, *by_monitor.values(), LastCheckpoint(last, cfg.trainer.checkpoint_every_n_steps)]
    if cfg.trainer.keep_epoch_checkpoints:
        callbacks.append(EpochCheckpoints(last.parent))
    callbacks += list(extra_callbacks or [])
    if cfg.trainer.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    trainer = L.Trainer(
        default_root_dir=out, max_epochs=cfg.optim.epochs, accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices, num_nodes=cfg.trainer.num_nodes, strategy=_strategy(cfg),
        precision=_precision(cfg),  # type: ignore[arg-type]  # a config string; Lightning checks it
        callbacks=callbacks, plugins=[AtomicCheckpointIO()],
        logger=[ResumableCSVLogger(out, name="", version=""), TensorBoardLogger(out, name="tb", version="")],
        log_every_n_steps=cfg.trainer.log_every_n_steps, enable_progress_bar=cfg.trainer.progress_bar,
        check_val_every_n_epoch=cfg.trainer.val_every_n_epochs, use_distributed_sampler=False,
        num_sanity_val_steps=0, deterministic=False, enable_model_summary=False)
    if resume:
        remove_stale_temp_files(last.parent)
    start = time.time()
    sigint = _sigint_handler()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume and last.is_file() else None,
                    weights_only=True)
    except (KeyboardInterrupt, SystemExit) as e:
        # Lightning turns Ctrl-C into sys.exit(1) after its own shutdown; say what happened and how to go on
        if isinstance(e, SystemExit) and not trainer.interrupted:
            raise
        raise TrainingInterrupted(_interrupted_message(out, trainer, last)) from None
    finally:
        _restore_sigint(sigint)  # Lightning ignores SIGINT from the first Ctrl-C on; undo that
    if trainer.interrupted:
        raise TrainingInterrupted(_interrupted_message(out, trainer, last))
    summary: dict[str, Any] = {
        "stage_dir": str(out), "best": str(out / "checkpoints" / "best.ckpt"), "last": str(last),
        "best_score": float(best.best_model_score) if best.best_model_score is not None else None,
        "monitor": monitor, "epochs": cfg.optim.epochs, "train_seconds": round(time.time() - start, 1),
        "method": cfg.method,
        "by_monitor": {name: {"monitor": dilemma[name], "path": str(out / "checkpoints" / f"{name}.ckpt"),
                              "score": float(cb.best_model_score) if cb.best_model_score is not None else None}
                       for name, cb in by_monitor.items()}}
    if trainer.is_global_zero:
        for path in [summary["best"], *(v["path"] for v in summary["by_monitor"].values())]:
            if not Path(path).is_file():  # no validation ran: the last weights are the best we have
                shutil.copyfile(last, path)
        atomic_write_text(done, json.dumps(summary, indent=2))
    return summary


class EpochCheckpoints(Checkpoint):
    """``epoch<k>.ckpt`` (weights only) at every epoch end, kept: the material of a weight average over epochs
    (:func:`kdcicam.checkpoints.average_checkpoints`), the control a distilled student must beat."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.folder / f"epoch{trainer.current_epoch}.ckpt", weights_only=True)


class NamedBestCheckpoint(ModelCheckpoint):
    """A best-by-monitor checkpoint whose resumable state is keyed by its file name too, so that two of
    them may watch the same metric (best.ckpt and best_loc.ckpt both follow val MaxBoxAccV2 by default)."""

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode, filename=self.filename)


def _best_checkpoint(out: Path, name: str, monitor: str, mode: str) -> ModelCheckpoint:
    cls = ModelCheckpoint if name == "best" else NamedBestCheckpoint  # best.ckpt keeps its state key (resume)
    # saved when validation ends, so that last.ckpt (written at the epoch's end, before Lightning's own
    # epoch-end checkpoint hooks run) holds this epoch's best state and a resumed run keeps it
    return cls(dirpath=out / "checkpoints", filename=name, monitor=monitor, mode=mode, save_top_k=1,
               save_last=False, enable_version_counter=False, auto_insert_metric_name=False,
               save_on_train_epoch_end=False)


def _with_derived_pool_rate(config: RunConfig, datamodule: WSOLDataModule) -> RunConfig:
    """``model.pool_rate`` from ``model.pool_rate_target`` (see :mod:`kdcicam.training.scaling`); the run
    then saves the derived rate in its config.yaml."""
    from .scaling import derive_pool_rate

    t = config.trainer
    world = (t.devices if isinstance(t.devices, int) and t.devices > 0 else 1) * max(t.num_nodes, 1)
    scaled = with_overrides(config, "data", {"batch_size": config.data.batch_size * world}, "pool rate")
    md = datamodule.train_dataset().metadata
    rate = derive_pool_rate(scaled, md.class_labels, md.num_classes)
    log.info("model.pool_rate %.5f derived from model.pool_rate_target %s", rate, config.model.pool_rate_target)
    return with_overrides(config, "model", {"pool_rate": rate}, "derived pool rate")


def _resolve_cam_temperature(student: RunConfig, loc_teacher_ckpt: str, out: Path) -> RunConfig:
    """``kd.cam_temperature: auto`` → the localization teacher's raw-CAM standard deviation on the first
    training batches (evaluation transform, so the number does not depend on augmentation draws). A
    student that has started keeps the value in its saved config."""
    from ..checkpoints import load_model
    from ..config import load_config
    from .scaling import cam_scale

    if student.kd.cam_temperature != "auto":
        return student
    saved = out / "config.yaml"
    if saved.is_file():
        return load_config(saved)
    loader = WSOLDataModule(student).eval_dataloader(student.data.train_split)
    scale = cam_scale(load_model(loc_teacher_ckpt), loader)
    log.info("kd.cam_temperature auto: the localization teacher's raw CAMs have std %.3f", scale)
    return with_overrides(student, "kd", {"cam_temperature": round(scale, 4)}, "kd.cam_temperature")


def _interrupted_message(out: Path, trainer: L.Trainer, last: Path) -> str:
    kept = (f"{last} (the last complete checkpoint) is intact" if last.is_file()
            else "no checkpoint was written yet")
    return (f"{out}: training interrupted at epoch {trainer.current_epoch}, global step {trainer.global_step}; "
            f"{kept}; run the same command again with --resume to continue")


def _sigint_handler() -> Any:
    try:
        return signal.getsignal(signal.SIGINT)
    except ValueError:  # pragma: no cover - not the main thread
        return None


def _restore_sigint(handler: Any) -> None:
    if handler is None:
        return
    try:
        if signal.getsignal(signal.SIGINT) is not handler:
            signal.signal(signal.SIGINT, handler)
    except (ValueError, TypeError):  # pragma: no cover - not the main thread
        pass


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files that :class:`AtomicCheckpointIO` leaves when a process is
    killed mid-write (called before resuming, when no writer of this run is alive)."""
    removed = []
    for tmp in sorted(Path(folder).glob(".*.ckpt.*.tmp")) if Path(folder).is_dir() else []:
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:  # another rank removed it
            pass
    if removed:
        log.info("%s: removed %d temp file(s) left by an interrupted checkpoint write", folder, len(removed))
    return removed


def train(config: RunConfig, out: str | os.PathLike, resume: bool = False) -> dict[str, Any]:
    """`kdcicam train`: one stage for cam / ci-cam; the three-stage recipe for kd-ci-cam."""
    out = Path(out)
    if config.method != "kd-ci-cam":
        return train_stage(config, out, resume=resume)
    check_output_folder(out)
    save_config(config, out / "config.yaml")
    stages = kd_stage_configs(config)
    summaries: dict[str, Any] = {}
    teacher_ckpts: dict[str, str] = {}
    for stage in needed_teachers(config.kd.teachers):
        role = stage.split("_")[0]
        given = getattr(config.kd, f"{stage}_checkpoint")
        if given:  # a finished model taken as this teacher (e.g. a CAM run's best_loc.ckpt): nothing to train
            from ..checkpoints import resolve_checkpoint

            teacher_ckpts[role] = str(resolve_checkpoint(given))
            summaries[stage] = {"given": teacher_ckpts[role], "best": teacher_ckpts[role]}
            continue
        stage_dir = out / stage
        summaries[stage] = train_stage(stages[stage], stage_dir, resume=resume or (stage_dir / "checkpoints").is_dir())
        teacher_ckpts[role] = summaries[stage]["best"]
    if "loc" in teacher_ckpts:
        stages["student"] = _resolve_cam_temperature(stages["student"], teacher_ckpts["loc"], out / "student")
    elif stages["student"].kd.cam_temperature == "auto":
        stages["student"] = with_overrides(stages["student"], "kd", {"cam_temperature": None}, "kd.cam_temperature")
    init = config.kd.student_init
    if init == "loc_teacher":
        if "loc" not in teacher_ckpts:
            raise KdcicamError("kd.student_init=loc_teacher needs a localization teacher (kd.teachers both or loc)")
        init = teacher_ckpts["loc"]
    summaries["student"] = train_stage(stages["student"], out / "student",
                                       resume=resume or (out / "student" / "checkpoints").is_dir(),
                                       teacher_checkpoints=teacher_ckpts, routes=allowed_routes(config.kd.teachers),
                                       init_checkpoint=init)
    atomic_write_text(out / "done.json", json.dumps(summaries, indent=2))
    return summaries
