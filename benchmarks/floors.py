"""The centre-Gaussian floor: what a map that ignores the image scores. Every image gets the same
isotropic Gaussian centred on the evaluation grid; its width σ (a fraction of the grid side) is chosen
on val by MaxBoxAccV2 and then scored once on each other split. A localizer is worth its compute only
by what it adds above this number, so the benchmarks print it beside every method.

    .venv/bin/python benchmarks/floors.py --suite cub50

Writes ``benchmarks/results/floor_centre_gaussian_<suite>.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from provenance import stamp

# the floor is kdcicam's own (`kdcicam baseline --kind centre-gaussian`); this script runs it per suite and
# keeps the names other scripts import from here
from kdcicam.evaluation.baselines import FLOOR_KEEP as KEEP  # noqa: F401
from kdcicam.evaluation.baselines import centre_gaussian_floor as floor

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def score(metadata, size: int, sigma: float, threshold: float | None = None) -> dict:
    """The centre Gaussian's metrics on one split (kdcicam.evaluation.baselines.score_centre_gaussian)."""
    from kdcicam.evaluation.baselines import score_centre_gaussian

    return score_centre_gaussian(metadata, size, sigma, threshold)


def result_path(suite: str) -> Path:
    return RESULTS / f"floor_centre_gaussian_{suite}.json"


def ensure_floor(suite: str, data_root: Path, splits: list[str], size: int = 224) -> dict:
    """The suite's floor file, computed when missing (seconds)."""
    from kdcicam.data.metadata import atomic_write_text

    path = result_path(suite)
    if path.is_file():
        return json.loads(path.read_text())
    record = {"benchmark": "floor_centre_gaussian", "suite": suite,
              **stamp(REPO, "benchmarks/floors.py"), "command": f"python benchmarks/floors.py --suite {suite}", **floor(data_root, splits, size=size)}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return record


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", required=True)
    p.add_argument("--force", action="store_true", help="recompute even when the results file exists")
    args = p.parse_args()
    from accuracy import SUITES, ensure_data, suite_config

    data = ensure_data(args.suite)
    cfg = suite_config(args.suite)
    if args.force and result_path(args.suite).is_file():
        result_path(args.suite).unlink()
    record = ensure_floor(args.suite, data, list(cfg.data.test_splits), cfg.data.image_size)
    assert args.suite in SUITES
    for split, m in record["splits"].items():
        print(f"{split:14s} σ={record['sigma']}  MaxBoxAccV2 {m['max_box_acc_v2']:.2f}  MaxBoxAcc@50 "
              f"{m['max_box_acc']['50']:.2f}  GT-known {m['gt_known_loc']:.2f}  leakage {m['context_leakage']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
