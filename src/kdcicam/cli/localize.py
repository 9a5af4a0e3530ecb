"""`kdcicam localize CKPT IMAGES_OR_DIRS... --out DIR`: boxes and heatmaps for your own images.

Folders are searched recursively for image files (jpg, jpeg, png, bmp, webp, tif, tiff, gif, any
case); files named explicitly are used whatever their extension. Writes ``DIR/boxes.json`` (or
``boxes.csv``, one row per box) and one overlay PNG per image under ``DIR/overlays/``.

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


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.dataset import load_image_rgb
    from ..errors import ImageReadError, KdcicamError
    from ..inference import Localizer
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
    localizer = Localizer.from_checkpoint(args.checkpoint, device=args.device, threshold=args.threshold,
                                          topk=args.topk, multi_contour=args.all_contours, batch_size=args.batch_size,
                                          cam_method=args.cam_method, target_layer=args.target_layer)
    names = overlay_names([name for _, name in images])
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    bar = tqdm(total=len(images), unit="img", desc="localize", file=sys.stderr, disable=None)
    for start in range(0, len(images), args.batch_size):
        batch = []
        for (path, _), overlay in zip(images[start:start + args.batch_size], names[start:start + args.batch_size]):
            try:
                batch.append((path, overlay, load_image_rgb(path)))
            except ImageReadError as e:
                skipped.append({"file": str(path), "reason": e.reason})
                tqdm.write(f"kdcicam localize: skipped {path}: {e.reason}", file=sys.stderr)
                bar.update(1)
        if not batch:
            continue
        for (path, overlay, image), result in zip(batch, localizer.predict([im for _, _, im in batch])):
            record = result.to_dict()
            record = {"file": str(path), **{k: v for k, v in record.items() if k not in ("file", "threshold")}}
            if not args.no_overlays:
                save_overlay(out / "overlays" / overlay, image, result)
                record["overlay"] = f"overlays/{overlay}"
            records.append(record)
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
    print(f"kdcicam localize: {len(records)} image(s) → {target}"
          + ("" if args.no_overlays else f", overlays in {out / 'overlays'}")
          + (f"; {len(skipped)} skipped (unreadable)" if skipped else ""))
    return 1 if skipped else 0


__all__ = ["IMAGE_EXTENSIONS", "add_arguments", "csv_text", "find_images", "overlay_names", "run"]
