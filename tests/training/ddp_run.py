"""Run by test_ddp.py as a script (Lightning's DDP launcher re-executes it once per rank):
trains CI-CAM with 2 CPU processes over gloo and saves each rank's context pool."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from kdcicam.config import load_config
from kdcicam.training.pipeline import train_stage

FAST = sys.argv[3:]


class SavePool(Callback):
    def __init__(self, out: Path):
        self.out = out

    def on_train_end(self, trainer, pl_module) -> None:
        pool = pl_module.model.pool
        torch.save({"memory": pool.maps.detach().clone(), "world_size": trainer.world_size,
                    "updates": int(getattr(pool, "num_updates", torch.tensor(-1)))},
                   self.out / f"pool_rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    data, out = sys.argv[1], Path(sys.argv[2])
    cfg = load_config(None, [f"data.root={data}", *FAST, "trainer.strategy=ddp", "trainer.devices=2",
                             "trainer.accelerator=cpu", "optim.epochs=1"], method="ci-cam")
    out.mkdir(parents=True, exist_ok=True)
    train_stage(cfg, out, extra_callbacks=[SavePool(out)])
