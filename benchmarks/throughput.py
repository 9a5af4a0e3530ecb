"""Throughput: the whole ``kdcicam.Localizer`` against the bare backbone, and (``--train-step``)
the CI-CAM training step against the CAM training step, each pair measured in one run on the same
backbone and the same batch.

Inference (goal: Localizer ≥ 0.8 × backbone images/s). The Localizer is timed end to end from
*decoded* images (``--images`` HxWx3 uint8 numpy arrays, as an application holds them after
decoding; 500 × 375 by default, ``--source-size``): conversion to tensors, the eval transform
(Resize((S, S)), antialiased), the full model (backbone, head,
all class CAMs), the combinational map, bicubic resize + min-max normalisation of every map,
softmax top-k, and box extraction with the evaluator's ``scoremap_to_boxes``. The baseline is
``model.backbone(x)`` of the same model on a ready float tensor of the same batch, under
``torch.inference_mode()``, channels_last like the Localizer. JPEG decoding is left out of both.

Training step (goal: CI-CAM ≤ 1.15 × CAM seconds per step): forward + the method's loss
(CI-CAM: the context-pool update, both branches, CE(up) + CE(down), the MM21 recipe) + backward +
Adam, on the same random batch, as ``WSOLModule.training_step`` does, Lightning aside.

Measurements alternate between the two sides of each pair (A, B, A, B, …) so that a load change
on a shared machine hits both. The headline numbers use the fastest of ``--repeats`` samples per side
(other processes only ever add time); medians, the median of per-pair ratios and every sample are
recorded beside them.

glibc's allocator stalls CPU training on page faults unless these are set *before* Python starts
(``make bench`` exports them)::

    MALLOC_MMAP_THRESHOLD_=10000000000 MALLOC_TRIM_THRESHOLD_=10000000000 \\
        python benchmarks/throughput.py --train-step

Results: ``benchmarks/results/throughput.json`` (commit, machine, torch version, threads, date,
command). A section not measured in this run (e.g. ``train_step`` without ``--train-step``) is kept
from the previous file, with its own commit and date.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from provenance import cpu_model, git_commit

from kdcicam import Localizer, create_model
from kdcicam.data.atomic import atomic_write_text

MALLOC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


# ------------------------------------------------------------------------------------------ context
def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(),
                            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                            "platform": platform.platform(), "python": platform.python_version(),
                            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                            "device": str(device), "malloc_env": {k: os.environ.get(k) for k in MALLOC_VARS},
                            "load_average_at_start": load_average()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: how busy the machine was (a shared machine skews timings)."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def commit() -> str:
    return git_commit(ROOT)


def run_info(device: torch.device) -> dict[str, Any]:
    return {"commit": commit(), "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), "machine": machine(device)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(fns: dict[str, Callable[[], None]], repeats: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in turns (A, B, A, B, ...) after ``warmup`` turns."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for turn in range(warmup + repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if turn >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def summarise(times: dict[str, list[float]], a: str, b: str) -> dict[str, Any]:
    """``b``'s time over ``a``'s three ways. On a shared machine other processes only ever add time,
    so the fastest sample of each side is the least disturbed estimate (the headline); the median
    and the median of per-turn ratios (each A/B pair ran back to back) are recorded beside it."""
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"best_s": {k: round(v, 4) for k, v in best.items()}, "median_s": {k: round(v, 4) for k, v in med.items()},
            "ratio_best": best[b] / best[a], "ratio_median": med[b] / med[a],
            "ratio_paired_median": statistics.median(tb / ta for ta, tb in zip(times[a], times[b], strict=True))}


# ------------------------------------------------------------------------------------------ inference
def decoded_images(n: int, width: int, height: int, seed: int = 0) -> list[np.ndarray]:
    """Photo-like uint8 RGB arrays: smooth colour fields with an object-ish blob, not white noise."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        low = rng.random((8, 8, 3)).astype(np.float32)
        img = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
        yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width]).reshape(2, 1, 1)
        cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3)
        img[((yy - cy) ** 2 + (xx - cx) ** 2) < r * r] = rng.random(3)
        out.append(np.clip(img * 255 + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8))
    return out


