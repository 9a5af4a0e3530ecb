"""One self-contained HTML report comparing runs: metrics side by side, the charts, the training
diagnostics and a grid of the same images under each run's CAM. Every image is embedded as a base64 PNG, so
the file needs no other and can be mailed or attached as it is."""

from __future__ import annotations

import base64
import datetime
import html
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..data.atomic import atomic_write_bytes
from ..errors import KdcicamError
from .charts import box_acc_curves_png, leakage_bars_png, training_curves_png
from .overlays import GT_COLOR, draw_boxes, png_bytes, render_result
from .runs import Evaluate, RunInfo, load_runs

if TYPE_CHECKING:  # pragma: no cover
    from ..inference import LocalizationResult

log = logging.getLogger(__name__)


#: splits whose images show the confounder at work; shown first in the report's image grid
CONFOUNDER_SPLITS = ("test_conflict",)


def _pick_images(runs: list[RunInfo], splits: list[str], num_images: int):
    """(split, image_id, path, gt boxes) for the grid: confounder splits first, evenly spaced within
    each split (so every class shows up), shared by all runs. Returns (picks, note)."""
    from ..data.metadata import read_metadata

    root = Path(runs[0].config.data.root)
    if not (root / "dataset.yaml").is_file():
        return [], f"data folder {root} not found (data.root of {runs[0].label}); image grid skipped"
    ordered = [s for s in splits if s in CONFOUNDER_SPLITS] + [
        s for s in splits if s not in CONFOUNDER_SPLITS
    ]
    available = [s for s in ordered if (root / s / "image_ids.txt").is_file()]
    if not available or num_images <= 0:
        return [], "no split with images to show" if num_images > 0 else ""
    per = [
        num_images // len(available) + (1 if i < num_images % len(available) else 0)
        for i in range(len(available))
    ]
    picks = []
    for split, n in zip(available, per, strict=False):
        md = read_metadata(root / split)
        if n <= 0:
            continue
        idx = np.unique(np.linspace(0, len(md) - 1, num=min(n, len(md))).round().astype(int))
        for i in idx:
            image_id = md.image_ids[int(i)]
            picks.append(
                (
                    split,
                    image_id,
                    md.image_path(image_id),
                    np.asarray(md.boxes.get(image_id, []), dtype=np.float64).reshape(-1, 4),
                    md.class_names[md.class_labels[image_id]]
                    if md.class_names
                    else str(md.class_labels[image_id]),
                )
            )
    return picks, ""


def _best_iou(result: LocalizationResult, gt: np.ndarray, size: int) -> float | None:
    """The evaluator's IoU (on the score-map grid, GT rescaled with its ``int()`` rule)."""
    from ..evaluation import box_iou_matrix, resize_box

    if not len(gt):
        return None
    if not len(result.grid_boxes):
        return 0.0
    gt_grid = np.array([resize_box(b, result.size, (size, size)) for b in gt])
    return float(box_iou_matrix(result.grid_boxes, gt_grid).max())


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _image_grid_html(
    runs: list[RunInfo], splits: list[str], num_images: int, device: str | None, cell: int
) -> str:
    from ..data.dataset import load_image_rgb
    from ..errors import ImageReadError
    from ..inference import Localizer

    picks, note = _pick_images(runs, splits, num_images)
    if not picks:
        return f"<p class='note'>{html.escape(note)}</p>" if note else ""
    images: list[Image.Image | None] = []
    for _split, _image_id, path, _gt, _cls in picks:
        try:
            images.append(load_image_rgb(path))
        except ImageReadError as e:
            images.append(None)
            log.warning("report: %s", e)
    results: dict[str, list] = {}
    thresholds: dict[str, float] = {}
    for run in runs:
        threshold = run.metrics.get("box_threshold")
        loc = Localizer.from_checkpoint(
            run.checkpoint, device=device or "auto", threshold=None if threshold is None else float(threshold)
        )
        thresholds[run.label] = loc.threshold
        good = [im for im in images if im is not None]
        it = iter(loc.predict(good))
        results[run.label] = [next(it) if im is not None else None for im in images]
    head = "".join(
        f"<th>{html.escape(r.label)}<br><span class='sub'>box threshold {thresholds[r.label]:.2f}</span></th>"
        for r in runs
    )
    rows = [f"<table class='grid'><thead><tr><th>image</th>{head}</tr></thead><tbody>"]
    for k, (split, image_id, _path, gt, cls) in enumerate(picks):
        image = images[k]
        if image is None:
            continue
        scale = cell / max(image.size)
        size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        plain = image.resize(size, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)
        plain = draw_boxes(plain, gt * scale, GT_COLOR)
        caption = f"{split} · {cls}"
        cells = [
            (
                f"<td><img src='{_data_uri(png_bytes(plain))}' alt='{html.escape(image_id, quote=True)}'>"
                f"<div class='cap'>{html.escape(caption)}<br><span "
                f"class='sub'>{html.escape(image_id)}</span></div></td>"
            )
        ]
        for run in runs:
            result = results[run.label][k]
            picture = render_result(image, result, gt, max_side=cell)
            iou = _best_iou(result, gt, result.cam.shape[0])
            right = "" if iou is None else (" ✓" if iou >= 0.5 and result.class_name == cls else "")
            iou_text = "" if iou is None else f" · IoU {iou:.2f}"
            cap = f"{result.class_name} {result.score:.2f}{iou_text}{right}"
            cells.append(
                f"<td><img src='{_data_uri(png_bytes(picture))}' alt='{html.escape(run.label, quote=True)}'>"
                f"<div class='cap'>{html.escape(cap)}</div></td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</tbody></table>")
    legend = (
        "<p class='note'>Green: ground-truth boxes. Red: the predicted box at each run's box threshold "
        "(chosen on the validation split), labelled with the top-1 class and its probability. ✓ = right "
        "class "
        "and IoU ≥ 0.5 (Top-1 Loc). Heatmap: the run's localization map, min-max normalised.</p>"
    )
    return legend + "".join(rows)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}
