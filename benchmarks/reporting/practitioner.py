"""Sections read from the benchmarks beside the accuracy runs: the cub50 dilemma against the weight-averaged CAM
(E3), post-hoc CAM methods on CAM's own checkpoints, COCO AP of the pseudo-labels and the ONNX backend's speed.
Every number comes from a results file named in the section; nothing here is typed by hand."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from .formatting import fmt
from .loading import RESULTS, floor_metrics

REPO = Path(__file__).resolve().parents[2]
SEEDS = (0, 1, 2)


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _floor_v2(suite: str, split: str, results: Path) -> float | None:
    m = floor_metrics(suite, split, results)
    return None if m is None else m["max_box_acc_v2"]


def dilemma_control_section(results: Path = RESULTS, suite: str = "cub50", tag: str = "e3") -> list[str]:
    """CAM's three checkpoints, the weight average of its late epochs and the E3 student, on test."""
    rows: dict[str, list[tuple[float, float]]] = {}
    files: dict[str, str] = {}
    for seed in SEEDS:
        cam = _read(results / f"accuracy_{suite}_{tag}_cam_seed{seed}.json")
        if cam is not None:
            for kind, entry in cam.get("by_monitor", {}).items():
                m = entry["metrics"].get("test")
                if m:
                    rows.setdefault(f"CAM `{kind}`", []).append((m["top1_cls"], m["max_box_acc_v2"]))
            files["CAM"] = f"accuracy_{suite}_{tag}_cam_seed*.json"
        wa = _read(results / f"weight_average_{suite}_{tag}_seed{seed}.json")
        if wa is not None and "test" in wa["metrics"]:
            m = wa["metrics"]["test"]
            rows.setdefault("weight-averaged CAM (epochs `best_loc`..last)", []).append(
                (m["top1_cls"], m["max_box_acc_v2"]))
            files["weight-averaged CAM (epochs `best_loc`..last)"] = f"weight_average_{suite}_{tag}_seed*.json"
        kd = _read(results / f"accuracy_{suite}_{tag}_kd-ci-cam_seed{seed}.json")
        if kd is not None:
            m = kd["by_monitor"]["last"]["metrics"].get("test")
            if m:
                rows.setdefault("E3 student, `last`", []).append((m["top1_cls"], m["max_box_acc_v2"]))
                files["E3 student, `last`"] = f"accuracy_{suite}_{tag}_kd-ci-cam_seed*.json"
    if "CAM `best_cls`" not in rows or "CAM `best_loc`" not in rows:
        return []
    lines = [f"## {suite}: the dilemma against the weight-averaged CAM (E3)", "",
             ("Test split, mean ± sd over the seeds shown. CAM is the shipped recipe re-run with per-epoch "
             "checkpoints; the weight average and the E3 student (teachers = that run's `best_loc` / `best_cls`, "
             "start = `best_loc`, 3 epochs) were fixed before any of them ran "
             f"(`kd_recipe_choice_{suite}.json`; docs/method.md §9.2)."), "",
             "| model | Top-1 Cls | MaxBoxAccV2 | seeds | file |", "|---|---|---|---|---|"]
    for name, values in rows.items():
        file = files.get(name, files.get("CAM", ""))
        lines.append(f"| {name} | {fmt([v[0] for v in values])} | {fmt([v[1] for v in values])} | {len(values)} "
                     f"| `{file}` |")
    floor = _floor_v2(suite, "test", results)
    if floor is not None:
        lines.append(f"| centre-Gaussian floor | – | {floor:.2f} | – | `floor_centre_gaussian_{suite}.json` |")
    cls_bar = statistics.mean(v[0] for v in rows["CAM `best_cls`"]) - 0.5
    box_bar = statistics.mean(v[1] for v in rows["CAM `best_loc`"])
    lines += ["", (f"The dilemma's target: Top-1 Cls ≥ CAM `best_cls` − 0.5 = {cls_bar:.2f} and MaxBoxAccV2 ≥ CAM "
              f"`best_loc` = {box_bar:.2f}."), ""]
    for name, values in rows.items():
        if name.startswith("CAM"):
            continue
        c, b = statistics.mean(v[0] for v in values), statistics.mean(v[1] for v in values)
        verdict = "meets both" if c >= cls_bar and b >= box_bar else (
            "meets the Top-1 Cls bar only" if c >= cls_bar else
            "meets the MaxBoxAccV2 bar only" if b >= box_bar else "misses both")
        lines.append(f"- {name}: {verdict} (Top-1 Cls {c - cls_bar - 0.5:+.2f} against `best_cls`, "
                     f"MaxBoxAccV2 {b - box_bar:+.2f} against `best_loc`; {len(values)} seed(s)).")
    return [*lines, ""]


