"""The metric tables: every method at each checkpoint, per split and per device, the teachers' test reading of
a spent
draw, and the one-line summaries of superseded recipes."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from . import loading
from .formatting import binomial_se, fmt, fmt_delta
from .loading import LABEL, METHODS, SHOWN, SPENT, floor_metrics, portable
from .runs import CHECKPOINTS, CHOSEN_BY, checkpoint_metrics, chosen_score, machine_line, val_images

# (label, getter) — all in percent except train time
COLUMNS = [
    ("Top-1 Cls", lambda m, r: m.get("top1_cls")),
    ("Top-1 Loc", lambda m, r: m.get("top1_loc")),
    ("GT-known Loc", lambda m, r: m["gt_known_loc"]),
    ("MaxBoxAccV2 @30", lambda m, r: m["max_box_acc_v2_per_iou"]["30"]),
    ("@50", lambda m, r: m["max_box_acc_v2_per_iou"]["50"]),
    ("@70", lambda m, r: m["max_box_acc_v2_per_iou"]["70"]),
    ("MaxBoxAccV2", lambda m, r: m["max_box_acc_v2"]),
    ("PxAP", lambda m, r: m.get("pxap")),
    ("Leakage ↓", lambda m, r: m.get("context_leakage")),
    (
        "Train min",
        lambda m, r: r["wall_seconds"]["train"] / 60 if r["wall_seconds"]["train"] is not None else None,
    ),
]


def val_se_line(suite: str, n: int | None, disagree: list[str]) -> str:
    if n is None:
        return (
            f"Val split size of {suite}: unknown (no metadata, results file or setting says): no SE stated. "
        )
    line = (
        f"Val: n = {n} images, so a val score's SE (defined at the top of this page) is at most "
        f"{50 / math.sqrt(n):.2f} points. "
    )
    if disagree:
        line += f"**The sources of n disagree** (first one used): {'; '.join(disagree)}. "
    return line.rstrip()


def chosen_cell(runs: list[dict], kind: str, n: int | None) -> str:
    """The val score that chose checkpoint ``kind`` and its SE, mean over ``runs``."""
    if kind not in CHOSEN_BY or not runs:
        return "–"
    scores = [s for s in (chosen_score(r, kind) for r in runs) if s is not None]
    if n is None:
        return fmt(scores)
    if not scores:
        return f"– (SE ≤ {50 / math.sqrt(n):.2f})"
    return f"{statistics.fmean(scores):.2f} (SE {statistics.fmean(binomial_se(s, n) for s in scores):.2f})"


def cell_value(get, metrics: dict, run: dict) -> float | None:
    try:
        return get(metrics, run)
    except (KeyError, TypeError):
        return None


def checkpoint_rows(
    runs: dict[str, list[dict]], split: str, columns, n: int | None, prefix: str = ""
) -> list[str]:
    """One row per method scored on ``split`` and per checkpoint of CHECKPOINTS: seeds, the val score that
    chose
    it (SE), ``columns``. A checkpoint no file scored shows "–"."""
    rows = []
    for method in SHOWN:
        rs = sorted((r for r in runs.get(method, []) if split in r["metrics"]), key=lambda r: r["seed"])
        if not rs:
            continue
        for kind in CHECKPOINTS:
            sel = [(r, m) for r in rs if (m := checkpoint_metrics(r, kind, split)) is not None]
            seeds = ",".join(str(r["seed"]) for r, _ in sel) or "–"
            cells = [fmt([cell_value(get, m, r) for r, m in sel]) for _, get in columns]
            rows.append(
                f"| {prefix}{LABEL[method]} | {kind} | {seeds} | {chosen_cell([r for r, _ in sel], kind, n)} "
                "| " + " | ".join(cells) + " |"
            )
    return rows


def table(
    runs: dict[str, list[dict]],
    split: str,
    suite: str = "",
    results: Path | None = None,
    n: int | None = None,
) -> list[str]:
    """The split's table: every method at each checkpoint of CHECKPOINTS, then the centre-Gaussian floor."""
    lines = [
        "| method | checkpoint | seeds | val score that chose it (SE) | "
        + " | ".join(c for c, _ in COLUMNS)
        + " |",
        "|---|---|---|---|" + "---|" * len(COLUMNS),
    ]
    lines += checkpoint_rows(runs, split, COLUMNS, n)
    floor = floor_metrics(suite, split, results) if suite else None
    if floor is not None:
        cells = [cell_value(get, floor, {"wall_seconds": {"train": None}}) for _, get in COLUMNS]
        lines.append(
            "| *centre Gaussian (floor)* | – | – | – | "
            + " | ".join("–" if v is None else f"{v:.2f}" for v in cells)
            + " |"
        )
    return lines


