"""The real-photo conflict probe, measured: each finished cub50 benchmark run scored on the probe's paired
splits (docs/confounding.md), with the box threshold it chose on its own val, plus where its CAM mass lies
around the paste (benchmarks/seam_check.py), and the centre-Gaussian and oracle floors on the same splits.

    MALLOC_MMAP_THRESHOLD_=10000000000 MALLOC_TRIM_THRESHOLD_=10000000000 \\
        .venv/bin/python benchmarks/conflict_probe.py --seeds 0 1 2

The probe is built from data/cub50 when missing (`kdcicam data conflict data/cub50 --out data/cub50_conflict
--control`, seed 0). Runs are those of `benchmarks/accuracy.py --suite cub50` (runs/bench/cub50/<method>-seed<k>);
the box threshold is the one its results file records (chosen on val), so test is touched once more per
split and nothing is chosen on the probe. One results file per run,
``benchmarks/results/conflict_probe/cub50_<method>_seed<k>.json`` (resumable: existing files are skipped),
and ``floors.json`` beside them.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path

from accuracy import BASELINES, METHODS, REPO, commit, machine, result_path, trained_method
from provenance import stamp

SUITE = "cub50"
OUT = REPO / "benchmarks" / "results" / "conflict_probe"
#: paired splits of `kdcicam data conflict --control`, in reading order
SPLITS = ("test_original", "test_same", "test_conflict", "test_seam")
#: splits with a bird inside the pasted box, scored by seam_check for scale; test_seam is the control
SEAM_SPLITS = ("test_same", "test_conflict", "test_seam")
#: half-width of the band around the paste's border, a fraction of the map's side (seam_check's default)
SEAM_BAND = 0.04
KEEP = ("top1_cls", "top1_loc", "gt_known_loc", "max_box_acc_v2", "max_box_acc_v2_per_iou", "context_leakage",
        "pxap", "num_images")


def ensure_probe(probe: Path, source: Path) -> dict:
    """The probe's dataset.yaml settings; built (seconds per hundred images) when absent."""
    from kdcicam.data.conflict import ConflictConfig, make_conflict
    from kdcicam.data.metadata import read_dataset_info

    if not (probe / "dataset.yaml").is_file():
        if not (source / "dataset.yaml").is_file():
            sys.exit(f"{source}: no prepared cub50 (run `kdcicam data cub ../shared/data/cub50 --out {source}`)")
        make_conflict(source, probe, ConflictConfig(split="test", seed=0, control=True))
    info = read_dataset_info(probe)
    missing = [s for s in SPLITS if s not in info.splits]
    if missing:
        sys.exit(f"{probe}: no split {', '.join(missing)} (build it with `kdcicam data conflict ... --control`)")
    return info.extra


