"""Does a CAM fire on paste seams? Score saved CAMs of the conflict probe's splits (``kdcicam data conflict
--control``) by where their mass lies: inside the pasted region and in a band around its border, each as
a share of the map's mass divided by the same region's share of the area.

A ratio of 1 is a map blind to the region; on ``<split>_seam`` (a background patch on a background, no
object) a ratio well above 1, inside or on the band, is a CAM drawn to the paste itself, and the probe's
numbers would then measure the seam, not the habitat. ``<split>_conflict`` / ``_same`` are scored the
same way for scale (an object is there: their inside ratio should be far above 1).

    kdcicam evaluate RUN --data-root PROBE --split test_conflict test_same test_seam \\
        --box-threshold T --save-cams CAMS          # T: the run's threshold chosen on its own val
    .venv/bin/python benchmarks/seam_check.py --cams CAMS --probe PROBE --name cub50_cam_seed0

Writes ``benchmarks/results/seam_check_<name>.json``. Shares use the map min-max normalised as context
leakage does (the mass above the map's minimum), on the evaluation grid, with the evaluator's masks.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from provenance import stamp

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def border_band(region: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of the region's border, on either side."""
    import cv2

    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    r = region.astype(np.uint8)
    return (cv2.dilate(r, kernel) > 0) & ~(cv2.erode(r, kernel, borderType=cv2.BORDER_REPLICATE) > 0)


def region_shares(cam: np.ndarray, region: np.ndarray, band: np.ndarray) -> tuple[float, float, float, float]:
    """(mass inside, area inside, mass on the band, area of the band), each a share of the whole map."""
    shifted = cam - cam.min()
    total = float(shifted.sum())
    n = cam.size
    if total <= 0.0:  # a constant map: uniform, as context leakage counts it
        return region.sum() / n, region.sum() / n, band.sum() / n, band.sum() / n
    return (float(shifted[region].sum()) / total, region.sum() / n,
            float(shifted[band].sum()) / total, band.sum() / n)


def score_split(cam_dir: Path, split_dir: Path, band_fraction: float) -> dict:
    """Mean shares and their ratios (mass share / area share, of the means) over a split's saved CAMs."""
    from kdcicam.evaluation.saved_cams import load_cam

    md = read_probe_split(split_dir)
    shape = load_cam(cam_dir, md.image_ids[0], None, normalize=True).shape
    return score_maps(md, shape, lambda image_id: load_cam(cam_dir, image_id, shape, normalize=True), band_fraction)


def read_probe_split(split_dir: Path):
    from kdcicam.data.metadata import read_metadata

    md = read_metadata(split_dir, check_images=False)
    if not md.has_masks:
        sys.exit(f"{split_dir}: no masks (is this a `kdcicam data conflict` split?)")
    return md


def score_maps(md, shape: tuple[int, int], cam_of, band_fraction: float) -> dict:
    """As :func:`score_split`, for any map per image (``cam_of(image_id)``, an array of ``shape``): a map that
    ignores the image (a centre Gaussian) gives the ratio that centre bias alone produces on these regions."""
    from kdcicam.evaluation.metrics import MaskEvaluator

    reader = MaskEvaluator(md, (shape[1], shape[0]))  # (width, height)
    width = max(1, round(band_fraction * min(shape)))
    sums = np.zeros(4)
    for image_id in md.image_ids:
        region = reader.mask(image_id) == 1
        sums += region_shares(cam_of(image_id), region, border_band(region, width))
    inside, inside_area, band, band_area = sums / len(md.image_ids)
    return {"num_images": len(md.image_ids), "grid": list(shape), "band_px": width,
            "inside_mass": round(inside, 6), "inside_area": round(inside_area, 6),
            "inside_ratio": round(inside / inside_area, 4) if inside_area else None,
            "band_mass": round(band, 6), "band_area": round(band_area, 6),
            "band_ratio": round(band / band_area, 4) if band_area else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cams", type=Path, required=True, help="the --save-cams folder of `kdcicam evaluate`")
    p.add_argument("--probe", type=Path, required=True, help="the `kdcicam data conflict --control` output")
    p.add_argument("--splits", type=lambda v: [s for s in v.split(",") if s], default=None, metavar="A,B",
                   help="comma-separated splits (default: the probe's splits that have CAMs)")
    p.add_argument("--band", type=float, default=0.04, help="band half-width, a fraction of the grid side")
    p.add_argument("--name", required=True, help="names the results file (e.g. cub50_cam_seed0)")
    p.add_argument("--out", type=Path, default=None, help="results file (default: benchmarks/results/seam_check_<name>.json)")
    args = p.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from kdcicam.data.metadata import atomic_write_text, read_dataset_info

    info = read_dataset_info(args.probe)
    splits = args.splits or [s for s in info.splits if (args.cams / s).is_dir()]
    if not splits:
        sys.exit(f"{args.cams}: no CAM folder for any of the probe's splits ({', '.join(info.splits)})")
    results = {s: score_split(args.cams / s, args.probe / s, args.band) for s in splits}
    for s, r in results.items():
        print(f"{s:16s} inside: mass {100 * r['inside_mass']:.1f}% / area {100 * r['inside_area']:.1f}% "
              f"= x{r['inside_ratio']}   band: mass {100 * r['band_mass']:.1f}% / area {100 * r['band_area']:.1f}% "
              f"= x{r['band_ratio']}")
    record = {"benchmark": "seam_check", "name": args.name, "probe": str(args.probe.resolve()),
              "probe_settings": info.extra, **stamp(REPO, "benchmarks/seam_check.py"), "splits": results}
    out = args.out or RESULTS / f"seam_check_{args.name}.json"
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