def bench_inference(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    pretrained = getattr(args, "pretrained", True)  # device_check.py times random weights (no weights package)
    model = create_model(args.method, backbone=args.backbone, num_classes=args.classes, pretrained=pretrained)
    loc = Localizer(model, image_size=args.size, threshold=0.5, topk=5, batch_size=args.images, device=device,
                    channels_last=not args.no_channels_last, map_kind="combinational")
    images = decoded_images(args.images, *args.source_size)
    x = torch.rand(args.images, 3, args.size, args.size, device=device)
    if loc.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    backbone = loc.model.backbone

    def run_backbone() -> None:
        with torch.inference_mode():
            backbone(x)

    def run_localizer() -> None:
        results = loc.predict(images)
        assert len(results) == args.images

    times = alternate({"backbone": run_backbone, "localizer": run_localizer}, args.repeats, args.warmup, device)
    stats = summarise(times, "localizer", "backbone")  # backbone time / Localizer time = throughput ratio
    # where the Localizer's time goes (one extra pass, phase by phase)
    sync(device)
    t0 = time.perf_counter()
    prepared = [loc.preprocess(im) for im in images]
    batch = torch.stack([p[0] for p in prepared])
    t1 = time.perf_counter()
    probs, cams = loc.forward_batch(batch)
    sync(device)
    t2 = time.perf_counter()
    for i, p in enumerate(prepared):
        loc._result(probs[i], cams[i], p[1], p[2])
    t3 = time.perf_counter()
    backbone_ips = args.images / stats["best_s"]["backbone"]
    localizer_ips = args.images / stats["best_s"]["localizer"]
    return {
        "setup": {"method": args.method, "backbone": args.backbone, "pretrained": pretrained, "num_classes": args.classes,
                  "batch": args.images, "model_input": args.size, "source_image_wh": list(args.source_size),
                  "channels_last": loc.channels_last, "map": "combinational", "boxes": "largest contour, threshold 0.5",
                  "repeats": args.repeats, "warmup": args.warmup},
        "backbone_images_per_s": round(backbone_ips, 2),
        "localizer_images_per_s": round(localizer_ips, 2),
        "ratio": round(localizer_ips / backbone_ips, 3),
        "ratio_median": round(stats["ratio_median"], 3),
        "ratio_paired_median": round(stats["ratio_paired_median"], 3),
        "goal": ">= 0.8",
        "meets_goal": localizer_ips / backbone_ips >= 0.8,
        "timing": "images/s and ratio from the fastest of the repeats; medians beside them",
        "localizer_phases_s": {"preprocess": round(t1 - t0, 4), "model_and_maps": round(t2 - t1, 4),
                               "topk_and_boxes": round(t3 - t2, 4)},
        "samples_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "load_average_after": load_average(),
    }


# ------------------------------------------------------------------------------------------ training step
def bench_train_step(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    batch = args.train_batch
    x = torch.rand(batch, 3, args.train_size, args.train_size, device=device)
    y = torch.randint(0, args.classes, (batch,), device=device)
    channels_last = not args.no_channels_last
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    steps: dict[str, Callable[[], None]] = {}
    for method in ("cam", "ci-cam"):
        options: dict[str, Any] = {"freeze_stages": args.freeze_stages}
        if method == "ci-cam":
            options.update(pool_rate=0.01, recipe="mm21")
        model = create_model(method, backbone=args.backbone, num_classes=args.classes, pretrained=True, **options)
        model = model.to(device).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.param_groups(1e-4, 0.1), lr=1e-4)

        def step(model=model, optimizer=optimizer) -> None:
            out = model(x)
            if hasattr(model, "update_pool"):
                model.update_pool(out, y)
            loss, _ = model.loss(x, y, out)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        steps[method] = step
    times = alternate(steps, args.train_repeats, args.warmup, device)
    stats = summarise(times, "cam", "ci-cam")
    best = stats["best_s"]
    ratio = best["ci-cam"] / best["cam"]
    return {
        "setup": {"backbone": args.backbone, "pretrained": True, "num_classes": args.classes, "batch": batch,
                  "image": args.train_size, "freeze_stages": args.freeze_stages, "channels_last": channels_last,
                  "optimizer": "Adam", "ci_cam_recipe": "mm21 (CE up + CE down), pool update every step",
                  "repeats": args.train_repeats, "warmup": args.warmup},
        "cam_s_per_step": best["cam"],
        "ci_cam_s_per_step": best["ci-cam"],
        "cam_images_per_s": round(batch / best["cam"], 2),
        "ci_cam_images_per_s": round(batch / best["ci-cam"], 2),
        "ratio": round(ratio, 3),
        "ratio_median": round(stats["ratio_median"], 3),
        "ratio_paired_median": round(stats["ratio_paired_median"], 3),
        "timing": "seconds per step and ratio from the fastest of the repeats; medians beside them",
        "median_s_per_step": stats["median_s"],
        "goal": "<= 1.15",
        "meets_goal": ratio <= 1.15,
        "samples_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "load_average_after": load_average(),
    }


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--method", default="cam", help="model the Localizer runs (cam, ci-cam, kd-ci-cam)")
    p.add_argument("--classes", type=int, default=200, help="classifier classes (default 200, as CUB)")
    p.add_argument("--images", type=int, default=64, help="inference batch (default 64)")
    p.add_argument("--size", type=int, default=224, help="model input S (default 224)")
    p.add_argument("--source-size", type=int, nargs=2, default=[500, 375], metavar=("W", "H"),
                   help="size of the decoded images (default 500 375, a typical CUB photo; S S makes the resize a no-op)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--train-step", action="store_true", help="also time CI-CAM vs CAM training steps")
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--train-size", type=int, default=224)
    p.add_argument("--train-repeats", type=int, default=5)
    p.add_argument("--freeze-stages", type=int, default=-1, help="-1: train all layers (default); 8: the CPU recipe")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "throughput.json"))
    args = p.parse_args(argv)

    missing = [k for k in MALLOC_VARS if k not in os.environ]
    if missing:
        print(f"warning: {', '.join(missing)} not set before Python started; CPU timings may suffer from "
              "allocator stalls (see this script's docstring)", file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out_path = Path(args.out)
    previous: dict[str, Any] = {}
    if out_path.is_file():
        try:
            previous = json.loads(out_path.read_text())
        except ValueError:
            previous = {}
    info = run_info(device)
    print(f"inference: {args.method}/{args.backbone}, {args.images} images of {args.size} px, {device}, "
          f"{torch.get_num_threads()} threads", flush=True)
    result: dict[str, Any] = {"inference": {"run": info, **bench_inference(args, device)}}
    r = result["inference"]
    print(f"  backbone {r['backbone_images_per_s']} img/s, Localizer {r['localizer_images_per_s']} img/s, "
          f"ratio {r['ratio']} (goal >= 0.8); phases {r['localizer_phases_s']}", flush=True)
    if args.train_step:
        print(f"training step: CAM vs CI-CAM, batch {args.train_batch} of {args.train_size} px, "
              f"freeze_stages {args.freeze_stages}", flush=True)
        result["train_step"] = {"run": info, **bench_train_step(args, device)}
        t = result["train_step"]
        print(f"  CAM {t['cam_s_per_step']} s/step, CI-CAM {t['ci_cam_s_per_step']} s/step, ratio {t['ratio']} "
              "(goal <= 1.15)", flush=True)
    elif "train_step" in previous:
        result["train_step"] = previous["train_step"]
    atomic_write_text(out_path, json.dumps(result, indent=2) + "\n")
    print(f"written {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
