"""`kdcicam train CONFIG --method cam|ci-cam|kd-ci-cam [--out runs/NAME] [--resume] [key.sub=value ...]`"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..config import shipped_configs

    p.add_argument("config", help="a YAML config file, or the name of a config that ships with kdcicam: "
                   f"{', '.join(shipped_configs())}")
    p.add_argument("--method", help="overrides the config's method: a registered method (kdcicam.list_models(): "
                   "cam, ci-cam, kd-ci-cam built in)")
    p.add_argument("--out", help="run folder (default runs/<config name>-<method>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last.ckpt")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. optim.epochs=5")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..training.pipeline import train

    config = load_config(args.config, args.overrides, method=args.method)
    out = Path(args.out) if args.out else Path("runs") / f"{config.name or Path(args.config).stem}-{config.method}"
    summary = train(config, out, resume=args.resume)
    print(json.dumps(summary, indent=2))
    print(f"run folder: {out}")
    return 0
