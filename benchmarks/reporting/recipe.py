"""Which recipe a table's runs were trained with: the shipped config of each suite, and the settings in which a
run differs from it."""
from __future__ import annotations

from collections import defaultdict

from . import loading
from .loading import LABEL

SUITE_CONFIG = {"synthetic": "configs/synthetic.yaml", "synthetic-v2": "configs/synthetic_v2.yaml",
                "cub50": "configs/cub50.yaml",
                "cub50-gpu": "configs/cub50_gpu.yaml"}


#: config keys that differ between runs by design (paths, seed) and say nothing about the recipe
#: and display switches
RUN_SPECIFIC_KEYS = ("trainer.seed", "data.root", "name", "method", "trainer.progress_bar")


def flatten_config(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        flat: dict[str, object] = {}
        for key, value in node.items():
            flat.update(flatten_config(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): node}


def recipe_drift(suite: str, runs: dict[str, list[dict]]) -> list[str]:
    """Whether the runs of a table were trained with the config that ships today: results of an earlier
    recipe stay in the table (they are what was measured), but the reader is told which settings differ."""
    from kdcicam.config import RunConfig, config_to_dict, load_config

    path = loading.REPO / SUITE_CONFIG.get(suite, "")
    if not path.is_file():
        return []
    defaults = flatten_config(config_to_dict(RunConfig()))  # what a run saved before a key existed had in effect
    drift: dict[str, set[str]] = defaultdict(set)
    stale: dict[str, set[int]] = defaultdict(set)
    for method, method_runs in runs.items():
        for run in method_runs:
            # the shipped config as this method applies it (the KD baseline's kd.teachers=none is the method)
            shipped = flatten_config(config_to_dict(load_config(path, (run.get("trained_as") or {}).get("overrides", []))))
            used = {**defaults, **flatten_config(run["config"])}
            for key in sorted(set(shipped) | set(used)):
                if key in RUN_SPECIFIC_KEYS:
                    continue
                before, now = used.get(key, "(absent)"), shipped.get(key, "(absent)")
                if before != now:
                    drift[key].add(f"{before!r} → {now!r}".replace("'(absent)'", "(absent)"))
                    stale[LABEL.get(method, method)].add(run["seed"])
    if not drift:
        return [(f"- Recipe: every run above was trained with the `{SUITE_CONFIG[suite]}` that ships at this "
                "commit (run-specific keys — seed, paths — aside)."), ""]
    which = "; ".join(f"{m} (seeds {', '.join(map(str, sorted(seeds)))})" for m, seeds in stale.items())
    changes = "; ".join(f"`{k}` {' / '.join(sorted(v))}" for k, v in sorted(drift.items()))
    return [(f"- **Recipe: earlier than the shipped one.** {which} were trained with settings that "
            f"`{SUITE_CONFIG[suite]}` has since changed (run's value → shipped value): {changes}. "
            "These rows measure the earlier recipe, not the shipped one."), ""]


RECIPE_WHY = {
    "cub50-gpu": ("The paper-scale recipe for one GPU (configs/cub50_gpu.yaml): every layer trained, output stride 16 "
                  "(14×14 CAMs), the official 100 epochs and step decay per stage, bf16 mixed precision; batch 32 "
                  "instead of the official 6 (the reasons and the time estimate are in the config)."),
    "cub50": ("Why this recipe: the five trainings of one seed (CAM, CI-CAM, two teachers, the student) must fit "
              "about 75 minutes on 2 CPU cores, so the official CUB recipe is scaled down — stem and blocks 0–7 frozen, "
              "8 epochs per stage, batch 8 — and each mechanism is kept at work where the scaling would idle it: 14×14 "
              "CAMs (output stride 16, as VGG16's), a context-pool rate derived from the official r·N per class, "
              "distillation as KL·T² with a CAM temperature matched to Lite0's CAM scale, a localization-teacher mask "
              "threshold that splits foreground from background; the official crops (Resize 304 / 336 + RandomCrop "
              "224) and lr 5e-4 are kept. Every difference from the official code and the measurement behind it is "
              "listed in [docs/method.md](method.md#9-scaling-the-recipes-down); the diagnostics below show, per run, "
              "whether each mechanism acted."),
}


#: what each suite's data is, said where its numbers are
SUITE_DATA = {
    "cub50": ("Data: CUB-200-2011 classes 1–50 only, from a reduced copy whose images are resized to a shorter side "
              "of 256 px (boxes rescaled with them): 1,500 official train images (10 % of each class held out as "
              "val by `kdcicam data cub`, seed 0) and the 1,389 official test images. "),
    "synthetic": ("Data: `kdcicam data synthetic` with its defaults (8 classes, 128 px, 2,400 / 400 / 800 / 800 train / "
                  "val / test / test_conflict images, rho 0.9, seed 0). "),
    "synthetic-v2": ("Data: `kdcicam data synthetic --variant v2` with its defaults, the calibration's chosen point "
                     "(`grid8`, docs/confounding.md: 8 classes told apart by lobe count, 128 px, rho 0.97, radius "
                     "0.12–0.22; 2,400 / 400 / 800 / 800 train / val / test / test_conflict images, seed 0; test "
                     "draw 1: a fresh test / test_conflict pair, train / val / val_conflict as in draw 0). "),
}


#: the data of an archived (spent) draw, where it differs from SUITE_DATA
SPENT_DATA = {
    "synthetic-v2": ("Data: as the current synthetic-v2 section's, but with test draw 0, the first test / test_conflict "
                     "pair (train, val and val_conflict are the same images in both draws). "),
}
