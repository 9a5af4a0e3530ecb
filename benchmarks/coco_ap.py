"""COCO AP of the pseudo-labels (``kdcicam localize --coco``) of finished benchmark runs, with the
centre-Gaussian floor's boxes beside them.

    MALLOC_MMAP_THRESHOLD_=10000000000 MALLOC_TRIM_THRESHOLD_=10000000000 \\
        .venv/bin/python benchmarks/coco_ap.py --suite cub50 --methods cam kd-ci-cam --seeds 0 1 2

For each run folder (``runs/bench/<suite>/<method>-seed<k>``, benchmarks/accuracy.py's ``run_dir``; or
``--runs DIR ...``) and each split with boxes (default: the suite's test splits), the run's
``Localizer`` (box threshold chosen on val, as everywhere in kdcicam) localizes every image; its boxes,
labelled with the top-1 class and its probability, are scored by pycocotools' COCOeval against the
split's boxes (kdcicam.coco: AP, AP50, AP75 in percent, class-aware and class-agnostic).

The floor (benchmarks/floors.py): the same centred Gaussian map for every image, its σ and box threshold
chosen on val; its box is what the evaluator's box extraction gives on that map at that threshold,
scaled to each image. Class-aware, the floor's box carries the run's own top-1 class and probability
(so it isolates what the map adds over a fixed central box); class-agnostic, it needs no classifier.

Writes ``benchmarks/results/coco_ap_<suite>.json`` (commit, command, machine; runs measured earlier and
not named now are kept) and prints a markdown table for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from provenance import stamp

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "src"))

MODES = ("class_aware", "class_agnostic")


def result_path(suite: str) -> Path:
    return RESULTS / f"coco_ap_{suite}.json"


def floor_items(items: list, record: dict) -> list:
    """The floor's pseudo-labels: one fixed grid box per image, scaled to it, with the run's class and score."""
    from kdcicam.coco import ImageBoxes
    from kdcicam.evaluation.baselines import centre_gaussian
    from kdcicam.localization import grid_boxes

    grid = int(record["grid"])
    box = grid_boxes(centre_gaussian(grid, float(record["sigma"])), float(record["box_threshold"])).astype(np.float64)
    out = []
    for it in items:
        scale = np.array([it.width / grid, it.height / grid] * 2)
        out.append(ImageBoxes(it.file_name, it.width, it.height, box * scale, it.class_id, it.score))
    return out


def score_run(run: Path, data_root: Path, splits: list[str], floor: dict, device: str) -> dict:
    """Both the run's pseudo-labels and the floor's, on every split with boxes."""
    from kdcicam import Localizer
    from kdcicam.coco import coco_scores, ground_truth, localize_split, pseudo_labels
    from kdcicam.data.metadata import read_metadata

    loc = Localizer.from_checkpoint(run, device=device, topk=1)
    out = {"run": str(run), "method": loc.method, "checkpoint": str(loc.checkpoint), "threshold": loc.threshold,
           "threshold_source": loc.threshold_source, "splits": {}}
    for split in splits:
        md = read_metadata(data_root / split)
        if not md.has_boxes:
            continue
        gt = ground_truth(md)
        names = md.class_names or [str(i) for i in range(md.num_classes)]
        items = localize_split(loc, md)
        _, dets = pseudo_labels(items, names)
        _, floor_dets = pseudo_labels(floor_items(items, floor), names)
        out["splits"][split] = {"num_images": len(items), "method": coco_scores(gt, dets),
                                "floor": coco_scores(gt, floor_dets)}
        m, f = out["splits"][split]["method"]["class_agnostic"], out["splits"][split]["floor"]["class_agnostic"]
        print(f"{run.name:24s} {split:14s} class-agnostic AP {m['AP']:.2f} AP50 {m['AP50']:.2f} AP75 {m['AP75']:.2f} "
              f"| floor AP {f['AP']:.2f} AP50 {f['AP50']:.2f} AP75 {f['AP75']:.2f}", flush=True)
    return out


def markdown(record: dict) -> str:
    """Mean ± sd over seeds per method and split, the floor (with each method's classifier) beside it."""
    rows: dict[tuple[str, str, str], list] = {}
    for res in record["runs"].values():
        for split, s in res["splits"].items():
            for who in ("method", "floor"):
                for mode in MODES:
                    key = (split, res["method"] if who == "method" else f"floor (with {res['method']}'s classes)", mode)
                    rows.setdefault(key, []).append(s[who][mode])

    def cell(values: list, k: str) -> str:
        v = [x[k] for x in values if x[k] is not None]
        if not v:
            return "n/a"
        return f"{statistics.mean(v):.1f}" + (f" ± {statistics.stdev(v):.1f}" if len(v) > 1 else "")

    lines = ["| split | boxes | AP | AP50 | AP75 | AP (class-agnostic) | AP50 (c.-a.) | AP75 (c.-a.) | runs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for split, who in sorted({(k[0], k[1]) for k in rows}):
        aware, agn = rows[(split, who, "class_aware")], rows[(split, who, "class_agnostic")]
        lines.append(f"| {split} | {who} | " + " | ".join(cell(aware, k) for k in ("AP", "AP50", "AP75")) + " | "
                     + " | ".join(cell(agn, k) for k in ("AP", "AP50", "AP75")) + f" | {len(aware)} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", required=True)
    p.add_argument("--methods", nargs="+", default=["cam", "kd-ci-cam"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--runs", nargs="+", type=Path, default=None,
                   help="run folders to score instead of runs/bench/<suite>/<method>-seed<k>")
    p.add_argument("--splits", nargs="+", default=None, help="default: the suite's test splits")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    from accuracy import ensure_data, machine, run_dir, suite_config
    from floors import ensure_floor

    from kdcicam.data.metadata import atomic_write_text

    cfg = suite_config(args.suite)
    data = ensure_data(args.suite)
    splits = args.splits or list(cfg.data.test_splits)
    floor = ensure_floor(args.suite, data, list(cfg.data.test_splits), cfg.data.image_size)
    runs = args.runs or [run_dir(args.suite, m, s) for m in args.methods for s in args.seeds]
    missing = [str(r) for r in runs if not r.is_dir()]
    if missing:
        sys.exit(f"no such run folder(s): {', '.join(missing)}")
    path = result_path(args.suite)
    record = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    for run in runs:
        record["runs"][run.name] = score_run(run, data, splits, floor, args.device)
    record.update({"benchmark": "coco_ap", "suite": args.suite, **stamp(REPO, "benchmarks/coco_ap.py"),
                   "machine": machine(), "floor": {k: floor[k] for k in ("sigma", "box_threshold", "grid", "chosen_on")},
                   "ap_units": "percent (pycocotools COCOeval bbox stats x 100)"})
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    print(markdown(record))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
