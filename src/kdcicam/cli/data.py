"""``kdcicam data synthetic`` and ``kdcicam data cub``: make datasets in the metadata format.

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
    s.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    s.add_argument("--classes", type=int, default=8, help="number of classes, 2..10 (default 8)")
    s.add_argument("--rho", type=float, default=0.9,
                   help="train/val probability that the background is the class's own habitat (default 0.9)")
    s.add_argument("--train", type=int, default=2400, metavar="N", help="train images (default 2400)")
    s.add_argument("--val", type=int, default=400, metavar="N", help="val images (default 400)")
    s.add_argument("--test", type=int, default=800, metavar="N", help="test images (default 800)")
    s.add_argument("--test-conflict", type=int, default=800, metavar="N",
                   help="test_conflict images, always on another class's habitat (default 800)")
    s.add_argument("--noise", type=float, default=0.0, help="pixel noise std on a 0..1 scale (default 0)")
    s.add_argument("--workers", type=int, default=0, help="processes, 0 = one per CPU (output is identical)")

    c = sub.add_parser("cub", help="convert a CUB-200-2011 folder to metadata",
                       description="Convert a CUB-200-2011 folder (full or a class subset) into train/val/test "
                                   "metadata. Images are referenced, not copied.")
    c.add_argument("src", type=Path, help="CUB folder with images.txt, bounding_boxes.txt, ... and images/")
    c.add_argument("--out", required=True, type=Path, help="output folder")
    c.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of each class's official train images held out as val (default 0.1)")
    c.add_argument("--seed", type=int, default=0, help="seed of the val hold-out (default 0)")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "synthetic":
        return _synthetic(args)
    return _cub(args)


def _synthetic(args: argparse.Namespace) -> int:
    from ..data.synthetic import SyntheticConfig, generate_synthetic

    config = SyntheticConfig(seed=args.seed, size=args.size, num_classes=args.classes, rho=args.rho,
                             n_train=args.train, n_val=args.val, n_test=args.test,
                             n_test_conflict=args.test_conflict, noise=args.noise, workers=args.workers)
    start = time.perf_counter()
    counts = generate_synthetic(args.out, config)
    print(f"synthetic confounded objects: {config.num_classes} classes ({', '.join(config.class_names)}), "
          f"{config.size} px, rho={config.rho}, seed={config.seed}")
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
