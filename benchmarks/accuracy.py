"""Does causal intervention and distillation beat CAM? Train CAM, CI-CAM and KD-CI-CAM with the shipped
configs, evaluate each on test (and test_conflict on the synthetic data), one JSON per run.

    MALLOC_MMAP_THRESHOLD_=10000000000 MALLOC_TRIM_THRESHOLD_=10000000000 \\
        .venv/bin/python benchmarks/accuracy.py --suite synthetic --seeds 0 1 2

Resumable: a run whose results file exists is skipped; a run killed midway resumes from its last.ckpt.
Box thresholds are chosen on val by `kdcicam evaluate`; test is touched once per run. Ablations are
scored on val only (never chosen on test):

    .venv/bin/python benchmarks/accuracy.py --suite synthetic --seeds 0 --methods ci-cam \\
        --tag pool-rate-0 --eval-splits val -- model.pool_rate=0

Every run is a child process so that its wall time and peak memory are its own.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from provenance import commit, cpu_model, machine

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SUITES = {
    "synthetic": {"config": "configs/synthetic.yaml", "data": "data/synth"},
    # v2 with its preset (docs/confounding.md): run only once the calibration has fixed the preset
    "synthetic-v2": {"config": "configs/synthetic_v2.yaml", "data": "data/synth_v2"},
    "cub50": {"config": "configs/cub50.yaml", "data": "data/cub50"},
    "cub50-gpu": {"config": "configs/cub50_gpu.yaml", "data": "data/cub50"},  # paper scale, one GPU
}
METHODS = ("cam", "ci-cam", "kd-ci-cam")
#: the KD paper's own baseline: the KD-CI-CAM student pipeline (its augmentation, pool rate and epochs) trained
#: with no teacher at all (alpha = 0, route 0 only): what the teachers add is KD-CI-CAM minus this
BASELINES = {"kd-baseline": ("kd-ci-cam", ["kd.teachers=none", "kd.student_init=null"])}


def training_recipe(method: str) -> tuple[str, list[str]]:
    """The config method a benchmark method trains with, and the overrides that make it that method."""
    return BASELINES.get(method, (method, []))


def device_name(cfg) -> str:
    """What trained the run: the GPU's name, or the CPU's."""
    import torch

    if torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda"):
        return f"{torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
    return f"CPU: {cpu_model()}"


def suite_config(suite: str, overrides: list[str] = (), method: str | None = None):
    from kdcicam.config import load_config

    return load_config(REPO / SUITES[suite]["config"], [f"data.root={REPO / SUITES[suite]['data']}", *overrides],
                       method=method)


def run_diagnostics(run_dir: Path) -> dict:
    """Per stage: the per-epoch val curves and training diagnostics (metrics.csv), the dilemma summary
    (where Cls and Loc peak) and the last epoch's mechanism diagnostics."""
    from kdcicam.diagnostics import dilemma, epoch_curves, final_diagnostics, run_stages

    out = {}
    for stage, folder in run_stages(run_dir).items():
        curves = epoch_curves(folder / "metrics.csv")
        out[stage] = {"curves": curves, "dilemma": dilemma(curves), "final": final_diagnostics(curves)}
    return out


def stage_configs(run_dir: Path) -> dict:
    """The config.yaml each stage trained with (derived values such as the pool rate and the CAM temperature
    are filled in there, not in the suite's config)."""
    import yaml

    from kdcicam.diagnostics import run_stages

    return {stage: yaml.safe_load((folder / "config.yaml").read_text()) for stage, folder in run_stages(run_dir).items()
            if (folder / "config.yaml").is_file()}


def score_by_monitor(run_dir: Path, method: str, splits: list[str]) -> dict:
    """Test metrics of the checkpoint kept by each val monitor (best_cls, best_loc) and of the last epoch's, each
    with its own box threshold chosen on val: the dilemma measured on test, test touched once per checkpoint."""
    from kdcicam.diagnostics import run_stages
    from kdcicam.training.evaluate import evaluate

    folder = run_stages(run_dir).get("student" if training_recipe(method)[0] == "kd-ci-cam" else "model")
    out = {}
    for name in ("best_cls", "best_loc", "last"):  # the last epoch too: a checkpoint no val split chose
        ckpt = folder / "checkpoints" / f"{name}.ckpt" if folder else None
        if ckpt is None or not ckpt.is_file():
            continue
        m = evaluate(ckpt, splits, progress=False, write=False)
        out[name] = {"checkpoint": str(ckpt.relative_to(run_dir)), "box_threshold": m["box_threshold"],
                     "metrics": {s: m[s] for s in splits}}
    return out


