"""`OnnxLocalizer`: an exported model (``kdcicam export``) run by onnxruntime, without torch.

>>> loc = OnnxLocalizer("model.onnx")                       # doctest: +SKIP
>>> [r] = loc.predict("bird.jpg")                            # doctest: +SKIP
>>> r.class_names[0], r.scores[0], r.boxes                   # doctest: +SKIP

It gives the :class:`~kdcicam.localization.LocalizationResult` the PyTorch
:class:`~kdcicam.inference.Localizer` gives, by the same steps: the numpy twin of the evaluation
transform (:mod:`kdcicam.preprocess`, bit-identical for 8-bit images), the graph's score map on the CAM
grid resized and normalised by :func:`~kdcicam.scoremaps.scoremaps_for_evaluation`, and the evaluator's
box extraction (:func:`~kdcicam.localization.build_result`). This module and everything it imports
use numpy, onnxruntime, Pillow and OpenCV only: ``import torch`` never happens on this path.

The exported file (see :mod:`kdcicam.export`) has one input and two outputs:

- ``images``: float32 ``[N, 3, S, S]``, RGB in [0, 1]; the backbone's normalisation is inside the graph;
- ``logits``: float32 ``[N, C]``;
- ``map``: float32 ``[N, h, w]``, the run's localization map on the CAM grid (the combinational CAM
  ranked by the logits and shifted to minimum 0, for the default ``localization_map``).

What is needed to use it is stored in the model's ``metadata_props`` under the key ``kdcicam``, one
JSON object (:data:`METADATA_KEY`, fields in :func:`read_metadata`).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import KdcicamError
from .localization import ImageInputError, LocalizationResult, build_result, check_threshold, softmax

#: the metadata_props key holding the JSON description of an export
METADATA_KEY = "kdcicam"
#: bumped when the graph's inputs / outputs or the metadata change meaning
FORMAT_VERSION = 1
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "map")
REQUIRED_FIELDS = ("format", "class_names", "image_size", "box_threshold", "cam_grid", "method", "map_kind")


def import_onnxruntime() -> Any:
    """onnxruntime, or a clear error saying which extra installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise KdcicamError("the ONNX backend needs onnxruntime: pip install 'kdcicam[export]'") from None
    return onnxruntime


def read_metadata(session: Any, path: str | os.PathLike) -> dict[str, Any]:
    """The export's description from an onnxruntime session: ``format``, ``class_names``, ``image_size``
    (S), ``normalization`` (mean/std, applied inside the graph), ``box_threshold`` (chosen on val, or
    None) and ``box_threshold_source``, ``cam_grid`` ([h, w]), ``method``, ``map_kind``, ``opset``,
    ``checkpoint``, ``kdcicam_version``."""
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise KdcicamError(f"{path}: an ONNX model, but not one written by `kdcicam export` (no {METADATA_KEY!r} "
                           "metadata)")
    try:
        meta = json.loads(props[METADATA_KEY])
    except ValueError as e:
        raise KdcicamError(f"{path}: the {METADATA_KEY!r} metadata is not JSON ({e})") from None
    if not isinstance(meta, dict) or any(k not in meta for k in REQUIRED_FIELDS):
        missing = [k for k in REQUIRED_FIELDS if not isinstance(meta, dict) or k not in meta]
        raise KdcicamError(f"{path}: the {METADATA_KEY!r} metadata lacks {', '.join(missing)}")
    if int(meta["format"]) > FORMAT_VERSION:
        raise KdcicamError(f"{path}: export format {meta['format']} is newer than this kdcicam reads "
                           f"({FORMAT_VERSION}); upgrade kdcicam")
    return meta


