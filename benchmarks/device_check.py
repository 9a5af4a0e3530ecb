"""The GPU path, checked end to end in one command on whatever accelerator is present (CUDA if there is
one, else the CPU), and recorded in ``benchmarks/results/device_check.json``:

    python benchmarks/device_check.py --commit SHA      # on a GPU machine: within a 270 s budget
    python benchmarks/device_check.py --cpu-smoke --out /tmp/smoke.json   # the same code on CPU, seconds

Sections, each recorded with ``ok``, ``seconds`` and, when it failed, the error (the script goes on to
the next section; it exits 1 when any failed):

- ``train_step``: one CAM, CI-CAM and KD-CI-CAM training step (``WSOLModule.training_step`` with both
  frozen teachers for the student, backward, Adam) in fp32 and under
  ``torch.autocast(device, dtype=torch.bfloat16)``: loss and gradients finite, the context pool updated.
- ``parity``: a small CI-CAM trained for a few steps through the Lightning pipeline (bf16-mixed), then
  the same checkpoint evaluated on the CPU and on the device (fp32, TF32 off): logits, score maps, boxes
  at the chosen threshold and every metric compared under the rule written into the results
  (:data:`PARITY_RULE`).
- ``throughput``: training images/s per method, fp32 and bf16, channels_last on and off; the
  ``Localizer`` against the bare backbone forward (``benchmarks/throughput.py``'s measurement).
- ``ddp``: CI-CAM trained by Lightning's DDP strategy over every visible GPU with NCCL (one GPU is world
  size 1, still through DDP; gloo on CPU), in a child process so that a hang or crash is recorded; the
  context pools of all ranks must be identical and non-zero.

Everything runs on data made on the fly (``kdcicam data synthetic``) with an ImageNet-sized
EfficientNet-Lite0 (random weights: nothing needs the weights package). ``--budget-s`` bounds the run: a
section that would not fit in what is left is recorded as skipped. The results file is rewritten (atomically)
after every section, so a run killed midway keeps what finished.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np
import torch
from provenance import cpu_model, git_commit
from throughput import alternate, bench_inference, sync

METHODS = ("cam", "ci-cam", "kd-ci-cam")
PRECISIONS = ("fp32", "bf16")
SECTIONS = ("train_step", "parity", "throughput", "ddp")

PARITY_RULE = {
    "setup": ("One checkpoint, evaluated in fp32 on the CPU and on the device with TF32 off (cuDNN convolutions "
              "and matmuls in IEEE fp32) and deterministic cuDNN algorithms. The box threshold is chosen on val "
              "on each device, then applied to the compared split."),
    "why_not_bitwise": ("The two devices run the same fp32 network with different kernels (oneDNN vs cuDNN) that "
                        "sum in different orders, so outputs agree to float rounding, not bit for bit. With TF32 on "
                        "(PyTorch's default for cuDNN convolutions) inputs are rounded to 10-bit mantissas and maps "
                        "differ by ~1e-3, which is why parity is checked with it off; that difference is recorded "
                        "beside it (tf32_on_max_map_diff)."),
    "maps_and_logits": ("max |CPU - device| <= 1e-3 for the min-max normalised score maps (values in [0, 1]) and "
                        "<= 1e-3 * max(1, max |logit|) for the logits; fp32 rounding through the network and the "
                        "normalisation gives ~1e-5. delta = the observed max map difference."),
    "boxes": ("The evaluator quantises a map to q = uint8(255 s) and boxes the pixels with q > L at level "
              "L = int(255 t). A pixel can change side only if its score differs between the devices and lies "
              "within delta of a level boundary k/255. So at the chosen threshold the boxes must be identical for "
              "every image with no such pixel near that threshold's boundary (L+1)/255; images with one (near "
              "ties) may differ and are counted."),
    "metrics": ("Count metrics (% of N images): |CPU - device| <= 100 * k / N, k = the images whose result could "
                "flip: top-1/top-5 class near ties (logit gap at the rank boundary <= 2 * the max logit "
                "difference) for Top-k Cls; those plus box near ties at the chosen threshold for Top-k Loc and "
                "GT-known Loc; those with such a pixel near any boundary k/255 for the threshold-swept "
                "MaxBoxAcc and MaxBoxAccV2. Pixel-averaged metrics (PxAP, PIoU, context leakage): "
                "<= 0.1 points, since every pixel moves by <= delta. Expected in practice: equal."),
}


@dataclass
class Sizes:
    """How big each section's work is: the GPU run and the CPU smoke differ only here."""

    image: int  # training-step and throughput input (px)
    classes: int
    batch: int
    warmup: int
    timed: int  # timed steps per throughput configuration
    data_size: int  # synthetic image side (px), parity and DDP
    n_train: int
    n_eval: int  # val and test images each
    data_classes: int
    train_batch: int  # parity / DDP training batch
    epochs: int
    localizer_images: int
    source_wh: tuple[int, int]
    budget_s: float
    timed_precisions: tuple[str, ...] = PRECISIONS  # throughput; the smoke times fp32 only (CPU bf16 is slow)


