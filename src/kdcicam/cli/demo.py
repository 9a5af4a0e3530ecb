"""`kdcicam demo`: the whole pipeline on the embedded synthetic data, in minutes on a laptop CPU.

Generates the confounded-objects data (habitat = class with probability 0.9 in train), trains CAM,
CI-CAM and KD-CI-CAM with the same config, evaluates each on `test` (habitat independent of the class)
and `test_conflict` (always another class's habitat), prints one side-by-side table and writes an
HTML report. Finished stages are skipped, so an interrupted demo continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

METHODS = ("cam", "ci-cam", "kd-ci-cam")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="folder for runs, metrics and the report (default demo_out)")
    p.add_argument("--config", default="configs/synthetic.yaml", help="run config (default configs/synthetic.yaml)")
    p.add_argument("--data", default="data/synth", help="where the synthetic data is generated (default data/synth)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..data.metadata import atomic_write_text
    from ..errors import ConfigError
    from ..evaluation.table import format_table
    from ..training.evaluate import evaluate
    from ..training.pipeline import train

    start = time.time()
    if not Path(args.config).is_file():
        raise ConfigError(f"--config {args.config}: not found (run from the repository root or pass --config)")
    data = Path(args.data)
    if not (data / "dataset.yaml").is_file():
        from ..data.synthetic import SyntheticConfig, generate_synthetic

        print(f"[demo] generating the synthetic confounded-objects dataset into {data} ...", flush=True)
        t = time.time()
        generate_synthetic(data, SyntheticConfig())
        print(f"[demo] generated in {time.time() - t:.1f} s", flush=True)
    out = Path(args.out)
    columns: dict[str, dict] = {}
    summary: dict[str, dict] = {}
    for method in args.methods:
        config = load_config(args.config, [f"data.root={data}", *args.overrides], method=method)
        run_dir = out / method
        t = time.time()
        print(f"[demo] training {method} → {run_dir}", flush=True)
        train(config, run_dir, resume=(run_dir / "checkpoints").is_dir() or (run_dir / "cls_teacher").is_dir())
        print(f"[demo] {method}: trained in {time.time() - t:.0f} s; evaluating", flush=True)
        splits = list(config.data.test_splits)
        results = evaluate(run_dir, splits, progress=False)
        summary[method] = {s: results[s] for s in splits}
        summary[method]["box_threshold"] = results["box_threshold"]
        for s in splits:
            columns[f"{method}/{s}"] = results[s]
    table = format_table(columns)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "summary.txt", table + "\n")
    print("\n" + table)
    try:
        from ..viz import write_report
    except ImportError:
        write_report = None
    if write_report is not None:
        report = write_report([out / m for m in args.methods], out / "report.html", evaluate=evaluate)
        print(f"\n[demo] report: {report}")
    print(f"[demo] done in {time.time() - start:.0f} s; results in {out}/summary.json")
    return 0
