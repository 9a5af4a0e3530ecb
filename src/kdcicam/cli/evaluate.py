"""`kdcicam evaluate RUN_OR_CKPT --split test [test_conflict ...] [--save-cams DIR] [--json OUT] [--box-threshold T]`

Top-1 / Top-5 / GT-known Loc are read at the box threshold chosen on the run's val split (its boxes), or at
``--box-threshold T`` when given — the only way when val has no boxes (docs/method.md §5).

``--coco`` also scores the pseudo-labels ``kdcicam localize --coco`` would write for each split with boxes,
with pycocotools' COCOeval against the split's boxes: AP, AP50, AP75 (percent), class-aware (the box
under its predicted top-1 class) and class-agnostic, at the same box threshold (kdcicam.coco)."""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder or .ckpt file")
    p.add_argument("--split", nargs="+", default=["test"], help="splits to evaluate (default: test)")
    p.add_argument("--save-cams", help="also save the scored CAMs as <DIR>/<split>/<image_id>.npy, every split "
                   "asked for, at the run's image size (`kdcicam score DIR/<split>` reads that size)")
    p.add_argument("--box-threshold", type=float, default=None, metavar="T",
                   help="CAM threshold for Top-1/Top-5/GT-known Loc instead of the one chosen on val "
                   "(needed when val has no boxes); in [0, 1) on the 0.01 grid")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--data-root", help="dataset folder, if it moved since training")
    p.add_argument("--json", help="also write the metrics to this file")
    p.add_argument("--protocol", choices=["wsol", "official"], default="wsol",
                   help="wsol: clovaai/wsolevaluation (default); official: the papers' box protocol (docs/method.md §5)")
    p.add_argument("--coco", action="store_true",
                   help="also measure the pseudo-labels (`localize --coco`) with pycocotools COCOeval against each "
                   "split's boxes: AP, AP50, AP75, class-aware and class-agnostic, at the same box threshold")
    add_cam_method_arguments(p)
    p.add_argument("--score-batch-size", type=int, default=32, metavar="N",
                   help="Score-CAM / SS-CAM / IS-CAM: masked images per forward pass (bounds their memory; default 32)")


def add_cam_method_arguments(p: argparse.ArgumentParser) -> None:
    """--cam-method and --target-layer (shared with `kdcicam localize`)."""
    from ..posthoc import CAM_METHODS

    p.add_argument("--cam-method", default="native", metavar="NAME",
                   help="the map to score: native (the model's own, default) or a post-hoc method: "
                   + ", ".join(CAM_METHODS[1:]) + " (docs/posthoc.md); its box threshold is chosen on val for it")
    p.add_argument("--target-layer", default=None, metavar="NAME",
                   help="post-hoc methods: the layer to explain, as in model.named_modules() (default: backbone)")


def run(args: argparse.Namespace) -> int:
    from ..data.metadata import atomic_write_text
    from ..errors import ConfigError
    from ..evaluation.table import format_table
    from ..posthoc import check_method
    from ..training.evaluate import evaluate

    if not args.split:
        raise ConfigError("--split: give at least one split")
    splits = args.split
    cam_method = check_method(args.cam_method)
    if args.score_batch_size < 1:
        raise ConfigError(f"--score-batch-size must be >= 1, got {args.score_batch_size}")
    if args.protocol == "official" and cam_method != "native":
        raise ConfigError("--protocol official scores the native map only; drop --cam-method")
    if args.coco and args.protocol == "official":
        raise ConfigError("--coco scores the wsol protocol's boxes; drop --protocol official")
    if args.coco and cam_method != "native":
        raise ConfigError("--coco scores the native map's pseudo-labels; drop --cam-method")
    if args.protocol == "official":
        from ..training.evaluate import evaluate_official_protocol

        results = evaluate_official_protocol(args.run, splits, device=args.device, data_root=args.data_root)
        print(f"checkpoint: {results['checkpoint']}  (official protocol: resize {results['resize']}, crop "
              f"{results['crop']}, segThr {results['seg_threshold']})")
        for split in splits:
            print(split + ": " + ", ".join(f"{k} {v:.2f}" for k, v in results[split].items()
                                           if isinstance(v, (int, float))))
        if args.json:
            atomic_write_text(args.json, json.dumps(results, indent=2))
        return 0
    results = evaluate(args.run, splits, save_cams=args.save_cams, device=args.device, data_root=args.data_root,
                       box_threshold=args.box_threshold, cam_method=cam_method, target_layer=args.target_layer,
                       score_batch_size=args.score_batch_size)
    threshold, chosen_on = results["box_threshold"], results["box_threshold_chosen_on"]
    how = ("no box threshold: no split asked for has boxes" if threshold is None else
           f"box threshold {threshold:.2f}, " + ("given (--box-threshold)" if chosen_on == "given"
                                                 else f"chosen on {chosen_on}"))
    if cam_method != "native":
        how = f"{cam_method} at layer {results['target_layer']}, {how}"
    print(f"checkpoint: {results['checkpoint']}  ({how})")
    columns = {s: results[s] for s in splits}
    floors = {s: results["floors"][s] for s in splits if s in results.get("floors", {})}
    columns.update({f"floor/{s}": f["metrics"] for s, f in floors.items()})
    print(format_table(columns))
    if floors:
        sigma, chosen = next(iter(floors.values()))["sigma"], next(iter(floors.values()))["chosen_on"]
        print(f"floor: the centre Gaussian (σ {sigma}, chosen on {chosen}; `kdcicam baseline`), an image-blind map")
    print(f"metrics written to {results['metrics_file']}"
          + ("" if cam_method == "native" else f" (under cam_methods.{cam_method})"))
    if args.coco:
        results["coco"] = coco_results(args, splits, threshold)
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2))
    return 0


def coco_results(args: argparse.Namespace, splits: list[str], threshold: float | None) -> dict:
    """COCO AP of the pseudo-labels on every split with boxes (printed; returned for --json)."""
    from pathlib import Path

    from ..checkpoints import resolve_checkpoint, run_config
    from ..coco import AP_KEYS, evaluate_split
    from ..data.metadata import read_metadata
    from ..errors import ConfigError
    from ..inference import Localizer

    if threshold is None:
        raise ConfigError("--coco: no box threshold (no split asked for has boxes); nothing to score")
    root = Path(args.data_root or run_config(resolve_checkpoint(args.run)).data.root)
    localizer = Localizer.from_checkpoint(args.run, device=args.device, threshold=threshold, topk=1)
    out: dict = {}
    for split in splits:
        metadata = read_metadata(root / split)
        if not metadata.has_boxes:
            continue
        out[split] = evaluate_split(localizer, metadata)
        row = "  ".join(f"{mode} " + ", ".join(f"{k} {_fmt(out[split][mode][k])}" for k in AP_KEYS)
                        for mode in ("class_aware", "class_agnostic"))
        print(f"COCO {split} (threshold {threshold:.2f}): {row}")
    return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
