"""``kdcicam baseline DATA --split S [S ...] --kind centre-gaussian|oracle``: maps that need no model, scored
like a model's (:mod:`kdcicam.evaluation.baselines`).

``centre-gaussian``: the floor -- the same centred Gaussian for every image, σ and the box threshold chosen on
the val split. ``oracle``: the GT object region as a CAM of the run's resolution (``--run RUN`` reads the grid
from a trained run, ``--grid H W`` gives it). ``--save-maps DIR`` writes ``DIR/<split>/<image_id>.npy``, which
``kdcicam score`` scores to the same numbers (pass it the printed box threshold).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

KINDS = ("centre-gaussian", "oracle")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", type=Path, metavar="DATA", help="dataset folder (dataset.yaml and the split folders)")
    p.add_argument("--split", nargs="+", required=True, metavar="S", help="splits to score")
    p.add_argument("--kind", choices=KINDS, required=True,
                   help="centre-gaussian (the floor; σ chosen on --val-split) or oracle (the GT region on a CAM grid)")
    p.add_argument("--val-split", default=None, metavar="S",
                   help="where σ and the box threshold are chosen (default: the run's data.val_split, else val)")
    p.add_argument("--size", type=int, default=None, metavar="N",
                   help="evaluation grid side, as the models' data.image_size (default: the run's, else 224)")
    p.add_argument("--run", type=Path, default=None, metavar="RUN",
                   help="a run folder or checkpoint: its evaluation size, val split and (oracle) CAM grid")
    p.add_argument("--grid", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="oracle: the CAM grid (e.g. 8 8 for 128 px at output stride 16), instead of --run")
    p.add_argument("--mode", default="coverage", help="oracle: coverage (default), coverage^2, coverage^4 or inner")
    p.add_argument("--save-maps", type=Path, default=None, metavar="DIR",
                   help="also write the maps as DIR/<split>/<image_id>.npy (the layout `kdcicam score` reads)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the results to this JSON file")


def _run_grid(run: Path) -> tuple[int, str, tuple[int, int]]:
    """(evaluation size, val split, CAM grid) of a trained run: the grid is read off one forward pass."""
    import torch

    from ..inference import Localizer

    loc = Localizer.from_checkpoint(run, device="cpu", threshold=0.5)
    with torch.inference_mode():
        out = loc.model(torch.zeros(1, 3, loc.image_size, loc.image_size))
        maps = loc.model.localization_map(out, kind=loc.map_kind)  # type: ignore[operator]  # as in Localizer
    from ..config import load_config

    config = load_config(Path(loc.checkpoint).parent.parent / "config.yaml") if loc.checkpoint else None
    val_split = config.data.val_split if config is not None else "val"
    return loc.image_size, val_split, (int(maps.shape[-2]), int(maps.shape[-1]))


def run(args: argparse.Namespace) -> int:
    from ..data.metadata import atomic_write_text, read_dataset_info
    from ..errors import ConfigError
    from ..evaluation.baselines import ORACLE_MODES, centre_gaussian_floor, score_oracle
    from ..evaluation.table import format_table

    info = read_dataset_info(args.data)  # a clear error when DATA is not a dataset
    missing = [s for s in args.split if s not in info.splits and not (args.data / s).is_dir()]
    if missing:
        raise ConfigError(f"--split {missing[0]}: no such split in {args.data} ({', '.join(info.splits)})")
    size, val_split, grid = args.size, args.val_split, tuple(args.grid) if args.grid else None
    if args.run is not None:
        run_size, run_val, run_grid = _run_grid(args.run)
        size, val_split = size or run_size, val_split or run_val
        grid = grid or run_grid
    size, val_split = size or 224, val_split or "val"
    if size < 1:
        raise ConfigError(f"--size {size}: must be positive")
    if args.kind == "centre-gaussian":
        result = centre_gaussian_floor(args.data, args.split, val_split=val_split, size=size, save_dir=args.save_maps)
        columns = {f"centre Gaussian/{s}": result["splits"][s] for s in args.split}
        how = (f"σ {result['sigma']} of the {size}-px grid, chosen on {val_split}; box threshold "
               f"{result['box_threshold']:.2f}, chosen on {val_split}")
    else:
        if grid is None:
            raise ConfigError("--kind oracle needs the CAM grid: --run RUN (a trained run) or --grid H W")
        if min(grid) < 1:
            raise ConfigError(f"--grid {grid[0]} {grid[1]}: must be positive")
        if args.mode not in ORACLE_MODES:
            raise ConfigError(f"--mode {args.mode}: not one of {', '.join(ORACLE_MODES)}")
        splits = {s: score_oracle(args.data, s, size, grid, args.mode,
                                  save_dir=args.save_maps / s if args.save_maps is not None else None)
                  for s in args.split}
        result = {"kind": "oracle", "mode": args.mode, "grid": list(grid), "size": size, "splits": splits}
        columns = {f"oracle/{s}": splits[s] for s in args.split}
        how = f"the GT region on a {grid[0]}x{grid[1]} CAM grid ({args.mode}), scored on the {size}-px grid"
    print(f"{args.kind} baseline: {how}")
    print(format_table(columns))
    if args.save_maps is not None:
        print(f"maps written to {args.save_maps}/<split>/ (score them with `kdcicam score`)")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0
