"""Mechanism diagnostics: did each part of a method act in this run?

A CI-CAM or KD-CI-CAM run can match the paper's code line by line and still behave like a plain CAM
at a small scale: a context pool that never leaves its first map, an intervention ``F ⊙ (1 + A)``
with ``A ≈ 0``, distillation terms whose gradients are a hundredth of cross-entropy's. These
functions measure each of those, so every run records them (``metrics.csv``, the benchmark results
files and the report):

- **pool**: updates per class ``N``, ``r·N``, correlation of each class map with its first non-zero
  map (1.0 = the pool never moved) and with the class's object-location prior from GT boxes;
- **intervention**: mean ``|A|`` (the features are scaled by ``1 + A``), how far the down branch's
  logits and localization map move from the up branch's;
- **gradients**: each loss term's gradient norm at the trainable parameters and its share of the sum.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .models.cam import combinational_cam


def rowwise_corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (flattened after dim 0);
    NaN where a row is constant."""
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denom = torch.sqrt((a * a).sum(1) * (b * b).sum(1))
    return torch.where(denom > 0, (a * b).sum(1) / denom.clamp_min(1e-300), torch.full_like(denom, float("nan")))


def _nanmean(values: torch.Tensor) -> float | None:
    values = values[torch.isfinite(values)]
    return float(values.mean()) if values.numel() else None


