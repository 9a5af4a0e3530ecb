"""CAM-like score maps made from a seed: what the evaluator benchmark scores and the evaluation tests feed
the kernels (one definition, so a test's maps are the benchmark's)."""
from __future__ import annotations

import cv2
import numpy as np


def smooth_map(rng: np.random.Generator, size: int = 224, low: int = 7) -> np.ndarray:
    """A map as this project's backbones make them: a ``low`` x ``low`` grid (7: EfficientNet-Lite, 14:
    VGG16) of 1-3 blobs on low-level noise, bicubic-upsampled to ``size`` and min-max normalised."""
    yy, xx = np.mgrid[0:low, 0:low] / low
    m = rng.uniform(0, 0.3) * rng.random((low, low))
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.15, 0.85, 2)
        sy, sx = rng.uniform(0.05, 0.3, 2)
        m += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 / (2 * sy ** 2) + (xx - cx) ** 2 / (2 * sx ** 2)))
    cam = cv2.resize(m, (size, size), interpolation=cv2.INTER_CUBIC)
    cam -= cam.min()
    return cam / cam.max()
