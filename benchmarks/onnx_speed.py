"""Images/s of the ONNX backend (onnxruntime) against the PyTorch Localizer, on the same images, in one run.

    MALLOC_MMAP_THRESHOLD_=10000000000 MALLOC_TRIM_THRESHOLD_=10000000000 \\
        .venv/bin/python benchmarks/onnx_speed.py --run runs/bench/cub50/kd-ci-cam-seed0 --n 256

Two readings, each a pair measured alternately (A, B, A, B, ...) so that a load change on a shared
machine hits both sides:

- ``end_to_end``: what ``kdcicam localize`` does per image, from the file path: decode, resize to S × S,
  the model, the score map's bicubic resize and normalisation, softmax top-k and the evaluator's box
  extraction (``Localizer.predict(paths)`` against ``OnnxLocalizer.predict(paths)``); overlays and JSON
  writing aside;
- ``model_only``: the graph alone on a ready float32 batch: PyTorch's model + localization map under
  ``inference_mode`` (channels_last when the run trained so, as the Localizer runs it) against
  ``InferenceSession.run``.

Both sides get the same thread count (``--threads``, default: every usable core). The headline is the
fastest of ``--repeats`` samples per side (other processes only add time); medians and all samples
are recorded. The export is written to a temporary file unless ``--onnx`` names one.

Results: ``benchmarks/results/onnx_speed.json`` (commit, command, machine, versions, load average).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from provenance import cpu_model, stamp


def images_of(run: Path, split: str, n: int, folder: Path | None) -> list[Path]:
    """``n`` image files: from ``folder`` (recursive, sorted), else the run's dataset split."""
    if folder is not None:
        files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in {".jpg", ".jpeg", ".png"})
    else:
        from kdcicam.checkpoints import resolve_checkpoint, run_config
        from kdcicam.data.metadata import read_metadata

        md = read_metadata(Path(run_config(resolve_checkpoint(run)).data.root) / split)
        files = [md.image_path(i) for i in md.image_ids]
    if not files:
        sys.exit("no images found")
    return (files * (n // len(files) + 1))[:n]


def alternate(a, b, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of ``a()`` and ``b()``, alternating, after one warm-up call each."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return ta, tb


def summary(n: int, torch_s: list[float], onnx_s: list[float]) -> dict:
    best_t, best_o = n / min(torch_s), n / min(onnx_s)
    return {"images": n, "torch_images_per_s": round(best_t, 2), "onnx_images_per_s": round(best_o, 2),
            "onnx_over_torch": round(best_o / best_t, 3),
            "torch_median_images_per_s": round(n / statistics.median(torch_s), 2),
            "onnx_median_images_per_s": round(n / statistics.median(onnx_s), 2),
            "torch_seconds": [round(s, 4) for s in torch_s], "onnx_seconds": [round(s, 4) for s in onnx_s]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, type=Path, help="a finished run folder or .ckpt")
    p.add_argument("--onnx", type=Path, default=None, help="an existing export of RUN (default: export now)")
    p.add_argument("--images", type=Path, default=None, help="a folder of images (default: the run's test split)")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=256, help="images per measurement (default 256)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="threads for both backends (default: usable cores)")
    args = p.parse_args()

    import numpy as np
    import onnxruntime
    import torch

    from kdcicam import Localizer, OnnxLocalizer
    from kdcicam.export import ExportGraph, export_onnx

    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = args.onnx or Path(tmp) / "model.onnx"
        if args.onnx is None:
            export_onnx(args.run, onnx_path)
        loc_t = Localizer.from_checkpoint(args.run, device="cpu", batch_size=args.batch_size)
        loc_o = OnnxLocalizer(onnx_path, batch_size=args.batch_size, threads=threads)
        files = images_of(args.run, args.split, args.n, args.images)
        a, b = loc_t.predict(files[:4]), loc_o.predict(files[:4])
        agree = all(x.class_id == y.class_id and np.array_equal(x.grid_boxes, y.grid_boxes) for x, y in zip(a, b, strict=True))
        e2e = alternate(lambda: loc_t.predict(files), lambda: loc_o.predict(files), args.repeats)

        x = np.stack([loc_o.preprocess(f)[0] for f in files[:args.batch_size]])
        graph = ExportGraph(loc_t.model, loc_t.map_kind).eval()
        xt = torch.from_numpy(x)
        if loc_t.channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)

        def torch_model() -> None:
            with torch.inference_mode():
                graph(xt)

        model = alternate(torch_model, lambda: loc_o.run_graph(x), args.repeats)
    record = {"benchmark": "onnx_speed", **stamp(REPO, "benchmarks/onnx_speed.py"), "run": str(args.run),
              "method": loc_t.method, "image_size": loc_t.image_size, "batch_size": args.batch_size,
              "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads,
                          "platform": platform.platform(), "python": platform.python_version(),
                          "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                          "load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
              "first_images_agree": agree,
              "end_to_end": summary(len(files), *e2e), "model_only": summary(len(x), *model)}
    out = REPO / "benchmarks" / "results" / "onnx_speed.json"
    from kdcicam.data.metadata import atomic_write_text

    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    for k in ("end_to_end", "model_only"):
        r = record[k]
        print(f"{k:11s} torch {r['torch_images_per_s']:8.1f} img/s   onnx {r['onnx_images_per_s']:8.1f} img/s   "
              f"ratio {r['onnx_over_torch']:.2f}")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