def box_prior(metadata, h: int, w: int, fine: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per class [C, h, w] and over all classes [h, w], the mean GT-box coverage of each cell of an h×w
    grid laid over the square-resized image (what a model's feature map sees)."""
    H, W = h * fine, w * fine
    sums = np.zeros((metadata.num_classes, H, W))
    counts = np.zeros(metadata.num_classes)
    ys, xs = (np.arange(H) + 0.5) / H, (np.arange(W) + 0.5) / W
    for image_id in metadata.image_ids:
        iw, ih = metadata.image_sizes[image_id]
        cover = np.zeros((H, W), dtype=bool)
        for x0, y0, x1, y1 in metadata.boxes.get(image_id, []):
            cover |= ((ys >= y0 / ih) & (ys <= y1 / ih))[:, None] & ((xs >= x0 / iw) & (xs <= x1 / iw))[None, :]
        c = metadata.class_labels[image_id]
        sums[c] += cover
        counts[c] += 1
    per_class = (sums / np.maximum(counts, 1)[:, None, None]).reshape(-1, h, fine, w, fine).mean(axis=(2, 4))
    overall = (sums.sum(0) / max(counts.sum(), 1)).reshape(h, fine, w, fine).mean(axis=(1, 3))
    return per_class, overall


def pool_stats(pool, prior: np.ndarray | None = None) -> dict[str, float | None]:
    """Diagnostics of a :class:`~kdcicam.models.causal.CausalContextPool` (class means; classes the pool
    never updated are left out of the correlations)."""
    n = pool.updates.double()
    stats: dict[str, float | None] = {
        "pool_updates_mean": float(n.mean()), "pool_updates_min": float(n.min()) if n.numel() else None,
        "pool_rn_mean": float(n.mean() * pool.rate), "pool_classes_updated": float((n > 0).double().mean())}
    if not pool.is_materialized:
        return {**stats, "pool_corr_first": None, "pool_corr_prior": None}
    seen = n > 0
    maps = pool.maps.detach().cpu()
    stats["pool_corr_first"] = _nanmean(rowwise_corr(maps[seen.cpu()], pool.first.detach().cpu()[seen.cpu()]))
    stats["pool_corr_prior"] = None
    if prior is not None and tuple(prior.shape) == tuple(maps.shape):
        p = torch.as_tensor(prior)
        stats["pool_corr_prior"] = _nanmean(rowwise_corr(maps[seen.cpu()], p[seen.cpu()]))
    return stats


class InterventionStats:
    """Accumulates, over evaluation batches of a CI-CAM-type model, how much ``F ⊙ (1 + A)`` changes
    things: ``attention_abs`` = mean |A| (0 = the intervention is the identity), ``logit_change`` =
    ‖z_down − z_up‖ / ‖z_up‖, ``pred_agreement`` = share of images whose top-1 class the intervention
    leaves unchanged, ``map_corr`` = correlation of the down branch's localization map with the up
    branch's (1 = the CAM is unchanged), ``map_change`` = mean |Ŝ_down − Ŝ_up| of the min-max
    normalised maps."""

    KEYS = ("attention_abs", "logit_change", "pred_agreement", "map_corr", "map_change")

    def __init__(self) -> None:
        self.sums = dict.fromkeys(self.KEYS, 0.0)
        self.count = 0

    @torch.no_grad()
    def add(self, out: Mapping[str, torch.Tensor], combination: str = "quadratic", m: int = 20) -> None:
        if "logits_up" not in out or "attention" not in out:
            return
        z_up, z_down = out["logits_up"].float(), out["logits"].float()
        b = z_up.shape[0]
        s_up = combinational_cam(z_up, out["cams_up"].float(), combination, m)
        s_down = combinational_cam(z_down, out["cams"].float(), combination, m)

        def unit(s: torch.Tensor) -> torch.Tensor:
            flat = s.flatten(1)
            return flat / flat.amax(dim=1, keepdim=True).clamp_min(1e-12)  # maps are min-shifted already

        corr = rowwise_corr(s_up, s_down)
        self.sums["attention_abs"] += float(out["attention"].float().abs().flatten(1).mean(1).sum())
        self.sums["logit_change"] += float(((z_down - z_up).norm(dim=1) / z_up.norm(dim=1).clamp_min(1e-12)).sum())
        self.sums["pred_agreement"] += float((z_up.argmax(1) == z_down.argmax(1)).double().sum())
        self.sums["map_corr"] += float(torch.nan_to_num(corr, nan=1.0).sum())
        self.sums["map_change"] += float((unit(s_down) - unit(s_up)).abs().mean(1).sum())
        self.count += b

    def compute(self) -> dict[str, float]:
        if not self.count:
            return {}
        return {key: value / self.count for key, value in self.sums.items()}


def gradient_norms(terms: Mapping[str, torch.Tensor], params: Sequence[torch.Tensor]) -> dict[str, float]:
    """Each loss term's gradient norm at ``params`` (the trainable parameters), one extra backward per
    term through the retained graph; a term that does not depend on them has norm 0."""
    norms: dict[str, float] = {}
    for name, term in terms.items():
        if not isinstance(term, torch.Tensor) or not term.requires_grad:
            norms[name] = 0.0
            continue
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        sq = sum(float(g.detach().float().pow(2).sum()) for g in grads if g is not None)
        norms[name] = float(np.sqrt(sq))
    return norms


def gradient_shares(norms: Mapping[str, float]) -> dict[str, float]:
    """Each term's share of the summed gradient norms (0 when all are 0)."""
    total = sum(norms.values())
    return {name: (value / total if total > 0 else 0.0) for name, value in norms.items()}


def epoch_curves(metrics_csv) -> list[dict[str, float]]:
    """Per-epoch values of a run's ``metrics.csv`` (Lightning's CSV logger): every ``val/*`` metric and the
    epoch-level training diagnostics, with step-level training values (e.g. ``train/fg_coverage``)
    averaged over the epoch. One dict per epoch, in order, each with its ``epoch``."""
    import csv

    path = Path(metrics_csv)
    if not path.is_file():
        return []
    sums: dict[int, dict[str, list[float]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                epoch = int(float(row.get("epoch") or ""))
            except ValueError:
                continue
            bucket = sums.setdefault(epoch, {})
            for key, value in row.items():
                if key in ("epoch", "step") or not value or not key.startswith(("val/", "train/")):
                    continue
                try:
                    number = float(value)
                except ValueError:
                    continue
                bucket.setdefault(key, []).append(number)  # only once parsed: no empty (NaN) column
    return [{"epoch": e, **{k: float(np.mean(v)) for k, v in sorted(bucket.items())}} for e, bucket in sorted(sums.items())]


def dilemma(curves: list[dict[str, float]], cls_key: str = "val/top1_cls", loc_key: str = "val/top1_loc",
            box_key: str = "val/max_box_acc_v2") -> dict[str, float | int | None]:
    """Where classification and localization peak on the val curves, and the *dilemma gap*: the best
    Top-1 Loc minus the Top-1 Loc at the best-Cls epoch, and the best Top-1 Cls minus the Top-1 Cls at the
    best-localization epoch (0 = one epoch is best at both). Ties go to the earliest epoch."""
    rows = [r for r in curves if cls_key in r and box_key in r]
    if not rows:
        return {}
    best_cls = max(rows, key=lambda r: r[cls_key])
    best_box = max(rows, key=lambda r: r[box_key])
    out: dict[str, float | int | None] = {
        "epoch_best_cls": int(best_cls["epoch"]), "epoch_best_max_box_acc_v2": int(best_box["epoch"]),
        "best_top1_cls": best_cls[cls_key], "best_max_box_acc_v2": best_box[box_key],
        "cls_gap_at_best_loc": best_cls[cls_key] - best_box[cls_key],
        "max_box_acc_v2_gap_at_best_cls": best_box[box_key] - best_cls[box_key]}
    if all(loc_key in r for r in rows):
        best_loc = max(rows, key=lambda r: r[loc_key])
        out.update(epoch_best_top1_loc=int(best_loc["epoch"]), best_top1_loc=best_loc[loc_key],
                   top1_loc_gap_at_best_cls=best_loc[loc_key] - best_cls[loc_key],
                   cls_gap_at_best_top1_loc=best_cls[cls_key] - best_loc[cls_key])
    return out


KD_STAGE_FOLDERS = ("cls_teacher", "loc_teacher", "student")
#: the diagnostics a reader looks at first, in the order tables show them: (label, metrics.csv key, format)
SUMMARY_KEYS = (
    ("pool N/class", "train/pool_updates_mean", "{:.0f}"), ("r·N", "train/pool_rn_mean", "{:.1f}"),
    ("pool vs first map", "train/pool_corr_first", "{:.2f}"), ("pool vs object prior", "train/pool_corr_prior", "{:.2f}"),
    ("mean abs(A)", "val/diag_attention_abs", "{:.3f}"), ("logit change", "val/diag_logit_change", "{:.3f}"),
    ("top-1 kept", "val/diag_pred_agreement", "{:.3f}"), ("map corr up/down", "val/diag_map_corr", "{:.3f}"),
    ("fg coverage", "train/fg_coverage", "{:.2f}"),
)


def run_stages(run_dir) -> dict[str, Path]:
    """The trained stages of a run folder: ``{"model": run}`` for CAM / CI-CAM, the teachers and the
    student (those present) for a KD-CI-CAM run."""
    run = Path(run_dir)
    stages = {s: run / s for s in KD_STAGE_FOLDERS if (run / s / "metrics.csv").is_file()}
    return stages or {"model": run}


def final_diagnostics(curves: list[dict[str, float]]) -> dict[str, float]:
    """The latest value of every mechanism diagnostic over a run's epoch curves."""
    last: dict[str, float] = {}
    for row in curves:
        last.update({k: v for k, v in row.items() if k.startswith(("train/grad_", "train/pool_", "train/fg_", "val/diag_"))})
    return last
