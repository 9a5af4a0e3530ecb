"""Did each mechanism act? The dilemma's val curves, the last epoch's diagnostics (kdcicam.diagnostics), the
teachers' edge, the context pools, and a reading of them in numbers from the results files."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict

from kdcicam.diagnostics import SUMMARY_KEYS as DIAG_COLUMNS

from . import loading, templates
from .formatting import diag_cell, fmt, fmt_delta
from .loading import LABEL, SHOWN, portable
from .recipe import shipped_settings
from .targets import dilemma_target

STAGE_LABEL = {
    "model": "",
    "cls_teacher": " (cls teacher)",
    "loc_teacher": " (loc teacher)",
    "student": " (student)",
}


def _stage_rows(runs: dict[str, list[dict]]):
    """(method, stage, [(seed, stage diagnostics)]) for every trained stage that has diagnostics."""
    for method in SHOWN:
        per_stage: dict[str, list[tuple[int, dict]]] = defaultdict(list)
        for r in sorted(runs.get(method, []), key=lambda r: r["seed"]):
            for stage, d in (r.get("diagnostics") or {}).items():
                per_stage[stage].append((r["seed"], d))
        for stage in ("model", "cls_teacher", "loc_teacher", "student"):
            if per_stage.get(stage):
                yield method, stage, per_stage[stage]


def dilemma_section(
    suite: str, runs: dict[str, list[dict]], n: int | None = None, level: str = "###"
) -> list[str]:
    """The paper's second claim, the dilemma: where val Cls and Loc peak in every run and teacher, and the
    gaps (the test
    metrics of each run's checkpoints are the suite's main tables)."""
    rows = list(_stage_rows(runs))
    if not rows:
        return []
    noise = (
        f" Val has {n} images: a gap or a difference between epochs below about 2 SE (up to "
        f"{100 / math.sqrt(n):.1f} points) is within the noise of one val reading."
        if n
        else ""
    )
    lines = [
        f"{level} {suite}: the dilemma (val curves)",
        "",
        (
            "Per run and teacher, from its per-epoch val metrics: the epoch where val Top-1 Cls peaks and "
            "where val "
            "MaxBoxAccV2 / Top-1 Loc peak, and the **dilemma gaps** — best Top-1 Loc minus Top-1 Loc at the "
            "best-Cls "
            "epoch, and best Top-1 Cls minus Top-1 Cls at the best-MaxBoxAccV2 epoch (0 = one epoch is best "
            "at both). "
            "Epochs count from 0." + noise
        ),
        "",
        (
            "| method | seeds | epoch best Cls | epoch best MaxBoxAccV2 | epoch best Top-1 Loc | Loc gap at "
            "best Cls | "
            "Cls gap at best MaxBoxAccV2 |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for method, stage, items in rows:
        ds = [d["dilemma"] for _, d in items if d.get("dilemma")]
        if not ds:
            continue
        epochs = {
            k: ",".join(str(d.get(k, "–")) for d in ds)
            for k in ("epoch_best_cls", "epoch_best_max_box_acc_v2", "epoch_best_top1_loc")
        }
        lines.append(
            f"| {LABEL[method]}{STAGE_LABEL[stage]} | {','.join(str(sd) for sd, _ in items)} | "
            f"{epochs['epoch_best_cls']} | {epochs['epoch_best_max_box_acc_v2']} | "
            f"{epochs['epoch_best_top1_loc']} | "
            f"{fmt([d.get('top1_loc_gap_at_best_cls') for d in ds])} | "
            f"{fmt([d.get('cls_gap_at_best_loc') for d in ds])} |"
        )
    test_split = "test"
    lines += [
        "",
        (
            "The test metrics of each run's `best_cls`, `best_loc` and `last` checkpoints are the rows of "
            "the "
            "tables above."
        ),
    ]
    target = dilemma_target(suite, runs, test_split)
    return lines + (["", *target] if target else []) + [""]


def diagnostics_section(suite: str, runs: dict[str, list[dict]], level: str = "###") -> list[str]:
    """Did each mechanism act? The last epoch's diagnostics of every run and teacher (kdcicam.diagnostics)."""
    rows = list(_stage_rows(runs))
    if not rows:
        return []
    lines = [
        f"{level} {suite}: did each mechanism act? (last epoch; `kdcicam.diagnostics`)",
        "",
        *_diagnostics_intro(),
        "",
        "| method | seeds | " + " | ".join(c for c, _, _ in DIAG_COLUMNS) + " |",
        "|---|---|" + "---|" * len(DIAG_COLUMNS),
    ]
    for method, stage, items in rows:
        finals = [d.get("final", {}) for _, d in items]
        lines.append(
            f"| {LABEL[method]}{STAGE_LABEL[stage]} | {','.join(str(sd) for sd, _ in items)} | "
            + " | ".join(diag_cell([f.get(k) for f in finals], pat) for _, k, pat in DIAG_COLUMNS)
            + " |"
        )
    lines += [
        "",
        (
            "Gradient share of each loss term at the trainable parameters (mean over the sampled steps of "
            "the last "
            "epoch; the shares of a run sum to 1):"
        ),
        "",
        "| method | seeds | shares |",
        "|---|---|---|",
    ]
    for method, stage, items in rows:
        finals = [d.get("final", {}) for _, d in items]
        terms = sorted(
            {
                k.split("train/grad_share_", 1)[1]
                for f in finals
                for k in f
                if k.startswith("train/grad_share_")
            }
        )
        text = ", ".join(
            f"{t} {diag_cell([f.get('train/grad_share_' + t) for f in finals], '{:.3f}')}" for t in terms
        )
        lines.append(
            f"| {LABEL[method]}{STAGE_LABEL[stage]} | {','.join(str(sd) for sd, _ in items)} | {text or '–'} "
            "|"
        )
    lines += ["", *teacher_advantage(runs), *mechanism_reading(suite, runs)]
    return [*lines, ""]


