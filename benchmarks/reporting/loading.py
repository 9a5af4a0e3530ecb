"""Reading benchmarks/results/: the results files grouped by suite, tag and method, under today's metric
names,
and the method list and labels every table uses."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import kdcicam

REPO = Path(__file__).resolve().parents[2]


RESULTS = REPO / "benchmarks" / "results"


OUT = REPO / "docs" / "benchmarks.md"


METHODS = tuple(kdcicam.list_models())  # the model registry is the one method list


#: the methods' rows in the tables: the three, then the KD paper's own baseline (accuracy.py --methods
#: kd-baseline),
#: which a seed's budget and "every method has this seed" leave out
SHOWN = (*METHODS, "kd-baseline")


LABEL = {
    "cam": "CAM",
    "ci-cam": "CI-CAM",
    "kd-ci-cam": "KD-CI-CAM",
    "kd-baseline": "KD baseline (no teachers)",
}


#: metric keys renamed since older results files were written (the oracle-threshold numbers, docs/method.md
#: §5)
RENAMED_KEYS = {
    "gt_known_loc_at_best": "gt_known_loc_oracle",
    "top1_loc_at_best": "top1_loc_oracle",
    "top5_loc_at_best": "top5_loc_oracle",
}


def current_keys(result: dict) -> dict:
    """A results file's per-split metrics under today's names (old files stay readable)."""
    for metrics in result.get("metrics", {}).values():
        for old, new in RENAMED_KEYS.items():
            if old in metrics and new not in metrics:
                metrics[new] = metrics.pop(old)
    return result


def portable(command: str) -> str:
    """A recorded command without this machine's absolute paths: the interpreter as `python`, paths inside
    the repository relative to it, others as `…/<last two parts>`."""
    words = []
    for word in command.split():
        path = Path(word)
        if not path.is_absolute():
            words.append(word)
        elif path.name.startswith("python"):
            words.append("python")
        elif REPO in path.parents:
            words.append(path.relative_to(REPO).as_posix())
        else:
            words.append("…/" + "/".join(path.parts[-2:]))
    return " ".join(words)


def load(results: Path | None = None) -> dict[tuple[str, str], dict[str, list[dict]]]:
    """(suite, tag) -> method -> list of run results (one per seed), from ``results`` (default: RESULTS)."""
    groups: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted((results or RESULTS).glob("accuracy_*.json")):
        r = current_keys(json.loads(path.read_text()))
        groups[(r["suite"], r.get("tag", ""))][r["method"]].append(r)
    return groups


def floor_file(suite: str, results: Path | None = None) -> dict | None:
    path = (results or RESULTS) / f"floor_centre_gaussian_{suite}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def floor_metrics(suite: str, split: str, results: Path | None = None) -> dict | None:
    """The centre-Gaussian map's metrics on a split (benchmarks/floors.py), in the results files' keys."""
    data = floor_file(suite, results)
    if data is None or split not in data["splits"]:
        return None
    m = dict(data["splits"][split])
    m.setdefault("top1_cls", None)
    m.setdefault("top1_loc", None)
    m["max_box_acc_v2_per_iou"] = m.get("max_box_acc_v2_per_iou") or {}
    return m


#: archive folders whose test splits were read before the claims they would judge: rendered in full, labelled
#: as
#: spent, never as the suite's current numbers — folder: (suite, heading, the v2 targets of its time); why it
#: is spent
#: is the block ``spent_<folder>`` of report_templates/data.md
SPENT = {
    "synthetic-v2-draw0": (
        "synthetic-v2",
        "Superseded: synthetic-v2, test draw 0 (read by a diagnostic; spent)",
        {"closure": 30.0, "gain": 5.0, "cls": None},
    ),
    "synthetic-v2-draw1": (
        "synthetic-v2",
        "Superseded: synthetic-v2, test draw 1 (round 1's student; its miss shaped round 2; spent)",
        {"closure": 15.0, "gain": 5.0, "cls": -0.5},
    ),
}