#: suites on the same data, shown side by side by device (the CPU recipe and the paper-scale GPU one)
DEVICE_FAMILY = {"cub50": ("cub50", "cub50-gpu")}


def device_comparison(
    groups: dict[tuple[str, str], dict[str, list[dict]]], family: str = "cub50"
) -> list[str]:
    """One test table with a row per (suite, device, method), once a suite of the family ran elsewhere
    than the first one's device (the GPU rows beside the CPU rows)."""
    rows = [
        (suite, runs)
        for suite in DEVICE_FAMILY[family]
        for (s, tag), runs in groups.items()
        if s == suite and not tag
    ]
    devices = {machine_line(r) for _, runs in rows for rs in runs.values() for r in rs}
    if len(devices) < 2:
        return []
    cols = [
        c
        for c in COLUMNS
        if c[0] in ("Top-1 Cls", "Top-1 Loc", "GT-known Loc", "MaxBoxAccV2", "PxAP", "Train min")
    ]
    n, _ = val_images(family)
    lines = [
        f"**{family} by device** (test; each suite's own recipe, see its section)",
        "",
        "| suite | device | method | checkpoint | seeds | val score that chose it (SE) | "
        + " | ".join(c for c, _ in cols)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(cols),
    ]
    for suite, runs in rows:
        by_device: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for method, rs in runs.items():
            for r in rs:
                by_device[machine_line(r)][method].append(r)
        for device, device_runs in by_device.items():
            lines += checkpoint_rows(device_runs, "test", cols, n, prefix=f"{suite} | {device} | ")
    return [*lines, ""]


