"""Scaling a recipe down (kdcicam.training.scaling): the expected number of pool updates per class
against a simulation of shuffled, drop-last batches; the pool rate derived from a target r·N; the raw-CAM
scale behind ``kd.cam_temperature: auto``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kdcicam.config import load_config
from kdcicam.training.scaling import cam_scale, derive_pool_rate, expected_pool_updates


def _simulated_updates(counts: list[int], batch: int, epochs: int, q: float, trials: int, seed: int) -> float:
    """Mean over classes of the steps whose batch holds a correctly classified sample of the class: each
    epoch a fresh permutation cut into ⌊n/B⌋ full batches (the training loader drops the rest), each
    sample correct with probability q."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    steps = len(labels) // batch
    total = 0.0
    for _ in range(trials * epochs):
        lab = labels[rng.permutation(len(labels))[: steps * batch]].reshape(steps, batch)
        correct = rng.random((steps, batch)) < q
        hit = (lab[:, :, None] == np.arange(len(counts))) & correct[:, :, None]  # [steps, B, C]
        total += hit.any(axis=1).sum(axis=0).mean()
    return total / trials


@pytest.mark.parametrize("counts, batch, epochs, q", [
    ([3, 5, 8, 12, 20, 30, 2, 10], 8, 3, 0.7),  # 90 images: the last partial batch is dropped
    ([16, 16, 16, 16], 16, 2, 0.8),  # the tiny synthetic set
    ([1, 40], 4, 1, 1.0),
])
def test_expected_pool_updates_matches_a_simulation(counts, batch, epochs, q):
    expected = expected_pool_updates(counts, batch, epochs, q)
    simulated = _simulated_updates(counts, batch, epochs, q, trials=300, seed=0)
    assert expected == pytest.approx(simulated, rel=0.03)


def test_expected_pool_updates_edges():
    assert expected_pool_updates([], 8, 3, 0.8) == 0.0
    assert expected_pool_updates([0, 0], 8, 3, 0.8) == 0.0
    assert expected_pool_updates([10], 4, 2, 1.0) == 2 * 2  # one class always correct: every step
    assert expected_pool_updates([10, 10], 4, 1, 0.0) == 0.0  # nothing correct: no update


def test_derive_pool_rate_meets_the_target():
    cfg = load_config(None, ["model.pool_rate_target=6", "data.batch_size=8", "optim.epochs=3",
                             "model.pool_correct_fraction=0.7", "model.pool_rate=0.01"])
    counts = [3, 5, 8, 12, 20, 30, 2, 10]
    labels = {f"img{i}": c for i, c in enumerate(np.repeat(np.arange(8), counts).tolist())}
    rate = derive_pool_rate(cfg, labels, 9)  # a ninth class without training images counts as zero
    n = expected_pool_updates([*counts, 0], 8, 3, 0.7)
    assert rate == pytest.approx(6 / n) and rate * n == pytest.approx(6)
    assert derive_pool_rate(cfg, {}, 3) == 0.01  # no training images: the configured rate stays


class _FixedCams(nn.Module):
    """A stand-in model whose down-branch CAMs are the batch's images times two."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"cams": 2 * x}


def test_cam_scale_is_the_std_of_the_raw_cams_over_the_first_batches():
    g = torch.Generator().manual_seed(0)
    batches = [{"image": torch.randn(3, 2, 4, 4, generator=g) * s + s} for s in (1.0, 3.0, 9.0)]
    model = _FixedCams().train()
    scale = cam_scale(model, [batches[0], None, batches[1], batches[2]], batches=3)  # None: skipped batch
    assert not model.training
    expected = torch.cat([2 * b["image"].flatten() for b in batches[:2]]).double().std(unbiased=False)
    assert scale == pytest.approx(float(expected))
    with pytest.raises(ValueError, match="no training images"):
        cam_scale(model, [None, None])
