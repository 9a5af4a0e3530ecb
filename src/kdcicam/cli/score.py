"""``kdcicam score CAM_DIR --metadata DIR``: score saved CAMs with the wsolevaluation protocol.

GT-known Loc here is the *oracle* number (threshold best on this split), named so in the table and the
JSON; ``--box-threshold T`` adds the number at a threshold chosen elsewhere (docs/method.md §5).

The work is :func:`kdcicam.evaluation.saved_cams.score_saved_cams`; this module parses the arguments
and prints the table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import KdcicamError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cam_dir", metavar="CAM_DIR", help="folder of <image_id>.npy score maps")
    parser.add_argument("--metadata", required=True, metavar="DIR",
                        help="metadata split folder (image_ids.txt, image_sizes.txt, localization.txt, ...)")
    parser.add_argument("--multi-contour", action="store_true",
                        help="report MaxBoxAcc with every contour's box (MaxBoxAccV2 style) instead of the largest; "
                        "max_box_acc_v2 is always the multi-contour mean over IoU 30/50/70")
    parser.add_argument("--one-mode", action="store_true",
                        help="compute only the contour mode asked for, as one wsolevaluation run does (faster; "
                        "GT-known Loc only single-contour, MaxBoxAccV2 only with --multi-contour, no PxAP or leakage)")
    parser.add_argument("--iou", type=int, nargs="+", default=[30, 50, 70], metavar="PCT",
                        help="IoU thresholds in percent (default: 30 50 70)")
    parser.add_argument("--interval", type=float, default=0.01, help="CAM threshold interval (default: 0.01)")
    parser.add_argument("--cam-size", type=int, nargs="+", default=None, metavar="N",
                        help="evaluation grid: N, or W H (default: the maps' own size; wsolevaluation's is 224)")
    parser.add_argument("--box-threshold", type=float, default=None, metavar="T",
                        help="also report GT-known Loc at this CAM threshold (one chosen on a validation split); "
                        "without it only the oracle GT-known Loc (best threshold on this split) is reported")
    parser.add_argument("--normalize", action="store_true",
                        help="min-max normalise every map first (for raw CAMs); by default maps must be in [0, 1]")
    parser.add_argument("--mask-root", metavar="DIR", help="root of the mask files (default: the dataset's image root)")
    parser.add_argument("--json", metavar="OUT", help="write the metrics to this JSON file (atomically)")


def _size(values: list[int] | None) -> int | tuple[int, int] | None:
    if values is None:
        return None
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise KdcicamError(f"--cam-size takes N or W H, got {values}")


def format_table(result: dict[str, Any]) -> str:
    rows = [("images", str(result["num_images"]))]
    if "max_box_acc" in result:
        mode = "multi-contour" if result["multi_contour"] else "single-contour"
        for iou, value in result["max_box_acc"].items():
            rows.append((f"MaxBoxAcc@{iou} ({mode})", f"{value:.2f}  (threshold {result['best_threshold'][iou]:.3f})"))
        if "max_box_acc_v2" in result:
            rows.append(("MaxBoxAccV2 (multi-contour, mean of IoU 30/50/70)", f"{result['max_box_acc_v2']:.2f}"))
        if "gt_known_loc_oracle" in result:  # single-contour by definition: not in a --one-mode multi-contour run
            rows.append(("GT-known Loc, oracle threshold (best on this split)",
                         f"{result['gt_known_loc_oracle']:.2f}  (threshold {result['oracle_threshold']:.3f})"))
        if "gt_known_loc" in result:
            given = f"{result['gt_known_loc']:.2f}  (threshold {result['box_threshold']:.3f})"
            rows.append(("GT-known Loc at the given threshold", given))
    if "pxap" in result:
        rows.append(("PxAP", f"{result['pxap']:.2f}"))
        rows.append(("PIoU", f"{result['piou']:.2f}  (threshold {result['piou_threshold']:.3f})"))
    if result.get("context_leakage") is not None:
        rows.append(("context leakage", f"{result['context_leakage']:.2f}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def run(args: argparse.Namespace) -> int:
    import gc
    import os
    import sys

    # Scoring builds no reference cycles worth collecting (the collector ran 66 times, 10 ms, on 1,389 maps, most
    # of them while numpy and the modules load); the JIT's first compile does, so the collector is back on there.
    collecting = gc.isenabled()
    gc.disable()
    try:
        # The command does no linear algebra. In its own process, unless told otherwise, OpenBLAS (loaded with
        # numpy, reading the variable only then) starts no worker threads: idle, they spin for a while on the second
        # core, and slowed the start of this command (its imports and the metadata, one core's work) by a sixth
        # (0.140 -> 0.119 s to the first map, median of 15). The variable is put back at once, so child processes
        # do not inherit it.
        if getattr(args, "_own_process", False) and "numpy" not in sys.modules \
                and "OPENBLAS_NUM_THREADS" not in os.environ:
            os.environ["OPENBLAS_NUM_THREADS"] = "1"
            try:
                import numpy  # noqa: F401
            finally:
                del os.environ["OPENBLAS_NUM_THREADS"]
        from ..evaluation import _compiled

        if collecting and _compiled.BACKEND != "aot":
            gc.enable()
        return _score(args)
    finally:
        if collecting:
            gc.enable()


def _score(args: argparse.Namespace) -> int:
    import sys

    from ..data.metadata import atomic_write_text
    from ..evaluation import _compiled
    from ..evaluation.saved_cams import score_saved_cams

    notice = _compiled.fallback_notice()
    if notice:  # on stderr, before a first run's compilation, so that a silent pause has its reason
        print(f"kdcicam score: {notice}", file=sys.stderr, flush=True)

    result = score_saved_cams(Path(args.cam_dir), Path(args.metadata), args.multi_contour, args.iou, args.interval,
                              _size(args.cam_size), args.normalize,
                              Path(args.mask_root) if args.mask_root else None, args.box_threshold, args.one_mode)
    print(format_table(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2, allow_nan=False) + "\n")
        print(f"metrics written to {args.json}")
    return 0
