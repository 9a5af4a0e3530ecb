"""Does a CAM fire on paste seams? Score saved CAMs of the conflict probe's splits (``kdcicam data conflict
--control``) by where their mass lies: inside the pasted region and in a band around its border.

A ratio of mass share to area share says little alone: CAMs prefer the image centre, and so do the boxes.
The probe's ``<split>_canvas`` is the counterfactual: the very canvas of ``_conflict`` and ``_seam`` with
nothing pasted. :func:`paste_pull` compares, image by image, the mass a CAM gains inside the box (and on its
border) when a background patch is pasted (``_seam``) with the mass it gains when the bird is
(``_conflict``): a pull near 0 is a CAM blind to the paste, and the probe then measures the habitat, not
the seam.

    kdcicam evaluate RUN --data-root PROBE --split test_conflict test_seam test_canvas \\
        --box-threshold T --save-cams CAMS          # T: the run's threshold chosen on its own val
    .venv/bin/python benchmarks/seam_check.py --cams CAMS --probe PROBE --name cub50_cam_seed0

Writes ``benchmarks/results/seam_check_<name>.json`` (benchmarks/conflict_probe.py does all this for every
benchmark run). Shares use the map min-max normalised as context leakage does (the mass above the map's
minimum), on the evaluation grid, with the evaluator's masks.
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
    _, shares, shape, width = image_shares(cam_dir, split_dir, band_fraction)
    inside, inside_area, band, band_area = shares.mean(axis=0)
    return {"num_images": len(shares), "grid": list(shape), "band_px": width,
            "inside_mass": round(inside, 6), "inside_area": round(inside_area, 6),
            "inside_ratio": round(inside / inside_area, 4) if inside_area else None,
            "band_mass": round(band, 6), "band_area": round(band_area, 6),
            "band_ratio": round(band / band_area, 4) if band_area else None}


def read_probe_split(split_dir: Path):
    from kdcicam.data.metadata import read_metadata

    md = read_metadata(split_dir, check_images=False)
    if not md.has_masks:
        sys.exit(f"{split_dir}: no masks (is this a `kdcicam data conflict` split?)")
    return md


def image_shares(cam_dir: Path, split_dir: Path, band_fraction: float):
    """Per image, in the split's order: (mass inside, area inside, mass on the band, area of the band) as
    an [N, 4] array, with the image ids, the CAM's shape and the band's half-width in pixels."""
    from kdcicam.evaluation.metrics import MaskEvaluator
    from kdcicam.evaluation.saved_cams import load_cam

    md = read_probe_split(split_dir)
    shape = load_cam(cam_dir, md.image_ids[0], None, normalize=True).shape
    reader = MaskEvaluator(md, (shape[1], shape[0]))  # (width, height)
    width = max(1, round(band_fraction * min(shape)))
    shares = np.empty((len(md.image_ids), 4))
    for k, image_id in enumerate(md.image_ids):
        region = reader.mask(image_id) == 1
        shares[k] = region_shares(load_cam(cam_dir, image_id, shape, normalize=True), region,
                                  border_band(region, width))
    return list(md.image_ids), shares, shape, width


def paired_objects(probe: Path, split: str) -> list[str]:
    """The source object of each image of a probe split, in order (paste_sources.txt's second column)."""
    return [line.split(",")[1] for line in (probe / split / "paste_sources.txt").read_text().splitlines() if line]


def paste_pull(cams: Path, probe: Path, prefix: str, band_fraction: float, resamples: int = 2000) -> dict:
    """What pasting does to a CAM, image by image against the bare canvas (``<prefix>_canvas``): the mass it
    gains inside the box and on the box's border band when a background patch is pasted (``_seam``) and when
    the bird is (``_conflict``). **Pull** = the patch's gain / the bird's gain inside the box (and the
    patch's gain on the band / the bird's gain inside): 0 is a CAM blind to the paste, 1 one that treats a
    pasted patch as it treats a bird. 95 % intervals by bootstrap over images (seeded)."""
    splits = {k: f"{prefix}_{k}" for k in ("seam", "conflict", "canvas")}
    objects = {k: paired_objects(probe, s) for k, s in splits.items()}
    if not objects["seam"] == objects["conflict"] == objects["canvas"]:
        sys.exit(f"{probe}: {', '.join(splits.values())} do not hold the same objects in the same order")
    shares = {k: image_shares(cams / s, probe / s, band_fraction)[1] for k, s in splits.items()}
    seam_in = shares["seam"][:, 0] - shares["canvas"][:, 0]
    seam_band = shares["seam"][:, 2] - shares["canvas"][:, 2]
    bird_in = shares["conflict"][:, 0] - shares["canvas"][:, 0]

    def pulls(idx: np.ndarray) -> tuple[float, float, float]:
        bird = bird_in[idx].mean()
        return bird, seam_in[idx].mean() / bird, seam_band[idx].mean() / bird

    rng = np.random.default_rng(0)
    n = len(bird_in)
    boot = np.array([pulls(rng.integers(0, n, n)) for _ in range(resamples)])
    bird, inside, band = pulls(np.arange(n))
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    ci = lambda j: [round(float(lo[j]), 4), round(float(hi[j]), 4)]
    return {"num_images": n, "band_fraction": band_fraction,
            "canvas_inside_mass": round(float(shares["canvas"][:, 0].mean()), 6),
            "inside_area": round(float(shares["canvas"][:, 1].mean()), 6),
            "bird_gain_inside": round(float(bird), 6), "bird_gain_inside_ci95": ci(0),
            "patch_gain_inside": round(float(seam_in.mean()), 6),
            "patch_gain_band": round(float(seam_band.mean()), 6),
            "pull_inside": round(float(inside), 4), "pull_inside_ci95": ci(1),
            "pull_band": round(float(band), 4), "pull_band_ci95": ci(2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cams", type=Path, required=True, help="the --save-cams folder of `kdcicam evaluate`")
    p.add_argument("--probe", type=Path, required=True, help="the `kdcicam data conflict --control` output")
    p.add_argument("--splits", type=lambda v: [s for s in v.split(",") if s], default=None, metavar="A,B",
                   help="comma-separated splits (default: the probe's splits that have CAMs)")
    p.add_argument("--band", type=float, default=1 / 14,
                   help="band half-width, a fraction of the map's side (default: one cell of a 14x14 CAM)")
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
    prefix = info.extra.get("split", "test")
    pull = None
    if all((args.cams / f"{prefix}_{k}").is_dir() for k in ("seam", "conflict", "canvas")):
        pull = paste_pull(args.cams, args.probe, prefix, args.band)
        print(f"paste pull inside {pull['pull_inside']} (95 % {pull['pull_inside_ci95']}), on the band "
              f"{pull['pull_band']} (95 % {pull['pull_band_ci95']})")
    record = {"benchmark": "seam_check", "name": args.name, "probe": str(args.probe.resolve()),
              "probe_settings": info.extra, **stamp(REPO, "benchmarks/seam_check.py"), "splits": results,
              "paste_pull": pull}
    out = args.out or RESULTS / f"seam_check_{args.name}.json"
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
