"""The confounder sections of docs/benchmarks.md (docs/confounding.md): the synthetic v2
calibration table and the real-photo conflict probe, generated from their results files only."""
from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PROBE = RESULTS / "conflict_probe"
CALIBRATION = RESULTS / "synthetic_calibration"
PROBE_SPLITS = ("test_original", "test_same", "test_conflict")
#: the probe is unsound when the paste alone pulls a CAM's mass this much, relative to what a bird pulls:
#: fixed in docs/confounding.md before the full probe was measured
PULL_LIMIT = 0.25


def _fmt(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.fmean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def _probe_runs(folder: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(folder.glob("*_seed*.json")):
        r = json.loads(path.read_text())
        runs[r["method"]].append(r)
    return {m: sorted(rs, key=lambda r: r["seed"]) for m, rs in runs.items()}


def pull_verdict(pull: dict | None) -> str:
    """One run's seam verdict by the rule of docs/confounding.md: ``sound`` when the bird's gain is surely
    positive and both pulls are surely below the limit (95 % bootstrap intervals), ``unsound`` when either
    pull is surely above it, else ``undetermined``."""
    if not pull or "pull_inside_ci95" not in pull:
        return "undetermined"
    if pull["bird_gain_inside_ci95"][0] <= 0:
        return "undetermined"  # the CAM does not find the bird better than the bare canvas: nothing to compare to
    highs = (pull["pull_inside_ci95"][1], pull["pull_band_ci95"][1])
    lows = (pull["pull_inside_ci95"][0], pull["pull_band_ci95"][0])
    if max(highs) < PULL_LIMIT:
        return "sound"
    return "unsound" if max(lows) >= PULL_LIMIT else "undetermined"


def _ci(pull: dict, key: str) -> str:
    lo, hi = pull[f"{key}_ci95"]
    return f"{pull[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def probe_section(label: dict[str, str], order: tuple[str, ...], folder: Path = PROBE) -> list[str]:
    """Top-1 Cls, leakage and MaxBoxAccV2 per probe split, the floor and reference beside them, and the seam
    check (paste pull against the bare canvas)."""
    runs = _probe_runs(folder)
    floors_file = folder / "floors.json"
    if not runs or not floors_file.is_file():
        return []
    floors = json.loads(floors_file.read_text())
    settings = [r.get("probe_settings", {}) for rs in runs.values() for r in rs] + [floors.get("probe_settings", {})]
    keys = ("split", "seed", "feather", "margin", "max_upscale", "control", "limit", "counts")
    if len({json.dumps({k: st.get(k) for k in keys}, sort_keys=True) for st in settings}) > 1:
        return ["## cub50: the real-photo conflict probe", "",
                ("The probe results in `benchmarks/results/conflict_probe/` were measured on different probes "
                "(settings differ); remove them and run `benchmarks/conflict_probe.py` again."), ""]
    any_run = next(iter(runs.values()))[0]
    n = any_run["metrics"]["test_conflict"]["num_images"]
    checkpoints = sorted({f"`{r.get('checkpoint', 'checkpoints/best.ckpt')}`" for rs in runs.values() for r in rs})
    lines = ["## cub50: the real-photo conflict probe", "",
             ("`benchmarks/conflict_probe.py` (commit " + ", ".join(sorted({f"`{r['commit'][:12]}`" for rs in runs.values()
                                                                          for r in rs})) +
              f"): every cub50 benchmark run on the paired probe splits of `kdcicam data conflict data/cub50 --control` "
              f"(seed {settings[0].get('seed', '?')}, {n} of the test split's objects, the same in every split; "
              "docs/confounding.md), with the box threshold each run chose on its own val. Each run is scored at "
              f"{', '.join(checkpoints)} (kept by val MaxBoxAccV2, the `best_loc` checkpoint; the probe files score no "
              "other checkpoint). `same`: the bird's box "
              "on a background of its own class; `conflict`: on another class's. **same − conflict** is what the "
              "foreign habitat costs, the pasting being equal."), "",
             ("| method | seeds | Cls original | Cls same | Cls conflict | same − conflict | Leakage original | "
              "Leakage same | Leakage conflict | MaxBoxAccV2 original | MaxBoxAccV2 conflict |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for method in [m for m in order if m in runs]:
        rs = runs[method]
        m = [r["metrics"] for r in rs]
        lines.append(f"| {label[method]} | {','.join(str(r['seed']) for r in rs)} | "
                     + " | ".join(_fmt([x[s]["top1_cls"] for x in m]) for s in PROBE_SPLITS) + " | "
                     + _fmt([x["test_same"]["top1_cls"] - x["test_conflict"]["top1_cls"] for x in m]) + " | "
                     + " | ".join(_fmt([x[s].get("context_leakage") for x in m]) for s in PROBE_SPLITS) + " | "
                     + " | ".join(_fmt([x[s]["max_box_acc_v2"] for x in m]) for s in ("test_original", "test_conflict"))
                     + " |")
    grid = floors["oracle_coverage"]["grid"]
    for name, key in (("centre Gaussian (floor)", "centre_gaussian"),
                      (f"oracle box map, {grid[0]}×{grid[1]} (reference)", "oracle_coverage")):
        sp = floors[key]["splits"]
        lines.append(f"| *{name}* | – | – | – | – | – | "
                     + " | ".join(_fmt([sp[s].get("context_leakage")]) for s in PROBE_SPLITS) + " | "
                     + " | ".join(_fmt([sp[s]["max_box_acc_v2"]]) for s in ("test_original", "test_conflict")) + " |")
    lines += ["", ("**Does CAM fire on paste seams?** `test_canvas` is the canvas of `test_conflict` and `test_seam` "
                   "with nothing pasted. Per image, against it: the share of the CAM's mass (min-max normalised, as for "
                   "context leakage) that moves into the box when the bird is pasted (*bird gain*), and that moves into "
                   "the box, or onto a band one CAM cell wide around its border, when a background patch is pasted "
                   "instead (`test_seam`). **Pull** = patch gain / bird gain: 0 is a CAM blind to the paste, 1 one that "
                   "treats a pasted patch as a bird. Means over images, 95 % bootstrap intervals in brackets. Rule "
                   f"(docs/confounding.md): a run is *sound* when both pulls are below {PULL_LIMIT:g} with 95 % "
                   "confidence."), "",
              "| method | seed | bird gain inside | pull inside | pull on the band | verdict |", "|---|---|---|---|---|---|"]
    verdicts = []
    for method in [m for m in order if m in runs]:
        for r in runs[method]:
            pull = r.get("paste_pull")
            verdict = pull_verdict(pull)
            verdicts.append(verdict)
            if not pull or "pull_inside_ci95" not in pull:
                lines.append(f"| {label[method]} | {r['seed']} | – | – | – | {verdict} (no paste pull in this file) |")
                continue
            lines.append(f"| {label[method]} | {r['seed']} | {_ci(pull, 'bird_gain_inside')} | "
                         f"{_ci(pull, 'pull_inside')} | {_ci(pull, 'pull_band')} | {verdict} |")
    counts = {v: verdicts.count(v) for v in ("sound", "unsound", "undetermined") if verdicts.count(v)}
    overall = ("**sound**" if counts.get("sound") == len(verdicts) else "**not sound**" if counts.get("unsound")
               else "**undetermined**")
    lines += ["", (f"Verdict over the {len(verdicts)} runs ({', '.join(f'{k} {v}' for k, v in counts.items())}): "
                  f"the probe is {overall} for seams.")
              + ("" if overall == "**sound**" else
                 " Its localization numbers on the pasted splits (`same`, `conflict`) then partly measure the paste, "
                 "not the habitat; the Top-1 Cls comparison **same − conflict** holds the paste equal on both sides.")]
    return [*lines, ""]


def calibration_section(folder: Path = CALIBRATION) -> list[str]:
    """One row per knob point and seed: CAM's val / val_conflict numbers and the two targets."""
    paths = sorted(folder.glob("*_seed*.json"))
    if not paths:
        return []
    rs = [json.loads(p.read_text()) for p in paths]
    commits = sorted({f"`{r['commit'][:12]}`" for r in rs})
    sizes = sorted({m.get("num_images") for r in rs for m in r["metrics"].values() if m.get("num_images")})
    noise = (f" Each point's CAM is its run's `best.ckpt` (kept by val MaxBoxAccV2; these files score no other "
             f"checkpoint), read on the val split that chose it. val and val_conflict have "
             f"{' / '.join(map(str, sizes))} images: the binomial SE of one reading, sqrt(p(1 − p)/n), is at most "
             f"{50 / math.sqrt(min(sizes)):.2f} points, and a drop (the difference of two readings) carries about "
             "√2 times that." if sizes else "")
    lines = ["## synthetic v2: calibration (val / val_conflict only)", "",
             (f"`benchmarks/synthetic_calibration.py` (commit {', '.join(commits)}): per knob point, a plain CAM "
              "(configs/synthetic_v2.yaml) trained on that point's data and scored on val (habitat = the class's own "
              f"with probability rho) and val_conflict (never). Targets: Cls drop ≥ {rs[0]['criteria']['target']:g} "
              "points and CAM leakage − the oracle's (same grid) ≥ the same, on val. *follow*: how often the prediction "
              "on val_conflict is the habitat's class. Each point is a change of the starting point (192 px, 12×12 CAMs); the rule that picked the preset (`grid8`) is in docs/confounding.md." + noise), "",
             ("| point | knobs | seed | grid | Cls val | Cls val_conflict | drop | follow | Leakage val | oracle | gap val "
             "| gap val_conflict | MaxBoxAccV2 val | floor | passes | min |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rs, key=lambda r: (list(_point_order()).index(r["point"]) if r["point"] in _point_order() else 99,
                                       r["seed"])):
        m, c = r["metrics"], r["criteria"]
        knobs = ", ".join(f"{k}={v}" for k, v in r["knobs"].items()) or "(the starting point: 192 px)"
        floor = r["floor_centre_gaussian"]["splits"]["val"]["max_box_acc_v2"]
        lines.append(f"| {r['point']} | {knobs} | {r['seed']} | {r['cam_grid'][0]}×{r['cam_grid'][1]} | "
                     f"{m['val']['top1_cls']:.2f} | {m['val_conflict']['top1_cls']:.2f} | {c['cls_drop']:.2f} | "
                     f"{r.get('habitat_following', {}).get('val_conflict', float('nan')):.2f} | {m['val']['context_leakage']:.2f} | "
                     f"{r['oracle']['val']['coverage']['context_leakage']:.2f} | {c['leak_gap']['val']:.2f} | "
                     f"{c['leak_gap']['val_conflict']:.2f} | {m['val']['max_box_acc_v2']:.2f} | {floor:.2f} | "
                     f"{'**yes**' if c['passes'] else 'no'} | {r['wall_seconds']['total'] / 60:.1f} |")
    return [*lines, ""]


def _point_order() -> dict:
    from synthetic_calibration import POINTS

    return POINTS
