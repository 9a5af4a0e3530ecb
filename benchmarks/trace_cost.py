"""How many background-pass pixels one plain findContours trace is worth (``_TRACE_PIXELS`` in
:mod:`kdcicam.evaluation._kernels`): the multi-contour kernel's CPU time on the same maps for each value.

The multi-contour mode needs the boxes of holes. The kernel either extends its background pass (a
union-find over the background pixels, paid per pixel) down to a threshold, or hands thresholds above
it to OpenCV's findContours one by one; ``_TRACE_PIXELS`` is the exchange rate between the two. Each
value runs in a fresh process on numba's JIT with an empty cache (the constant is compiled into the
kernels), one thread, and times ``BoxEvaluator(multi_contour=True)`` on the maps in memory: CPU seconds
of the process, median of ``--runs`` after one warm-up, the values alternated over ``--rounds`` so that
all see the same load. Maps: ``benchmarks/cam_maps.py``'s, with CUB-like boxes (evaluator_speed's
synthetic metadata), so the CUB data is not needed. Metrics are asserted equal for every value.

    python benchmarks/trace_cost.py [--values 8000 16000 32000 48000 64000] [--rounds 2] [--runs 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from provenance import REPO, machine, stamp

CHILD = r"""
import json, os, sys, time
from kdcicam.evaluation import _kernels
_kernels._TRACE_PIXELS = int(sys.argv[1])
import numpy as np
sys.path.insert(0, sys.argv[3])
from cam_maps import smooth_map
from evaluator_speed import synthetic_metadata
from kdcicam.evaluation.metrics import BoxEvaluator
rng = np.random.default_rng(0)
md = synthetic_metadata(1389, rng)
maps = np.stack([smooth_map(rng) for _ in md.image_ids])
def once():
    ev = BoxEvaluator(md, 224, [30, 50, 70], True, 0.01, workers=1)
    start = time.process_time()
    for s in range(0, len(maps), 64):
        ev.accumulate(maps[s:s + 64], md.image_ids[s:s + 64])
    return time.process_time() - start, ev.compute()["box_acc_curve"]
once()
runs = [once() for _ in range(int(sys.argv[2]))]
print(json.dumps({"cpu_s": [round(t, 4) for t, _ in runs], "curve": runs[0][1]}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, nargs="+", default=[8000, 16000, 32000, 48000, 64000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "trace_cost.json"))
    args = parser.parse_args(argv)
    env = {**os.environ, "KDCICAM_KERNELS": "jit",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    times: dict[int, list[float]] = {v: [] for v in args.values}
    curve = None
    for _ in range(args.rounds):
        for value in args.values:
            with tempfile.TemporaryDirectory() as cache:
                done = subprocess.run([sys.executable, "-c", CHILD, str(value), str(args.runs),
                                       str(REPO / "benchmarks")], env={**env, "NUMBA_CACHE_DIR": cache},
                                      capture_output=True, text=True, check=True)
            got = json.loads(done.stdout.strip().splitlines()[-1])
            assert curve is None or got["curve"] == curve, value  # the exchange rate never changes a metric
            curve = got["curve"]
            times[value] += got["cpu_s"]
            print(f"  {value:>7d}: {statistics.median(got['cpu_s']):.4f} CPU s", flush=True)
    rows = [{"trace_pixels": v, "cpu_s_median": round(statistics.median(t), 4), "cpu_s_min": round(min(t), 4),
             "runs": len(t)} for v, t in times.items()]
    best = min(rows, key=lambda r: r["cpu_s_median"])
    out = {**stamp(REPO, "benchmarks/trace_cost.py"), "machine": machine(), "images": 1389, "interval": 0.01, "threads": 1,
           "load_average": list(os.getloadavg()), "rows": rows, "best": best["trace_pixels"],
           "equal_metrics": True}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for r in rows:
        print(f"{r['trace_pixels']:>7d}  median {r['cpu_s_median']:.4f}  min {r['cpu_s_min']:.4f} CPU s")
    print(f"lowest: {best['trace_pixels']}; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
