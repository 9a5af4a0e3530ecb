"""How good can a CAM of this resolution be? Score an *oracle* CAM with the same evaluator as the models.

A model's CAM lives on its feature grid (h×w = image size / output stride: 8×8 for the synthetic
recipe, 7×7 for cub50) and is upsampled to the evaluation grid before scoring. The oracle map is the
GT object region itself (the mask, or the union of boxes where a dataset has no masks), averaged onto
that same h×w grid and upsampled the same way (`prepare_scoremap`: bicubic, min-max): a CAM that is
exactly the object, as this resolution shows it. Its context leakage and MaxBoxAccV2 put the targets
("cut leakage by 30 %") in scale. A reference point, not a proven bound: a map peaked on the object's
inner cells might leak less, so several are scored (``MODES``): the coverage itself, sharpened by a
power, and only the cells of largest coverage.

    .venv/bin/python benchmarks/oracle_cam.py --suite synthetic [--splits test_conflict,test,val]

Writes ``benchmarks/results/oracle_cam_<suite>.json``; `benchmarks/report.py` puts it in the docs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from provenance import stamp

# the oracle is kdcicam's own (`kdcicam baseline --kind oracle`); this script runs it per suite, every mode
from kdcicam.evaluation.baselines import ORACLE_MODES as MODES

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CONFIGS = {"synthetic": "configs/synthetic.yaml", "synthetic-v2": "configs/synthetic_v2.yaml",
           "cub50": "configs/cub50.yaml"}
DATA = {"synthetic": "data/synth", "synthetic-v2": "data/synth_v2", "cub50": "data/cub50"}




def score_split(root: Path, split: str, size: int, grid: tuple[int, int], mode: str) -> dict:
    """The oracle CAM's metrics on one split, the keys the results files keep."""
    from kdcicam.evaluation.baselines import score_oracle

    m = score_oracle(root, split, size, grid, mode)
    keep = ("max_box_acc_v2", "max_box_acc_v2_per_iou", "context_leakage", "pxap", "num_images", "object_region")
    return {k: m[k] for k in keep if k in m}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", required=True, choices=sorted(CONFIGS))
    p.add_argument("--data", type=Path, default=None, help="dataset root (default: the suite's, under data/)")
    p.add_argument("--splits", type=lambda v: [s for s in v.split(",") if s], default=None, metavar="A,B",
                   help="comma-separated splits (default: the config's test splits)")
    args = p.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from kdcicam.config import load_config
    from kdcicam.data.metadata import atomic_write_text

    cfg = load_config(REPO / CONFIGS[args.suite], method="cam")
    root = args.data or REPO / DATA[args.suite]
    if not (root / "dataset.yaml").is_file():
        sys.exit(f"{root}: no dataset here (run benchmarks/accuracy.py --suite {args.suite} first, or pass --data)")
    size = cfg.data.image_size
    stride = cfg.model.output_stride or 32
    grid = (size // stride, size // stride)
    results = {}
    for split in args.splits or list(cfg.data.test_splits):
        results[split] = {mode: score_split(root, split, size, grid, mode) for mode in MODES}
        for mode, r in results[split].items():
            print(f"{split}: oracle CAM ({mode}) on {grid[0]}x{grid[1]} -> leakage {r['context_leakage']:.2f}, "
                  f"MaxBoxAccV2 {r['max_box_acc_v2']:.2f}", flush=True)
    record = {"benchmark": "oracle_cam", "suite": args.suite, "grid": list(grid), "image_size": size,
              **stamp(REPO, "benchmarks/oracle_cam.py"), "splits": results}
    out = RESULTS / f"oracle_cam_{args.suite}.json"
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
