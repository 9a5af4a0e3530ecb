"""WSOL evaluation with the clovaai/wsolevaluation protocol, number for number, and fast.

Score maps are float arrays in [0, 1] on the evaluation grid (224 x 224 by default); use
:func:`prepare_scoremap` to turn a raw CAM into one (bicubic resize, then min-max normalisation).

>>> ev = WSOLEvaluator(metadata)                    # doctest: +SKIP
>>> ev.accumulate(maps, image_ids, logits)           # per batch  # doctest: +SKIP
>>> ev.compute()["max_box_acc_v2"]                   # doctest: +SKIP

The evaluators give exactly the plain per-threshold ``cv2.findContours`` loop's numbers
(:mod:`.reference`), many times faster. Names are imported on first use, so that the ``score``
command's ``--help`` does not load OpenCV and numba.
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "BoxEvaluator": "metrics", "MaskEvaluator": "metrics", "ContextLeakage": "metrics",
    "ClassificationAccuracy": "metrics", "WSOLEvaluator": "metrics", "leakage": "metrics", "topk_from": "metrics",
    "LogitsError": "metrics", "V2_IOU_THRESHOLDS": "metrics",
    "MetricUndefinedError": "metrics", "BoxConventionError": "boxes", "ScoremapError": "boxes", "scoremap_to_boxes": "boxes", "normalize_scoremap": "boxes",
    "prepare_scoremap": "boxes", "check_scoremap": "boxes", "threshold_list": "boxes",
    "quantize_scoremap": "boxes", "resize_box": "boxes", "box_iou_matrix": "boxes",
    "batch_box_ious": "engine", "load_gt_mask": "masks",
    "score_saved_cams": "saved_cams", "load_cam": "saved_cams", "CamFileError": "saved_cams",
}

__all__ = [  # noqa: RUF022 - grouped by module
    "BoxEvaluator", "ClassificationAccuracy", "ContextLeakage", "MaskEvaluator", "MetricUndefinedError",
    "WSOLEvaluator", "leakage", "topk_from", "LogitsError", "V2_IOU_THRESHOLDS",
    "BoxConventionError", "ScoremapError", "box_iou_matrix", "check_scoremap", "normalize_scoremap",
    "prepare_scoremap", "quantize_scoremap", "resize_box", "scoremap_to_boxes", "threshold_list",
    "batch_box_ious", "load_gt_mask",
    "score_saved_cams", "load_cam", "CamFileError",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
