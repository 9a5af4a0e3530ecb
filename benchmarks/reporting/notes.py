"""The status section: coverage, the cub50 comparison, what was not run, and why the synthetic targets are missed."""
from __future__ import annotations

import json
import statistics

from . import loading
from .formatting import fmt_delta, mean_std
from .mechanisms import pool_correlations
from .runs import paired_deltas, seed_minutes, seeds_of

def notes(groups: dict[tuple[str, str], dict[str, list[dict]]]) -> list[str]:
    """The status section: seed counts and the cub50 comparison come from the results files."""
    coverage = ", ".join(f"{suite} with {len(seeds_of(runs))} seed{'s' if len(seeds_of(runs)) != 1 else ''} "
                         f"({','.join(map(str, seeds_of(runs)))}; "
                         f"{min(seed_minutes(runs)):.0f}–{max(seed_minutes(runs)):.0f} min of wall time per seed)"
                         for (suite, tag), runs in sorted(groups.items()) if not tag and seeds_of(runs))
    lines = [
        "## Notes and status",
        "",
        ("- Coverage: the suites and seeds above are all that have been run (`benchmarks/accuracy.py` resumes where "
         f"it stopped): {coverage}. Train times are wall "
         "times on the 2 cores; some runs shared them with other jobs (the test suite, other benchmarks), so they "
         "are upper bounds and vary between seeds for that reason."),
    ] + NOTES_WHY
    cub = groups.get(("cub50", ""))
    if cub and seeds_of(cub):
        seeds = seeds_of(cub)
        parts, loc_gains = [], []
        for label, key in (("Top-1 Cls", "top1_cls"), ("Top-1 Loc", "top1_loc"), ("MaxBoxAccV2", "max_box_acc_v2")):
            deltas = paired_deltas(cub, "test", key, "kd-ci-cam", seeds)
            parts.append(f"{label} {fmt_delta(deltas)}")
            if key != "top1_cls":
                loc_gains.append(statistics.fmean(deltas))
        verdict = "meeting" if min(loc_gains) >= 3 else "short of"
        cam_std = mean_std([r["metrics"]["test"]["max_box_acc_v2"] for r in cub["cam"] if r["seed"] in seeds])[1]
        pools = pool_correlations("cub50")
        lines.append(
            f"- cub50 (seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}): KD-CI-CAM minus CAM on "
            f"test, seed by seed: {', '.join(parts)}; {verdict} the +3 targets on localization. "
            + (f"The pools there correlate {pools[0]:.2f} on average with their class's location prior P[c] and "
               f"{pools[1]:.2f} with the all-class one P̄ (pool table above). " if pools else "")
            + (f"CAM's own MaxBoxAccV2 varies by {cam_std:.2f} (std) between seeds."
               if len(seeds) > 1 else "One seed cannot tell differences of this size from seed noise."))
    missing = sorted({0, 1, 2} - set(seeds_of(cub))) if cub else [0, 1, 2]
    todo = (f"cub50 seed{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of the current recipe "
            "(three are needed for the targets; `accuracy.py` resumes a stopped run from its last.ckpt); "
            if missing else "")
    baseline_missing = sorted({0, 1, 2} - {r["seed"] for r in (cub or {}).get("kd-baseline", [])})
    if baseline_missing:
        todo += (f"the KD baseline (the student without teachers) on cub50, seed{'s' if len(baseline_missing) > 1 else ''} "
                 f"{', '.join(map(str, baseline_missing))} (`accuracy.py --suite cub50 --methods kd-baseline`, about "
                 "20 min per seed): what the teachers add over the student's own training; ")
    lr_runs = sorted(loading.RESULTS.glob("accuracy_*_intervention-lr-1_*.json"))
    if not lr_runs:
        todo += ("the intervention trained at the classifier's lr (`optim.intervention_lr_mult=1`, chosen on val), "
                 "since the diagnostics show `F ⊙ (1 + A)` leaving the CAM unchanged; ")
    lines.append("- What would test the methods' claims better, and was not run here (CPU time): " + todo +
                 "a finer CAM grid on synthetic; longer training (the papers train 100 epochs).")
    if lr_runs:
        done = sorted({(r["suite"], r["seed"]) for r in (json.loads(f.read_text()) for f in lr_runs)})
        lines.append("- Run: the intervention trained at the classifier's lr (`optim.intervention_lr_mult=1`, "
                     "`intervention-lr-1` ablation, scored on val: " + ", ".join(f"{s} seed {k}" for s, k in done)
                     + "); its numbers are in the ablation table and the diagnostics reading above.")
    return lines


NOTES_WHY = [
    ("- The numbers in this section's reasoning are those of the tables above; nothing here was tuned on test. "
     "Why the synthetic (v1) targets are missed:"),
    ("  1. **Leakage is bounded by the CAM's resolution.** The CPU recipe's CAM is an 8×8 grid. A CAM that is "
     "exactly the object at that resolution (the oracle rows) still leaves most of its normalised mass outside the "
     "object once upsampled; a 30 % cut relative to CAM asks for less leakage than the oracle's, which no method "
     "with this CAM grid reaches. MaxBoxAccV2 has room (the oracle boxes almost perfectly), leakage hardly any. "
     "Meeting the leakage target needs a finer CAM (output stride 8, or a larger input), at several times the "
     "CPU cost."),
    ("  2. **The context pool is a shared location prior, not the habitat.** On this data every class has the same "
     "object-location prior (objects are placed anywhere inside the frame, hence more often near its centre: "
     "corr(P[c], P̄) in the pool table). Each trained pool is that prior: it correlates with the all-class P̄ as "
     "much as with its own class's P[c], and the pools of different classes correlate with each other. It tells "
     "neither where the object is in a given image nor which habitat surrounds it, so the intervention "
     "`F ⊙ (1 + A)` re-weights the same positions for every image: CI-CAM ≈ CAM on every split, within the seed std, "
     "and the ablations agree — freezing the pool at zero (`pool-rate-0`, the intervention reduced to a learned "
     "per-channel scale) or moving it ten times faster (`pool-rate-0.1`) changes val MaxBoxAccV2 by well under a "
     "point."),
    ("  3. **On v1, KD-CI-CAM's gain over CAM comes from the student's training, not the teachers.** The student scores "
     "higher than CAM on MaxBoxAccV2 and GT-known Loc, and loses Top-1 Cls. On val, the same student with no "
     "teachers (`no-teachers`: α = 0, route 0 only, i.e. CE with the student's random-resized-crop + RandAugment "
     "augmentation — the KD paper's own \"CI-CAM\" setting, the same training as the `kd-baseline` method that "
     "`accuracy.py --methods kd-baseline` scores on test) matches it, and distilling from the localization "
     "teacher alone does not help either: with these 3-epoch teachers, distillation adds nothing measurable."),
]
