"""The ablation runs of a suite, scored on val only, and each one against the shipped config."""

from __future__ import annotations

from collections import defaultdict

from .formatting import fmt, fmt_delta
from .loading import LABEL, SHOWN
from .recipe import RUN_SPECIFIC_KEYS, flatten_config
from .runs import CHECKPOINTS, CHOSEN_BY, checkpoint_metrics, val_images
from .tables import COLUMNS, cell_value, chosen_cell, val_se_line

ABLATION_COLUMNS = [
    c
    for c in COLUMNS
    if c[0] in ("Top-1 Cls", "Top-1 Loc", "GT-known Loc", "MaxBoxAccV2", "Leakage ↓", "Train min")
]


#: what "Against default" compares: (label, results-file key or (key, IoU), metrics.csv key for the val
#: curves)
ABLATION_DELTAS = (
    ("MaxBoxAccV2", "max_box_acc_v2", "val/max_box_acc_v2"),
    ("@50", ("max_box_acc_v2_per_iou", "50"), None),
    ("@70", ("max_box_acc_v2_per_iou", "70"), None),
    ("leakage", "context_leakage", "val/context_leakage"),
    ("Top-1 Cls", "top1_cls", "val/top1_cls"),
    ("GT-known Loc", "gt_known_loc", "val/gt_known_loc"),
)


def _metric(m: dict, k: str | tuple[str, str]) -> float | None:
    return m.get(k) if isinstance(k, str) else (m.get(k[0]) or {}).get(k[1])


def _best_loc_epoch(run: dict) -> dict | None:
    """The val-curve row of the epoch a run's best_loc monitor kept (first best val MaxBoxAccV2, as the
    checkpoint callback keeps the first of equal scores)."""
    diagnostics = run.get("diagnostics") or {}
    curves = [
        c
        for c in (diagnostics.get("student") or diagnostics.get("model") or {}).get("curves") or []
        if CHOSEN_BY["best_loc"][0] in c
    ]
    return max(curves, key=lambda c: c[CHOSEN_BY["best_loc"][0]]) if curves else None


def _config_difference(run: dict, ref: dict) -> list[str]:
    """Config keys in which an ablation run differs from its reference beyond its own overrides."""
    own = {o.split("=", 1)[0] for o in run.get("overrides", [])}
    a, b = flatten_config(run.get("config") or {}), flatten_config(ref.get("config") or {})
    return sorted(k for k in set(a) & set(b) if a[k] != b[k] and k not in own and k not in RUN_SPECIFIC_KEYS)


def against_default(tagged: dict[str, dict[str, list[dict]]], main_runs: dict[str, list[dict]]) -> list[str]:
    """Each ablation against the shipped config, same method, seed and split: the suite's `default` runs
    (trained
    again for that purpose), else the main run's own val curve at its best_loc epoch (the same val split and
    checkpoint rule; MaxBoxAccV2 per IoU is not in the curves). Empty when neither exists."""
    base = tagged.get("default", {})
    lines: list[str] = []
    from_curves = False
    for tag, runs in sorted(tagged.items()):
        if tag == "default":
            continue
        for method in SHOWN:
            per_split: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
            seeds: dict[str, list[int]] = defaultdict(list)
            notes: set[str] = set()
            for r in runs.get(method, []):
                ref = next((b for b in base.get(method, []) if b["seed"] == r["seed"]), None)
                for split, m in r["metrics"].items():
                    if ref is not None and split in ref["metrics"]:
                        pairs = [
                            (name, _metric(m, k), _metric(ref["metrics"][split], k))
                            for name, k, _ in ABLATION_DELTAS
                        ]
                    elif split == "val" and ref is None:
                        main = next((b for b in main_runs.get(method, []) if b["seed"] == r["seed"]), None)
                        row = _best_loc_epoch(main) if main else None
                        if row is None:
                            continue
                        mine = checkpoint_metrics(
                            r, "best_loc", split
                        )  # the curve row is the best_loc epoch's
                        if mine is None:
                            continue
                        from_curves = True
                        pairs = [
                            (name, _metric(mine, k), row.get(ck)) for name, k, ck in ABLATION_DELTAS if ck
                        ]
                        notes.update(_config_difference(r, main))
                    else:
                        continue
                    seeds[split].append(r["seed"])
                    for name, a, b in pairs:
                        if a is not None and b is not None:
                            per_split[split][name].append(a - b)
            for split, deltas in per_split.items():
                text = ", ".join(f"{name} {fmt_delta(v)}" for name, v in deltas.items())
                extra = (
                    " (its config also differs from the main run's in: "
                    f"{', '.join(f'`{k}`' for k in sorted(notes))})"
                    if notes
                    else ""
                )
                lines.append(
                    f"- `{tag}` ({LABEL[method]}, {split}, seeds "
                    f"{','.join(map(str, sorted(seeds[split])))}): "
                    f"{text}{extra}."
                )
    if not lines:
        return []
    how = (
        "Against `default` (same method, seed and split)"
        if not from_curves
        else (
            "Against the shipped config (same method, seed and split): the suite's `default` run where one "
            "was trained; "
            "else the main run of the same seed, read from its own per-epoch val curve at its `best_loc` "
            "epoch — the "
            "same val split and the same checkpoint rule, without the per-IoU numbers, which the curves do "
            "not keep"
        )
    )
    return [how + ":", "", *lines]


