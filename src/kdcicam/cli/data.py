"""``kdcicam data synthetic``, ``kdcicam data cub``, ``kdcicam data import`` (your own images) and
``kdcicam data conflict`` (the real-photo confounder probe): make datasets in the metadata format.

Only argparse here at import time; the generators are imported when a command runs.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="DATASET", required=True)

    s = sub.add_parser("synthetic", help="generate the confounded-objects dataset",
                       description="Generate the synthetic confounded-objects dataset (shapes on habitats).")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=None, help="image side in pixels (default 128)")
    s.add_argument("--classes", type=int, default=8, help="number of classes, 2..10 (default 8)")
    s.add_argument("--variant", choices=["v1", "v2"], default="v1",
                   help="v1: the original data, frozen (default); v2: calibrated so the habitat confounds "
                        "(docs/confounding.md), with a val_conflict split and the knobs below")
    s.add_argument("--rho", type=float, default=None,
                   help="train/val probability that the background is the class's own habitat (default 0.9; "
                        "v2: 0.97, and test too)")
    s.add_argument("--train", type=int, default=2400, metavar="N", help="train images (default 2400)")
    s.add_argument("--val", type=int, default=400, metavar="N", help="val images (default 400)")
    s.add_argument("--test", type=int, default=800, metavar="N", help="test images (default 800)")
    s.add_argument("--test-conflict", type=int, default=800, metavar="N",
                   help="test_conflict images, always on another class's habitat (default 800)")
    s.add_argument("--noise", type=float, default=0.0, help="pixel noise std on a 0..1 scale (default 0)")
    s.add_argument("--min-radius", type=float, default=None, metavar="F",
                   help="smallest object radius, a fraction of the image side (default 0.16; v2: 0.12)")
    s.add_argument("--max-radius", type=float, default=None, metavar="F",
                   help="largest object radius (default 0.30; v2: 0.22)")
    v2 = s.add_argument_group("v2 knobs (with --variant v2 only)")
    v2.add_argument("--val-conflict", type=int, default=None, metavar="N",
                    help="val_conflict images, always on another class's habitat, for calibration (default 400)")
    v2.add_argument("--shape-detail", type=float, default=None, metavar="A",
                    help="amplitude of the class-telling boundary lobes, 0..0.3 (default 0.12)")
    v2.add_argument("--class-texture", type=float, default=None, metavar="C",
                    help="contrast of the class's own texture in the object, 0..1 (default 0.35)")
    v2.add_argument("--texture-noise", type=float, default=None, metavar="W",
                    help="weight of a class-independent texture mixed into every object, 0..1 (default 0.3)")
    v2.add_argument("--habitat-contrast", type=float, default=None, metavar="C",
                    help="contrast of the habitat pattern, 0..1 (default 1)")
    v2.add_argument("--no-habitat-colour", dest="habitat_colour", action="store_false", default=None,
                    help="habitats draw their colours at random (only the pattern tells them apart)")
    v2.add_argument("--test-draw", type=int, default=None, metavar="K",
                    help="which draw of test / test_conflict (default 1; 0 = the first, read in earlier diagnostics); "
                         "train and val do not change")
    s.add_argument("--workers", type=int, default=0, help="processes, 0 = one per CPU (output is identical)")

    c = sub.add_parser("cub", help="convert a CUB-200-2011 folder to metadata",
                       description="Convert a CUB-200-2011 folder (full or a class subset) into train/val/test "
                                   "metadata. Images are referenced, not copied.")
    c.add_argument("src", type=Path, help="CUB folder with images.txt, bounding_boxes.txt, ... and images/")
    c.add_argument("--out", required=True, type=Path, help="output folder")
    c.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of each class's official train images held out as val (default 0.1)")
    c.add_argument("--seed", type=int, default=0, help="seed of the val hold-out (default 0)")

    k = sub.add_parser(
        "conflict", help="real-photo confounder probe: each object pasted onto another class's background",
        description="Paste each object's box (same place and scale, feathered edges) onto a bird-free background "
                    "strip of an image of another class; exact boxes and masks of the pasted region "
                    "(docs/confounding.md). Writes <split>_conflict and <split>_original (the object images "
                    "unchanged), paired: the same objects in each. With --control, also the object on its own "
                    "class's background "
                    "(<split>_same), a background patch on a background (<split>_seam) and the bare background "
                    "(<split>_canvas), to check that a CAM "
                    "does not simply fire on paste seams. Deterministic for a seed; the source is never written to.")
    k.add_argument("src", type=Path, help="a CUB-style tree (images.txt, bounding_boxes.txt, ... and images/) or a "
                   "prepared dataset (dataset.yaml, e.g. from `kdcicam data cub`)")
    k.add_argument("--out", required=True, type=Path, help="output folder (outside the source)")
    k.add_argument("--split", default="test", help="split whose objects are moved (default test; val to calibrate)")
    k.add_argument("--seed", type=int, default=0, help="seed of the host / patch choices (default 0)")
    k.add_argument("--feather", type=float, default=0.05,
                   help="width of the blend ramp, a fraction of the box's shorter side; 0 = hard cut (default 0.05)")
    k.add_argument("--margin", type=float, default=0.02,
                   help="host's box grown by this fraction of its longer side before a background strip is "
                        "sought (default 0.02)")
    k.add_argument("--max-upscale", type=float, default=2.0,
                   help="largest upscaling of a background crop to the object image's size (default 2)")
    k.add_argument("--control", action="store_true", help="also write the <split>_same, <split>_seam and <split>_canvas controls")
    k.add_argument("--format", choices=["jpg", "png"], default="jpg",
                   help="composites as JPEG (default; the source photos' kind) or lossless PNG")
    k.add_argument("--quality", type=int, default=95, help="JPEG quality of the composites (default 95)")
    k.add_argument("--limit", type=int, default=0, metavar="N", help="only the first N images of the split (0 = all)")

    i = sub.add_parser(
        "import", help="your own images: class folders or a CSV of labels, boxes from CSV / VOC / COCO",
        description="Import your own images into train/val[/test] metadata (docs/own_data.md). Labels: a folder "
                    "with one sub-folder per class, or a CSV path,label. Boxes (val/test): a CSV "
                    "path,x0,y0,x1,y1[,label], a Pascal VOC .xml file or folder, or a COCO .json. Images are "
                    "referenced, not copied; on any error nothing is written.")
    i.add_argument("--train", required=True, type=Path, metavar="SRC",
                   help="training images: a folder of class folders, or a CSV path,label")
    i.add_argument("--val", type=Path, metavar="SRC", help="val images, as --train (default: see --val-boxes)")
    i.add_argument("--val-boxes", type=Path, metavar="FILE",
                   help="val boxes; without --val, the images it names are taken out of train as the val split")
    i.add_argument("--test", type=Path, metavar="SRC", help="test images, as --train (a flat folder takes each "
                   "image's class from its boxes' labels)")
    i.add_argument("--test-boxes", type=Path, metavar="FILE", help="test boxes (without --test: taken out of train)")
    i.add_argument("--image-root", type=Path, metavar="DIR",
                   help="folder the metadata's paths are relative to, and CSV paths too (default: the folder "
                        "holding all images; CSV paths relative to the CSV)")
    i.add_argument("--val-fraction", type=float, default=0.1,
                   help="without --val and --val-boxes: share of each class's train images held out as val "
                        "(default 0.1; no boxes, so evaluation needs --box-threshold)")
    i.add_argument("--seed", type=int, default=0, help="seed of the val hold-out (default 0)")
    i.add_argument("--name", default="", help="dataset name in dataset.yaml (default: the output folder's name)")
    i.add_argument("--out", required=True, type=Path, help="output folder (new, empty, or an earlier import)")
    i.add_argument("--overwrite", action="store_true", help="replace an earlier import in --out")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "synthetic":
        return _synthetic(args)
    if args.data_command == "import":
        return _import(args)
    if args.data_command == "conflict":
        return _conflict(args)
    return _cub(args)


#: v2-only flags → SyntheticConfig fields
_V2_FLAGS = {"val_conflict": "n_val_conflict", "shape_detail": "shape_detail", "class_texture": "class_texture",
             "texture_noise": "texture_noise", "habitat_contrast": "habitat_contrast",
             "habitat_colour": "habitat_colour", "test_draw": "test_draw"}


def _synthetic(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..data.synthetic import SyntheticConfig, generate_synthetic
    from ..data.synthetic_v2 import v2_config
    from ..errors import ConfigError

    given = {field: getattr(args, flag) for flag, field in _V2_FLAGS.items() if getattr(args, flag) is not None}
    if args.variant == "v1" and given:
        flags = ", ".join("--" + (f.replace("_", "-") if f != "habitat_colour" else "no-habitat-colour")
                          for f in _V2_FLAGS if getattr(args, f) is not None)
        raise ConfigError(f"{flags}: v2 knobs; add --variant v2 (v1 is frozen)")
    shared = {k: v for k, v in {"size": args.size, "rho": args.rho, "min_radius": args.min_radius,
                                "max_radius": args.max_radius}.items() if v is not None}
    base = v2_config() if args.variant == "v2" else SyntheticConfig()
    config = replace(base, seed=args.seed, num_classes=args.classes, n_train=args.train,
                     n_val=args.val, n_test=args.test, n_test_conflict=args.test_conflict, noise=args.noise,
                     workers=args.workers, **shared, **given)
    start = time.perf_counter()
    counts = generate_synthetic(args.out, config)
    knobs = (f", shape_detail={config.shape_detail}, class_texture={config.class_texture}, "
             f"texture_noise={config.texture_noise}, habitat_contrast={config.habitat_contrast}, "
             f"habitat_colour={config.habitat_colour}" if config.variant == "v2" else "")
    print(f"synthetic confounded objects {config.variant}: {config.num_classes} classes "
          f"({', '.join(config.class_names)}), {config.size} px, rho={config.rho}, seed={config.seed}{knobs}")
    print("  " + ", ".join(f"{split} {n}" for split, n in counts.items()))
    print(f"  written to {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


def _cub(args: argparse.Namespace) -> int:
    from ..data.cub import BOX_ROUNDING, convert_cub
    from ..errors import ConfigError

    if not 0.0 <= args.val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    counts = convert_cub(args.src, args.out, val_fraction=args.val_fraction, seed=args.seed)
    print(f"CUB-200-2011 from {Path(args.src).resolve()}: {counts['classes']} classes")
    print(f"  train {counts['train']}, val {counts['val']} (held out from the official train split, "
          f"fraction {args.val_fraction}, seed {args.seed}), test {counts['test']} (official test split)")
    print(f"  boxes: {BOX_ROUNDING}; {counts['clipped_boxes']} clipped"
          + (f"; {counts['exif_transposed']} images EXIF-transposed" if counts["exif_transposed"] else ""))
    print(f"  metadata written to {args.out}/{{train,val,test}}, dataset info to {args.out}/dataset.yaml")
    return 0


def _import(args: argparse.Namespace) -> int:
    from ..data.importers import SplitSpec, import_dataset
    from ..errors import ConfigError

    if not 0.0 <= args.val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    for flag, source, boxes in (("val", args.val, args.val_boxes), ("test", args.test, args.test_boxes)):
        if boxes is not None and not boxes.exists():
            raise ConfigError(f"--{flag}-boxes {boxes}: not found")
        if source is not None and not source.exists():
            raise ConfigError(f"--{flag} {source}: not found")
    s = import_dataset(args.out, SplitSpec(labels=args.train), SplitSpec(args.val, args.val_boxes),
                       SplitSpec(args.test, args.test_boxes), image_root=args.image_root,
                       val_fraction=args.val_fraction, seed=args.seed, name=args.name, overwrite=args.overwrite)
    names = ", ".join(s.class_names[:6]) + (", ..." if len(s.class_names) > 6 else "")
    print(f"imported {len(s.class_names)} classes ({names}); image root {s.image_root}")
    parts = [f"train {s.counts['train']}"]
    if "val" in s.counts:
        origin = {"given": f"from {args.val}", "boxes": f"the images of {args.val_boxes}, taken out of train",
                  "held out": f"held out: {args.val_fraction:.0%} of each class's train images, seed {args.seed}"}
        parts.append(f"val {s.counts['val']} ({origin[s.val_origin]}; {s.boxes.get('val', 0)} boxes)")
    if "test" in s.counts:
        parts.append(f"test {s.counts['test']} ({s.boxes.get('test', 0)} boxes)")
    print("  " + ", ".join(parts))
    if any(s.boxes.values()):
        print(f"  boxes rounded half-up to integers; {s.clipped_boxes} clipped at the image border"
              + (f"; {s.exif_rotated_boxes} rotated with their EXIF-rotated image" if s.exif_rotated_boxes else ""))
    for note in s.notes:
        print(f"  note: {note}")
    print(f"  metadata written to {args.out}/{{{','.join(s.counts)}}}, dataset info to {args.out}/dataset.yaml")
    return 0


def _conflict(args: argparse.Namespace) -> int:
    from ..data.conflict import ConflictConfig, make_conflict

    cfg = ConflictConfig(split=args.split, seed=args.seed, feather=args.feather, margin=args.margin,
                         max_upscale=args.max_upscale, control=args.control, image_format=args.format,
                         jpeg_quality=args.quality,
                         limit=args.limit)
    start = time.perf_counter()
    summary = make_conflict(args.src, args.out, cfg)
    print(f"conflict probe from {Path(args.src).resolve()} ({args.split}, seed {args.seed}, feather {args.feather}, "
          f"max upscale {args.max_upscale})")
    for name, n in summary.items():
        print(f"  {name}: {n['images']} images" + (f", {n['skipped']} objects left out (a composite found no "
                                                   "host with a large enough background)" if n["skipped"] else ""))
    print(f"  written to {args.out} in {time.perf_counter() - start:.1f} s")
    return 0
