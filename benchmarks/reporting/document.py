"""docs/benchmarks.md as a whole: each suite's section (tables, recipe, targets, mechanisms), the spent and
superseded results, ablations, pools, the confounder sections, the notes and the speed sections."""

from __future__ import annotations

from pathlib import Path

from report_confounding import calibration_section, probe_section

from . import loading, practitioner, templates
from .ablations import ablation_section
from .loading import LABEL, SHOWN, SPENT, load
from .mechanisms import derived_pool_rates, diagnostics_section, dilemma_section, pool_section
from .notes import notes
from .recipe import SUITE_CONFIG, data_line, recipe_drift, recipe_why
from .runs import machine_line, val_images
from .speed import device_check_section, speed_section
from .tables import archive_section, device_comparison, table, teachers_diagnostic, val_se_line
from .targets import budget, oracle_section, targets

# The authors' own test logs (shaofeifei11/KG-CI-CAM table_*.sh), CUB-200, VGG16 — see docs/method.md §6.
PAPER_CUB_VGG16 = {
    "NL-CCAM baseline": {"Top-1 Cls": 74.75, "Top-1 Loc": 65.53, "GT-known Loc": 87.45},
    "CI-CAM (KD-paper training)": {"Top-1 Cls": 75.15, "Top-1 Loc": 66.53, "GT-known Loc": 88.09},
    "KD-CI-CAM": {"Top-1 Cls": 79.24, "Top-1 Loc": 73.02, "GT-known Loc": 91.59},
}


#: tagged runs with a section of their own (practitioner.dilemma_control_section: E3 scores test once, by design,
#: so it is not an ablation scored on val)
OWN_SECTION_TAGS = ("e3",)

#: suites whose section is shown even before it has results (a redrawn test pair awaiting its runs); each has
#: a
#: block ``expected_<suite>`` in report_templates/page.md
EXPECTED_SUITES = ("synthetic-v2",)


def suite_section(
    suite: str,
    runs: dict[str, list[dict]],
    groups: dict[tuple[str, str], dict[str, list[dict]]],
    results: Path | None = None,
    heading: str | None = None,
    level: str = "##",
    preface: str = "",
    v2_goals: dict | None = None,
) -> list[str]:
    """A suite's section: its config and data, a table per split with every checkpoint, recipe drift, budget,
    targets, the oracle, the dilemma and the mechanism diagnostics, all read from ``results``."""
    any_run = next(iter(next(iter(runs.values()))))
    n, disagree = val_images(
        suite,
        {
            **runs,
            **{f"{t}/{m}": rs for (s, t), g in groups.items() if s == suite and t for m, rs in g.items()},
        },
    )
    lines = [f"{level} {heading or suite}", ""] + ([preface, ""] if preface else [])
    cfg = any_run["config"]
    data = data_line(suite, runs, n, spent=results is not None and results != loading.RESULTS)
    lines.append(
        f"Config `{SUITE_CONFIG.get(suite, '?')}`: backbone {cfg['model']['backbone']} "
        f"(pretrained={cfg['model']['pretrained']}, output stride {cfg['model']['output_stride'] or 32}, "
        f"frozen blocks {cfg['model']['freeze_stages']}), {cfg['data']['image_size']} px, "
        f"{cfg['optim']['epochs']} epochs per stage, batch {cfg['data']['batch_size']}. "
        + data
        + f"Machine: {machine_line(any_run)}, torch "
        + " / ".join(sorted({r["machine"]["torch"] for rs in runs.values() for r in rs}))
        + ". Commit(s): "
        + ", ".join(sorted({f"`{r['commit'][:12]}`" for rs in runs.values() for r in rs}))
        + "."
    )
    lines += [
        "",
        (
            "Each table shows every method at three checkpoints of the same run: `best_cls` (kept by val "
            "Top-1 Cls), `best_loc` (kept by val MaxBoxAccV2; the run's `best.ckpt`, which the targets below "
            "use) and `last` (the last epoch's). " + val_se_line(suite, n, disagree)
        ),
        "",
    ]
    splits = sorted(
        {s for rs in runs.values() for r in rs for s in r["metrics"]}, key=lambda s: (s != "test", s)
    )
    for split in splits:
        lines += [f"**{split}**", "", *table(runs, split, suite, results, n), ""]
    lines += recipe_drift(suite, runs) + derived_pool_rates(runs)
    why = recipe_why(suite)
    lines += ([*why, ""] if why else []) + budget(suite, runs)
    lines += ["Targets (each run's `best_loc` checkpoint):", "", *targets(suite, runs, results, v2_goals)]
    lines += ["", *oracle_section(suite, runs, results, v2_goals)]
    if results is None or results == loading.RESULTS:  # a spent section shows its own reading (spent_sections)
        lines += teachers_diagnostic(
            loading.RESULTS / f"teachers_{suite}.json",
            "Controls: the KD-CI-CAM teachers (and tagged controls) on test, scored after the final runs",
            runs,
        )
    lines += dilemma_section(suite, runs, n, level + "#") + diagnostics_section(suite, runs, level + "#")
    if suite == "cub50":
        lines += device_comparison(groups)
    if suite in ("cub50", "cub50-gpu"):
        lines += [
            "For context only — the authors' CUB-200 numbers with VGG16 (their test logs; different "
            "backbone, "
            "all 200 classes, full resolution, thresholds tuned on test): "
            + "; ".join(
                f"{k}: " + ", ".join(f"{m} {v:.2f}" for m, v in d.items()) for k, d in PAPER_CUB_VGG16.items()
            )
            + ".",
            "",
        ]
    return lines