table.metrics td,table.metrics th{border:1px solid #ccc;padding:4px 10px;text-align:right}
table.metrics th{background:#f4f4f4}table.metrics td:first-child,table.metrics th:first-child{text-align:left}
table.metrics td.best{font-weight:bold;background:#eef7ee}
table.grid td,table.grid th{padding:4px;vertical-align:top;text-align:center;font-size:0.85em}
.cap{max-width:220px;margin:auto}.sub{color:#777;font-size:0.85em}.note{color:#555;font-size:0.9em}
img{display:block;margin:auto}
"""


#: metrics where a lower value is better (the best column is highlighted accordingly)
_LOWER_IS_BETTER = {"context_leakage"}


def _floors(runs: list[RunInfo], splits: list[str]) -> dict[str, dict[str, Any]]:
    """The centre-Gaussian floor of each split, where ``kdcicam baseline`` computed it for the first run's
    data
    (same metadata, val split and evaluation grid); nothing is computed here."""
    from ..evaluation.baselines import cached_floor

    data = runs[0].config.data
    floors = {s: cached_floor(data.root, s, data.val_split, data.image_size) for s in splits}
    return {s: f for s, f in floors.items() if f is not None}


def _metrics_table_html(runs: list[RunInfo], splits: list[str]) -> str:
    from ..evaluation.table import TABLE_ROWS, metric_value

    floors = _floors(runs, splits)
    # (label, split, metrics, is a run); the floor of a split comes after that split's runs
    columns = [(run.label, split, run.metrics.get(split) or {}, True) for split in splits for run in runs]
    columns = [
        c
        for split in splits
        for c in [
            *(c for c in columns if c[1] == split),
            *(
                [("floor: centre Gaussian", split, floors[split]["metrics"], False)]
                if split in floors
                else []
            ),
        ]
    ]
    head = "".join(
        f"<th>{html.escape(label)}<br><span class='sub'>{html.escape(split)}</span></th>"
        for label, split, _, _ in columns
    )
    rows = [f"<table class='metrics'><thead><tr><th>metric</th>{head}</tr></thead><tbody>"]
    for label, key in TABLE_ROWS:
        values = [metric_value(metrics, key) for _, _, metrics, _ in columns]
        if all(v is None for v in values):
            continue
        name = key if isinstance(key, str) else key[0]
        cells = []
        for (_, split, _, is_run), v in zip(columns, values, strict=False):
            same_split = [
                w
                for (_, s, _, r), w in zip(columns, values, strict=False)
                if s == split and r and w is not None
            ]
            best = None
            if len(same_split) > 1:
                best = min(same_split) if name in _LOWER_IS_BETTER else max(same_split)
            css = " class='best'" if is_run and v is not None and best is not None and v == best else ""
            cells.append(f"<td{css}>{'-' if v is None else f'{v:.2f}'}</td>")
        rows.append(f"<tr><td>{html.escape(label)}</td>{''.join(cells)}</tr>")
    thresholds = []
    runs_by_label = {run.label: run for run in runs}
    for label, split, _, is_run in columns:
        if not is_run:
            thresholds.append(f"{floors[split]['box_threshold']:.2f}")
            continue
        run = runs_by_label[label]
        t = run.metrics.get("box_threshold")
        given = " (given)" if run.metrics.get("box_threshold_chosen_on") == "given" else ""
        thresholds.append("-" if t is None else f"{float(t):.2f}{given}")
    rows.append(
        "<tr><td>Box threshold (chosen on val)</td>" + "".join(f"<td>{t}</td>" for t in thresholds) + "</tr>"
    )
    rows.append("</tbody></table>")
    if floors:
        sigma = next(iter(floors.values()))["sigma"]
        rows.append(
            f"<p class='note'>floor: the same centred Gaussian for every image (σ {sigma} of the grid, "
            "chosen on val by <code>kdcicam baseline</code>): what a map that ignores the image scores.</p>"
        )
    return "".join(rows)


def _training_html(runs: list[RunInfo]) -> str:
    """Per-epoch val curves of every run and KD stage, and the last epoch's mechanism diagnostics
    (:mod:`kdcicam.diagnostics`), from each stage's metrics.csv."""
    from ..diagnostics import SUMMARY_KEYS, dilemma, epoch_curves, final_diagnostics, run_stages

    curves: dict[str, list[dict[str, float]]] = {}
    for run in runs:
        for stage, folder in run_stages(run.path).items():
            epochs = epoch_curves(folder / "metrics.csv")
            if epochs:
                curves[run.label if stage == "model" else f"{run.label} ({stage.replace('_', ' ')})"] = epochs
    if not curves:
        return "<p class='note'>No metrics.csv in the run folders (trained elsewhere?).</p>"
    parts = []
    png = training_curves_png(curves)
    if png is not None:
        parts.append(
            "<p class='note'>Validation metrics per epoch; a circle marks each curve's best epoch. When "
            "Top-1 Cls peaks at another epoch than the localization metrics, one checkpoint cannot have "
            "both at their best (the dilemma); <code>best_cls.ckpt</code> and <code>best_loc.ckpt</code> "
            "keep each.</p>"
        )
        parts.append(f"<img src='{_data_uri(png)}' alt='training curves'>")
    finals = {label: final_diagnostics(rows) for label, rows in curves.items()}
    shares = sorted(
        {
            k.split("train/grad_share_", 1)[1]
            for f in finals.values()
            for k in f
            if k.startswith("train/grad_share_")
        }
    )
    head = "".join(f"<th>{html.escape(label)}</th>" for label, _, _ in SUMMARY_KEYS)
    head += (
        "".join(f"<th>grad share {html.escape(t)}</th>" for t in shares) + "<th>dilemma gap (Loc / Cls)</th>"
    )
    rows = [f"<table class='metrics'><thead><tr><th>run</th>{head}</tr></thead><tbody>"]
    for label, f in finals.items():
        cells = [("-" if f.get(key) is None else pattern.format(f[key])) for _, key, pattern in SUMMARY_KEYS]
        cells += [
            ("-" if f.get(f"train/grad_share_{t}") is None else f"{f[f'train/grad_share_{t}']:.3f}")
            for t in shares
        ]
        d = dilemma(curves[label])
        gap = (
            f"{d.get('top1_loc_gap_at_best_cls', float('nan')):.2f} / "
            f"{d.get('cls_gap_at_best_loc', float('nan')):.2f}"
            if d
            else "-"
        )
        rows.append(
            f"<tr><td>{html.escape(label)}</td>" + "".join(f"<td>{c}</td>" for c in [*cells, gap]) + "</tr>"
        )
    rows.append("</tbody></table>")
    parts.append(
        "<p class='note'>Mechanisms, last epoch: context-pool updates per class and r·N, the pool's "
        "correlation with its first map (1 = it never moved) and with the class's object-location prior; "
        "the intervention's mean |A|, logit change, top-1 classes kept and up/down map correlation (1 = the "
        "CAM is unchanged); the teachers' fg-mask coverage; each loss term's share of the gradient norm. "
        "Dilemma gap: best val Top-1 Loc minus Top-1 Loc at the best-Cls epoch / best val Top-1 Cls minus "
        "Top-1 Cls at the best-MaxBoxAccV2 epoch.</p>"
    )
    parts.append("".join(rows))
    return "".join(parts)


def _runs_html(runs: list[RunInfo]) -> str:
    items = []
    for run in runs:
        parts = [
            (
                f"<b>{html.escape(run.label)}</b>: method {html.escape(run.method)}, "
                f"backbone {html.escape(str(run.config.model.backbone))}, "
                f"checkpoint <code>{html.escape(str(run.checkpoint))}</code>"
            )
        ]
        if run.metrics_file is not None:
            parts.append(f", metrics <code>{html.escape(str(run.metrics_file))}</code>")
        for note in run.notes:
            parts.append(f"<br><span class='note'>{html.escape(note)}</span>")
        items.append("<li>" + "".join(parts) + "</li>")
    return "<ul>" + "".join(items) + "</ul>"


def render_report(
    runs: list[RunInfo],
    splits: list[str],
    num_images: int = 12,
    device: str | None = None,
    cell: int = 192,
    title: str = "kdcicam report",
) -> str:
    """The report as one HTML string (every image inline)."""
    from .. import __version__

    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'>",
        "<head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        (
            f"<p class='sub'>Generated {html.escape(datetime.datetime.now().isoformat(timespec='seconds'))} "
            "by kdcicam "
            f"{html.escape(__version__)}. Splits: {html.escape(', '.join(splits))}. Loc metrics use the box "
            "threshold "
            "chosen on the validation split; MaxBoxAcc, MaxBoxAccV2 and PxAP are threshold-free.</p>"
        ),
        "<h2>Runs</h2>",
        _runs_html(runs),
        "<h2>Metrics</h2>",
        _metrics_table_html(runs, splits),
    ]
    parts.append("<h2>BoxAcc versus CAM threshold</h2>")
    curves_shown = False
    for split in splits:
        png = box_acc_curves_png(
            {r.label: (r.metrics.get(split) or {}).get("box_acc_curve") for r in runs},
            title=f"{split} (largest contour)",
        )
        if png is not None:
            parts.append(
                f"<img src='{_data_uri(png)}' alt='BoxAcc curves, {html.escape(split, quote=True)}'>"
            )
            curves_shown = True
    if not curves_shown:
        parts.append("<p class='note'>No box_acc_curve in the metrics (a dataset without boxes?).</p>")
    leak = {r.label: {s: (r.metrics.get(s) or {}).get("context_leakage") for s in splits} for r in runs}
    png = leakage_bars_png(leak)
    parts.append("<h2>Context leakage</h2>")
    if png is not None:
        parts.append(
            "<p class='note'>Share of CAM mass outside the object (its mask, else its boxes): a map that "
            "lights the background habitat leaks. On <code>test_conflict</code> every background belongs "
            "to another class.</p>"
        )
        parts.append(f"<img src='{_data_uri(png)}' alt='context leakage'>")
    else:
        parts.append("<p class='note'>No context leakage in the metrics.</p>")
    parts.append("<h2>Training: the dilemma and the mechanisms</h2>")
    parts.append(_training_html(runs))
    parts.append("<h2>Heatmaps on the same images</h2>")
    parts.append(_image_grid_html(runs, splits, num_images, device, cell))
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def write_report(
    run_dirs: Sequence[str | os.PathLike],
    out_html: str | os.PathLike,
    splits: Sequence[str] | None = None,
    num_images: int = 12,
    device: str | None = None,
    evaluate: Evaluate | None = None,
) -> Path:
    """One self-contained HTML file comparing runs: metrics side by side, BoxAcc-versus-threshold
    curves, context-leakage bars and a grid of the same test images under each run's CAM.

    Runs may be single-stage folders (``checkpoints/`` inside) or KD-CI-CAM folders (``student/``).
    Metrics come from each run's metrics.json; missing splits are evaluated first with ``evaluate``
    (see :func:`load_runs`).
    """
    if num_images < 0:
        raise KdcicamError(f"report: --images must be >= 0, got {num_images}")
    runs, splits = load_runs(run_dirs, splits, device=device, evaluate=evaluate)
    text = render_report(runs, splits, num_images=num_images, device=device)
    return atomic_write_bytes(out_html, text.encode("utf-8"))