def _final(runs: dict[str, list[dict]], method: str, stage: str, key: str) -> float | None:
    vals = [
        r["diagnostics"][stage]["final"].get(key)
        for r in runs.get(method, [])
        if stage in (r.get("diagnostics") or {})
    ]
    vals = [v for v in vals if v is not None]
    return statistics.fmean(vals) if vals else None


#: a context pool "moves" when its maps correlate less than this with their first map
POOL_UNMOVED = 0.99
#: the intervention leaves the CAM unchanged when the down branch's map correlates at least this with the
#: up branch's
MAP_UNCHANGED = 0.999
#: a distillation loss term "acts" when it carries at least this share of the student's gradient
TERM_ACTS = 0.05


def _kd_form(runs: dict[str, list[dict]]) -> str:
    """The logit route as the student's saved config has it (docs/method.md §3.2, §9)."""
    mode = _config_value(runs, "kd-ci-cam", "kd", "kd_mode") or "official"
    if mode == "official":
        return "the authors' form: probabilities into KLDivLoss"
    squared = _config_value(runs, "kd-ci-cam", "kd", "kd_t_squared")
    return f"KL at T = {_config_value(runs, 'kd-ci-cam', 'kd', 'temperature')}" + (" × T²" if squared else "")


def _cam_form(runs: dict[str, list[dict]]) -> str:
    """The CAM route as the student's saved config has it."""
    if (_config_value(runs, "kd-ci-cam", "kd", "cam_loss") or "mse") == "at":
        share = _config_value(runs, "kd-ci-cam", "kd", "cam_grad_share")
        return "attention transfer on the scored map" + (f", weight adapted to a {share:g} share" if share else "")
    return "MSE of every class's σ-map, the CAM temperature at the loc teacher's CAM scale"


def _distillation_verdict(logit_acts: bool, cam_acts: bool) -> str:
    """The distillation line's heading, from which of its two terms carry a share of the gradient."""
    if logit_acts and cam_acts:
        return "the logit and the CAM terms both act"
    if logit_acts:
        return "the logit term acts, the CAM term does not"
    if cam_acts:
        return "the CAM term acts, the logit term does not"
    return "neither the logit nor the CAM term acts"


def _diagnostics_intro() -> list[str]:
    """The diagnostics table's legend; the official r·N per class as the shipped cub50 config derives its pool
    rates from (``model.pool_rate_target``, the student's ``kd.student.model.pool_rate_target``)."""
    cfg = shipped_settings("cub50")
    rn, student = cfg.get("model.pool_rate_target"), cfg.get("kd.student.model.pool_rate_target")
    return templates.render(
        "mechanisms",
        "diagnostics_intro",
        official_rn="?" if rn is None else f"{rn:g}",
        official_rn_student="?" if student is None else f"{student:g}",
    )


