"""Post-hoc CAM methods on CAM's own checkpoints: does any Grad-CAM-like map at the best-classifying checkpoint
localize as well as the best-localizing one (the dilemma, answered the cheap way)? docs/posthoc.md.

For each benchmark CAM run (``runs/bench/<suite>/cam-seed<k>``, trained by benchmarks/accuracy.py), each
checkpoint kept by a val monitor (``best_cls``, ``best_loc``) and each method (``native`` = the model's own map,
the reference row), ``kdcicam evaluate --cam-method`` scores the given splits with the exact evaluator: the box
threshold is chosen on val *for that method's map*, never reused from the native map. The map computation is
timed on the CPU (forward, method, resize to the evaluation grid; not data loading nor scoring) and reported
as images/s per split.

    MALLOC_MMAP_THRESHOLD_=10000000000 MALLOC_TRIM_THRESHOLD_=10000000000 \\
        .venv/bin/python benchmarks/posthoc.py --suite synthetic-v2 --seeds 0 1 2

``--speed N`` measures only what each method costs a user, alone on the machine: ``Localizer.predict`` on the
first N val images of seed 0's ``best_cls`` checkpoint (decode, resize, model, map, boxes: what ``kdcicam
localize`` does), after one warm-up batch, written to ``posthoc_speed_<suite>.json``. Run it with nothing else
running; the accuracy entries' own images/s are only comparable within one run.

One JSON per (suite, seed) in benchmarks/results/posthoc/, rewritten after every (checkpoint, method) entry;
a finished entry is skipped on the next call (resumable). Score-CAM forwards one masked image per channel of
the target layer (1,280 for EfficientNet-Lite0), so it costs ~1,280 forwards per image; SS-CAM (35x Score-CAM)
and IS-CAM (10x) are left out unless named with --methods.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import time
from pathlib import Path

from accuracy import REPO, SUITES, commit, machine, run_dir

RESULTS = REPO / "benchmarks" / "results" / "posthoc"
CHECKPOINTS = ("best_cls", "best_loc")
#: cheap first, Score-CAM last (its cost is three orders of magnitude above the others')
DEFAULT_METHODS = ("native", "cam", "grad-cam", "grad-cam++", "xgrad-cam", "layer-cam", "smooth-grad-cam++",
                   "finer-cam", "score-cam")


def result_path(out: Path, suite: str, seed: int) -> Path:
    return out / f"posthoc_{suite}_cam_seed{seed}.json"


def default_splits(suite: str) -> list[str]:
    from kdcicam.config import load_config

    return list(load_config(REPO / SUITES[suite]["config"]).data.test_splits)


def score_entry(ckpt: Path, method: str, splits: list[str], data_root: str | None,
                score_batch_size: int) -> dict:
    """One (checkpoint, method): metrics on the splits (threshold chosen on val for this map) and the CPU speed
    of the map computation on every split it ran (val included)."""
    import torch

    from kdcicam.training.evaluate import evaluate

    timings: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    m = evaluate(ckpt, splits, device="cpu", data_root=data_root, progress=False, write=False, cam_method=method,
                 score_batch_size=score_batch_size, timings=timings)
    return {
        "checkpoint": str(ckpt), "cam_method": method, "target_layer": m.get("target_layer"),
        "box_threshold": m["box_threshold"], "box_threshold_chosen_on": m["box_threshold_chosen_on"],
        "metrics": {s: m[s] for s in splits},
        "images_per_second": {s: round(t["images"] / t["seconds"], 3) for s, t in timings.items() if t.get("seconds")},
        "map_seconds": {s: round(t["seconds"], 2) for s, t in timings.items()},
        "images": {s: int(t["images"]) for s, t in timings.items()},
        "wall_seconds": round(time.perf_counter() - start, 1), "torch_threads": torch.get_num_threads(),
        "score_batch_size": score_batch_size if method in ("score-cam", "ss-cam", "is-cam") else None,
        "commit": commit(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def run_seed(suite: str, seed: int, methods: list[str], splits: list[str], run_root: Path | None, out: Path,
             data_root: str | None, score_batch_size: int, command: str) -> Path:
    from kdcicam.data.metadata import atomic_write_text

    folder = (run_root / suite / f"cam-seed{seed}") if run_root is not None else run_dir(suite, "cam", seed)
    path = result_path(out, suite, seed)
    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc.update(suite=suite, seed=seed, run=str(folder), splits=splits, machine=machine())
    doc.setdefault("entries", {})
    for name in CHECKPOINTS:
        ckpt = folder / "checkpoints" / f"{name}.ckpt"
        if not ckpt.is_file():
            print(f"posthoc: {ckpt} missing, skipped", file=sys.stderr)
            continue
        for method in methods:
            done = doc["entries"].get(name, {}).get(method)
            if done is not None and all(s in done["metrics"] for s in splits):
                print(f"posthoc: {suite} seed {seed} {name} {method}: done, skipped")
                continue
            entry = score_entry(ckpt, method, splits, data_root, score_batch_size)
            entry["command"] = command
            entry["peak_memory_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            doc["entries"].setdefault(name, {})[method] = entry
            doc["updated"] = entry["date"]
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(doc, indent=2))
            ips = ", ".join(f"{s} {v:g} img/s" for s, v in entry["images_per_second"].items())
            print(f"posthoc: {suite} seed {seed} {name} {method}: threshold {entry['box_threshold']}, {ips}")
    return path


def speed(suite: str, methods: list[str], n: int, run_root: Path | None, out: Path, data_root: str | None,
          command: str) -> Path:
    """Images/s of each method as a user runs it (Localizer.predict on image files), one method after another
    (Score-CAM's masked images go through the model in chunks of the Localizer's default, 32)."""
    import os

    import torch

    from kdcicam import Localizer
    from kdcicam.checkpoints import load_checkpoint
    from kdcicam.data.metadata import atomic_write_text, read_metadata

    folder = (run_root / suite / "cam-seed0") if run_root is not None else run_dir(suite, "cam", 0)
    ckpt = folder / "checkpoints" / "best_cls.ckpt"
    cfg = load_checkpoint(ckpt).config
    root = Path(data_root or cfg.data.root)
    md = read_metadata(root / cfg.data.val_split)
    paths = [str(md.image_path(i)) for i in md.image_ids[:n]]
    path = out / f"posthoc_speed_{suite}.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"methods": {}}  # methods timed earlier are kept
    doc.update({"suite": suite, "checkpoint": str(ckpt), "torch_threads": torch.get_num_threads(),
                "machine": machine(), "what": "Localizer.predict on image files (decode, resize, model, map, boxes), "
                "after a warm-up batch; threshold fixed at 0.5 (speed only)"})
    for method in methods:
        loc = Localizer.from_checkpoint(ckpt, device="cpu", threshold=0.5, topk=1, cam_method=method)
        loc.predict(paths[: min(len(paths), loc.batch_size, 4)])  # warm-up: first-call allocations, hooks
        start = time.perf_counter()
        loc.predict(paths)
        seconds = time.perf_counter() - start
        doc["methods"][method] = {"images": len(paths), "seconds": round(seconds, 3),
                                  "images_per_second": round(len(paths) / seconds, 3), "commit": commit(),
                                  "command": command, "load_average_1_5_15_min": os.getloadavg()}
        print(f"posthoc speed: {suite} {method}: {len(paths) / seconds:.2f} img/s ({len(paths)} images, "
              f"{seconds:.1f} s)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=2))
    return path


def main(argv: list[str] | None = None) -> int:
    from kdcicam.posthoc import CAM_METHODS, check_method

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="NAME",
                   help=f"of {', '.join(CAM_METHODS)} (default: {' '.join(DEFAULT_METHODS)})")
    p.add_argument("--splits", type=lambda v: [x for x in v.split(",") if x], default=None, metavar="A,B",
                   help="splits to score (default: the suite config's test splits); val is always used for the threshold")
    p.add_argument("--score-batch-size", type=int, default=32, metavar="N",
                   help="Score-CAM family: masked images per forward (default 32)")
    p.add_argument("--data-root", default=None, help="the dataset, if it moved since training")
    p.add_argument("--speed", type=int, default=None, metavar="N",
                   help="only time each method on N val images (seed 0, best_cls), as a user runs it")
    p.add_argument("--run-root", type=Path, default=None, help=argparse.SUPPRESS)  # tests: <root>/<suite>/cam-seed<k>
    p.add_argument("--out", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    methods = [check_method(m) for m in args.methods]
    splits = args.splits or default_splits(args.suite)
    command = " ".join(["python", "benchmarks/posthoc.py", *(sys.argv[1:] if argv is None else argv)])
    if args.speed is not None:
        print(f"posthoc: {speed(args.suite, methods, args.speed, args.run_root, args.out, args.data_root, command)}")
        return 0
    for seed in args.seeds:
        path = run_seed(args.suite, seed, methods, splits, args.run_root, args.out, args.data_root,
                        args.score_batch_size, command)
        print(f"posthoc: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
