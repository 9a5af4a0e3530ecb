"""`kdcicam demo`: the whole pipeline on the embedded synthetic data, in minutes on a laptop CPU.

Generates the confounded-objects data -- by default v2, calibrated so that the habitat confounds
(docs/confounding.md: the habitat is the class's own in 97 % of train and test images) -- trains CAM,
CI-CAM and KD-CI-CAM with the same config, evaluates each on `test` (v2: habitat as in train; v1:
independent of the class) and `test_conflict` (always another class's habitat), prints one side-by-side table and writes an HTML
report. Finished stages are skipped, so an interrupted demo continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

#: variant -> (default config: a shipped config's name, default data folder under the working folder)
VARIANTS = {"v1": ("synthetic", "data/synth"), "v2": ("synthetic_v2", "data/synth_v2")}
#: --smoke: the data's size (images per split, side in pixels) and the training that checks an install in about
#: a minute on 2 cores -- every method, every stage, evaluation and report, with numbers that mean nothing
SMOKE_DATA: dict[str, Any] = {"size": 32, "n_train": 32, "n_val": 16, "n_val_conflict": 16, "n_test": 16, "n_test_conflict": 16}
SMOKE_OVERRIDES = ["model.freeze_stages=12", "data.image_size=32", "data.augment.resize=36", "data.batch_size=16",
                   "data.eval_batch_size=32", "optim.epochs=1", "model.pool_rate_target=null",
                   "kd.student.model.pool_rate_target=null", "trainer.progress_bar=false"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="folder for runs, metrics and the report (default demo_out)")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="v2",
                   help="synthetic data: v2 (default; the habitat confounds) or v1 (the first benchmark's data)")
    p.add_argument("--config", default=None, help="run config, a file or a shipped config's name (default: the "
                   "variant's, synthetic_v2 or synthetic)")
    p.add_argument("--data", default=None, help="where the synthetic data is generated (default: data/synth_v2 "
                   "or data/synth)")
    p.add_argument("--smoke", action="store_true",
                   help="check an install in about a minute: a tiny 32-px dataset (data/synth_v2_smoke or "
                        "data/synth_smoke), one epoch per stage; the numbers mean nothing")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help="methods to train (default: every registered method, kdcicam.list_models())")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config, method_names, resolve_config
    from ..data.metadata import atomic_write_text
    from ..data.synthetic import SyntheticConfig, ensure_synthetic
    from ..data.synthetic_v2 import v2_config
    from ..errors import ConfigError
    from ..evaluation.table import format_table
    from ..training.evaluate import evaluate
    from ..training.pipeline import train

    start = time.time()
    config_path = resolve_config(args.config or VARIANTS[args.variant][0])
    methods = method_names()
    for method in args.methods or ():
        if method not in methods:
            raise ConfigError(f"--methods {method}: not a registered method; valid: {', '.join(methods)}")
    args.methods = list(args.methods or methods)
    data = Path(args.data or VARIANTS[args.variant][1] + ("_smoke" if args.smoke else ""))
    sizes: dict[str, Any] = SMOKE_DATA if args.smoke else {}
    overrides = [*SMOKE_OVERRIDES, *args.overrides] if args.smoke else list(args.overrides)
    if not (data / "dataset.yaml").is_file():
        print(f"[demo] generating the synthetic confounded-objects dataset ({args.variant}) into {data} ...",
              flush=True)
    t = time.time()
    if args.variant == "v2":
        ensure_synthetic(data, v2_config(**sizes))
    else:
        v1_sizes = {k: v for k, v in sizes.items() if k != "n_val_conflict"}  # v1 has no val_conflict split
        ensure_synthetic(data, SyntheticConfig(**v1_sizes))
    print(f"[demo] data ready in {time.time() - t:.1f} s", flush=True)
    out = Path(args.out)
    columns: dict[str, dict] = {}
    summary: dict[str, dict] = {}
    for method in args.methods:
        config = load_config(config_path, [f"data.root={data}", *overrides], method=method)
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
        pass
    else:
        report = write_report([out / m for m in args.methods], out / "report.html", evaluate=evaluate)
        print(f"\n[demo] report: {report}")
    print(f"[demo] done in {time.time() - start:.0f} s; results in {out}/summary.json")
    return 0
