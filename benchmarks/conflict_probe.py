"""The real-photo conflict probe, measured: each finished cub50 benchmark run scored on the probe's paired
splits (docs/confounding.md), with the box threshold it chose on its own val; the paste pull of its CAMs
against the bare canvas (benchmarks/seam_check.py); and the centre-Gaussian floor and the oracle reference
on the same splits.

    MALLOC_MMAP_THRESHOLD_=10000000000 MALLOC_TRIM_THRESHOLD_=10000000000 \\
        .venv/bin/python benchmarks/conflict_probe.py --seeds 0 1 2

The probe is built from data/cub50 when missing (`kdcicam data conflict data/cub50 --out data/cub50_conflict
--control`, seed 0). Runs are those of `benchmarks/accuracy.py --suite cub50` (runs/bench/cub50/<method>-seed<k>);
the box threshold is the one its results file records (chosen on val), so test is touched once more per
split and nothing is chosen on the probe. One results file per run,
``benchmarks/results/conflict_probe/cub50_<method>_seed<k>.json`` (resumable: existing files are skipped),
and ``floors.json`` beside them. A run is scored only when its results file and its finished run folder are
both there.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path

from accuracy import BASELINES, METHODS, REPO, commit, machine, result_path, run_dir, training_recipe
from provenance import stamp

SUITE = "cub50"
OUT = REPO / "benchmarks" / "results" / "conflict_probe"
#: paired splits of `kdcicam data conflict --control`, in reading order
SPLITS = ("test_original", "test_same", "test_conflict", "test_seam", "test_canvas")
#: the probe this script measures: built from the test split with its controls, seed 0, every object
PROBE_SETTINGS = {"split": "test", "seed": 0, "control": True, "limit": 0}
KEEP = ("top1_cls", "top1_loc", "gt_known_loc", "max_box_acc_v2", "max_box_acc_v2_per_iou", "context_leakage",
        "pxap", "num_images")


def ensure_probe(probe: Path, source: Path, limit: int = 0) -> dict:
    """The probe's dataset.yaml settings; built (seconds per hundred images) when absent."""
    from kdcicam.data.conflict import ConflictConfig, make_conflict
    from kdcicam.data.metadata import read_dataset_info

    expected = {**PROBE_SETTINGS, "limit": limit}
    if not (probe / "dataset.yaml").is_file():
        if not (source / "dataset.yaml").is_file():
            sys.exit(f"{source}: no prepared cub50 (run `kdcicam data cub ../shared/data/cub50 --out {source}`)")
        make_conflict(source, probe, ConflictConfig(**expected))
    info = read_dataset_info(probe)
    missing = [s for s in SPLITS if s not in info.splits]
    wrong = {k: info.extra.get(k) for k, v in expected.items() if info.extra.get(k) != v}
    if missing or wrong:
        sys.exit(f"{probe}: not the probe this benchmark measures (" + (f"no split {', '.join(missing)}" if missing else
                 f"settings {wrong}, expected {expected}") + "); remove it, or give another --probe")
    return info.extra


def probe_floors(probe: Path) -> dict:
    """The centre Gaussian (σ and box threshold as chosen on cub50 val by benchmarks/floors.py) and the oracle
    map (the box itself on the suite's CAM grid, `coverage` mode: a reference, not a floor) on every split."""
    from floors import KEEP as FLOOR_KEEP
    from floors import result_path as floor_path
    from floors import score
    from oracle_cam import score_split

    from kdcicam.data.metadata import read_metadata

    floor_file = floor_path(SUITE)
    if not floor_file.is_file():
        sys.exit(f"{floor_file}: missing (run `benchmarks/floors.py --suite {SUITE}`)")
    chosen = json.loads(floor_file.read_text())
    size, sigma, threshold = chosen["grid"], chosen["sigma"], chosen["box_threshold"]
    gauss = {}
    for split in SPLITS:
        m = score(read_metadata(probe / split, check_images=False), size, sigma, threshold)
        gauss[split] = {k: m[k] for k in FLOOR_KEEP if k in m and m[k] is not None}
    grid = cam_grid()
    oracle = {split: score_split(probe, split, size, grid, "coverage") for split in SPLITS}
    return {"centre_gaussian": {"sigma": sigma, "box_threshold": threshold, "chosen_on": f"{SUITE} val",
                                "splits": gauss},
            "oracle_coverage": {"grid": list(grid), "splits": oracle}}