def ablation_section(
    suite: str, tagged: dict[str, dict[str, list[dict]]], main_runs: dict[str, list[dict]] | None = None
) -> list[str]:
    """One table: every ablation run of the suite on the split it was scored on (val), so that a
    choice is made on val and test is never consulted."""
    n, disagree = val_images(suite, tagged.get("default") or next(iter(tagged.values()), {}))
    lines = [
        f"## {suite}: ablations (scored on val; test not consulted)",
        "",
        (
            "Each row is a run of `benchmarks/accuracy.py --tag TAG --eval-splits val OVERRIDES` (box "
            "threshold "
            "chosen on val too). `default` is the shipped config, trained again with the same seed for a "
            "like-for-like "
            "comparison. These numbers are read on the val split that also chose the checkpoint: the SE "
            "column is "
            "the noise of every val number in its row, and the chosen score is biased upward by the choice. "
            + val_se_line(suite, n, disagree)
        ),
        "",
        "| tag | method | checkpoint | seeds | overrides | split | val score that chose it (SE) | "
        + " | ".join(c for c, _ in ABLATION_COLUMNS)
        + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(ABLATION_COLUMNS),
    ]
    reused = False
    for tag, runs in sorted(tagged.items(), key=lambda kv: (kv[0] != "default", kv[0])):
        for method in SHOWN:
            rs = sorted(runs.get(method, []), key=lambda r: r["seed"])
            for split in sorted({sp for r in rs for sp in r["metrics"]}):
                scored = [r for r in rs if split in r["metrics"]]
                overrides = " ".join(scored[0].get("overrides", [])) or "–"
                mark = " †" if any(r.get("reused_teachers") for r in scored) else ""
                reused |= bool(mark)
                for kind in CHECKPOINTS:
                    sel = [(r, m) for r in scored if (m := checkpoint_metrics(r, kind, split)) is not None]
                    cells = [fmt([cell_value(get, m, r) for r, m in sel]) for _, get in ABLATION_COLUMNS]
                    seeds = ",".join(str(r["seed"]) for r, _ in sel) or "–"
                    lines.append(
                        f"| {tag} | {LABEL[method]}{mark} | {kind} | {seeds} | `{overrides}` | {split} | "
                        f"{chosen_cell([r for r, _ in sel], kind, n)} | " + " | ".join(cells) + " |"
                    )
    lines.append("")
    if reused:
        lines += [
            (
                "† Teachers copied from the main run of the same seed (`--reuse-teachers`, refused unless "
                "their "
                "configs match); the train time is the student's."
            ),
            "",
        ]
    compared = against_default(tagged, main_runs or {})
    if compared:
        lines += compared
    else:
        lines.append(
            "No comparison with the shipped config: this suite has no `default` run and no main run of the "
            "same seed with val curves."
        )
    return [*lines, ""]
