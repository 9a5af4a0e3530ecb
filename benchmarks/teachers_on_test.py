"""The KD-CI-CAM teachers of a suite's benchmark runs, scored on the suite's test splits: a control, not a choice.

Does the student beat the teachers it was distilled from? If the localization teacher alone scores as the student
does, the distillation adds nothing over the teacher's own training. Each teacher's ``best.ckpt`` (the cls
teacher's kept by val Top-1 Cls, the loc teacher's by val GT-known Loc) is scored with its own box threshold
chosen on val, as every row of the benchmarks. Run it only after the suite's final runs were scored: it reads
the test splits, so nothing may be chosen on what it prints.

    MALLOC_MMAP_THRESHOLD_=10000000000 MALLOC_TRIM_THRESHOLD_=10000000000 \\
        .venv/bin/python benchmarks/teachers_on_test.py --suite synthetic-v2 --seeds 0 1 2

``--control TAG:METHOD`` also scores the suite's tagged runs ``runs/bench/<suite>_<TAG>/<METHOD>-seed<k>`` (their
``best.ckpt``) the same way, as rows named TAG: an ablation trained and chosen on val (e.g. E1, CAM + the loc
teacher's fg/bg loss with no teacher at all), set beside the student on test only after its final runs.

Writes ``benchmarks/results/teachers_<suite>.json`` (rewritten after each teacher; a scored one is skipped).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from accuracy import REPO, RESULTS, run_dir, suite_config, test_draw
from provenance import machine, stamp

STAGES = ("cls_teacher", "loc_teacher")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--control", action="append", default=[], metavar="TAG:METHOD",
                   help="also score the tagged runs runs/bench/<suite>_<TAG>/<METHOD>-seed<k> (repeatable)")
    args = p.parse_args()
    controls = {}
    for item in args.control:
        tag, sep, method = item.partition(":")
        if not (sep and tag and method):
            p.error(f"--control {item!r}: expected TAG:METHOD, e.g. E1-control:ci-cam")
        if tag in STAGES:
            p.error(f"--control {item!r}: the tag {tag!r} is a teacher's row name; name the control otherwise")
        controls[tag] = method
    from kdcicam.data.metadata import atomic_write_text
    from kdcicam.training.evaluate import evaluate

    cfg = suite_config(args.suite)
    splits = list(cfg.data.test_splits)
    out = RESULTS / f"teachers_{args.suite}.json"
    record = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    record.update(benchmark="teachers_on_test", suite=args.suite, **stamp(REPO, "benchmarks/teachers_on_test.py"),
                  machine=machine(), test_draw=test_draw(Path(cfg.data.root)),
                  what=f"the KD-CI-CAM teachers of the {args.suite} benchmark runs, scored on "
                       f"{' and '.join(splits)} after the final runs (a control: nothing is chosen on it)")
    for tag, method in controls.items():
        if record.get("controls", {}).get(tag, method) != method:
            sys.exit(f"--control {tag}:{method}: {out.name} already holds {tag} as {record['controls'][tag]} runs")
    record["controls"] = {**record.get("controls", {}), **controls}
    if record["controls"]:
        record["what"] += "; also the tagged runs " + ", ".join(
            f"{tag} (`runs/bench/{args.suite}_{tag}/{method}-seed<k>`)" for tag, method in record["controls"].items())
    done = {(r["seed"], r["stage"]) for r in record["runs"]}
    for seed in args.seeds:
        for stage in (*STAGES, *controls):
            if (seed, stage) in done:
                continue
            if stage in controls:
                ckpt = run_dir(args.suite, controls[stage], seed, stage) / "checkpoints" / "best.ckpt"
            else:
                ckpt = run_dir(args.suite, "kd-ci-cam", seed) / stage / "checkpoints" / "best.ckpt"
            if not ckpt.is_file():
                sys.exit(f"{ckpt}: no such checkpoint (train the suite's {'run' if stage in controls else 'kd-ci-cam'} "
                         f"seed {seed} first)")
            m = evaluate(ckpt, splits, progress=False, write=False)
            record["runs"].append({"seed": seed, "stage": stage, "checkpoint": str(ckpt.relative_to(REPO)),
                                   "box_threshold": m["box_threshold"],
                                   "box_threshold_chosen_on": m["box_threshold_chosen_on"],
                                   "metrics": {s: m[s] for s in splits}})
            atomic_write_text(out, json.dumps(record, indent=1))
            line = m[splits[-1]]
            print(f"{args.suite} seed {seed} {stage}: {splits[-1]} top1_cls {line['top1_cls']:.2f} "
                  f"maxboxaccv2 {line['max_box_acc_v2']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
