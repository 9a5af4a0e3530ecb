"""`kdcicam report RUN [RUN ...] --out report.html`: one self-contained HTML file comparing runs.

Metrics side by side (from each run's metrics.json; a split missing there is evaluated first),
BoxAcc-versus-threshold curves per IoU, context-leakage bars, and the same test images under each
run's CAM with ground-truth and predicted boxes (``test_conflict``, the confounder's cases, first).
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (single-stage, or KD-CI-CAM with student/)")
    p.add_argument("--out", default="report.html", help="the HTML file to write (default report.html)")
    p.add_argument("--split", nargs="+", default=None, metavar="SPLIT",
                   help="splits to compare (default: the first run's data.test_splits)")
    p.add_argument("--images", type=int, default=12, metavar="N", help="images in the heatmap grid (default 12)")
    p.add_argument("--device", default="auto", help="for evaluating missing splits and the grid: auto, cpu, cuda")


def run(args: argparse.Namespace) -> int:
    from ..training.evaluate import evaluate
    from ..viz import write_report

    path = write_report(args.runs, args.out, splits=args.split, num_images=args.images, device=args.device,
                        evaluate=evaluate)
    print(f"kdcicam report: {path}")
    return 0
