"""Which recipe a table's runs were trained with: the shipped config of each suite, and the settings in which
a
run differs from it."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from . import loading, templates
from .loading import LABEL
from .targets import BUDGET_MIN

SUITE_CONFIG = {
    "synthetic": "configs/synthetic.yaml",
    "synthetic-v2": "configs/synthetic_v2.yaml",
    "cub50": "configs/cub50.yaml",
    "cub50-gpu": "configs/cub50_gpu.yaml",
}


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
    defaults = flatten_config(
        config_to_dict(RunConfig())
    )  # what a run saved before a key existed had in effect
    drift: dict[str, set[str]] = defaultdict(set)
    stale: dict[str, set[int]] = defaultdict(set)
    for method, method_runs in runs.items():
        for run in method_runs:
            # the shipped config as this method applies it (the KD baseline's kd.teachers=none is the method)
            shipped = flatten_config(
                config_to_dict(load_config(path, (run.get("trained_as") or {}).get("overrides", [])))
            )
            used = {**defaults, **flatten_config(run["config"])}
            # a CAM / CI-CAM training never reads the kd section: its changes do not make those runs stale
            reads_kd = (run.get("trained_as") or {}).get("method", method) == "kd-ci-cam"
            for key in sorted(set(shipped) | set(used)):
                if key in RUN_SPECIFIC_KEYS or (key.startswith("kd.") and not reads_kd):
                    continue
                before, now = used.get(key, "(absent)"), shipped.get(key, "(absent)")
                if before != now:
                    drift[key].add(f"{before!r} → {now!r}".replace("'(absent)'", "(absent)"))
                    stale[LABEL.get(method, method)].add(run["seed"])
    if not drift:
        return [
            (
                f"- Recipe: every run above was trained with the `{SUITE_CONFIG[suite]}` that ships at this "
                "commit (run-specific keys — seed, paths — aside)."
            ),
            "",
        ]
    which = "; ".join(f"{m} (seeds {', '.join(map(str, sorted(seeds)))})" for m, seeds in stale.items())
    changes = "; ".join(f"`{k}` {' / '.join(sorted(v))}" for k, v in sorted(drift.items()))
    return [
        (
            f"- **Recipe: earlier than the shipped one.** {which} were trained with settings that "
            f"`{SUITE_CONFIG[suite]}` has since changed (run's value → shipped value): {changes}. "
            "These rows measure the earlier recipe, not the shipped one."
        ),
        "",
    ]


def shipped_settings(suite: str) -> dict[str, Any]:
    """The suite's shipped config, flattened (``model.output_stride`` ...); empty when the suite has none."""
    from kdcicam.config import config_to_dict, load_config

    path = loading.REPO / SUITE_CONFIG.get(suite, "")
    return flatten_config(config_to_dict(load_config(path))) if path.is_file() else {}


def _short_float(value: object) -> str:
    """5e-4 rather than 0.0005: a learning rate as a config file writes it."""
    if isinstance(value, float) and 0 < value < 1e-3:
        return f"{value:.0e}".replace("e-0", "e-")
    return str(value)


def recipe_why(suite: str) -> list[str]:
    """Why the suite's recipe is what it is (report_templates/data.md), its settings read from the shipped
    config."""
    block = f"recipe_{suite}"
    if not templates.has("data", block):
        return []
    cfg = shipped_settings(suite)
    stride = cfg["model.output_stride"] or 32
    grid = int(cfg["data.image_size"]) // int(stride)
    return templates.render(
        "data",
        block,
        config=SUITE_CONFIG[suite],
        output_stride=stride,
        grid=f"{grid}×{grid}",
        epochs=cfg["optim.epochs"],
        batch=cfg["data.batch_size"],
        image_size=cfg["data.image_size"],
        last_frozen=int(cfg["model.freeze_stages"]) - 1,
        resize=cfg["data.augment.resize"],
        teacher_resize=cfg.get("kd.loc_teacher.augment.resize", "?"),
        lr=_short_float(cfg["optim.lr"]),
        budget=BUDGET_MIN.get(suite, "?"),
    )


def data_line(suite: str, runs: dict[str, list[dict]], val_n: int | None, spent: bool) -> str:
    """What the suite's data is (report_templates/data.md), the image counts of the splits its runs scored
    read
    from their results files; "" for a suite the templates do not describe."""
    block = (
        f"spent_data_{suite}" if spent and templates.has("data", f"spent_data_{suite}") else f"data_{suite}"
    )
    if not templates.has("data", block):
        return ""
    counts: dict[str, str] = {"val": "?" if val_n is None else f"{val_n:,}"}
    for rs in runs.values():
        for r in rs:
            for split, metrics in r["metrics"].items():
                if metrics.get("num_images"):
                    counts.setdefault(split, f"{int(metrics['num_images']):,}")
    values = {"test": "?", "test_conflict": "?", **counts}
    return templates.paragraph("data", block, **values) + " "
