"""`kdcicam localize CKPT IMAGES_OR_DIRS... --out DIR`: boxes and heatmaps for your own images.

Folders are searched recursively for image files (jpg, jpeg, png, bmp, webp, tif, tiff, gif, any
case); files named explicitly are used whatever their extension. Writes ``DIR/boxes.json`` (or
``boxes.csv``, one row per box) and one overlay PNG per image under ``DIR/overlays/``.

``--coco FILE`` also writes COCO pseudo-labels: the annotations document (images, categories,
annotations; a detector's training set) at FILE and the detections list (image_id, category_id, bbox,
score) beside it as ``<stem>_detections.json`` (conventions: :mod:`kdcicam.coco`).

``--backend onnx`` runs a ``kdcicam export`` file with onnxruntime and never imports torch (the
default, ``auto``, picks it for a ``.onnx`` CKPT).

Exit codes: 0 when every image was processed; 1 when some could not be read (each is named on
stderr and skipped, the rest are written); 2 for usage errors (no images found, a path that does
not exist, a bad checkpoint).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
CSV_FIELDS = ("file", "width", "height", "box", "x0", "y0", "x1", "y1", "class_id", "class_name", "score", "topk")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = ("exit status: 0 when every image was processed; 1 when some files could not be read (each is "
                "named on stderr and skipped, the others are written); 2 for usage errors (no images found, a "
                "missing path, a bad checkpoint)")
    p.add_argument("checkpoint", metavar="CKPT", help="a run folder (KD runs: the student is used) or a .ckpt file")
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIRS", help="image files and/or folders (recursive)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for boxes.json/csv and overlays")
    p.add_argument("--topk", type=int, default=5, help="classes to report per image (default 5)")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="box threshold in [0, 1) (default: the one chosen on the validation split, from the checkpoint)")
    p.add_argument("--all-contours", action="store_true",
                   help="one box per contour of the thresholded CAM (default: the largest contour only)")
    p.add_argument("--format", choices=("json", "csv"), default="json", help="results file format (default json)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per forward pass (default 32)")
    p.add_argument("--no-overlays", action="store_true", help="do not write overlay PNGs")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="torch: a run folder or .ckpt with PyTorch; onnx: a `kdcicam export` .onnx file with "
                   "onnxruntime, without importing torch; auto (default): onnx for a .onnx CKPT, else torch")
    p.add_argument("--coco", metavar="FILE.json", default=None,
                   help="also write COCO pseudo-labels: the annotations file (images, categories, annotations) at "
                   "FILE.json and the detections (image_id, category_id, bbox, score) at FILE_detections.json; "
                   "category id = class index + 1, image id = position in the sorted relative paths (from 1)")
    p.add_argument("--coco-root", metavar="DIR", default=None,
                   help="the folder COCO file_name paths are relative to (default: the deepest folder holding "
                   "every image)")
    from .evaluate import add_cam_method_arguments

    add_cam_method_arguments(p)  # a post-hoc method's threshold: the one `kdcicam evaluate --cam-method` chose on val


def find_images(inputs: list[str]) -> list[tuple[Path, str]]:
    """(file, output name) pairs: folders recursively (sorted), files as given. The output name is the
    path relative to the folder it came from (a bare name for files), unique across inputs."""
    from ..errors import KdcicamError

    found: list[tuple[Path, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            found += [(f, f.relative_to(p).as_posix()) for f in files]
        elif p.is_file():
            found.append((p, p.name))
        else:
            raise KdcicamError(f"{item}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for f, name in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((f, name))
    return unique


def overlay_names(names: list[str]) -> list[str]:
    """``a/b.jpg`` → ``a__b.png``; collisions (same name from two folders) get ``-2``, ``-3``..."""
    out, used = [], set()
    for name in names:
        stem = name.rsplit(".", 1)[0] if "." in Path(name).name else name
        base = stem.replace("/", "__") or "image"
        candidate, n = f"{base}.png", 1
        while candidate in used:
            n += 1
            candidate = f"{base}-{n}.png"
        used.add(candidate)
        out.append(candidate)
    return out


def csv_text(records: list[dict[str, Any]]) -> str:
    """One row per box (an image without a box gets one row with empty box fields)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for rec in records:
        topk = ";".join(f"{t['class_name']}:{t['score']:.6f}" for t in rec["topk"])
        base = {"file": rec["file"], "width": rec["width"], "height": rec["height"], "topk": topk}
        if not rec["boxes"]:
            writer.writerow({**base, "box": ""})
        for i, box in enumerate(rec["boxes"]):
            writer.writerow({**base, "box": i, **{k: box[k] for k in ("x0", "y0", "x1", "y1", "class_id",
                                                                      "class_name", "score")}})
    return buf.getvalue()


def backend_of(checkpoint: str, backend: str) -> str:
    """``auto`` → onnx for a ``.onnx`` file, else torch."""
    if backend != "auto":
        return backend
    return "onnx" if Path(checkpoint).suffix.lower() == ".onnx" else "torch"