def cam_grid() -> tuple[int, int]:
    """The CAM grid of the suite's shipped config (14×14 for cub50: 224 px at output stride 16)."""
    from accuracy import suite_config

    cfg = suite_config(SUITE)
    side = cfg.data.image_size // (cfg.model.output_stride or 32)
    return side, side


def score_run(method: str, seed: int, probe: Path) -> dict:
    """Evaluate one run on the probe splits with its val-chosen threshold; the paste pull from its saved CAMs,
    with a border band one CAM cell wide."""
    from seam_check import paste_pull

    from kdcicam.training.evaluate import evaluate

    record = json.loads(result_path(SUITE, method, seed, "").read_text())
    folder = run_dir(SUITE, method, seed)
    threshold = record["box_threshold"]
    cams = REPO / "runs" / "conflict_probe_cams" / f"{method}-seed{seed}"
    shutil.rmtree(cams, ignore_errors=True)
    band = 1.0 / cam_grid()[0]
    start = time.time()
    try:
        metrics = evaluate(folder, list(SPLITS), save_cams=cams, data_root=str(probe), progress=False,
                           write=False, box_threshold=threshold)
        pull = paste_pull(cams, probe, "test", band)
    finally:
        shutil.rmtree(cams, ignore_errors=True)  # 200 kB per map: not worth keeping
    return {"benchmark": "conflict_probe", "suite": SUITE, "method": method, "seed": seed,
            "checkpoint": str(Path(metrics["checkpoint"]).relative_to(folder)),
            "box_threshold": threshold, "box_threshold_chosen_on": f"val ({result_path(SUITE, method, seed, '').name})",
            "metrics": {s: {k: metrics[s][k] for k in KEEP if metrics[s].get(k) is not None} for s in SPLITS},
            "paste_pull": pull,
            "trained_by": {"commit": record.get("commit"), "command": record.get("command")},
            "wall_seconds": round(time.time() - start, 1), "commit": commit(), "machine": machine(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def finished(method: str, seed: int) -> bool:
    """The run's results file (its val-chosen threshold) and its finished folder are both there."""
    folder = run_dir(SUITE, method, seed)
    done = folder / ("student" if training_recipe(method)[0] == "kd-ci-cam" else ".") / "done.json"
    return result_path(SUITE, method, seed, "").is_file() and done.is_file()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", choices=[*METHODS, *BASELINES], default=[*METHODS, *BASELINES])
    p.add_argument("--probe", type=Path, default=REPO / "data" / "cub50_conflict")
    p.add_argument("--source", type=Path, default=REPO / "data" / "cub50", help="the prepared cub50 it is built from")
    p.add_argument("--out", type=Path, default=OUT, help="results folder (tiny checks: somewhere under runs/)")
    p.add_argument("--limit", type=int, default=0, help="tiny checks: a probe of the first N test objects (needs --out)")
    args = p.parse_args()
    from kdcicam.data.metadata import atomic_write_text

    if args.limit and args.out == OUT:
        sys.exit("--limit: give --out too (a partial probe's results never go to benchmarks/results)")
    settings = ensure_probe(args.probe, args.source, args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    floors_file = args.out / "floors.json"
    if not floors_file.is_file():
        record = {"benchmark": "conflict_probe_floors", "suite": SUITE, "probe_settings": settings,
                  **stamp(REPO, "benchmarks/conflict_probe.py"), **probe_floors(args.probe)}
        atomic_write_text(floors_file, json.dumps(record, indent=2) + "\n")
    for seed in args.seeds:
        for method in args.methods:
            out = args.out / f"{SUITE}_{method}_seed{seed}.json"
            if out.is_file():
                print(f"[skip] {out.name} exists", flush=True)
                continue
            if not finished(method, seed):
                print(f"[missing] no finished run {method} seed {seed} with its results file: skipped", flush=True)
                continue
            r = score_run(method, seed, args.probe)
            r["probe_settings"] = settings
            atomic_write_text(out, json.dumps(r, indent=2) + "\n")
            m = r["metrics"]
            print(f"{method} seed {seed}: Top-1 Cls " + " / ".join(f"{s[5:]} {m[s]['top1_cls']:.2f}" for s in SPLITS[:3])
                  + f"; paste pull {r['paste_pull']['pull_inside']} inside, {r['paste_pull']['pull_band']} band "
                  f"({r['wall_seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
