"""Pictures of what a model localises: heatmap overlays, BoxAcc-versus-threshold curves, and one
self-contained HTML report comparing runs.

Everything is drawn off-screen (OpenCV, Pillow, and matplotlib's Agg canvas without pyplot, so
importing this module never changes a user's matplotlib backend). The report embeds every image
as a base64 PNG and needs no other file, so it can be mailed or attached to an issue as it is.
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .data.atomic import atomic_write_bytes  # re-exported: callers (kdcicam localize) write through it
from .errors import KdcicamError

if TYPE_CHECKING:  # pragma: no cover
    from .inference import LocalizationResult, Localizer

log = logging.getLogger(__name__)

#: ``evaluate(run_dir, splits, device=..., progress=...) -> results`` (``kdcicam evaluate``'s function)
Evaluate = Callable[..., dict[str, Any]]

PRED_COLOR = (255, 40, 40)
GT_COLOR = (40, 220, 60)
#: splits whose images show the confounder at work; shown first in the report's image grid
CONFOUNDER_SPLITS = ("test_conflict",)


# ------------------------------------------------------------------------------------------ overlays
def _rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        from .data.decode import _to_rgb

        return np.asarray(_to_rgb(image))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
        raise KdcicamError(f"overlay: expected an HxWx3 uint8 RGB image, got shape {arr.shape} {arr.dtype}")
    return arr[:, :, :3]


def heatmap_overlay(image: Image.Image | np.ndarray, cam: np.ndarray, alpha: float = 0.5,
                    colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """The CAM (any grid, values in [0, 1]) resized to the image and blended on it with a colormap."""
    rgb = _rgb_array(image)
    h, w = rgb.shape[:2]
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != (h, w):
        cam = cv2.resize(cam, (w, h), interpolation=cv2.INTER_CUBIC)
    heat = cv2.applyColorMap(np.clip(cam * 255.0 + 0.5, 0, 255).astype(np.uint8), colormap)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(np.ascontiguousarray(rgb), 1.0 - alpha, heat, alpha, 0.0)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font only
        return ImageFont.load_default()


def draw_boxes(image: Image.Image, boxes: Iterable[Sequence[float]], color: tuple[int, int, int],
               labels: Sequence[str | None] | None = None, width: int | None = None) -> Image.Image:
    """Rectangles (``x0, y0, x1, y1`` in the image's pixels) with optional labels on a filled tag."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    line = width or max(1, round(min(image.size) / 120))
    font = _font(max(10, min(image.size) // 18))
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=color, width=line)
        text = labels[i] if labels is not None and i < len(labels) else None
        if text:
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            tw, th = right - left, bottom - top
            ty = y0 - th - 4 if y0 - th - 4 >= 0 else y0 + line
            tx = min(max(0.0, x0), max(0.0, image.size[0] - tw - 4))
            draw.rectangle([tx, ty, tx + tw + 4, ty + th + 4], fill=color)
            draw.text((tx + 2 - left, ty + 2 - top), text, fill=(0, 0, 0), font=font)
    return image


def render_result(image: Image.Image | np.ndarray, result: LocalizationResult, gt_boxes: np.ndarray | None = None,
                  alpha: float = 0.5, label: bool = True, max_side: int | None = None) -> Image.Image:
    """One overlay: heatmap, ground-truth boxes (green, if given) and predicted boxes (red) with the
    top-1 class and probability. ``max_side`` scales the picture (both ways) so its longer side fits."""
    rgb = _rgb_array(image)
    h, w = rgb.shape[:2]
    if (w, h) != result.size:
        raise KdcicamError(f"overlay: the image is {w}x{h} but the result is for {result.width}x{result.height}")
    scale = 1.0
    if max_side is not None and max(w, h) != max_side:
        scale = max_side / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
        rgb = cv2.resize(rgb, size, interpolation=interp)
    out = Image.fromarray(heatmap_overlay(rgb, result.cam, alpha))
    if gt_boxes is not None and len(gt_boxes):
        out = draw_boxes(out, np.asarray(gt_boxes, dtype=np.float64) * scale, GT_COLOR)
    text = f"{result.class_name} {result.score:.2f}" if label else None
    labels: list[str | None] | None = [text] + [None] * (len(result.boxes) - 1) if text else None
    return draw_boxes(out, result.boxes * scale, PRED_COLOR, labels)


def png_bytes(image: Image.Image, optimize: bool = True) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=optimize)
    return buf.getvalue()


def save_overlay(path: str | os.PathLike, image: Image.Image | np.ndarray, result: LocalizationResult,
                 gt_boxes: np.ndarray | None = None, max_side: int | None = None) -> Path:
    """Render :func:`render_result` and write it as a PNG (atomically)."""
    return atomic_write_bytes(path, png_bytes(render_result(image, result, gt_boxes, max_side=max_side)))


def save_doc_overlays(localizer: Localizer | str | os.PathLike, images: Sequence[str | os.PathLike],
                      out_dir: str | os.PathLike = "docs/images", prefix: str = "overlay", max_side: int = 320,
                      max_bytes: int = 300_000) -> list[Path]:
    """A few overlays for the README: ``{prefix}_{i}.png`` scaled to ``max_side`` and kept under
    ``max_bytes`` each (colours are quantised, then the side reduced, until it fits)."""
    from .data.dataset import load_image_rgb
    from .inference import Localizer

    loc = localizer if isinstance(localizer, Localizer) else Localizer.from_checkpoint(localizer)
    paths = []
    for i, (path, result) in enumerate(zip(images, loc.predict(list(images)))):
        image = load_image_rgb(path)
        side = max_side
        while True:
            picture = render_result(image, result, max_side=side)
            data = png_bytes(picture)
            if len(data) > max_bytes:
                data = png_bytes(picture.quantize(colors=128, method=Image.Quantize.MEDIANCUT))
            if len(data) <= max_bytes or side <= 64:
                break
            side = int(side * 0.8)
        if len(data) > max_bytes:
            raise KdcicamError(f"{path}: overlay stays above {max_bytes} bytes even at {side} px")
        paths.append(atomic_write_bytes(Path(out_dir) / f"{prefix}_{i}.png", data))
    return paths


# ------------------------------------------------------------------------------------------ charts
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
    for ax, iou in zip(axes, ious):
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
CURVE_PANELS = (("val/top1_cls", "val Top-1 Cls (%)"), ("val/top1_loc", "val Top-1 Loc (%)"),
                ("val/max_box_acc_v2", "val MaxBoxAccV2 (%)"))


def training_curves_png(curves: dict[str, list[dict[str, float]]], floor: float | None = None) -> bytes | None:
    """Val Top-1 Cls, Top-1 Loc and MaxBoxAccV2 per epoch, one line per run (or stage), the best epoch of
    each marked: where classification and localization peak apart, the dilemma shows. ``floor``: a
    MaxBoxAccV2 reference line (e.g. the centre-Gaussian map's)."""
    given = {k: v for k, v in curves.items() if any(key in row for row in v for key, _ in CURVE_PANELS)}
    if not given:
        return None
    fig = _figure(3.4 * len(CURVE_PANELS) + 0.4, 3.0)
    axes = fig.subplots(1, len(CURVE_PANELS), squeeze=False)[0]
    for ax, (key, title) in zip(axes, CURVE_PANELS):
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
        bars = ax.bar(x + (i - (len(runs) - 1) / 2) * width, [h if h is not None else 0.0 for h in heights],
                      width, label=run)
        for bar, h in zip(bars, heights):
            if h is not None:
                ax.annotate(f"{h:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                            va="bottom", fontsize=7)
    ax.set_xticks(x, splits)
    ax.set_ylabel("context leakage (%) — lower is better")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _figure_png(fig)


# ------------------------------------------------------------------------------------------ runs
@dataclass
class RunInfo:
    """A run folder as the report sees it."""

    path: Path
    label: str
    checkpoint: Path
    config: Any
    metrics: dict[str, Any] = field(default_factory=dict)
    metrics_file: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        return str(self.metrics.get("method") or self.config.method)


def _metrics_path(run: Path, ckpt: Path) -> Path:
    """``kdcicam evaluate`` writes metrics.json beside the evaluated stage (run/ or run/student/)."""
    for candidate in (ckpt.parent.parent / "metrics.json", run / "metrics.json"):
        if candidate.is_file():
            return candidate
    return ckpt.parent.parent / "metrics.json"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise KdcicamError(f"{path}: unreadable metrics file ({e})") from None
    if not isinstance(data, dict):
        raise KdcicamError(f"{path}: expected a JSON object")
    return data


def _labels(paths: list[Path]) -> list[str]:
    """Short unique names: the folder name, with its parents added where names collide."""
    parts = [p.resolve().parts for p in paths]
    depth = 1
    while True:
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels) or depth >= max(len(p) for p in parts):
            break
        depth += 1
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def load_runs(run_dirs: Sequence[str | os.PathLike], splits: Sequence[str] | None, device: str | None = None,
              evaluate: Evaluate | None = None) -> tuple[list[RunInfo], list[str]]:
    """Each run with its metrics for ``splits`` (default: the first run's test splits). A run whose
    metrics.json lacks a split is evaluated now with ``evaluate`` (the ``kdcicam evaluate`` function,
    :func:`kdcicam.training.evaluate.evaluate`, which writes metrics.json; the CLI passes it, since this
    module stands beside training, not on it); without it, the report notes the missing split."""
    from .checkpoints import resolve_checkpoint, run_config

    if not run_dirs:
        raise KdcicamError("report: give at least one run folder")
    paths = [Path(p) for p in run_dirs]
    runs = []
    for path, label in zip(paths, _labels(paths)):
        ckpt = resolve_checkpoint(path)
        runs.append(RunInfo(path=path, label=label, checkpoint=ckpt, config=run_config(ckpt)))
    splits = list(splits) if splits else list(runs[0].config.data.test_splits)
    for run in runs:
        mpath = _metrics_path(run.path, run.checkpoint)
        run.metrics = _read_json(mpath) if mpath.is_file() else {}
        missing = [s for s in splits if not isinstance(run.metrics.get(s), dict)]
        if missing and evaluate is None:
            run.notes.append(f"no metrics for {', '.join(missing)} in {mpath}; run `kdcicam evaluate {run.path} "
                             f"--split {' '.join(missing)}` first")
        elif missing:
            log.info("%s: no metrics for %s in %s; evaluating now", run.path, ", ".join(missing), mpath)
            try:
                result = evaluate(run.path, missing, device=device, progress=False)
            except KdcicamError as e:
                run.notes.append(f"could not evaluate {', '.join(missing)}: {e}")
                log.warning("%s: could not evaluate %s: %s", run.path, ", ".join(missing), e)
            else:
                mpath = Path(result.get("metrics_file", mpath))
                run.metrics = _read_json(mpath) if mpath.is_file() else result
        run.metrics_file = mpath if mpath.is_file() else None
    return runs, splits


# ------------------------------------------------------------------------------------------ image grid
def _pick_images(runs: list[RunInfo], splits: list[str], num_images: int):
    """(split, image_id, path, gt boxes) for the grid: confounder splits first, evenly spaced within
    each split (so every class shows up), shared by all runs. Returns (picks, note)."""
    from .data.metadata import read_metadata

    root = Path(runs[0].config.data.root)
    if not (root / "dataset.yaml").is_file():
        return [], f"data folder {root} not found (data.root of {runs[0].label}); image grid skipped"
    ordered = [s for s in splits if s in CONFOUNDER_SPLITS] + [s for s in splits if s not in CONFOUNDER_SPLITS]
    available = [s for s in ordered if (root / s / "image_ids.txt").is_file()]
    if not available or num_images <= 0:
        return [], "no split with images to show" if num_images > 0 else ""
    per = [num_images // len(available) + (1 if i < num_images % len(available) else 0) for i in range(len(available))]
    picks = []
    for split, n in zip(available, per):
        md = read_metadata(root / split)
        if n <= 0:
            continue
        idx = np.unique(np.linspace(0, len(md) - 1, num=min(n, len(md))).round().astype(int))
        for i in idx:
            image_id = md.image_ids[int(i)]
            picks.append((split, image_id, md.image_path(image_id),
                          np.asarray(md.boxes.get(image_id, []), dtype=np.float64).reshape(-1, 4),
                          md.class_names[md.class_labels[image_id]] if md.class_names else str(md.class_labels[image_id])))
    return picks, ""


def _best_iou(result: LocalizationResult, gt: np.ndarray, size: int) -> float | None:
    """The evaluator's IoU (on the score-map grid, GT rescaled with its ``int()`` rule)."""
    from .evaluation import box_iou_matrix, resize_box

    if not len(gt):
        return None
    if not len(result.grid_boxes):
        return 0.0
    gt_grid = np.array([resize_box(b, result.size, (size, size)) for b in gt])
    return float(box_iou_matrix(result.grid_boxes, gt_grid).max())


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _image_grid_html(runs: list[RunInfo], splits: list[str], num_images: int, device: str | None, cell: int) -> str:
    from .data.dataset import load_image_rgb
    from .errors import ImageReadError
    from .inference import Localizer

    picks, note = _pick_images(runs, splits, num_images)
    if not picks:
        return f"<p class='note'>{html.escape(note)}</p>" if note else ""
    images: list[Image.Image | None] = []
    for split, image_id, path, gt, cls in picks:
        try:
            images.append(load_image_rgb(path))
        except ImageReadError as e:
            images.append(None)
            log.warning("report: %s", e)
    results: dict[str, list] = {}
    thresholds: dict[str, float] = {}
    for run in runs:
        threshold = run.metrics.get("box_threshold")
        loc = Localizer.from_checkpoint(run.checkpoint, device=device or "auto",
                                        threshold=None if threshold is None else float(threshold))
        thresholds[run.label] = loc.threshold
        good = [im for im in images if im is not None]
        it = iter(loc.predict(good))
        results[run.label] = [next(it) if im is not None else None for im in images]
    head = "".join(f"<th>{html.escape(r.label)}<br><span class='sub'>box threshold "
                   f"{thresholds[r.label]:.2f}</span></th>" for r in runs)
    rows = [f"<table class='grid'><thead><tr><th>image</th>{head}</tr></thead><tbody>"]
    for k, (split, image_id, path, gt, cls) in enumerate(picks):
        image = images[k]
        if image is None:
            continue
        scale = cell / max(image.size)
        size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        plain = image.resize(size, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)
        plain = draw_boxes(plain, gt * scale, GT_COLOR)
        caption = f"{split} · {cls}"
        cells = [(f"<td><img src='{_data_uri(png_bytes(plain))}' alt='{html.escape(image_id, quote=True)}'>"
                 f"<div class='cap'>{html.escape(caption)}<br><span class='sub'>{html.escape(image_id)}</span></div></td>")]
        for run in runs:
            result = results[run.label][k]
            picture = render_result(image, result, gt, max_side=cell)
            iou = _best_iou(result, gt, result.cam.shape[0])
            right = "" if iou is None else (" ✓" if iou >= 0.5 and result.class_name == cls else "")
            iou_text = "" if iou is None else f" · IoU {iou:.2f}"
            cap = f"{result.class_name} {result.score:.2f}{iou_text}{right}"
            cells.append(f"<td><img src='{_data_uri(png_bytes(picture))}' alt='{html.escape(run.label, quote=True)}'>"
                         f"<div class='cap'>{html.escape(cap)}</div></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</tbody></table>")
    legend = ("<p class='note'>Green: ground-truth boxes. Red: the predicted box at each run's box threshold "
              "(chosen on the validation split), labelled with the top-1 class and its probability. ✓ = right class "
              "and IoU ≥ 0.5 (Top-1 Loc). Heatmap: the run's localization map, min-max normalised.</p>")
    return legend + "".join(rows)


# ------------------------------------------------------------------------------------------ report
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
    """The centre-Gaussian floor of each split, where ``kdcicam baseline`` computed it for the first run's data
    (same metadata, val split and evaluation grid); nothing is computed here."""
    from .evaluation.baselines import cached_floor

    data = runs[0].config.data
    floors = {s: cached_floor(data.root, s, data.val_split, data.image_size) for s in splits}
    return {s: f for s, f in floors.items() if f is not None}


def _metrics_table_html(runs: list[RunInfo], splits: list[str]) -> str:
    from .evaluation.table import TABLE_ROWS, metric_value

    floors = _floors(runs, splits)
    # (label, split, metrics, is a run); the floor of a split comes after that split's runs
    columns = [(run.label, split, run.metrics.get(split) or {}, True) for split in splits for run in runs]
    columns = [c for split in splits for c in
               [*(c for c in columns if c[1] == split),
                *([("floor: centre Gaussian", split, floors[split]["metrics"], False)] if split in floors else [])]]
    head = "".join(f"<th>{html.escape(label)}<br><span class='sub'>{html.escape(split)}</span></th>"
                   for label, split, _, _ in columns)
    rows = [f"<table class='metrics'><thead><tr><th>metric</th>{head}</tr></thead><tbody>"]
    for label, key in TABLE_ROWS:
        values = [metric_value(metrics, key) for _, _, metrics, _ in columns]
        if all(v is None for v in values):
            continue
        name = key if isinstance(key, str) else key[0]
        cells = []
        for (_, split, _, is_run), v in zip(columns, values):
            same_split = [w for (_, s, _, r), w in zip(columns, values) if s == split and r and w is not None]
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
    rows.append("<tr><td>Box threshold (chosen on val)</td>" + "".join(f"<td>{t}</td>" for t in thresholds) + "</tr>")
    rows.append("</tbody></table>")
    if floors:
        sigma = next(iter(floors.values()))["sigma"]
        rows.append(f"<p class='note'>floor: the same centred Gaussian for every image (σ {sigma} of the grid, "
                    "chosen on val by <code>kdcicam baseline</code>): what a map that ignores the image scores.</p>")
    return "".join(rows)


def _training_html(runs: list[RunInfo]) -> str:
    """Per-epoch val curves of every run and KD stage, and the last epoch's mechanism diagnostics
    (:mod:`kdcicam.diagnostics`), from each stage's metrics.csv."""
    from .diagnostics import SUMMARY_KEYS, dilemma, epoch_curves, final_diagnostics, run_stages

    curves: dict[str, list[dict[str, float]]] = {}
    for run in runs:
        for stage, folder in run_stages(run.path).items():
            rows = epoch_curves(folder / "metrics.csv")
            if rows:
                curves[run.label if stage == "model" else f"{run.label} ({stage.replace('_', ' ')})"] = rows
    if not curves:
        return "<p class='note'>No metrics.csv in the run folders (trained elsewhere?).</p>"
    parts = []
    png = training_curves_png(curves)
    if png is not None:
        parts.append("<p class='note'>Validation metrics per epoch; a circle marks each curve's best epoch. When "
                     "Top-1 Cls peaks at another epoch than the localization metrics, one checkpoint cannot have "
                     "both at their best (the dilemma); <code>best_cls.ckpt</code> and <code>best_loc.ckpt</code> "
                     "keep each.</p>")
        parts.append(f"<img src='{_data_uri(png)}' alt='training curves'>")
    finals = {label: final_diagnostics(rows) for label, rows in curves.items()}
    shares = sorted({k.split("train/grad_share_", 1)[1] for f in finals.values() for k in f
                     if k.startswith("train/grad_share_")})
    head = "".join(f"<th>{html.escape(label)}</th>" for label, _, _ in SUMMARY_KEYS)
    head += "".join(f"<th>grad share {html.escape(t)}</th>" for t in shares) + "<th>dilemma gap (Loc / Cls)</th>"
    rows = [f"<table class='metrics'><thead><tr><th>run</th>{head}</tr></thead><tbody>"]
    for label, f in finals.items():
        cells = [("-" if f.get(key) is None else pattern.format(f[key])) for _, key, pattern in SUMMARY_KEYS]
        cells += [("-" if f.get(f"train/grad_share_{t}") is None else f"{f[f'train/grad_share_{t}']:.3f}") for t in shares]
        d = dilemma(curves[label])
        gap = (f"{d.get('top1_loc_gap_at_best_cls', float('nan')):.2f} / {d.get('cls_gap_at_best_loc', float('nan')):.2f}"
               if d else "-")
        rows.append(f"<tr><td>{html.escape(label)}</td>" + "".join(f"<td>{c}</td>" for c in cells + [gap]) + "</tr>")
    rows.append("</tbody></table>")
    parts.append("<p class='note'>Mechanisms, last epoch: context-pool updates per class and r·N, the pool's "
                 "correlation with its first map (1 = it never moved) and with the class's object-location prior; "
                 "the intervention's mean |A|, logit change, top-1 classes kept and up/down map correlation (1 = the "
                 "CAM is unchanged); the teachers' fg-mask coverage; each loss term's share of the gradient norm. "
                 "Dilemma gap: best val Top-1 Loc minus Top-1 Loc at the best-Cls epoch / best val Top-1 Cls minus "
                 "Top-1 Cls at the best-MaxBoxAccV2 epoch.</p>")
    parts.append("".join(rows))
    return "".join(parts)


def _runs_html(runs: list[RunInfo]) -> str:
    items = []
    for run in runs:
        parts = [(f"<b>{html.escape(run.label)}</b>: method {html.escape(run.method)}, "
                 f"backbone {html.escape(str(run.config.model.backbone))}, "
                 f"checkpoint <code>{html.escape(str(run.checkpoint))}</code>")]
        if run.metrics_file is not None:
            parts.append(f", metrics <code>{html.escape(str(run.metrics_file))}</code>")
        for note in run.notes:
            parts.append(f"<br><span class='note'>{html.escape(note)}</span>")
        items.append("<li>" + "".join(parts) + "</li>")
    return "<ul>" + "".join(items) + "</ul>"


def render_report(runs: list[RunInfo], splits: list[str], num_images: int = 12, device: str | None = None,
                  cell: int = 192, title: str = "kdcicam report") -> str:
    """The report as one HTML string (every image inline)."""
    from . import __version__

    parts = ["<!DOCTYPE html>", "<html lang='en'>", "<head><meta charset='utf-8'>",
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>", "<body>",
             f"<h1>{html.escape(title)}</h1>",
             (f"<p class='sub'>Generated {html.escape(datetime.datetime.now().isoformat(timespec='seconds'))} by kdcicam "
             f"{html.escape(__version__)}. Splits: {html.escape(', '.join(splits))}. Loc metrics use the box threshold "
             "chosen on the validation split; MaxBoxAcc, MaxBoxAccV2 and PxAP are threshold-free.</p>"),
             "<h2>Runs</h2>", _runs_html(runs),
             "<h2>Metrics</h2>", _metrics_table_html(runs, splits)]
    parts.append("<h2>BoxAcc versus CAM threshold</h2>")
    curves_shown = False
    for split in splits:
        png = box_acc_curves_png({r.label: (r.metrics.get(split) or {}).get("box_acc_curve") for r in runs},
                                 title=f"{split} (largest contour)")
        if png is not None:
            parts.append(f"<img src='{_data_uri(png)}' alt='BoxAcc curves, {html.escape(split, quote=True)}'>")
            curves_shown = True
    if not curves_shown:
        parts.append("<p class='note'>No box_acc_curve in the metrics (a dataset without boxes?).</p>")
    leak = {r.label: {s: (r.metrics.get(s) or {}).get("context_leakage") for s in splits} for r in runs}
    png = leakage_bars_png(leak)
    parts.append("<h2>Context leakage</h2>")
    if png is not None:
        parts.append("<p class='note'>Share of CAM mass outside the object (its mask, else its boxes): a map that "
                     "lights the background habitat leaks. On <code>test_conflict</code> every background belongs "
                     "to another class.</p>")
        parts.append(f"<img src='{_data_uri(png)}' alt='context leakage'>")
    else:
        parts.append("<p class='note'>No context leakage in the metrics.</p>")
    parts.append("<h2>Training: the dilemma and the mechanisms</h2>")
    parts.append(_training_html(runs))
    parts.append("<h2>Heatmaps on the same images</h2>")
    parts.append(_image_grid_html(runs, splits, num_images, device, cell))
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def write_report(run_dirs: Sequence[str | os.PathLike], out_html: str | os.PathLike,
                 splits: Sequence[str] | None = None, num_images: int = 12, device: str | None = None,
                 evaluate: Evaluate | None = None) -> Path:
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


__all__ = ["atomic_write_bytes", "box_acc_curves_png", "draw_boxes", "heatmap_overlay", "leakage_bars_png",
           "load_runs", "render_report", "render_result", "save_doc_overlays", "save_overlay", "write_report"]
