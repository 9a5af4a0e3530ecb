"""Questions asked of loaded runs: which checkpoint a metrics block is, which val score chose it, the seeds
every
method has, the val split's size, paired differences between methods."""

from __future__ import annotations

import statistics

from . import loading
from .loading import METHODS

#: the checkpoints every table shows: the two val monitors' (docs/method.md §8) and the last epoch's
CHECKPOINTS = ("best_cls", "best_loc", "last")


#: the val metric each monitor keeps its checkpoint by (kdcicam.training.pipeline.DILEMMA_MONITORS):
#: metrics.csv key,
#: and its label in the text
CHOSEN_BY = {
    "best_cls": ("val/top1_cls", "val Top-1 Cls"),
    "best_loc": ("val/max_box_acc_v2", "val MaxBoxAccV2"),
}


#: val images per suite where neither the data's metadata nor a results file says: synthetic v1 / v2 from
#: their
#: generators' defaults; cub50: `kdcicam data cub` holds out round(10 % of 30) = 3 train images per class, 50
#: classes
VAL_IMAGES_BY_CONFIG = {"synthetic": 400, "synthetic-v2": 400, "cub50": 150, "cub50-gpu": 150}


#: where each suite's data lives (benchmarks/accuracy.py SUITES), for its val metadata
SUITE_DATA_DIR = {
    "synthetic": "data/synth",
    "synthetic-v2": "data/synth_v2",
    "cub50": "data/cub50",
    "cub50-gpu": "data/cub50",
}


def stage_summary(run: dict) -> dict:
    """The training summary of the stage a run's numbers come from (the student of a KD run)."""
    summary = run.get("train_summary") or {}
    return summary.get("student", summary) if "monitor" not in summary else summary


def monitor_kind(run: dict) -> str | None:
    """Which of CHECKPOINTS a run's ``best.ckpt`` (its ``metrics``) is: the one whose monitor it was kept by
    (the
    monitor in effect, from the training summary; else the config's ``eval.monitor``)."""
    monitor = stage_summary(run).get("monitor") or ((run.get("config") or {}).get("eval") or {}).get(
        "monitor"
    )
    return next((kind for kind, (key, _) in CHOSEN_BY.items() if key == monitor), None)


def checkpoint_metrics(run: dict, kind: str, split: str) -> dict | None:
    """A run's metrics on ``split`` at checkpoint ``kind``: its ``by_monitor`` entry, else its main metrics
    where
    ``best.ckpt`` is that checkpoint; None where the file has neither (an older file)."""
    entry = ((run.get("by_monitor") or {}).get(kind) or {}).get("metrics") or {}
    if split in entry:
        return entry[split]
    return run["metrics"].get(split) if kind == monitor_kind(run) else None


def chosen_score(run: dict, kind: str) -> float | None:
    """The val score that chose checkpoint ``kind`` (None for ``last``, or where the file does not say): the
    training summary's record, else the best value of the stage's val curve."""
    if kind not in CHOSEN_BY:
        return None
    summary = stage_summary(run)
    score = ((summary.get("by_monitor") or {}).get(kind) or {}).get("score")
    if score is None and kind == monitor_kind(run):
        score = summary.get("best_score")
    if score is None:
        diagnostics = run.get("diagnostics") or {}
        curves = (diagnostics.get("student") or diagnostics.get("model") or {}).get("curves") or []
        values = [c[CHOSEN_BY[kind][0]] for c in curves if CHOSEN_BY[kind][0] in c]
        score = max(values) if values else None
    return score


def val_images(suite: str, runs: dict[str, list[dict]] | None = None) -> tuple[int | None, list[str]]:
    """The val split's image count n, and any disagreement between its sources: the data's metadata (when the
    dataset is here), a results file scored on val, the suite's data settings; the first that answers wins."""
    found: list[tuple[str, int]] = []
    meta = loading.REPO / SUITE_DATA_DIR.get(suite, "-") / "val" / "class_labels.txt"
    if meta.is_file():
        found.append(
            (
                f"`{meta.relative_to(loading.REPO).as_posix()}`",
                sum(1 for line in meta.read_text(encoding="utf-8-sig").splitlines() if line.strip()),
            )
        )
    for rs in (runs or {}).values():
        for r in rs:
            for metrics in [r["metrics"]] + [
                v.get("metrics") or {} for v in (r.get("by_monitor") or {}).values()
            ]:
                n = (metrics.get("val") or {}).get("num_images")
                if n:
                    found.append(
                        (
                            f"the results file of {r['suite']} {r.get('tag') or ''} {r['method']} seed "
                            f"{r['seed']}".replace("  ", " "),
                            int(n),
                        )
                    )
    if suite in VAL_IMAGES_BY_CONFIG:
        found.append(("the suite's data settings", VAL_IMAGES_BY_CONFIG[suite]))
    if not found:
        return None, []
    n = found[0][1]
    return n, [f"{where} says {count}" for where, count in found if count != n]


def metric_mean(runs: dict[str, list[dict]], method: str, split: str, key: str) -> float | None:
    vals = [r["metrics"][split][key] for r in runs.get(method, []) if split in r["metrics"]]
    vals = [v for v in vals if v is not None]
    return statistics.fmean(vals) if vals else None


def seeds_of(runs: dict[str, list[dict]]) -> list[int]:
    """Seeds for which every method has a run."""
    per_method = [{r["seed"] for r in runs.get(m, [])} for m in METHODS]
    return sorted(set.intersection(*per_method)) if per_method else []


def paired_deltas(
    runs: dict[str, list[dict]], split: str, key: str, method: str, seeds: list[int], base: str = "cam"
) -> list[float]:
    """``method`` minus ``base`` on the same seed, for each of ``seeds``."""
    by_seed = {
        m: {r["seed"]: r["metrics"][split][key] for r in runs.get(m, []) if split in r["metrics"]}
        for m in (method, base)
    }
    return [by_seed[method][s] - by_seed[base][s] for s in seeds]


def seed_minutes(runs: dict[str, list[dict]]) -> list[float]:
    """Wall minutes of all three methods, per complete seed."""
    return [
        sum(r["wall_seconds"]["total"] for m in METHODS for r in runs[m] if r["seed"] == s) / 60
        for s in seeds_of(runs)
    ]


def machine_line(run: dict) -> str:
    """The device that trained a run: a GPU by name (its host CPU after it), else the CPU and its cores."""
    cpu = f"{run['machine']['cpu']}, {run['machine']['cores']} cores"
    device = run.get("device", "")
    return f"{device} (host: {cpu})" if device and not device.startswith("CPU") else cpu