def spent_sections() -> list[str]:
    """The archived results whose test splits were read before they could judge a claim (SPENT), in full."""
    lines = []
    for folder_name, (suite, heading, goals) in SPENT.items():
        folder = loading.RESULTS / "archive" / folder_name
        groups = load(folder) if folder.is_dir() else {}
        runs = groups.get((suite, ""))
        if not runs:
            continue
        why = templates.paragraph(
            "data", f"spent_{folder_name}", closure=f"{goals['closure']:g}", gain=f"{goals['gain']:g}"
        )
        lines += suite_section(
            suite, runs, groups, results=folder, heading=heading, preface=why, v2_goals=goals
        )
        lines += teachers_diagnostic(folder / f"teachers_{suite}.json")
    return lines


def main() -> int:
    groups = load()
    lines = [
        "# Benchmarks",
        "",
        templates.paragraph("page", "intro"),
        "",
        templates.paragraph("page", "se"),
        "",
    ]
    present = {suite for suite, tag in groups if not tag}
    for suite in sorted(present | set(EXPECTED_SUITES)):
        if suite not in present:
            lines += [f"## {suite}", "", templates.paragraph("page", f"expected_{suite}"), ""]
            continue
        lines += suite_section(suite, groups[(suite, "")], groups)
    lines += spent_sections() + archive_section()
    ablations = {key: runs for key, runs in groups.items() if key[1] and key[1] not in OWN_SECTION_TAGS}
    for suite in sorted({suite for suite, _ in ablations}):
        lines += ablation_section(
            suite,
            {tag: runs for (s, tag), runs in ablations.items() if s == suite},
            groups.get((suite, "")),
        )
    for suite in ("synthetic", "cub50"):
        lines += pool_section(suite)
    lines += calibration_section() + probe_section(LABEL, SHOWN)
    lines += practitioner.sections()
    lines += [*notes(groups), "", *speed_section(), *device_check_section()]
    from kdcicam.data.metadata import atomic_write_text

    atomic_write_text(loading.OUT, "\n".join(lines).rstrip() + "\n")
    print(f"wrote {loading.OUT}")
    return 0
