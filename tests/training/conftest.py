"""A fast config over the shared tiny dataset (tests/conftest.py), for the training tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from kdcicam.config import RunConfig, load_config

FAST = [
    "model.backbone=efficientnet_lite0", "model.pretrained=true", "model.freeze_stages=12",
    "data.image_size=64", "data.batch_size=16", "data.eval_batch_size=32", "data.augment.resize=72",
    "optim.epochs=2", "optim.lr=0.003", "trainer.progress_bar=false", "trainer.seed=0",
    "trainer.log_every_n_steps=1", "data.test_splits=[test]",
]


@pytest.fixture()
def fast_config(tiny_data: Path):
    def make(method: str, *extra: str) -> RunConfig:
        return load_config(None, [f"data.root={tiny_data}", *FAST, *extra], method=method)

    return make


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "10000000000")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "10000000000")
    env["PYTHONWARNINGS"] = "ignore"
    return env
