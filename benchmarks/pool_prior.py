"""What did the causal context pool learn? Compare each trained CI-CAM pool ``M[c]`` (C×h×w, read from
the checkpoints that benchmarks/accuracy.py left in runs/bench/) with where the objects of class c lie.

For every class c, ``P[c]`` is the mean of the training images' GT-box indicator maps on the pool's
h×w grid (each box as the fraction of every cell it covers, on the square-resized image the models
see), and ``P̄`` the same over all classes. Per checkpoint (class means):

- ``corr_class_prior``: Pearson correlation of ``M[c]`` with ``P[c]``: the pool is the class's
  object-location prior;
- ``corr_global_prior``: with ``P̄``: ... or one prior shared by every class;
- ``corr_between_classes``: mean correlation of ``M[c]`` with ``M[c']`` (c ≠ c'): how class-specific
  the pools are;
- for the data, ``data_class_vs_global``: correlation of ``P[c]`` with ``P̄``: how much class-specific
  location information there is to learn at all.

    .venv/bin/python benchmarks/pool_prior.py --suite synthetic [--runs runs/bench ...]

Writes ``benchmarks/results/pool_prior_<suite>.json``; `benchmarks/report.py` puts it in the docs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from provenance import stamp

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
POOL_KEY = "model.pool.maps"
#: the CI-CAM-type checkpoints of one run folder, by the role they play
CHECKPOINTS = {"ci-cam": "checkpoints/best.ckpt", "kd-ci-cam (student)": "student/checkpoints/best.ckpt",
               "kd-ci-cam (loc. teacher)": "loc_teacher/checkpoints/best.ckpt",
               "kd-ci-cam (cls. teacher)": "cls_teacher/checkpoints/best.ckpt"}


def corr(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return None if denom == 0 else float((a * b).sum() / denom)


def mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def analyse(pool: np.ndarray, per_class: np.ndarray, overall: np.ndarray) -> dict:
    c = pool.shape[0]
    return {
        "pool_shape": list(pool.shape),
        "corr_class_prior": mean([corr(pool[k], per_class[k]) for k in range(c)]),
        "corr_global_prior": mean([corr(pool[k], overall) for k in range(c)]),
        "corr_between_classes": mean([corr(pool[i], pool[j]) for i in range(c) for j in range(c) if i != j]),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", required=True, choices=["synthetic", "cub50"])
    p.add_argument("--runs", type=Path, nargs="+", default=[REPO / "runs" / "bench"],
                   help="folders where accuracy.py trained (default runs/bench)")
    args = p.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from kdcicam.data.metadata import atomic_write_text, read_metadata
    from kdcicam.diagnostics import box_prior

    found = []
    runs = sorted((run for folder in args.runs for run in (folder / args.suite).glob("*-seed*")),
                  key=lambda r: (r.name.rsplit("-seed", 1)[0], int(r.name.rsplit("-seed", 1)[1])))
    for run in runs:
        for role, rel in CHECKPOINTS.items():
            if (run / rel).is_file() and role.split()[0] == run.name.rsplit("-seed", 1)[0]:
                found.append((run, role, run / rel))
    if not found:
        sys.exit(f"no CI-CAM checkpoints under {', '.join(str(f / args.suite) for f in args.runs)}")
    priors: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]] = {}
    records = []
    for run, role, ckpt_path in found:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        pool = ckpt["state_dict"][POOL_KEY].double().numpy()
        cfg = ckpt["hyper_parameters"]["config"]
        root = Path(cfg["data"]["root"]).resolve()  # one data prior per dataset, however it was reached
        key = (str(root), pool.shape[1], pool.shape[2])
        if key not in priors:
            md = read_metadata(root / cfg["data"]["train_split"], check_images=False)
            priors[key] = box_prior(md, pool.shape[1], pool.shape[2])
        per_class, overall = priors[key]
        records.append({"run": run.name, "role": role, "seed": int(run.name.rsplit("-seed", 1)[1]),
                        "pool_rate": cfg["model"]["pool_rate"], **analyse(pool, per_class, overall)})
        print(f"{run.name:20s} {role:26s} corr(M[c], P[c]) {records[-1]['corr_class_prior']:.3f}  "
              f"corr(M[c], P̄) {records[-1]['corr_global_prior']:.3f}  "
              f"corr(M[c], M[c']) {records[-1]['corr_between_classes']:.3f}")
    data = {str(k): {"data_class_vs_global": mean([corr(pc[c], ov) for c in range(pc.shape[0])]),
                     "grid": [k[1], k[2]]} for k, (pc, ov) in priors.items()}
    out = RESULTS / f"pool_prior_{args.suite}.json"
    record = {"benchmark": "pool_prior", "suite": args.suite, **stamp(REPO, "benchmarks/pool_prior.py"), "data": data,
              "pools": records}
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"data: corr(P[c], P̄) = {next(iter(data.values()))['data_class_vs_global']:.3f}; written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
