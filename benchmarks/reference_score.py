"""The baseline command of ``benchmarks/evaluator_speed.py``'s end-to-end timing: score a folder of saved
CAMs the way clovaai/wsolevaluation's ``evaluation.py`` does, one ``np.load`` and one
``cv2.findContours`` per image and threshold (:class:`kdcicam.evaluation.reference.ReferenceBoxEvaluator`),
in one mode per process, and write MaxBoxAcc and the curves as ``kdcicam score --json`` names them.

    python benchmarks/reference_score.py CAM_DIR --metadata SPLIT [--interval 0.01] [--multi-contour] --json OUT
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kdcicam.data.metadata import atomic_write_text, read_metadata
from kdcicam.evaluation.reference import ReferenceBoxEvaluator
from kdcicam.evaluation.saved_cams import cam_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cam_dir", type=Path)
    parser.add_argument("--metadata", type=Path, required=True)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--cam-size", type=int, default=224)
    parser.add_argument("--multi-contour", action="store_true")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    metadata = read_metadata(args.metadata, check_images=False)
    evaluator = ReferenceBoxEvaluator(metadata, args.cam_size, multi_contour=args.multi_contour,
                                      cam_curve_interval=args.interval)
    for image_id in metadata.image_ids:
        evaluator.accumulate(np.load(cam_path(args.cam_dir, image_id)), image_id)
    curves = evaluator.curves()
    result = {"num_images": evaluator.count, "multi_contour": args.multi_contour,
              "max_box_acc": {str(iou): float(curve.max()) for iou, curve in curves.items()},
              "box_acc_curve": {"thresholds": [float(t) for t in evaluator.thresholds],
                                **{str(iou): curve.tolist() for iou, curve in curves.items()}}}
    atomic_write_text(args.json, json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
