"""`kdcicam evaluate RUN_OR_CKPT --split test [test_conflict ...] [--save-cams DIR] [--json OUT]`"""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder or .ckpt file")
    p.add_argument("--split", nargs="+", default=["test"], help="splits to evaluate (default: test)")
    p.add_argument("--save-cams", help="also save the scored CAMs as <DIR>/<split>/<image_id>.npy")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--data-root", help="dataset folder, if it moved since training")
    p.add_argument("--json", help="also write the metrics to this file")


def run(args: argparse.Namespace) -> int:
    from ..data.metadata import atomic_write_text
    from .evaluate import check_splits, evaluate, format_table

    splits = check_splits(args.split)
    results = evaluate(args.run, splits, save_cams=args.save_cams, device=args.device, data_root=args.data_root)
    print(f"checkpoint: {results['checkpoint']}  (box threshold {results['box_threshold']:.2f}, chosen on "
          f"{results['box_threshold_chosen_on']})")
    print(format_table({s: results[s] for s in splits}))
    print(f"metrics written to {results['metrics_file']}")
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2))
    return 0