def _config_value(runs: dict[str, list[dict]], method: str, *keys: str) -> object:
    """A setting of ``method``'s first run (``keys`` down its saved config); None where the file has none."""
    node: object = next(iter(runs.get(method, [])), {}).get("config") or {}
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def mechanism_reading(suite: str, runs: dict[str, list[dict]]) -> list[str]:
    """What the diagnostics say about each mechanism (report_templates/mechanisms.md), in numbers from the
    results files, each verdict by the thresholds stated above."""
    out = []
    rn = _final(runs, "ci-cam", "model", "train/pool_rn_mean")
    first = _final(runs, "ci-cam", "model", "train/pool_corr_first")
    prior = _final(runs, "ci-cam", "model", "train/pool_corr_prior")
    corr = _final(runs, "ci-cam", "model", "val/diag_map_corr")
    absa = _final(runs, "ci-cam", "model", "val/diag_attention_abs")
    dz = _final(runs, "ci-cam", "model", "val/diag_logit_change")
    found = (rn, first, prior, corr, absa, dz)
    if rn is not None and first is not None and prior is not None and None not in found:
        moved = "it moves" if first < POOL_UNMOVED else "it hardly moves"
        out += templates.render(
            "mechanisms", "pool", verdict=moved, rn=f"{rn:.1f}", first=f"{first:.2f}", prior=f"{prior:.2f}"
        )
        out += templates.render(
            "mechanisms",
            "intervention" if corr >= MAP_UNCHANGED else "intervention_acts",
            unchanged=f"{MAP_UNCHANGED:g}",
            abs_a=f"{absa:.3f}",
            dz=f"{dz:.3f}",
            corr=f"{corr:.5f}",
            lr_ablation=" " + intervention_lr_ablation(suite, runs),
        )
    shares = {
        t: _final(runs, "kd-ci-cam", "student", f"train/grad_share_{t}") for t in ("ce", "kd", "cam", "counterfactual")
    }
    ce, kd, cam, cf = shares["ce"], shares["kd"], shares["cam"], shares["counterfactual"]
    if ce is not None and kd is not None and cam is not None:
        out += templates.render(
            "mechanisms",
            "distillation",
            ce=f"{ce:.3f}",
            kd=f"{kd:.3f}",
            cam=f"{cam:.3f}",
            kd_form=_kd_form(runs),
            cam_form=_cam_form(runs),
            cf=f", counterfactual {cf:.3f}" if cf else "",
            cam_percent=f"{100 * cam:.1f}",
            acts=f"{100 * TERM_ACTS:g}",
            verdict=_distillation_verdict(kd >= TERM_ACTS, cam >= TERM_ACTS),
        )
    cov = _final(runs, "kd-ci-cam", "loc_teacher", "train/fg_coverage")
    threshold = _config_value(runs, "kd-ci-cam", "kd", "loc_teacher", "model", "mask_threshold")
    if cov is not None:
        out += templates.render(
            "mechanisms",
            "fg_mask",
            coverage=f"{100 * cov:.0f}",
            threshold="?" if threshold is None else f"{threshold:g}",
        )
    return out


def intervention_lr_ablation(suite: str, runs: dict[str, list[dict]] | None = None) -> str:
    """The ablation that tests lr starvation as the intervention's cause (the conv at the classifier's lr
    instead of the backbone's lr multiple), read from its results file when it exists."""
    found = [
        (s, loading.RESULTS / f"accuracy_{s}_intervention-lr-1_ci-cam_seed0.json") for s in (suite, "cub50")
    ]
    found = [(s, p) for s, p in found if p.is_file()]
    if not found:
        mult = _config_value(runs or {}, "ci-cam", "optim", "backbone_lr_mult")
        return templates.paragraph("mechanisms", "lr_suspect", lr_mult="?" if mult is None else f"{mult:g}")
    where, path = found[0]
    f = json.loads(path.read_text())["diagnostics"]["model"]["final"]
    return templates.paragraph(
        "mechanisms",
        "lr_measured",
        where="" if where == suite else f" (measured on {where})",
        abs_a=f"{f['val/diag_attention_abs']:.3f}",
        dz=f"{f['val/diag_logit_change']:.3f}",
        corr=f"{f['val/diag_map_corr']:.5f}",
    )


