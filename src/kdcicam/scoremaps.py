"""Model outputs → the evaluator's score maps, the one step shared by validation, ``kdcicam evaluate``
and the :class:`~kdcicam.inference.Localizer`, so the boxes a user gets are the boxes the metrics scored."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch


def scoremaps_for_evaluation(maps: torch.Tensor | np.ndarray, size: int) -> np.ndarray:
    """Localization maps → the evaluator's input: resized to the evaluation grid with bicubic
    interpolation and min-max normalised, exactly as wsolevaluation's inference does. ``maps`` is a
    tensor or a numpy array (the ONNX backend's, so that path never needs torch) of shape [B, h, w]."""
    from .evaluation import prepare_scoremap

    arr = maps.astype(np.float64) if isinstance(maps, np.ndarray) else maps.detach().double().cpu().numpy()
    return np.stack([prepare_scoremap(m, size) for m in arr])


__all__ = ["scoremaps_for_evaluation"]