GPU = Sizes(image=224, classes=50, batch=64, warmup=3, timed=10, data_size=128, n_train=512, n_eval=96,
            data_classes=4, train_batch=32, epochs=2, localizer_images=128, source_wh=(500, 375), budget_s=270)
SMOKE = Sizes(image=32, classes=4, batch=4, warmup=1, timed=1, data_size=32, n_train=32, n_eval=16,
              data_classes=4, train_batch=8, epochs=1, localizer_images=4, source_wh=(40, 30), budget_s=120,
              timed_precisions=("fp32",))


# ------------------------------------------------------------------------------------------ context
def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device.type, "name": cpu_model() if device.type == "cpu" else None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, count=torch.cuda.device_count(), memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", bf16_supported=torch.cuda.is_bf16_supported(),
                    names=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
    return info


def versions() -> dict[str, Any]:
    import lightning

    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "lightning": lightning.__version__, "cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    with contextlib.suppress(Exception):  # a tuple in recent torch, an int in older ones
        nccl = torch.cuda.nccl.version() if torch.cuda.is_available() else None
        out["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl
    return out


def machine() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "torch_threads": torch.get_num_threads()}


@contextlib.contextmanager
def fp32_convolutions(device: torch.device) -> Iterator[None]:
    """cuDNN convolutions and matmuls in IEEE fp32 (TF32 off), deterministic algorithms; restored after.
    Through the ``allow_tf32`` flags: torch 2.9+'s ``fp32_precision`` would also do, but setting only the
    per-operator values makes the older flags unreadable (an error) for any code that reads them later."""
    if device.type != "cuda":
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic)
    try:
        cudnn.allow_tf32 = matmul.allow_tf32 = False
        cudnn.deterministic = True
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic = saved


# ------------------------------------------------------------------------------------------ models
def run_config(method: str, image: int, channels_last: bool, extra: tuple[str, ...] = ()):
    """A paper-scale model config: every layer trained, output stride 16, random weights."""
    from kdcicam.config import load_config

    return load_config(None, [f"data.image_size={image}", "model.pretrained=false", "model.output_stride=16",
                              "model.freeze_stages=-1", f"trainer.channels_last={str(channels_last).lower()}",
                              "trainer.progress_bar=false", *extra], method=method)


def build_module(method: str, sizes: Sizes, device: torch.device):
    """A WSOLModule on ``device``, channels_last; the KD-CI-CAM student gets both teachers (random CI-CAMs)."""
    from kdcicam.config import config_to_dict, kd_stage_configs
    from kdcicam.models.distill import freeze_teacher
    from kdcicam.training.module import WSOLModule, build_model

    cfg = run_config(method, sizes.image, True, ("trainer.diag_every_n_steps=0",))  # the plain step, no extra grads
    module = WSOLModule(config_to_dict(cfg), num_classes=sizes.classes).to(device).train()
    if module.is_student:
        stages = kd_stage_configs(cfg)
        for role in ("cls", "loc"):
            teacher = build_model(stages[f"{role}_teacher"], sizes.classes, pretrained=False)
            module._teachers[role] = freeze_teacher(teacher.to(memory_format=torch.channels_last)).to(device)
    return module