def rescore(path: Path) -> dict:
    """Re-evaluate a finished run with this code (new metrics, the best_cls / best_loc checkpoints, the
    diagnostics) without training again; the training's own record (wall time, commit, command, config) is
    kept, and ``rescored`` says when and at which commit the evaluation was redone."""
    from kdcicam.data.metadata import atomic_write_text
    from kdcicam.training.evaluate import evaluate

    r = json.loads(path.read_text())
    folder = run_dir(r["suite"], r["method"], r["seed"], r.get("tag") or "")
    if not (folder / "done.json").is_file() and not (folder / "student" / "done.json").is_file():
        sys.exit(f"--rescore: {folder} holds no finished run")
    splits = list(r["metrics"])
    t = time.time()
    metrics = evaluate(folder, splits, progress=False)
    r.update(metrics={s: metrics[s] for s in splits}, box_threshold=metrics["box_threshold"],
             by_monitor=score_by_monitor(folder, r["method"], splits), stage_configs=stage_configs(folder),
             diagnostics=run_diagnostics(folder), test_draw=test_draw(REPO / SUITES[r["suite"]]["data"]),
             rescored={"commit": commit(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       "evaluate_seconds": round(time.time() - t, 1)})
    atomic_write_text(path, json.dumps(r, indent=2))
    return r


def test_draw(data: Path) -> int | None:
    """Which test pair a synthetic suite's data holds (``SyntheticConfig.test_draw``; None for data with no draws,
    e.g. cub50): recorded with every score, because a redraw leaves the run folders valid but changes the test
    numbers (docs/confounding.md)."""
    from kdcicam.data.metadata import read_dataset_info

    if not (data / "dataset.yaml").is_file():
        return None
    extra = read_dataset_info(data).extra
    if "test_draw" in extra:  # v1 and v2 alike write it once it is not 0
        return int(extra["test_draw"])
    return 0 if "rho" in extra else None  # a synthetic tree (its generator settings) of the first draw


def result_path(suite: str, method: str, seed: int, tag: str) -> Path:
    return RESULTS / f"accuracy_{suite}{('_' + tag) if tag else ''}_{method}_seed{seed}.json"


def run_dir(suite: str, method: str, seed: int, tag: str = "") -> Path:
    """Where a benchmark run trains: ``runs/bench/<suite>[_<tag>]/<method>-seed<k>``."""
    return REPO / "runs" / "bench" / f"{suite}{('_' + tag) if tag else ''}" / f"{method}-seed{seed}"


def ensure_data(suite: str) -> Path:
    """The suite's dataset, generated or converted if absent. A synthetic tree made with other settings (an older
    preset) is refused rather than silently scored as the suite."""
    data = REPO / SUITES[suite]["data"]
    if suite in ("synthetic", "synthetic-v2"):
        from kdcicam.data.synthetic import SyntheticConfig, ensure_synthetic
        from kdcicam.data.synthetic_v2 import v2_config

        return ensure_synthetic(data, SyntheticConfig() if suite == "synthetic" else v2_config())
    if (data / "dataset.yaml").is_file():
        return data
    src = Path(os.environ.get("KDCICAM_CUB50_SOURCE", REPO.parent / "shared" / "data" / "cub50"))
    if not src.is_dir():
        sys.exit(f"cub50 suite: {src} not found")
    from kdcicam.data.cub import convert_cub

    convert_cub(src, data)
    return data


def reuse_teachers(source: Path, run_dir: Path, cfg) -> list[str]:
    """Copy the finished teacher stages of another KD-CI-CAM run into ``run_dir`` (ablations that change
    only the student). Refused unless each teacher's saved config equals this run's, aside from the data
    path and the ``kd`` section, which a teacher's training never reads (it is a plain CI-CAM)."""
    from kdcicam.config import config_to_dict, kd_stage_configs, load_config
    from kdcicam.data.metadata import atomic_write_text

    def comparable(c) -> dict:
        d = config_to_dict(c)
        d["data"].pop("root", None)
        d.pop("kd", None)
        if d["model"].get("pool_rate_target") is not None:  # the saved rate was derived from the target
            d["model"].pop("pool_rate", None)
        return d

    reused = []
    for stage in ("cls_teacher", "loc_teacher"):
        src, dst = source / stage, run_dir / stage
        if not (src / "done.json").is_file():
            sys.exit(f"--reuse-teachers: {src} holds no finished stage (done.json)")
        if dst.exists():
            reused.append(stage)
            continue
        if comparable(load_config(src / "config.yaml")) != comparable(kd_stage_configs(cfg)[stage]):
            sys.exit(f"--reuse-teachers: {src}/config.yaml differs from this run's {stage} config")
        shutil.copytree(src, dst)
        summary = json.loads((dst / "done.json").read_text())
        summary.update(stage_dir=str(dst), best=str(dst / "checkpoints" / "best.ckpt"),
                       last=str(dst / "checkpoints" / "last.ckpt"))
        atomic_write_text(dst / "done.json", json.dumps(summary, indent=2))
        reused.append(stage)
    return reused


def train_teachers(suite: str, seed: int, tag: str, overrides: list[str]) -> None:
    """Only the KD teachers of a (suite, kd-ci-cam, seed) run, into its run folder, no results file: the teachers
    do not depend on the student's recipe, so they can train while that recipe is still being chosen on val; the
    full run then finds them finished (done.json) and trains the student only."""
    from kdcicam.config import kd_stage_configs, load_config
    from kdcicam.training.pipeline import needed_teachers, train_stage

    data = ensure_data(suite)
    cfg = load_config(REPO / SUITES[suite]["config"], [f"data.root={data}", f"trainer.seed={seed}",
                                                       "trainer.progress_bar=false", *overrides], method="kd-ci-cam")
    folder = run_dir(suite, "kd-ci-cam", seed, tag)
    stages = kd_stage_configs(cfg)
    for stage in needed_teachers(cfg.kd.teachers):
        train_stage(stages[stage], folder / stage, resume=(folder / stage / "checkpoints").is_dir())


def run_one(suite: str, method: str, seed: int, tag: str, overrides: list[str],
            eval_splits: list[str] | None = None, teachers_from: Path | None = None) -> dict:
    """Train + evaluate one (suite, method, seed) in this process; write its results file."""
    from kdcicam.config import config_to_dict, load_config
    from kdcicam.data.metadata import atomic_write_text
    from kdcicam.training.evaluate import evaluate
    from kdcicam.training.pipeline import train

    code_commit = commit()  # the code that trains, whatever lands on the branch while it runs
    data = ensure_data(suite)
    config_method, method_overrides = training_recipe(method)
    fixed = {o.split("=", 1)[0] for o in method_overrides} & {o.split("=", 1)[0] for o in overrides}
    if fixed:
        sys.exit(f"--methods {method}: {', '.join(sorted(fixed))} is what makes this method; it cannot be overridden")
    cfg = load_config(REPO / SUITES[suite]["config"], [f"data.root={data}", f"trainer.seed={seed}",
                                                       "trainer.progress_bar=false", *method_overrides, *overrides],
                      method=config_method)
    folder = run_dir(suite, method, seed, tag)
    reused: list[str] = []
    if teachers_from is not None and config_method == "kd-ci-cam" and cfg.kd.teachers != "none":
        reused = reuse_teachers(teachers_from, folder, cfg)
    start = time.time()
    resume = (folder / "checkpoints").is_dir() or (folder / "cls_teacher").is_dir() or (folder / "student").is_dir()
    summary = train(cfg, folder, resume=resume)
    train_seconds = time.time() - start
    t = time.time()
    splits = list(eval_splits or cfg.data.test_splits)
    metrics = evaluate(folder, splits, progress=False)
    result = {
        "suite": suite, "method": method, "seed": seed, "tag": tag, "overrides": overrides,
        "trained_as": {"method": config_method, "overrides": method_overrides},
        "metrics": {s: metrics[s] for s in splits}, "test_draw": test_draw(data),
        "box_threshold": metrics["box_threshold"], "box_threshold_chosen_on": metrics["box_threshold_chosen_on"],
        "by_monitor": score_by_monitor(folder, method, splits),
        "stage_configs": stage_configs(folder),
        "diagnostics": run_diagnostics(folder),
        "train_summary": summary, "config": config_to_dict(cfg),
        "reused_teachers": {"from": str(teachers_from), "stages": reused} if reused else None,
        "wall_seconds": {"train": round(train_seconds, 1), "evaluate": round(time.time() - t, 1),
                         "total": round(time.time() - start, 1), "resumed": resume},
        "peak_memory_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "commit": code_commit, "machine": machine(), "device": device_name(cfg),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "benchmarks/accuracy.py", "--suite", suite, "--seeds", str(seed),
                             "--methods", method] + (["--tag", tag] if tag else [])
                            + (["--eval-splits", ",".join(eval_splits)] if eval_splits else [])
                            + (["--reuse-teachers", str(teachers_from)] if reused else [])
                            + (["--", *overrides] if overrides else [])),
    }
    atomic_write_text(result_path(suite, method, seed, tag), json.dumps(result, indent=2))
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--methods", nargs="+", choices=[*METHODS, *BASELINES], default=list(METHODS),
                   help="kd-baseline: the KD-CI-CAM student trained without teachers (kd.teachers=none), the KD "
                        "paper's own baseline; not in the default list")
    p.add_argument("--tag", default="", help="names an ablation (its overrides are recorded)")
    p.add_argument("--eval-splits", type=lambda v: [x for x in v.split(",") if x], default=None, metavar="A,B",
                   help="comma-separated splits to score (default: the config's test splits; ablations: val)")
    p.add_argument("--reuse-teachers", type=Path, default=None, metavar="KD_RUN_DIR",
                   help="KD-CI-CAM ablations of the student only: copy the finished teachers of this run folder "
                        "(same teacher configs and seed) instead of training them again; recorded in the results")
    p.add_argument("--rescore", action="store_true",
                   help="re-evaluate the finished runs whose results files exist (no training), keeping their "
                        "training record")
    p.add_argument("--teachers-only", action="store_true",
                   help="kd-ci-cam: train only the teachers of each seed into its run folder (no results file); the "
                        "full run later trains the student only")
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rescore-one", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value (ablations; use with --tag; after "
                   "`--` when they follow --seeds or --methods, which take several values)")
    args = p.parse_args()
    if args.rescore_one:
        rescore(args.rescore_one)
        return 0
    if args.teachers_only:
        for seed in args.seeds:
            print(f"[teachers] {args.suite} kd-ci-cam seed {seed}", flush=True)
            train_teachers(args.suite, seed, args.tag, args.overrides)
        return 0
    if args.single:
        run_one(args.suite, args.methods[0], args.seeds[0], args.tag, args.overrides, args.eval_splits,
                args.reuse_teachers)
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    from kdcicam.errors import KdcicamError

    try:
        data = ensure_data(args.suite)
    except KdcicamError as e:
        sys.exit(str(e))
    from floors import ensure_floor

    cfg = suite_config(args.suite, args.overrides)
    ensure_floor(args.suite, data, list(cfg.data.test_splits), cfg.data.image_size)
    for seed in args.seeds:
        for method in args.methods:
            path = result_path(args.suite, method, seed, args.tag)
            if path.is_file() and args.rescore:
                print(f"[rescore] {path.name}", flush=True)
                subprocess.run([sys.executable, __file__, "--suite", args.suite, "--rescore-one", str(path)], check=True,
                               cwd=REPO)
                continue
            if path.is_file():
                print(f"[skip] {path.name} exists")
                continue
            print(f"[run] {args.suite} {method} seed {seed}", flush=True)
            cmd = [sys.executable, __file__, "--single", "--suite", args.suite, "--seeds", str(seed), "--methods",
                   method] + (["--tag", args.tag] if args.tag else []) + (["--eval-splits", ",".join(args.eval_splits)]
                                                                          if args.eval_splits else []) + (
                       ["--reuse-teachers", str(args.reuse_teachers)] if args.reuse_teachers else []) + (
                       ["--", *args.overrides] if args.overrides else [])
            subprocess.run(cmd, check=True, cwd=REPO)
            r = json.loads(path.read_text())
            split = next(s for s in ("test_conflict", "test", *r["metrics"]) if s in r["metrics"])
            m = r["metrics"][split]
            print(f"  {split}: top1_cls {m['top1_cls']:.2f} top1_loc {m['top1_loc']:.2f} "
                  f"maxboxaccv2 {m['max_box_acc_v2']:.2f} leakage {m.get('context_leakage', float('nan')):.2f} "
                  f"({r['wall_seconds']['total']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
