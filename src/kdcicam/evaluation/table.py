"""The metrics table of ``kdcicam evaluate``, the demo and the report: one row per metric, one column per
(run, split), from the dicts :meth:`WSOLEvaluator.compute` returns."""
from __future__ import annotations

from typing import Any

TABLE_ROWS = [("Top-1 Cls", "top1_cls"), ("Top-5 Cls", "top5_cls"), ("Top-1 Loc", "top1_loc"),
              ("Top-5 Loc", "top5_loc"), ("GT-known Loc", "gt_known_loc"), ("MaxBoxAcc", ("max_box_acc", "50")),
              ("MaxBoxAccV2", "max_box_acc_v2"), ("PxAP", "pxap"), ("PIoU", "piou"),
              ("Context leakage", "context_leakage")]


def metric_value(metrics: dict, key: Any) -> float | None:
    value = metrics.get(key[0], {}).get(key[1]) if isinstance(key, tuple) else metrics.get(key)
    return None if value is None else float(value)


def format_table(columns: dict[str, dict]) -> str:
    """Rows = metrics, one column per (run, split); absent metrics shown as '-'."""
    names = list(columns)
    width = max([16] + [len(n) + 2 for n in names])
    lines = ["metric".ljust(18) + "".join(n.rjust(width) for n in names)]
    for label, key in TABLE_ROWS:
        values = [metric_value(columns[n], key) for n in names]
        if all(v is None for v in values):
            continue
        lines.append(label.ljust(18) + "".join(("-" if v is None else f"{v:.2f}").rjust(width) for v in values))
    return "\n".join(lines)
