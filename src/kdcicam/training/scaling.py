"""Keeping the methods' mechanisms at work when a recipe is scaled down (docs/method.md, "Scaling the
recipes down").

- **Pool rate from a target r·N.** The context pool ``M ← N(M + r·N(E))`` only turns toward its running
  signal as ``r·N`` grows (N = updates per class). The official VGG16 CUB runs reach r·N ≈ 27 (CI-CAM,
  teachers) and ≈ 5.4 (student); a CPU recipe with fewer images, larger batches and fewer epochs reaches
  a tenth of that at the official r. :func:`derive_pool_rate` picks r so that the expected r·N meets the
  target; the pool's ``updates`` buffer then records the r·N actually reached.
- **CAM temperature matched to the backbone.** ``σ(CAM/T)`` with the official T = 15 is nearly flat for a
  backbone whose raw CAMs are a few units large, and the CAM distillation then carries no gradient.
  :func:`cam_scale` measures the localization teacher's raw-CAM standard deviation (``kd.cam_temperature:
  auto``).
"""
from __future__ import annotations

import math
from collections import Counter
from itertools import islice

import torch

from ..config import RunConfig


def expected_pool_updates(class_counts: list[int], batch_size: int, epochs: int, correct_fraction: float) -> float:
    """Expected updates per class (mean over classes): an update of class c happens in every step whose
    batch holds a correctly classified sample of c. With n images in ⌊n/B⌋ shuffled batches of B (the
    training loader drops the last partial batch), a batch holds a correct sample of c with probability
    ``1 − (1 − q·n_c/n)^B``."""
    n = sum(class_counts)
    if n == 0 or not class_counts:
        return 0.0
    batches = n // batch_size
    per_class = [1.0 - (1.0 - correct_fraction * nc / n) ** batch_size for nc in class_counts]
    return epochs * batches * sum(per_class) / len(per_class)


def derive_pool_rate(cfg: RunConfig, class_labels: dict[str, int], num_classes: int) -> float:
    """``model.pool_rate_target / N`` with N from :func:`expected_pool_updates` on this run's train split,
    batch size and epochs (per process: under DDP each update sees the global batch, so pass the global
    batch size in ``data.batch_size`` × devices — handled by the caller)."""
    counts = Counter(class_labels.values())
    class_counts = [counts.get(c, 0) for c in range(num_classes)]
    n_updates = expected_pool_updates(class_counts, cfg.data.batch_size, cfg.optim.epochs,
                                      cfg.model.pool_correct_fraction)
    if n_updates <= 0:
        return cfg.model.pool_rate
    target = cfg.model.pool_rate_target
    if target is None:
        raise ValueError("derive_pool_rate: model.pool_rate_target is not set")
    return float(target) / n_updates


@torch.no_grad()
def cam_scale(model: torch.nn.Module, loader, batches: int = 4) -> float:
    """Standard deviation of a model's raw class CAMs (down branch, all classes) over a few batches."""
    model.eval()
    total = total_sq = count = 0.0
    for batch in islice(iter(loader), batches):
        if batch is None:
            continue
        cams = model(batch["image"])["cams"].double()
        total += float(cams.sum())
        total_sq += float((cams * cams).sum())
        count += cams.numel()
    if count == 0:
        raise ValueError("no training images to measure the CAM scale on")
    mean = total / count
    return float(math.sqrt(max(total_sq / count - mean * mean, 1e-12)))
