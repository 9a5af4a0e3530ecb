"""The control a distilled student must beat: the uniform weight average of one CAM run's per-epoch checkpoints.

If averaging CAM's own epochs already classifies like its ``best_cls`` and localizes like its ``best_loc``,
distillation is not needed to escape the dilemma (issue 26, E3). For each benchmark CAM run trained with
``trainer.keep_epoch_checkpoints=true`` (``runs/bench/<suite>[_<tag>]/cam-seed<k>/checkpoints/epoch<j>.ckpt``),
the epochs from the run's ``best_loc`` epoch through its last are averaged (``--from-epoch`` fixes the first
one instead), and the average is scored like every row: box threshold chosen on val, then the other splits.

    MALLOC_MMAP_THRESHOLD_=10000000000 MALLOC_TRIM_THRESHOLD_=10000000000 \\
        .venv/bin/python benchmarks/weight_average.py --suite cub50 --tag e3 --seeds 0 1 2

One JSON per seed: ``benchmarks/results/weight_average_<suite>[_<tag>]_seed<k>.json`` (skipped when present).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from accuracy import REPO, SUITES, run_dir
from provenance import machine, stamp

RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "src"))


def result_path(suite: str, seed: int, tag: str) -> Path:
    return RESULTS / f"weight_average_{suite}{('_' + tag) if tag else ''}_seed{seed}.json"


def epoch_checkpoints(run: Path) -> dict[int, Path]:
    """``epoch<j>.ckpt`` of a run, by epoch."""
    found = {int(m.group(1)): p for p in (run / "checkpoints").glob("epoch*.ckpt")
             if (m := re.fullmatch(r"epoch(\d+)\.ckpt", p.name))}
    if not found:
        raise SystemExit(f"{run}/checkpoints: no epoch<k>.ckpt; train the run with trainer.keep_epoch_checkpoints=true")
    return dict(sorted(found.items()))


def checkpoint_epoch(path: Path) -> int:
    """The epoch a Lightning checkpoint was saved at (``best_loc.ckpt``'s: the run's best_loc epoch)."""
    from kdcicam.checkpoints import read_checkpoint

    return int(read_checkpoint(path)["epoch"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), required=True)
    p.add_argument("--tag", default="", help="the runs' accuracy.py tag")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--from-epoch", type=int, default=None,
                   help="first epoch averaged (default: the run's best_loc epoch)")
    p.add_argument("--eval-splits", default="val,test", metavar="A,B")
    args = p.parse_args()
    from kdcicam.checkpoints import average_checkpoints
    from kdcicam.data.metadata import atomic_write_text
    from kdcicam.training.evaluate import evaluate

    splits = [s for s in args.eval_splits.split(",") if s]
    for seed in args.seeds:
        out = result_path(args.suite, seed, args.tag)
        if out.exists():
            print(f"[skip] {out.name} exists", flush=True)
            continue
        run = run_dir(args.suite, "cam", seed, args.tag)
        epochs = epoch_checkpoints(run)
        first = args.from_epoch if args.from_epoch is not None else checkpoint_epoch(run / "checkpoints" /
                                                                                     "best_loc.ckpt")
        chosen = [e for e in epochs if e >= first]
        if not chosen:
            raise SystemExit(f"{run}: no epoch checkpoint at or after epoch {first}")
        start = time.perf_counter()
        averaged = average_checkpoints([epochs[e] for e in chosen], run / "checkpoints" / "weight_average.ckpt")
        metrics = evaluate(averaged, splits, device="cpu", progress=False, write=False)
        record = {
            "suite": args.suite, "tag": args.tag, "seed": seed, "run": str(run.relative_to(REPO)),
            "what": "uniform weight average of the CAM run's per-epoch checkpoints (BatchNorm statistics averaged "
                    "with the weights); box threshold chosen on val",
            "epochs_averaged": chosen, "first_epoch_rule": "given" if args.from_epoch is not None else "best_loc",
            "box_threshold": metrics.get("box_threshold"),
            "metrics": {s: metrics[s] for s in splits if s in metrics},
            "seconds": round(time.perf_counter() - start, 1),
            **stamp(REPO, "benchmarks/weight_average.py"), "machine": machine(),
        }
        atomic_write_text(out, json.dumps(record, indent=2) + "\n")
        for s in splits:
            m = record["metrics"].get(s, {})
            print(f"{args.suite} seed {seed} epochs {chosen} {s}: top1_cls {m.get('top1_cls', float('nan')):.2f} "
                  f"maxboxaccv2 {m.get('max_box_acc_v2', float('nan')):.2f}", flush=True)


if __name__ == "__main__":
    main()