def lightning_precision(cuda: bool) -> str:
    """bf16-mixed on a GPU; fp32 for the Lightning runs on CPU, where bf16 convolutions without native
    support are tens of times slower (the smoke's bf16 steps are in train_step)."""
    return "bf16-mixed" if cuda else "32-true"


def set_channels_last(module, on: bool) -> None:
    """Switch a built module (its teachers too) between channels_last and contiguous, weights and input."""
    fmt = torch.channels_last if on else torch.contiguous_format
    module.cfg.trainer.channels_last = on  # WSOLModule converts its input by this flag
    module.model.to(memory_format=fmt)
    for teacher in module._teachers.values():
        teacher.to(memory_format=fmt)


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def make_batch(module, sizes: Sizes, device: torch.device, precision: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random images; labels = the model's own predictions, so every sample counts for the context pool
    (a random 50-class model is almost never right by chance, and the pool only sums correct samples)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(sizes.batch, 3, sizes.image, sizes.image, generator=g).to(device)
    with torch.no_grad(), autocast(device, precision):
        out = module(x)
    label = out.get("pred_up", out["logits"].argmax(1)).detach().long()
    return {"image": x, "label": label, "route": torch.arange(sizes.batch, device=device) % 3}


def step_fn(module, batch: dict, device: torch.device, precision: str) -> Callable[[], torch.Tensor]:
    optimizer = module.configure_optimizers()["optimizer"]

    def step() -> torch.Tensor:
        with autocast(device, precision):
            loss = module.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


# ------------------------------------------------------------------------------------------ sections
def section_train_step(ctx: Context) -> dict[str, Any]:
    rows, ok = [], True
    for method in METHODS:
        module = build_module(method, ctx.sizes, ctx.device)
        for precision in PRECISIONS:  # fp32 first, then bf16 on the weights (and pool) it left
            start = time.time()
            batch = make_batch(module, ctx.sizes, ctx.device, precision)
            pool = getattr(module.model, "pool", None)
            before = pool.maps.detach().clone() if pool is not None else None
            loss = step_fn(module, batch, ctx.device, precision)()
            sync(ctx.device)
            grads = [p.grad for p in module.model.parameters() if p.grad is not None]
            row: dict[str, Any] = {
                "method": method, "precision": precision, "loss": float(loss), "loss_dtype": str(loss.dtype),
                "loss_finite": bool(torch.isfinite(loss)), "params_with_grad": len(grads),
                "grads_finite": bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads)}
            if pool is not None:
                after = pool.maps.detach()
                row.update(pool_updated=bool(before is not None and before.shape == after.shape
                                             and not torch.equal(before, after) and after.abs().sum() > 0),
                           pool_shape=list(after.shape), pool_finite=bool(torch.isfinite(after).all()))
            row["seconds"] = round(time.time() - start, 2)
            row["ok"] = row["loss_finite"] and row["grads_finite"] and row.get("pool_updated", True) \
                and row.get("pool_finite", True)
            ok &= row["ok"]
            rows.append(row)
        del module
    return {"ok": ok, "steps": rows, "input": [ctx.sizes.batch, 3, ctx.sizes.image, ctx.sizes.image],
            "classes": ctx.sizes.classes, "autocast": "torch.autocast(device_type, dtype=torch.bfloat16)"}


