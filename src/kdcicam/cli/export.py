"""`kdcicam export RUN --out model.onnx`: the trained localizer as one ONNX graph.

The graph takes float32 images ``[N, 3, S, S]`` (RGB in [0, 1], N dynamic) and returns the logits and the
run's localization map on the CAM grid; class names, S, the normalisation, the box threshold chosen on
val and the CAM grid are stored in the file's metadata (docs/deploy.md). Run it with
``kdcicam localize model.onnx IMAGES --backend onnx`` or ``kdcicam.OnnxLocalizer``, without PyTorch.
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = ("exit status: 0 when the file was written and checked; 2 for usage errors (not a checkpoint, an "
                "unwritable --out); nothing is left at --out when the export fails")
    p.add_argument("run", metavar="RUN", help="a run folder (KD runs: the student) or a .ckpt file")
    p.add_argument("--out", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="box threshold to store, in [0, 1) (default: the one chosen on the validation split)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the check that onnxruntime reproduces PyTorch's top-1 and map on a probe batch")


def run(args: argparse.Namespace) -> int:
    from ..export import export_onnx

    meta = export_onnx(args.run, args.out, threshold=args.threshold, check=not args.no_check)
    thr = meta["box_threshold"]
    how = "none stored (give --threshold to localize)" if thr is None else f"{thr:.2f} ({meta['box_threshold_source']})"
    grid = "x".join(str(v) for v in meta["cam_grid"])
    print(f"kdcicam export: {meta['method']} ({len(meta['class_names'])} classes, input {meta['image_size']}px, "
          f"CAM grid {grid}, opset {meta['opset']}) → {args.out}; box threshold {how}")
    return 0
