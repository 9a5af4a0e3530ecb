"""Pictures of what a model localises: heatmap overlays (:mod:`.overlays`), BoxAcc-versus-threshold curves and
other charts (:mod:`.charts`), and one self-contained HTML report comparing runs (:mod:`.html_report`, reading
the run folders through :mod:`.runs`).

Everything is drawn off-screen (OpenCV, Pillow, and matplotlib's Agg canvas without pyplot, so importing this
package never changes a user's matplotlib backend).
"""

from __future__ import annotations

from ..data.atomic import atomic_write_bytes  # re-exported: callers (kdcicam localize) write through it
from .charts import box_acc_curves_png, leakage_bars_png, training_curves_png
from .html_report import render_report, write_report
from .overlays import draw_boxes, heatmap_overlay, render_result, save_doc_overlays, save_overlay
from .runs import RunInfo, load_runs

__all__ = [
    "RunInfo",
    "atomic_write_bytes",
    "box_acc_curves_png",
    "draw_boxes",
    "heatmap_overlay",
    "leakage_bars_png",
    "load_runs",
    "render_report",
    "render_result",
    "save_doc_overlays",
    "save_overlay",
    "training_curves_png",
    "write_report",
]