def collect(module, datamodule, split: str, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Logits [N, C] and evaluated score maps [N, S, S] of a split, as ``kdcicam evaluate`` computes them."""
    from kdcicam.training.module import scoremaps_for_evaluation

    module.to(device).eval()
    logits, maps = [], []
    with torch.inference_mode():
        for batch in datamodule.eval_dataloader(split):
            out = module(batch["image"].to(device))
            cams = module.model.localization_map(out, kind=module.cfg.model.localization_map)
            maps.append(scoremaps_for_evaluation(cams, module.cfg.data.image_size))
            logits.append(out["logits"].float().cpu().numpy())
    return np.concatenate(logits), np.concatenate(maps)


def rank_gap(logits: np.ndarray, k: int) -> np.ndarray:
    """Per image: the logit gap between ranks k and k+1 (how close the top-k set is to changing)."""
    s = -np.sort(-logits, axis=1)
    return s[:, k - 1] - s[:, k] if logits.shape[1] > k else np.full(len(logits), np.inf)


def near_ties(maps: np.ndarray, other: np.ndarray, delta: float, boundary: float | None = None) -> np.ndarray:
    """Per image: a pixel whose score differs between the devices and lies within ``delta`` of
    ``boundary`` (of any k/255 when None), i.e. one that could be quantised to another side."""
    if boundary is None:
        scaled = maps * 255.0
        dist = np.abs(scaled - np.round(scaled)) / 255.0
    else:
        dist = np.abs(maps - boundary)
    return ((dist <= delta) & (maps != other)).reshape(len(maps), -1).any(axis=1)


def compare_parity(cpu: dict, dev: dict, threshold: float) -> dict[str, Any]:
    """Apply PARITY_RULE to the CPU and device outputs of one split (see that rule for the reasoning)."""
    from kdcicam.evaluation.boxes import scoremap_to_boxes

    n = len(cpu["maps"])
    delta = float(np.abs(cpu["maps"] - dev["maps"]).max())
    dlogit = float(np.abs(cpu["logits"] - dev["logits"]).max())
    logit_scale = max(1.0, float(np.abs(cpu["logits"]).max()))
    level = int(threshold * 255)
    boundary = (level + 1) / 255.0
    box_ties = near_ties(cpu["maps"], dev["maps"], delta, boundary)
    sweep_ties = near_ties(cpu["maps"], dev["maps"], delta)
    cls1 = rank_gap(cpu["logits"], 1) <= 2 * dlogit
    cls5 = rank_gap(cpu["logits"], 5) <= 2 * dlogit
    differ = [not np.array_equal(scoremap_to_boxes(a, [threshold])[0], scoremap_to_boxes(b, [threshold])[0])
              for a, b in zip(cpu["maps"], dev["maps"], strict=True)]
    bad_boxes = [i for i, d in enumerate(differ) if d and not box_ties[i]]
    k = {"top1_cls": int(cls1.sum()), "top5_cls": int(cls5.sum()),
         "top1_loc": int((cls1 | box_ties).sum()), "top5_loc": int((cls5 | box_ties).sum()),
         "gt_known_loc": int(box_ties.sum())}
    sweep = int(sweep_ties.sum())
    rows, within, equal = {}, True, True
    for key, a, b in flat_metrics(cpu["metrics"], dev["metrics"]):
        base = key.split(".")[0]
        tol = 0.1 if base in ("pxap", "piou", "context_leakage") else 100.0 * max(k.get(base, sweep), 0) / n
        diff = abs(a - b)
        rows[key] = {"cpu": a, "device": b, "diff": diff, "tolerance": tol}
        within &= diff <= tol + 1e-9
        equal &= diff == 0
    ok = (delta <= 1e-3 and dlogit <= 1e-3 * logit_scale and not bad_boxes and within)
    return {"ok": bool(ok), "images": n, "threshold": threshold, "max_map_diff": delta, "max_logit_diff": dlogit,
            "boxes_differing": int(sum(differ)), "box_near_ties": int(box_ties.sum()),
            "boxes_differing_outside_near_ties": len(bad_boxes), "sweep_near_ties": sweep,
            "class_near_ties": {"top1": int(cls1.sum()), "top5": int(cls5.sum())},
            "metrics_equal": bool(equal), "metrics_within_tolerance": bool(within), "metrics": rows}


METRIC_KEYS = ("top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known_loc", "max_box_acc", "max_box_acc_v2",
               "max_box_acc_v2_per_iou", "pxap", "piou", "context_leakage")


def flat_metrics(a: dict, b: dict) -> Iterator[tuple[str, float, float]]:
    for key in METRIC_KEYS:
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            for sub in sorted(set(va) & set(vb)):
                yield f"{key}.{sub}", float(va[sub]), float(vb[sub])
        elif isinstance(va, (int, float)) and isinstance(vb, (int, float)):
            yield key, float(va), float(vb)


def train_small(ctx: Context, out: Path, extra: tuple[str, ...] = ()) -> Path:
    """CI-CAM for a few steps on the synthetic data through the Lightning pipeline, bf16 mixed precision."""
    from kdcicam.training.pipeline import train_stage

    accel = "gpu" if ctx.device.type == "cuda" else "cpu"
    precision = lightning_precision(ctx.device.type == "cuda")
    cfg = run_config("ci-cam", ctx.sizes.data_size, True, (
        f"data.root={ctx.data}", f"data.batch_size={ctx.sizes.train_batch}", f"data.eval_batch_size={ctx.sizes.n_eval}",
        "data.test_splits=[test]", f"optim.epochs={ctx.sizes.epochs}", f"trainer.precision={precision}",
        f"trainer.accelerator={accel}", "trainer.log_every_n_steps=1", *extra))
    train_stage(cfg, out)
    return out / "checkpoints" / "best.ckpt"


def section_parity(ctx: Context) -> dict[str, Any]:
    from kdcicam.training.datamodule import WSOLDataModule
    from kdcicam.training.evaluate import evaluate
    from kdcicam.training.module import load_module

    ckpt = train_small(ctx, ctx.work / "parity")
    split = "test"
    results: dict[str, dict] = {}
    for name, device in (("cpu", torch.device("cpu")), ("device", ctx.device)):
        with fp32_convolutions(device):
            metrics = evaluate(ckpt, [split], device=str(device), progress=False, write=False)
            module = load_module(str(ckpt))
            logits, maps = collect(module, WSOLDataModule(module.cfg), split, device)
        results[name] = {"metrics": metrics[split], "threshold": metrics["box_threshold"], "logits": logits, "maps": maps}
    report = compare_parity(results["cpu"], results["device"], results["cpu"]["threshold"])
    report["threshold_device"] = results["device"]["threshold"]
    report["same_threshold_chosen"] = results["cpu"]["threshold"] == results["device"]["threshold"]
    if ctx.device.type == "cuda":  # for the record: what TF32 (the cuDNN default) does to the same comparison
        module = load_module(str(ckpt))
        logits, maps = collect(module, WSOLDataModule(module.cfg), split, ctx.device)
        report["tf32_on_max_map_diff"] = float(np.abs(results["cpu"]["maps"] - maps).max())
        report["tf32_on_max_logit_diff"] = float(np.abs(results["cpu"]["logits"] - logits).max())
    else:
        report["note"] = "no accelerator: the CPU compared with itself (the code path only)"
    report.update(split=split, checkpoint_training=f"ci-cam, {lightning_precision(ctx.device.type == 'cuda')}, "
                  f"{ctx.sizes.epochs} epoch(s) of {ctx.sizes.n_train} synthetic images at {ctx.sizes.data_size} px",
                  rule=PARITY_RULE)
    report["ok"] = report["ok"] and report["same_threshold_chosen"]
    return report


def time_calls(fn: Callable[[], Any], warmup: int, timed: int, device: torch.device) -> list[float]:
    return alternate({"fn": fn}, timed, warmup, device)["fn"]


def section_throughput(ctx: Context) -> dict[str, Any]:
    import statistics

    s = ctx.sizes
    train = []
    for method in METHODS:
        module = build_module(method, s, ctx.device)
        for precision in s.timed_precisions:
            for channels_last in (True, False):
                set_channels_last(module, channels_last)
                step = step_fn(module, make_batch(module, s, ctx.device, precision), ctx.device, precision)
                if ctx.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(ctx.device)
                times = time_calls(step, s.warmup, s.timed, ctx.device)
                row = {"method": method, "precision": precision, "channels_last": channels_last,
                       "images_per_s_best": round(s.batch / min(times), 1),
                       "images_per_s_median": round(s.batch / statistics.median(times), 1),
                       "seconds_per_step": [round(t, 5) for t in times]}
                if ctx.device.type == "cuda":
                    row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(ctx.device) / 2**30, 2)
                train.append(row)
                del step
        del module
    localizer = []
    for channels_last in (True, False):
        args = argparse.Namespace(method="cam", backbone="efficientnet_lite0", classes=s.classes, pretrained=False,
                                  images=s.localizer_images, size=s.image, source_size=list(s.source_wh),
                                  repeats=max(2, s.timed // 2), warmup=s.warmup, no_channels_last=not channels_last)
        r = bench_inference(args, ctx.device)
        localizer.append({k: r[k] for k in ("setup", "backbone_images_per_s", "localizer_images_per_s", "ratio",
                                            "ratio_median", "localizer_phases_s")})
    return {"ok": True, "train": train, "train_setup": {"batch": s.batch, "image": s.image, "classes": s.classes,
                                                        "output_stride": 16, "freeze_stages": -1,
                                                        "optimizer": "Adam", "warmup": s.warmup, "timed": s.timed,
                                                        "step": "WSOLModule.training_step + backward + Adam"},
            "localizer": localizer}


def section_ddp(ctx: Context) -> dict[str, Any]:
    cuda = ctx.device.type == "cuda"
    world = torch.cuda.device_count() if cuda else 1
    out = ctx.work / "ddp"
    spec = {"out": str(out), "data": str(ctx.data), "sizes": asdict(ctx.sizes), "cuda": cuda, "world": world,
            "threads": torch.get_num_threads()}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--ddp-child", json.dumps(spec)]
    timeout = max(30.0, ctx.remaining() - 5)
    start = time.time()
    try:
        proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"the DDP child did not finish within {timeout:.0f} s (killed)", "world_size": world}
    result: dict[str, Any] = {"world_size_expected": world, "backend_expected": "nccl" if cuda else "gloo",
                              "child_seconds": round(time.time() - start, 1), "returncode": proc.returncode}
    if proc.returncode != 0:
        result.update(ok=False, error=f"DDP child exited {proc.returncode}", stderr_tail=proc.stderr[-3000:])
        return result
    ranks = sorted(out.glob("rank*.json"))
    infos = [json.loads(p.read_text()) for p in ranks]
    pools = [torch.load(out / f"pool_rank{i['rank']}.pt", weights_only=True) for i in infos]
    identical = all(torch.equal(pools[0], p) for p in pools[1:])
    result.update(ranks=infos, pools_identical=identical, pool_nonzero=bool(pools and pools[0].abs().sum() > 0),
                  pool_shape=list(pools[0].shape) if pools else None,
                  note="one rank: nothing to compare the pool with" if world == 1 else None)
    result["ok"] = (len(infos) == world and all(i["world_size"] == world for i in infos) and identical
                    and result["pool_nonzero"] and all(i["backend"] == result["backend_expected"] for i in infos))
    return result


def ddp_child(spec: dict) -> int:
    """Run by section_ddp (and, once per extra rank, by Lightning's launcher with the same argv)."""
    from lightning.pytorch.callbacks import Callback

    sizes = Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["sizes"].items()})
    torch.set_num_threads(spec["threads"])
    out = Path(spec["out"])

    class RecordRank(Callback):
        def on_train_end(self, trainer, pl_module) -> None:
            dist = torch.distributed
            backend = dist.get_backend() if dist.is_available() and dist.is_initialized() else None
            torch.save(pl_module.model.pool.maps.detach().cpu().clone(), out / f"pool_rank{trainer.global_rank}.pt")
            info = {"rank": trainer.global_rank, "world_size": trainer.world_size, "backend": backend,
                    "strategy": type(trainer.strategy).__name__, "device": str(pl_module.device),
                    "precision": trainer.precision}
            (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(info))

    from kdcicam.training.pipeline import train_stage

    accel = "gpu" if spec["cuda"] else "cpu"
    cfg = run_config("ci-cam", sizes.data_size, True, (
        f"data.root={spec['data']}", f"data.batch_size={sizes.train_batch}", f"data.eval_batch_size={sizes.n_eval}",
        "data.test_splits=[test]", "optim.epochs=1", f"trainer.precision={lightning_precision(spec['cuda'])}",
        f"trainer.accelerator={accel}",
        "trainer.strategy=ddp", f"trainer.devices={spec['world']}"))
    out.mkdir(parents=True, exist_ok=True)
    train_stage(cfg, out, extra_callbacks=[RecordRank()])
    return 0


