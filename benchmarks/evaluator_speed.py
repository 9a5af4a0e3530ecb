"""Evaluator speed: the plain per-threshold findContours loop (``kdcicam.evaluation.reference``,
wsolevaluation's algorithm) against ``kdcicam.evaluation`` on the same maps, in one run.

Datasets:
- ``synthetic``: 1,389 smooth random CAM-like maps (224 x 224: a few blobs on low-level noise,
  bicubic-upsampled from 7 or 14 px, as this project's backbones make them) with CUB-like boxes
  in a temporary metadata;
- ``cub50_test`` (when ``../shared/data/cub50`` exists): the CUB-50 test split converted on the fly
  into a temporary folder, with the same kind of maps.

For each: single-contour (MaxBoxAcc) and multi-contour (MaxBoxAccV2) evaluation, reference vs
ours, metrics asserted equal (every curve, bit for bit), images/s and the speed ratio; also the
combined ``WSOLEvaluator`` (both modes in one pass, plus context leakage) against the two
reference runs. All alternate batch by batch, so that on a shared machine they see the same load;
``--repeat`` runs are averaged. Results go to
``benchmarks/results/evaluator_speed.json`` with the commit, machine and library versions.

    python benchmarks/evaluator_speed.py [--images N] [--repeat R] [--out PATH]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numba
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from provenance import cpu_model, git_commit

from kdcicam.data.metadata import Metadata, atomic_write_text, read_metadata
from kdcicam.evaluation import BoxEvaluator, WSOLEvaluator
from kdcicam.evaluation.engine import default_workers
from kdcicam.evaluation.reference import ReferenceBoxEvaluator

CUB50 = ROOT / ".." / "shared" / "data" / "cub50"
BATCH = 64


def cam_like(rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """A CAM as this project's backbones make them: a 7 x 7 (EfficientNet-Lite) or 14 x 14 (VGG16)
    map of 1-3 blobs on low-level noise, bicubic-upsampled to 224 and min-max normalised."""
    low = int(rng.choice([7, 14]))
    yy, xx = np.mgrid[0:low, 0:low] / low
    m = rng.uniform(0, 0.3) * rng.random((low, low))
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.15, 0.85, 2)
        sy, sx = rng.uniform(0.05, 0.3, 2)
        m += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 / (2 * sy ** 2) + (xx - cx) ** 2 / (2 * sx ** 2)))
    cam = cv2.resize(m, (size, size), interpolation=cv2.INTER_CUBIC)
    cam -= cam.min()
    return cam / cam.max()


def synthetic_metadata(n: int, rng: np.random.Generator) -> Metadata:
    """CUB-like: images about 500 x 375, one box covering 20-80 % of each side."""
    ids = [f"{k % 50:03d}.class/img_{k:05d}.jpg" for k in range(n)]
    sizes, boxes = {}, {}
    for image_id in ids:
        w, h = int(rng.integers(300, 501)), int(rng.integers(240, 501))
        bw, bh = int(w * rng.uniform(0.2, 0.8)), int(h * rng.uniform(0.2, 0.8))
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        sizes[image_id] = (w, h)
        boxes[image_id] = [(x0, y0, x0 + bw, y0 + bh)]
    return Metadata(image_ids=ids, class_labels={i: k % 50 for k, i in enumerate(ids)}, image_sizes=sizes,
                    boxes=boxes, num_classes=50)


def cub50_metadata(tmp: Path) -> Metadata | None:
    if not CUB50.is_dir():
        return None
    try:
        from kdcicam.data.cub import convert_cub
    except ImportError:  # the converter is not there: read the text files directly
        return _read_cub_text(CUB50)
    convert_cub(CUB50, tmp / "cub50", val_fraction=0.1, seed=0)
    return read_metadata(tmp / "cub50" / "test", check_images=False)


def _read_cub_text(src: Path) -> Metadata:
    def rows(name: str) -> dict[str, list[str]]:
        return {r[0]: r[1:] for r in (line.split() for line in (src / name).read_text().splitlines() if line)}

    paths, labels, split = rows("images.txt"), rows("image_class_labels.txt"), rows("train_test_split.txt")
    boxes, sizes = rows("bounding_boxes.txt"), rows("image_sizes.txt")
    ids = [k for k in paths if split[k][0] == "0"]
    md_boxes, md_sizes = {}, {}
    for k in ids:
        x, y, w, h = (float(v) for v in boxes[k])
        iw, ih = int(sizes[k][0]), int(sizes[k][1])
        md_boxes[paths[k][0]] = [(min(int(x + 0.5), iw), min(int(y + 0.5), ih), min(int(x + w + 0.5), iw),
                                  min(int(y + h + 0.5), ih))]
        md_sizes[paths[k][0]] = (iw, ih)
    return Metadata(image_ids=[paths[k][0] for k in ids], class_labels={paths[k][0]: int(labels[k][0]) - 1 for k in ids},
                    image_sizes=md_sizes, boxes=md_boxes, num_classes=50)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(metadata: Metadata, maps: np.ndarray, repeat: int) -> dict[str, Any]:
    """Reference and ours on the same batches, alternating batch by batch (so that every
    evaluator sees the same load and cache state on a shared machine), ``repeat`` times; ratios
    are of the summed times. Per batch: the reference in both modes, ours in each mode
    (``BoxEvaluator``), and ours in both modes at once (``WSOLEvaluator``, the evaluator that
    ``kdcicam evaluate`` and ``kdcicam score`` run; it also computes context leakage)."""
    ids = metadata.image_ids
    n = len(ids)
    modes = {"single_contour": False, "multi_contour": True}
    t_ref = dict.fromkeys(modes, 0.0)
    t_fast = dict.fromkeys(modes, 0.0)
    t_both = 0.0
    for _ in range(repeat):
        refs = {mode: ReferenceBoxEvaluator(metadata, multi_contour=multi) for mode, multi in modes.items()}
        fasts = {mode: BoxEvaluator(metadata, multi_contour=multi) for mode, multi in modes.items()}
        combined = WSOLEvaluator(metadata, masks=False)
        for first in range(0, n, BATCH):
            batch, batch_ids = maps[first:first + BATCH], ids[first:first + BATCH]
            for mode in modes:
                start = time.perf_counter()
                for scoremap, image_id in zip(batch, batch_ids):
                    refs[mode].accumulate(scoremap, image_id)
                middle = time.perf_counter()
                fasts[mode].accumulate(batch, batch_ids)
                t_ref[mode] += middle - start
                t_fast[mode] += time.perf_counter() - middle
            start = time.perf_counter()
            combined.accumulate(batch, batch_ids)
            t_both += time.perf_counter() - start
        for mode in modes:
            result, reference = fasts[mode].compute(), refs[mode].compute()
            assert [result["max_box_acc"][k] for k in ("30", "50", "70")] == reference, (mode, result, reference)
            for iou, curve in refs[mode].curves().items():
                assert result["box_acc_curve"][str(iou)] == curve.tolist(), (mode, iou)
        both = combined.compute()
        assert [both["max_box_acc"][k] for k in ("30", "50", "70")] == refs["single_contour"].compute()
        assert [both["max_box_acc_v2_per_iou"][k] for k in ("30", "50", "70")] == refs["multi_contour"].compute()
    out: dict[str, Any] = {"images": n}
    for mode in modes:
        r, f = t_ref[mode] / repeat, t_fast[mode] / repeat
        result = fasts[mode].compute()
        out[mode] = {
            "reference_s": round(r, 3), "ours_s": round(f, 3),
            "reference_images_per_s": round(n / r, 1), "ours_images_per_s": round(n / f, 1),
            "ratio": round(r / f, 2),
            "max_box_acc": result["max_box_acc"], "max_box_acc_mean": result["max_box_acc_mean"],
            "equal_to_reference": True,
        }
        print(f"  {mode:15s} reference {n / r:7.1f} img/s   ours {n / f:8.1f} img/s   "
              f"ratio {r / f:5.1f}x   MaxBoxAcc {result['max_box_acc']}", flush=True)
    t_all = t_both / repeat
    t_ref_both = (t_ref["single_contour"] + t_ref["multi_contour"]) / repeat
    out["wsol_evaluator_both_modes"] = {
        "ours_s": round(t_all, 3), "ours_images_per_s": round(n / t_all, 1),
        "ratio_vs_two_reference_runs": round(t_ref_both / t_all, 2), "max_box_acc_v2": both["max_box_acc_v2"],
        "note": "interleaved batch by batch with the reference runs; also computes context leakage",
    }
    print(f"  both modes, one pass: {n / t_all:.1f} img/s, {t_ref_both / t_all:.1f}x the two reference runs",
          flush=True)
    return out


def machine() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "cores_usable": default_workers(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
            "numba": numba.__version__}


def commit() -> str:
    return git_commit(ROOT, mark_dirty=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1389, help="synthetic maps (default 1389, CUB-50 test's size)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement, averaged (default 2)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "evaluator_speed.json"))
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    warm = synthetic_metadata(4, rng)  # compile / load the kernels before timing
    WSOLEvaluator(warm).accumulate(np.stack([cam_like(rng) for _ in range(4)]), warm.image_ids)

    results: dict[str, Any] = {}
    print(f"synthetic: {args.images} maps of 224 x 224", flush=True)
    md = synthetic_metadata(args.images, rng)
    maps = np.stack([cam_like(rng) for _ in range(args.images)])
    results["synthetic"] = compare(md, maps, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        cub = cub50_metadata(Path(tmp))
        if cub is None:
            print("cub50: not found, skipped", flush=True)
        else:
            print(f"cub50_test: {len(cub)} images, CUB-50 test metadata converted on the fly", flush=True)
            cub_maps = np.stack([cam_like(rng) for _ in range(len(cub))])
            results["cub50_test"] = compare(cub, cub_maps, args.repeat)

    record = {
        "benchmark": "evaluator_speed",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + (argv if argv is not None else sys.argv[1:])),
        "machine": machine(),
        "settings": {"cam_size": 224, "cam_curve_interval": 0.01, "iou_thresholds": [30, 50, 70], "batch": BATCH,
                     "workers": default_workers(), "repeat": args.repeat,
                     "timing": "reference (both modes), ours per mode and ours in both modes at once alternate batch by "
                     "batch; times summed, averaged over repeats", "reference": "kdcicam.evaluation.reference (one findContours "
                     "per image and threshold, wsolevaluation's algorithm), one thread"},
        "load_average_1_5_15_min": {"before": [round(v, 2) for v in load_before],
                                    "after": [round(v, 2) for v in os.getloadavg()]},
        "note": "the machine is shared with other jobs (see the load averages: 2 cores); the ratio (both timed "
                "in this run, alternating batch by batch) matters more than img/s",
        "results": results,
    }
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
