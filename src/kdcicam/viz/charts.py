"""Charts as PNG bytes: BoxAcc versus CAM threshold, val metrics per epoch, context-leakage bars. Drawn on
matplotlib's Agg canvas without pyplot, so importing them never changes a user's matplotlib backend."""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def box_acc_curves_png(curves: dict[str, dict[str, Any] | None], title: str = "") -> bytes | None:
    """BoxAcc (%) versus CAM threshold, one panel per IoU threshold, one line per run.

    ``curves``: run label → the ``box_acc_curve`` of metrics.json (``thresholds`` + one list per IoU).
    """
    given = {k: v for k, v in curves.items() if v and v.get("thresholds")}
    if not given:
        return None
    ious = sorted({k for c in given.values() for k in c if k != "thresholds"}, key=int)
    fig = _figure(3.4 * len(ious) + 0.4, 3.0)
    axes = fig.subplots(1, len(ious), sharey=True, squeeze=False)[0]
    for ax, iou in zip(axes, ious, strict=False):
        for label, curve in given.items():
            if iou not in curve:
                continue
            t, acc = np.asarray(curve["thresholds"]), np.asarray(curve[iou])
            (line,) = ax.plot(t, acc, label=label, linewidth=1.6)
            best = int(np.argmax(acc))
            ax.plot([t[best]], [acc[best]], "o", color=line.get_color(), markersize=4)
        ax.set_title(f"IoU ≥ {int(iou) / 100:.1f}")
        ax.set_xlabel("CAM threshold")
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("BoxAcc (%)")
    axes[-1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    return _figure_png(fig)


#: the per-epoch val metrics of the training-curves figure: (metrics.csv key, panel title)
CURVE_PANELS = (
    ("val/top1_cls", "val Top-1 Cls (%)"),
    ("val/top1_loc", "val Top-1 Loc (%)"),
    ("val/max_box_acc_v2", "val MaxBoxAccV2 (%)"),
)


def training_curves_png(
    curves: dict[str, list[dict[str, float]]], floor: float | None = None
) -> bytes | None:
    """Val Top-1 Cls, Top-1 Loc and MaxBoxAccV2 per epoch, one line per run (or stage), the best epoch of
    each marked: where classification and localization peak apart, the dilemma shows. ``floor``: a
    MaxBoxAccV2 reference line (e.g. the centre-Gaussian map's)."""
    given = {k: v for k, v in curves.items() if any(key in row for row in v for key, _ in CURVE_PANELS)}
    if not given:
        return None
    fig = _figure(3.4 * len(CURVE_PANELS) + 0.4, 3.0)
    axes = fig.subplots(1, len(CURVE_PANELS), squeeze=False)[0]
    for ax, (key, title) in zip(axes, CURVE_PANELS, strict=False):
        for label, rows in given.items():
            pts = [(r["epoch"], r[key]) for r in rows if key in r]
            if not pts:
                continue
            e, v = np.asarray(pts).T
            (line,) = ax.plot(e, v, label=label, linewidth=1.6, marker=".")
            best = int(np.argmax(v))
            ax.plot([e[best]], [v[best]], "o", color=line.get_color(), markersize=6, fillstyle="none")
        if floor is not None and key == "val/max_box_acc_v2":
            ax.axhline(floor, color="grey", linestyle="--", linewidth=1, label="centre Gaussian")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    return _figure_png(fig)


def leakage_bars_png(values: dict[str, dict[str, float | None]]) -> bytes | None:
    """Context leakage (% of CAM mass outside the object), grouped by split, one bar per run."""
    splits = list(dict.fromkeys(s for per in values.values() for s, v in per.items() if v is not None))
    if not splits:
        return None
    runs = list(values)
    fig = _figure(max(4.0, 1.2 + 1.1 * len(splits) * max(1, len(runs)) * 0.6), 3.0)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(runs))
    x = np.arange(len(splits))
    for i, run in enumerate(runs):
        heights = [values[run].get(s) for s in splits]
        bars = ax.bar(
            x + (i - (len(runs) - 1) / 2) * width,
            [h if h is not None else 0.0 for h in heights],
            width,
            label=run,
        )
        for bar, h in zip(bars, heights, strict=False):
            if h is not None:
                ax.annotate(
                    f"{h:.1f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    ax.set_xticks(x, splits)
    ax.set_ylabel("context leakage (%) — lower is better")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _figure_png(fig)