# ------------------------------------------------------------------------------------------ driver
@dataclass
class Context:
    sizes: Sizes
    device: torch.device
    work: Path
    data: Path
    deadline: float

    def remaining(self) -> float:
        return self.deadline - time.time()


#: rough minimum seconds each section needs (GPU, CPU smoke); a section is skipped when less is left
NEEDS = {"train_step": (20, 10), "parity": (45, 15), "throughput": (45, 15), "ddp": (40, 20)}


def make_data(ctx: Context) -> None:
    from kdcicam.data.synthetic import SyntheticConfig, generate_synthetic

    s = ctx.sizes
    generate_synthetic(ctx.data, SyntheticConfig(seed=3, size=s.data_size, num_classes=s.data_classes,
                                                 n_train=s.n_train, n_val=s.n_eval, n_test=s.n_eval,
                                                 n_test_conflict=0, workers=1 if s.n_train <= 64 else 8))


def run_section(name: str, fn: Callable[[Context], dict], ctx: Context, smoke: bool) -> dict[str, Any]:
    need = NEEDS[name][1 if smoke else 0]
    if ctx.remaining() < need:
        return {"ok": False, "skipped": f"{ctx.remaining():.0f} s of the budget left, the section needs ~{need} s"}
    start = time.time()
    try:
        result = fn(ctx)
    except Exception as e:  # noqa: BLE001 - recorded, and the next section runs
        result = {"ok": False, "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc().splitlines()[-25:]}
    result["seconds"] = round(time.time() - start, 1)
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def write(path: Path, report: dict) -> None:
    from kdcicam.data.metadata import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--cpu-smoke", action="store_true", help="the same checks on CPU with tiny sizes (seconds)")
    p.add_argument("--out", type=Path, default=None,
                   help="results file (default benchmarks/results/device_check.json; with --cpu-smoke, "
                        "runs/device_check_cpu_smoke.json)")
    p.add_argument("--budget-s", type=float, default=None, help="wall-time budget (default 270 s; smoke 120 s)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--commit", default=None, help="the commit to record when the tree has no .git (a copied tree)")
    p.add_argument("--ddp-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*self.log.*")
    if args.ddp_child is not None:
        return ddp_child(json.loads(args.ddp_child))

    start = time.time()
    if args.cpu_smoke:  # tiny tensors: one thread is as fast, and on a busy machine a second one only spins
        torch.set_num_threads(1)
    sizes = SMOKE if args.cpu_smoke else GPU
    budget = args.budget_s or sizes.budget_s
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_smoke else "cpu")
    out = args.out or (ROOT / ("runs/device_check_cpu_smoke.json" if args.cpu_smoke
                               else "benchmarks/results/device_check.json"))
    commit = git_commit(ROOT)
    report: dict[str, Any] = {
        "kind": "device_check", "mode": "cpu-smoke" if args.cpu_smoke else "full", "device": device_info(device),
        "versions": versions(), "machine": machine(),
        "commit": args.commit if commit == "unknown" and args.commit else commit,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in ["python", "benchmarks/device_check.py", *sys.argv[1:]]),
        "budget_s": budget, "sizes": asdict(sizes), "sections": {}}
    print(f"device check on {report['device']['name']} ({device.type}), budget {budget:.0f} s -> {out}", flush=True)
    with tempfile.TemporaryDirectory(prefix="kdcicam_device_check_") as tmp:
        ctx = Context(sizes=sizes, device=device, work=Path(tmp), data=Path(tmp) / "synth", deadline=start + budget)
        try:
            make_data(ctx)
        except Exception as e:  # noqa: BLE001 - every section then records the same cause
            report["data_error"] = f"{type(e).__name__}: {e}"
        fns = {"train_step": section_train_step, "parity": section_parity, "throughput": section_throughput,
               "ddp": section_ddp}
        for name in args.sections:
            if "data_error" in report and name in ("parity", "ddp"):
                report["sections"][name] = {"ok": False, "error": f"no data: {report['data_error']}"}
            else:
                report["sections"][name] = run_section(name, fns[name], ctx, args.cpu_smoke)
            r = report["sections"][name]
            print(f"  {name}: {'ok' if r['ok'] else 'FAILED'} ({r.get('seconds', 0)} s)"
                  + (f" {r.get('error') or r.get('skipped')}" if not r["ok"] else ""), flush=True)
            report["wall_seconds"] = round(time.time() - start, 1)
            report["ok"] = all(s["ok"] for s in report["sections"].values())
            write(out, report)
    print(f"{'all ok' if report['ok'] else 'FAILED'} in {report['wall_seconds']} s; wrote {out}", flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