def teacher_advantage(runs: dict[str, list[dict]]) -> list[str]:
    """Each teacher's edge over CAM (same seed) on val in its own specialty: the cls teacher's best val Top-1
    Cls,
    the loc teacher's best val GT-known Loc."""
    cam = {
        r["seed"]: r.get("diagnostics", {}).get("model", {}).get("curves", []) for r in runs.get("cam", [])
    }
    out = []
    for stage, key, label in (
        ("cls_teacher", "val/top1_cls", "Top-1 Cls"),
        ("loc_teacher", "val/gt_known_loc", "GT-known Loc"),
    ):
        deltas, seeds = [], []
        for r in runs.get("kd-ci-cam", []):
            curves = r.get("diagnostics", {}).get(stage, {}).get("curves", [])
            base = cam.get(r["seed"], [])
            a = [c[key] for c in curves if key in c]
            b = [c[key] for c in base if key in c]
            if a and b:
                deltas.append(max(a) - max(b))
                seeds.append(r["seed"])
        if deltas:
            out.append(
                f"- The {stage.replace('_', ' ')} over CAM in its specialty, best val {label} (seeds "
                f"{','.join(map(str, seeds))}): {fmt_delta(deltas)} points."
            )
    return out


def pool_section(suite: str) -> list[str]:
    """What the causal context pools learned (benchmarks/pool_prior.py)."""
    path = loading.RESULTS / f"pool_prior_{suite}.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    lines = [
        f"### What the context pool learned on {suite} (`benchmarks/pool_prior.py`)",
        "",
        (
            f"Commit `{data['commit'][:12]}`, command `{portable(data['command'])}`. Pearson correlations, "
            "mean over classes: "
            "the pool `M[c]` against `P[c]`, the mean GT-box coverage of class c's training images on the "
            "pool's grid, "
            "and against `P̄`, the same over all classes; and between the pools of two different classes. "
            "Each stage's "
            "`best.ckpt` (CI-CAM and the student: kept by val MaxBoxAccV2; the teachers: by their own "
            "monitors); "
            "the pools of other checkpoints were not measured."
        ),
        "",
        "| run | model | pool rate | corr(M[c], P[c]) | corr(M[c], P̄) | corr(M[c], M[c']) |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["pools"]:
        cells = [
            f"{r[k]:.3f}" if r[k] is not None else "–"
            for k in ("corr_class_prior", "corr_global_prior", "corr_between_classes")
        ]
        lines.append(f"| {r['run']} | {r['role']} | {r['pool_rate']} | " + " | ".join(cells) + " |")
    for d in data["data"].values():
        lines += [
            "",
            (
                f"In the data, corr(P[c], P̄) = {d['data_class_vs_global']:.3f} on the "
                f"{d['grid'][0]}×{d['grid'][1]} "
                "grid: how far a class's object-location prior differs from the all-class one."
            ),
        ]
    return [*lines, ""]


def pool_correlations(suite: str) -> tuple[float, float] | None:
    """Mean corr(M[c], P[c]) and corr(M[c], P̄) over the pools in pool_prior_<suite>.json."""
    path = loading.RESULTS / f"pool_prior_{suite}.json"
    if not path.is_file():
        return None
    pools = [r for r in json.loads(path.read_text())["pools"] if r["corr_class_prior"] is not None]
    if not pools:
        return None
    return (
        statistics.fmean(r["corr_class_prior"] for r in pools),
        statistics.fmean(r["corr_global_prior"] for r in pools),
    )


def derived_pool_rates(runs: dict[str, list[dict]]) -> list[str]:
    """The pool rate each stage derived from ``model.pool_rate_target``, where seeds derived different
    values (the derivation itself changed, or the data did)."""
    differing = []
    for method in SHOWN:
        per_stage: dict[str, dict[int, float]] = defaultdict(dict)
        for run in runs.get(method, []):
            for stage, cfg in (run.get("stage_configs") or {}).items():
                per_stage[stage][run["seed"]] = cfg["model"]["pool_rate"]
        for stage, by_seed in sorted(per_stage.items()):
            if len({round(v, 9) for v in by_seed.values()}) > 1:
                name = LABEL[method] + ("" if stage == "model" else f" {stage.replace('_', ' ')}")
                differing.append(
                    f"{name} "
                    + " / ".join(f"{v:.5f}" for _, v in sorted(by_seed.items()))
                    + f" (seeds {', '.join(str(k) for k in sorted(by_seed))})"
                )
    if not differing:
        return []
    return [
        "- The pool rate r derived from `model.pool_rate_target` differs slightly between seeds: "
        + "; ".join(differing)
        + ". Earlier runs counted ⌈n/B⌉ batches per epoch, later ones ⌊n/B⌋ (the loader "
        "drops the last partial batch); r·N in the diagnostics table is what each run reached.",
        "",
    ]