def posthoc_section(results: Path = RESULTS) -> list[str]:
    """Each post-hoc method on CAM's best_cls and best_loc checkpoints, beside the native map and the floor."""
    folder = results / "posthoc"
    lines: list[str] = []
    for suite in ("cub50", "synthetic-v2"):
        docs = [d for seed in SEEDS if (d := _read(folder / f"posthoc_{suite}_cam_seed{seed}.json"))]
        speed = _read(folder / f"posthoc_speed_{suite}.json")
        if not docs and not speed:
            continue
        lines += [f"### {suite}", ""]
        if docs:
            splits = docs[0]["splits"]
            lines += [(f"MaxBoxAccV2 on {', '.join(splits)} (mean ± sd over seeds; box threshold chosen on val for "
                      "each method's own maps); the runs are the CAM runs of the accuracy tables "
                      f"(`{docs[0]['run'].removeprefix(str(REPO) + '/')}` and its seeds; files `posthoc/posthoc_{suite}_cam_seed*.json`)."), ""]
            header = "| checkpoint | method | " + " | ".join(f"{s} MaxBoxAccV2" for s in splits) + " | seeds |"
            lines += [header, "|---|---|" + "---|" * len(splits) + "---|"]
            methods = list(dict.fromkeys(m for d in docs for e in d["entries"].values() for m in e))
            best: dict[str, tuple[str, float]] = {}
            native_loc: dict[str, float] = {}
            for kind in ("best_cls", "best_loc"):
                for method in methods:
                    entries = [d["entries"].get(kind, {}).get(method) for d in docs]
                    entries = [e for e in entries if e and all(s in e["metrics"] for s in splits)]
                    if not entries:
                        continue
                    cells = []
                    for s in splits:
                        values = [e["metrics"][s]["max_box_acc_v2"] for e in entries]
                        cells.append(fmt(values))
                        if kind == "best_cls" and method != "native":
                            mean = statistics.mean(values)
                            if s not in best or mean > best[s][1]:
                                best[s] = (method, mean)
                        if kind == "best_loc" and method == "native":
                            native_loc[s] = statistics.mean(values)
                    lines.append(f"| `{kind}` | {method} | " + " | ".join(cells) + f" | {len(entries)} |")
            floors = [_floor_v2(suite, s, results) for s in splits]
            if any(f is not None for f in floors):
                lines.append("| – | centre-Gaussian floor | " + " | ".join(
                    "–" if f is None else f"{f:.2f}" for f in floors) + " | – |")
            lines.append("")
            for s in splits:
                if s in best and s in native_loc:
                    method, value = best[s]
                    reach = "reaches" if value >= native_loc[s] else "does not reach"
                    lines.append(f"- {s}: the best post-hoc map at `best_cls` ({method}, {value:.2f}) {reach} CAM's "
                                 f"own map at `best_loc` ({native_loc[s]:.2f}).")
            lines.append("")
        if speed:
            load = {m: v.get("load_average_1_5_15_min") for m, v in speed["methods"].items()}
            lines += [f"Images/s as `kdcicam localize` runs each method ({speed['what']}; "
                      f"`posthoc/posthoc_speed_{suite}.json`, {speed['machine']['cores']} cores, "
                      f"{speed['torch_threads']} torch threads; 1-min load average "
                      + ", ".join(f"{m} {v[0]:.1f}" for m, v in load.items() if v) + "):", "",
                      "| method | images | images/s |", "|---|---|---|"]
            for method, v in speed["methods"].items():
                lines.append(f"| {method} | {v['images']} | {v['images_per_second']:.3g} |")
            lines.append("")
    if not lines:
        return []
    return ["## Post-hoc CAM methods on CAM's own checkpoints", "",
            ("Does a Grad-CAM-like map taken at the best-classifying checkpoint localize as well as CAM's map at "
            "the best-localizing one? That would answer the dilemma without training anything "
            "(`benchmarks/posthoc.py`, docs/posthoc.md)."), "", *lines]


def coco_section(results: Path = RESULTS) -> list[str]:
    """AP of the pseudo-labels (`kdcicam localize --coco`), the centre floor's boxes beside them."""
    from coco_ap import markdown

    lines: list[str] = []
    for suite in ("cub50", "synthetic-v2"):
        record = _read(results / f"coco_ap_{suite}.json")
        if not record:
            continue
        floor = record["floor"]
        lines += [f"### {suite}", "",
                  (f"`coco_ap_{suite}.json` (`{record['command']}`, commit `{record['commit'][:12]}`): each run's "
                  "`best.ckpt` through `Localizer`, box threshold chosen on val; the floor is the centre-Gaussian "
                  f"map's box (σ {floor['sigma']:g}, threshold {floor['box_threshold']:.2f}, both chosen on "
                  f"{floor['chosen_on']}). Percent, mean ± sd over runs."), "", markdown(record), ""]
    if not lines:
        return []
    return ["## COCO AP of the pseudo-labels", "",
            ("What a detector trained on kdcicam's boxes would start from: one box per image, labelled with the "
            "top-1 class and scored by its probability, evaluated by pycocotools' COCOeval against the split's "
            "boxes (class-aware and class-agnostic)."), "", *lines]


def onnx_section(results: Path = RESULTS) -> list[str]:
    """ONNX Runtime against PyTorch, both measured alternately in one run."""
    record = _read(results / "onnx_speed.json")
    if not record:
        return []
    e2e, model = record["end_to_end"], record["model_only"]
    load = record["machine"].get("load_average_at_end")
    return ["## ONNX backend speed", "",
            (f"`onnx_speed.json` (`{record['command']}`, commit `{record['commit'][:12]}`, {record['machine']['cores']} "
            f"cores, {record['machine']['threads']} threads, onnxruntime {record['machine']['onnxruntime']}, load "
            f"average at the end {load}): the two backends timed alternately on the same images; best of "
            f"{len(e2e['torch_seconds'])} samples."), "",
            "| reading | PyTorch images/s | ONNX Runtime images/s | ONNX / PyTorch |", "|---|---|---|---|",
            (f"| end to end ({e2e['images']} image files: decode, resize, model, map, boxes) | "
            f"{e2e['torch_images_per_s']:.1f} | {e2e['onnx_images_per_s']:.1f} | {e2e['onnx_over_torch']:.2f} |"),
            (f"| model only (a ready batch of {model['images']}) | {model['torch_images_per_s']:.1f} | "
            f"{model['onnx_images_per_s']:.1f} | {model['onnx_over_torch']:.2f} |"), ""]


def sections(results: Path = RESULTS) -> list[str]:
    return dilemma_control_section(results) + posthoc_section(results) + coco_section(results) + onnx_section(results)