def teachers_diagnostic(
    path: Path,
    heading: str = "The reading that spent this test pair: the KD-CI-CAM teachers on test",
    runs: dict[str, list[dict]] | None = None,
) -> list[str]:
    """The teachers scored on test (teachers_<suite>.json, benchmarks/teachers_on_test.py): in a spent section,
    the diagnostic that read its test pair; in the current one, the control scored after the final runs."""
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    per_stage: dict[str, list[dict]] = defaultdict(list)
    for r in data["runs"]:
        per_stage[r["stage"]].append(r)
    splits = sorted(
        {s for rs in per_stage.values() for r in rs for s in r["metrics"]}, key=lambda s: (s != "test", s)
    )
    keys = (("Top-1 Cls", "top1_cls"), ("MaxBoxAccV2", "max_box_acc_v2"), ("Leakage ↓", "context_leakage"))
    lines = [
        f"### {heading}",
        "",
        (
            f"`{path.name}` (commit `{data['commit'][:12]}`, {data['date']}): {data['what']}. Each teacher's "
            "`best.ckpt` (the cls teacher's kept by val Top-1 Cls, the loc teacher's by val GT-known Loc; "
            "these "
            "files score no other checkpoint), box threshold chosen on val. Command: "
            f"`{portable(data['command'])}`."
        ),
        "",
        "| run | seeds | "
        + " | ".join(f"{label} {split}" for split in splits for label, _ in keys)
        + " |",
        "|---|---|" + "---|" * (len(splits) * len(keys)),
    ]
    for stage, rs in sorted(per_stage.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        lines.append(
            f"| {stage.replace('_', ' ')} | {','.join(str(r['seed']) for r in rs)} | "
            + " | ".join(fmt([r["metrics"][split].get(k) for r in rs]) for split in splits for _, k in keys)
            + " |"
        )
    return [*lines, "", *_student_minus_rows(per_stage, runs or {}, splits, keys)]


def _student_minus_rows(
    per_stage: dict[str, list[dict]], runs: dict[str, list[dict]], splits: list[str], keys: tuple
) -> list[str]:
    """The KD-CI-CAM student (its benchmark runs' scored checkpoint) minus each row, and each row minus CAM,
    seed by seed."""
    student = {r["seed"]: r["metrics"] for r in runs.get("kd-ci-cam", [])}
    cam = {r["seed"]: r["metrics"] for r in runs.get("cam", [])}
    out = []
    for stage, rs in sorted(per_stage.items()):
        name = stage.replace("_", " ")
        row = {r["seed"]: r["metrics"] for r in rs}
        for label, minuend, subtrahend in (("KD-CI-CAM student − " + name, student, row), (name + " − CAM", row, cam)):
            for split in splits:
                seeds = sorted(s for s in row if split in minuend.get(s, {}) and split in subtrahend.get(s, {}))
                if not seeds:
                    continue
                a, b = ({s: side[s][split] for s in seeds} for side in (minuend, subtrahend))
                parts = [
                    f"{key_label} {fmt_delta([a[s][k] - b[s][k] for s in seeds])}"
                    for key_label, k in keys
                    if all(a[s].get(k) is not None and b[s].get(k) is not None for s in seeds)
                ]
                out.append(f"- {label}, {split}, seeds {','.join(map(str, seeds))}: " + ", ".join(parts) + ".")
    return [*out, ""] if out else []


def archive_section() -> list[str]:
    """Superseded recipes (benchmarks/results/archive/<name>/): one line each, for the record."""
    lines = []
    for folder in (
        sorted((loading.RESULTS / "archive").glob("*")) if (loading.RESULTS / "archive").is_dir() else []
    ):
        if folder.name in SPENT:
            continue  # rendered in full by spent_sections
        runs: dict[str, list[dict]] = defaultdict(list)
        for path in sorted(folder.glob("accuracy_*.json")):
            r = json.loads(path.read_text())
            runs[r["method"]].append(r)
        if not runs:
            continue
        any_run = next(iter(runs.values()))[0]
        cfg = any_run["config"]
        parts = []
        for method in METHODS:
            rs = [r for r in runs.get(method, []) if "test" in r["metrics"]]
            if rs:
                parts.append(
                    f"{LABEL[method]} (seeds {','.join(str(r['seed']) for r in rs)}) Top-1 Cls "
                    f"{fmt([r['metrics']['test']['top1_cls'] for r in rs])}, Top-1 Loc "
                    f"{fmt([r['metrics']['test']['top1_loc'] for r in rs])}, MaxBoxAccV2 "
                    f"{fmt([r['metrics']['test']['max_box_acc_v2'] for r in rs])}"
                )
        lines.append(
            f"- `{folder.name}` ({any_run['suite']}, output stride {cfg['model']['output_stride'] or 32}, "
            f"batch {cfg['data']['batch_size']}, {cfg['optim']['epochs']} epochs, lr {cfg['optim']['lr']}; "
            f"commits "
            + ", ".join(sorted({f"`{r['commit'][:12]}`" for rs in runs.values() for r in rs}))
            + "), test: "
            + "; ".join(parts)
            + "."
        )
    if not lines:
        return []
    return [
        "## Superseded recipes (`benchmarks/results/archive/`)",
        "",
        ("Results of earlier shipped recipes, "
        "kept for the record; the tables above "
        "replace them. Each run's "
        "`best.ckpt` (kept by val MaxBoxAccV2); these files score no other checkpoint."),
        "",
        *lines,
        "",
    ]