def probe_floors(probe: Path) -> dict:
    """The centre Gaussian (σ and box threshold as chosen on cub50 val by benchmarks/floors.py) and the oracle
    map (the box itself on the 14×14 grid, `coverage` mode) on every probe split."""
    from floors import KEEP as FLOOR_KEEP
    from floors import centre_gaussian, score
    from floors import result_path as floor_path
    from oracle_cam import score_split
    from seam_check import read_probe_split, score_maps

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
    oracle = {split: score_split(probe, split, size, (size // 16, size // 16), "coverage") for split in SPLITS}
    g = centre_gaussian(size, sigma)
    seams = {split: score_maps(read_probe_split(probe / split), g.shape, lambda _: g, SEAM_BAND)
             for split in SEAM_SPLITS}
    return {"centre_gaussian": {"sigma": sigma, "box_threshold": threshold, "chosen_on": f"{SUITE} val",
                                "splits": gauss, "seam": {"band_fraction": SEAM_BAND, "splits": seams}},
            "oracle_coverage": {"grid": [size // 16, size // 16], "splits": oracle}}


def shuffled_seam(cam_dir: Path, split_dir: Path, band: float) -> dict:
    """The seam shares of each image's paste region under *another* image's CAM (a fixed derangement): what the
    CAM's own spatial habits (centre bias, favourite corners) give on regions of that size and place. A CAM
    drawn to the paste scores higher with its own image's region than here; one blind to it, the same."""
    import numpy as np
    from seam_check import read_probe_split, score_maps

    from kdcicam.evaluation.saved_cams import load_cam

    md = read_probe_split(split_dir)
    ids = list(md.image_ids)
    order = np.random.default_rng(0).permutation(len(ids))
    other = {ids[order[k]]: ids[order[(k + 1) % len(ids)]] for k in range(len(ids))}  # a cycle: never itself
    shape = load_cam(cam_dir, ids[0], None, normalize=True).shape
    return score_maps(md, shape, lambda image_id: load_cam(cam_dir, other[image_id], shape, normalize=True), band)


def score_run(method: str, seed: int, probe: Path, band: float) -> dict:
    """Evaluate one run on the probe splits with its val-chosen threshold; seam shares from its saved CAMs."""
    from seam_check import score_split as seam_split

    from kdcicam.training.evaluate import evaluate

    record_path = result_path(SUITE, method, seed, "")
    run_dir = REPO / "runs" / "bench" / SUITE / f"{method}-seed{seed}"
    if not record_path.is_file():
        sys.exit(f"{record_path}: missing (the run's val-chosen box threshold is read from it)")
    if not run_dir.is_dir():
        sys.exit(f"{run_dir}: missing (run `benchmarks/accuracy.py --suite {SUITE} --seeds {seed} --methods {method}`)")
    record = json.loads(record_path.read_text())
    threshold = record["box_threshold"]
    cams = REPO / "runs" / "conflict_probe_cams" / f"{method}-seed{seed}"
    shutil.rmtree(cams, ignore_errors=True)
    start = time.time()
    try:
        metrics = evaluate(run_dir, list(SPLITS), save_cams=cams, data_root=str(probe), progress=False,
                           write=False, box_threshold=threshold)
        seams = {s: seam_split(cams / s, probe / s, band) for s in SEAM_SPLITS}
        seams["test_seam_shuffled"] = shuffled_seam(cams / "test_seam", probe / "test_seam", band)
    finally:
        shutil.rmtree(cams, ignore_errors=True)  # about 1 MB per 1,000 maps per split: not worth keeping
    cfg_method = trained_method(method)[0]
    return {"benchmark": "conflict_probe", "suite": SUITE, "method": method, "seed": seed,
            "checkpoint": str(Path(metrics["checkpoint"]).relative_to(run_dir)),
            "box_threshold": threshold, "box_threshold_chosen_on": f"val ({record_path.name})",
            "metrics": {s: {k: metrics[s][k] for k in KEEP if metrics[s].get(k) is not None} for s in SPLITS},
            "seam": {"band_fraction": band, "splits": seams},
            "trained_by": {"commit": record.get("commit"), "command": record.get("command"), "method": cfg_method},
            "wall_seconds": round(time.time() - start, 1), "commit": commit(), "machine": machine(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", choices=[*METHODS, *BASELINES], default=list(METHODS))
    p.add_argument("--probe", type=Path, default=REPO / "data" / "cub50_conflict")
    p.add_argument("--source", type=Path, default=REPO / "data" / "cub50", help="the prepared cub50 it is built from")
    p.add_argument("--out", type=Path, default=OUT, help="results folder (tiny checks: somewhere under runs/)")
    args = p.parse_args()
    from kdcicam.data.metadata import atomic_write_text

    settings = ensure_probe(args.probe, args.source)
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
            if not (REPO / "runs" / "bench" / SUITE / f"{method}-seed{seed}").is_dir():
                print(f"[missing] no run {method} seed {seed}: skipped", flush=True)
                continue
            r = score_run(method, seed, args.probe, SEAM_BAND)
            r["probe_settings"] = settings
            atomic_write_text(out, json.dumps(r, indent=2) + "\n")
            m = r["metrics"]
            print(f"{method} seed {seed}: Top-1 Cls " + " / ".join(f"{s[5:]} {m[s]['top1_cls']:.2f}" for s in SPLITS)
                  + f"; seam inside x{r['seam']['splits']['test_seam']['inside_ratio']} ({r['wall_seconds']:.0f} s)",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