class OnnxLocalizer:
    """Batched inference on an exported ``.onnx`` file: images → :class:`LocalizationResult`.

    ``threshold=None`` uses the box threshold chosen on the validation split (stored in the export).
    ``providers`` are onnxruntime execution providers (default: CPU); ``threads`` caps onnxruntime's
    intra-op threads (default: its own choice).
    """

    backend = "onnx"

    def __init__(self, path: str | os.PathLike, threshold: float | None = None, topk: int = 5,
                 multi_contour: bool = False, batch_size: int = 32, providers: list[str] | None = None,
                 threads: int | None = None):
        ort = import_onnxruntime()
        if int(topk) < 1:
            raise KdcicamError(f"topk must be >= 1, got {topk}")
        if int(batch_size) < 1:
            raise KdcicamError(f"batch_size must be >= 1, got {batch_size}")
        p = Path(path)
        if not p.is_file():
            raise KdcicamError(f"{p}: no such ONNX file")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(p), sess_options=options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for a file it cannot load
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise KdcicamError(f"{p}: not a loadable ONNX model ({reason[:200]})") from None
        meta = read_metadata(self.session, p)
        self.path = p
        self.metadata = meta
        self.image_size = int(meta["image_size"])
        self.class_names = [str(n) for n in meta["class_names"]]
        self.method: str | None = meta.get("method")
        self.map_kind = str(meta["map_kind"])
        self.cam_grid = tuple(int(v) for v in meta["cam_grid"])
        if threshold is None:
            if meta["box_threshold"] is None:
                raise KdcicamError(f"{p}: the export stores no box threshold (none was chosen on a validation split "
                                   "with boxes); pass a threshold (--threshold T)")
            self.threshold = check_threshold(meta["box_threshold"], str(p))
            self.threshold_source = f"{p} ({meta.get('box_threshold_source') or 'chosen on the validation split'})"
        else:
            self.threshold = check_threshold(threshold, "threshold")
            self.threshold_source = "given"
        self.topk = int(topk)
        self.multi_contour = bool(multi_contour)
        self.batch_size = int(batch_size)
        self.checkpoint = p
        self.device = ",".join(self.session.get_providers())

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> OnnxLocalizer:
        """Same as the constructor; the name mirrors ``Localizer.from_checkpoint``."""
        return cls(path, **kwargs)

    # -------------------------------------------------------------------------------- inference
    def preprocess(self, image: Any, name: str = "image") -> tuple[np.ndarray, tuple[int, int], str | None]:
        """One input → (float32 [3, S, S] model input, original (w, h), source path)."""
        from .preprocess import image_array, model_input

        arr, source = image_array(image, name)
        h, w = arr.shape[:2]
        return model_input(arr, self.image_size), (int(w), int(h)), source

    def run_graph(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model input [B, 3, S, S] → the graph's (logits [B, C], map [B, h, w]), float32."""
        logits, maps = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})
        return logits, maps

    def forward_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model input [B, 3, S, S] → (softmax probabilities [B, C], score maps [B, S, S])."""
        from .scoremaps import scoremaps_for_evaluation

        logits, maps = self.run_graph(x)
        if not np.isfinite(logits).all():  # never write NaN scores into boxes.json
            raise KdcicamError(f"{self.path}: the model's outputs are NaN or inf; the checkpoint has diverged")
        return softmax(logits), scoremaps_for_evaluation(maps, self.image_size)

    def predict(self, images: Any | Iterable[Any]) -> list[LocalizationResult]:
        """Localize one image or a sequence of images (paths, PIL images, HxWxC / HxW numpy arrays;
        uint8, or float in [0, 1]; a 4-D array is a batch [B, H, W, C]), in batches of ``batch_size``."""
        items = _as_list(images)
        results: list[LocalizationResult] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            prepared = [self.preprocess(im, f"images[{start + i}]") for i, im in enumerate(chunk)]
            probs, cams = self.forward_batch(np.stack([p[0] for p in prepared]))
            results += [build_result(probs[i], cams[i], p[1], p[2], image_size=self.image_size,
                                     threshold=self.threshold, topk=self.topk, multi_contour=self.multi_contour,
                                     class_names=self.class_names) for i, p in enumerate(prepared)]
        return results

    __call__ = predict

    def describe(self) -> dict[str, Any]:
        """Settings worth recording next to results (the keys of ``Localizer.describe`` plus the backend)."""
        return {"checkpoint": str(self.path), "method": self.method, "image_size": self.image_size,
                "threshold": self.threshold, "threshold_source": self.threshold_source,
                "multi_contour": self.multi_contour, "topk": self.topk, "map_kind": self.map_kind,
                "device": self.device, "backend": self.backend, "class_names": list(self.class_names)}


def _as_list(images: Any) -> list[Any]:
    from PIL import Image

    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, Iterable):
        return list(images)
    raise ImageInputError(f"images: expected an image or a sequence of images, got {type(images).__name__}")


__all__ = ["FORMAT_VERSION", "INPUT_NAME", "METADATA_KEY", "OUTPUT_NAMES", "OnnxLocalizer", "import_onnxruntime",
           "read_metadata"]