def make_localizer(args: argparse.Namespace) -> Any:
    """The PyTorch Localizer, or the OnnxLocalizer (whose path never imports torch)."""
    from ..errors import KdcicamError

    if backend_of(args.checkpoint, args.backend) == "onnx":
        from ..onnx_backend import OnnxLocalizer

        if Path(args.checkpoint).is_dir():
            raise KdcicamError(f"{args.checkpoint}: --backend onnx needs the .onnx file `kdcicam export` wrote, "
                               "not a run folder")
        if args.device not in ("auto", "cpu"):
            raise KdcicamError(f"--device {args.device}: the onnx backend runs on the CPU (use --backend torch)")
        if args.cam_method != "native":
            raise KdcicamError(f"--cam-method {args.cam_method}: the onnx backend holds the native map only "
                               "(use --backend torch)")
        return OnnxLocalizer(args.checkpoint, threshold=args.threshold, topk=args.topk,
                             multi_contour=args.all_contours, batch_size=args.batch_size)
    if Path(args.checkpoint).suffix.lower() == ".onnx":
        raise KdcicamError(f"{args.checkpoint}: an ONNX file; use --backend onnx (or auto)")
    from ..inference import Localizer

    return Localizer.from_checkpoint(args.checkpoint, device=args.device, threshold=args.threshold,
                                     topk=args.topk, multi_contour=args.all_contours, batch_size=args.batch_size,
                                     cam_method=args.cam_method, target_layer=args.target_layer)


def coco_root(root: str | None, files: list[str]) -> tuple[Path, list[str]]:
    """The folder COCO paths are relative to (``--coco-root``, else the images' common folder) and each
    file's path relative to it; an error when the root is missing or does not hold every file."""
    from ..coco import common_root, relative_name
    from ..errors import KdcicamError

    if root is not None and not Path(root).is_dir():
        raise KdcicamError(f"--coco-root {root}: no such folder")
    base = Path(root) if root is not None else common_root(files)
    return base, [relative_name(f, base) for f in files]


def write_coco(target: str, records: list[dict[str, Any]], results: list[Any], root: str | None,
               localizer: Any) -> tuple[Path, Path]:
    """The COCO annotations file at ``target`` and the detections beside it (both atomically)."""
    from ..coco import detections_path, items_from_results, pseudo_labels
    from ..viz import atomic_write_bytes

    base, names = coco_root(root, [rec["file"] for rec in records])
    info = {"description": "kdcicam localize pseudo-labels", "root": str(base.resolve()),
            **{k: v for k, v in localizer.describe().items() if k != "class_names"}}
    document, detections = pseudo_labels(items_from_results(results, names), localizer.class_names, info)
    ann_path, det_path = Path(target), detections_path(target)
    atomic_write_bytes(ann_path, (json.dumps(document, ensure_ascii=False) + "\n").encode("utf-8"))
    atomic_write_bytes(det_path, (json.dumps(detections) + "\n").encode("utf-8"))
    return ann_path, det_path


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.decode import load_image_rgb
    from ..errors import ImageReadError, KdcicamError
    from ..viz import atomic_write_bytes, save_overlay

    if args.topk < 1:
        raise KdcicamError(f"--topk must be >= 1, got {args.topk}")
    if args.batch_size < 1:
        raise KdcicamError(f"--batch-size must be >= 1, got {args.batch_size}")
    images = find_images(args.inputs)
    if not images:
        exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise KdcicamError(f"no images found in {', '.join(args.inputs)} (looked for: {exts})")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KdcicamError(f"--out {out}: cannot create the folder ({e.strerror})") from None
    if args.coco is not None:
        if Path(args.coco).is_dir():
            raise KdcicamError(f"--coco {args.coco}: is a folder; give a file name such as {Path(args.coco) / 'coco.json'}")
        coco_root(args.coco_root, [str(f) for f, _ in images])  # a root that misses an image fails before any work
    localizer = make_localizer(args)
    names = overlay_names([name for _, name in images])
    records: list[dict[str, Any]] = []
    results: list[Any] = []
    skipped: list[dict[str, str]] = []
    bar = tqdm(total=len(images), unit="img", desc="localize", file=sys.stderr, disable=None)
    for start in range(0, len(images), args.batch_size):
        batch = []
        for (path, _), overlay in zip(images[start:start + args.batch_size], names[start:start + args.batch_size], strict=True):
            try:
                batch.append((path, overlay, load_image_rgb(path)))
            except ImageReadError as e:
                skipped.append({"file": str(path), "reason": e.reason})
                tqdm.write(f"kdcicam localize: skipped {path}: {e.reason}", file=sys.stderr)
                bar.update(1)
        if not batch:
            continue
        for (path, overlay, image), result in zip(batch, localizer.predict([im for _, _, im in batch]), strict=True):
            record = result.to_dict()
            record = {"file": str(path), **{k: v for k, v in record.items() if k not in ("file", "threshold")}}
            if not args.no_overlays:
                save_overlay(out / "overlays" / overlay, image, result)
                record["overlay"] = f"overlays/{overlay}"
            records.append(record)
            if args.coco is not None:
                results.append(result)
            bar.update(1)
    bar.close()
    if args.format == "json":
        document = {**localizer.describe(), "num_images": len(records), "images": records, "skipped": skipped}
        document.pop("class_names", None)
        target = out / "boxes.json"
        atomic_write_bytes(target, (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    else:
        target = out / "boxes.csv"
        atomic_write_bytes(target, csv_text(records).encode("utf-8"))
    if args.coco is not None:
        coco_files = write_coco(args.coco, records, results, args.coco_root, localizer)
        print(f"kdcicam localize: COCO annotations → {coco_files[0]}, detections → {coco_files[1]}")
    print(f"kdcicam localize: {len(records)} image(s) → {target}"
          + ("" if args.no_overlays else f", overlays in {out / 'overlays'}")
          + (f"; {len(skipped)} skipped (unreadable)" if skipped else ""))
    return 1 if skipped else 0


__all__ = ["IMAGE_EXTENSIONS", "add_arguments", "backend_of", "coco_root", "csv_text", "find_images", "make_localizer",
           "overlay_names", "run", "write_coco"]
