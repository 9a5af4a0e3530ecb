"""``kdcicam init DATASET --out CONFIG.yaml [--device cpu|gpu]``: a commented starting config sized to a
dataset (:mod:`kdcicam.config_template`), checked by loading it back before it is written."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", type=Path, help="dataset folder (dataset.yaml and the split folders)")
    p.add_argument("--out", required=True, type=Path, help="the config file to write (e.g. configs/mine.yaml)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                   help="what the runs will train on: cpu (early blocks frozen, no loader workers) or gpu "
                        "(every layer, larger batches, loader workers); default cpu")
    p.add_argument("--method", default="cam",
                   help="the config's method, a registered one (kdcicam train --method overrides it); default cam")
    p.add_argument("--train-split", default="train", help="default: train")
    p.add_argument("--val-split", default="val", help="default: val")
    p.add_argument("--force", action="store_true", help="replace an existing config file")


def run(args: argparse.Namespace) -> int:
    import tempfile

    from ..config import load_config
    from ..config_template import monitor_for, profile_dataset, render_config
    from ..data.metadata import atomic_write_text
    from ..errors import ConfigError

    if args.out.exists() and not args.force:
        raise ConfigError(f"{args.out} exists; pass --force to replace it")
    load_config(None, method=args.method)  # an unknown --method fails here, naming the registered ones
    profile = profile_dataset(args.dataset, args.train_split, args.val_split)
    text = render_config(profile, device=args.device, method=args.method)
    with tempfile.TemporaryDirectory() as tmp:  # what we write must load as is
        check = Path(tmp) / "check.yaml"
        check.write_text(text, encoding="utf-8")
        load_config(check)
    atomic_write_text(args.out, text)
    cfg = load_config(args.out)
    print(f"wrote {args.out} for {profile.name!r}: {profile.num_classes} classes, {profile.train_images} train / "
          f"{profile.val_images} val images")
    print(f"  {args.device}: image_size {cfg.data.image_size}, batch {cfg.data.batch_size}, {cfg.optim.epochs} epochs, "
          f"backbone {cfg.model.backbone} (output stride {cfg.model.output_stride}, freeze_stages "
          f"{cfg.model.freeze_stages})")
    print(f"  best.ckpt by {cfg.eval.monitor}: {monitor_for(profile)[1]}")
    print(f"  next: kdcicam train {args.out} --method {args.method} --out runs/{cfg.name}-{args.method}")
    return 0
