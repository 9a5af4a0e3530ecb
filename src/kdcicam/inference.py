"""`Localizer`: a trained checkpoint applied to your own images → classes, CAM heatmaps and boxes.

>>> loc = Localizer.from_checkpoint("runs/cub50")          # doctest: +SKIP
>>> [r] = loc.predict("bird.jpg")                            # doctest: +SKIP
>>> r.class_names[0], r.scores[0], r.boxes                   # doctest: +SKIP

The path from pixels to boxes is the evaluation path, so the boxes a user gets are the boxes the
metrics scored:

1. the image is decoded to 8-bit RGB (``load_image_rgb``: EXIF orientation, alpha on white) and
   passed through the model's eval transform, ``Resize((S, S))`` with ``S = data.image_size``;
2. the localization map of the test branch (``model.localization_map``, the kind the run was
   evaluated with) is resized bicubically to ``S × S`` and min-max normalised
   (``scoremaps_for_evaluation``);
3. boxes come from the evaluator's own ``scoremap_to_boxes`` at the box threshold chosen on the
   validation split during training (stored in the checkpoint), largest contour or all contours;
4. grid boxes are scaled back to the image's original pixels by ``(w / S, h / S)``.

Box coordinates are ``x0, y0, x1, y1`` with ``x1, y1`` the right/bottom *edges* (``x + width``, the
convention of the metadata's CUB boxes); like the evaluator, a box touching the grid's right or
bottom border ends one grid cell short of the image edge.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import tv_tensors

from .errors import KdcicamError, NoBoxThresholdError
from .localization import ImageInputError, LocalizationResult, build_result, grid_boxes
from .localization import check_threshold as _check_threshold

log = logging.getLogger(__name__)

#: one image: a file path, a PIL image, an HxW / HxWxC numpy array or a CxHxW tensor
ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


# ------------------------------------------------------------------------------------------ inputs
def _from_numpy(arr: np.ndarray, name: str) -> torch.Tensor:
    """A numpy image → 3-channel CHW tensor, by the rules the ONNX path applies too (one definition of what a
    numpy image may be: :func:`kdcicam.preprocess._array_rgb`)."""
    from .preprocess import _array_rgb

    rgb = _array_rgb(arr, name)
    if not rgb.flags.writeable:  # e.g. np.asarray(pil_image); torch.from_numpy wants a writable buffer
        rgb = rgb.copy()
    return torch.from_numpy(rgb).permute(2, 0, 1)


def _from_chw(t: torch.Tensor, name: str) -> torch.Tensor:
    """CHW (C in 1, 3, 4) uint8 or float in [0, 1] → 3-channel CHW of the same dtype family (float32).

    The layout and dtype are checked here; the pixel rules are the numpy path's
    (:func:`kdcicam.preprocess.pixels_rgb`), so both inputs fail with the same messages."""
    from .preprocess import pixels_rgb

    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
        raise ImageInputError(f"{name}: a tensor image must be CxHxW with C in 1, 3, 4 (or HxW), got shape "
                              f"{tuple(t.shape)}")
    if t.shape[1] < 1 or t.shape[2] < 1:
        raise ImageInputError(f"{name}: empty image of shape {tuple(t.shape)}")
    t = t.detach().cpu()
    if t.is_floating_point():
        t = t.float()  # float16 / bfloat16 / float64 → float32 (numpy has no bfloat16)
    elif t.dtype != torch.uint8:
        raise ImageInputError(f"{name}: tensor images must be uint8 or floating point, got {t.dtype}")
    return torch.from_numpy(pixels_rgb(t.permute(1, 2, 0).numpy(), name)).permute(2, 0, 1)


def to_image_tensor(image: ImageInput, name: str = "image") -> tuple[torch.Tensor, str | None]:
    """Any supported input → (3xHxW tensor, uint8 or float in [0, 1]; the file path if it was one).

    Paths are decoded with :func:`kdcicam.data.dataset.load_image_rgb` (raises
    :class:`~kdcicam.errors.ImageReadError` naming the file); PIL images of any mode are converted the
    same way (alpha composited on white).
    """
    from torchvision.transforms.v2 import functional as TF

    from .data.dataset import _to_rgb, load_image_rgb

    if isinstance(image, (str, os.PathLike)):
        pil = load_image_rgb(image)
        return TF.pil_to_tensor(pil), str(image)
    if isinstance(image, Image.Image):
        return TF.pil_to_tensor(_to_rgb(image)), None
    if isinstance(image, np.ndarray):
        return _from_numpy(image, name), None
    if isinstance(image, torch.Tensor):
        return _from_chw(image, name), None
    raise ImageInputError(f"{name}: expected a path, PIL image, numpy array or torch tensor, got "
                          f"{type(image).__name__}")


def _as_list(images: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
    """One image or many: 4-D arrays / tensors are batches ([B,H,W,C] / [B,C,H,W])."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, Iterable):
        return list(images)
    raise ImageInputError(f"images: expected an image or a sequence of images, got {type(images).__name__}")


# ------------------------------------------------------------------------------------------ localizer
def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` → CUDA when available, else CPU; an unavailable CUDA request is a clear error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise KdcicamError(f"device {device!r}: not a device ({e}); use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise KdcicamError(f"device {device!r}: CUDA is not available on this machine; use --device cpu")
    return dev


def _posthoc_threshold(ckpt: Path, cam_method: str, target_layer: str | None) -> tuple[float, str]:
    """The box threshold ``kdcicam evaluate --cam-method`` chose on val for this checkpoint and method (it is
    recorded under ``cam_methods`` in the stage's metrics.json); an error naming the way to get one if none."""
    import json

    from .checkpoints import stage_folder

    metrics = stage_folder(ckpt) / "metrics.json"
    entry: Any = None
    if metrics.is_file():
        try:
            entry = json.loads(metrics.read_text()).get("cam_methods", {}).get(cam_method)
        except (OSError, ValueError, AttributeError):
            entry = None
    if isinstance(entry, dict) and entry.get("box_threshold") is not None:
        same_ckpt = Path(str(entry.get("checkpoint"))).resolve() == Path(ckpt).resolve()
        same_layer = target_layer is None or entry.get("target_layer") == target_layer
        if same_ckpt and same_layer:
            how = "given to kdcicam evaluate" if entry.get("box_threshold_chosen_on") == "given" else \
                "chosen on the validation split"
            return float(entry["box_threshold"]), f"{metrics} ({cam_method}, {how})"
    raise KdcicamError(f"{ckpt}: no box threshold for --cam-method {cam_method} (the checkpoint's was chosen on val "
                       f"for the native map, not for this one); run `kdcicam evaluate {ckpt} --split val "
                       f"--cam-method {cam_method}` once (it chooses one on val and records it), or pass "
                       "--threshold T")


class Localizer:
    """Batched inference: images → :class:`LocalizationResult` (top-k classes, CAM, boxes).

    Build it with :meth:`from_checkpoint` (a run folder or a ``.ckpt``), or directly around any model
    with the kdcicam contract (``model(x) -> {"logits", "cams", ...}`` and ``model.localization_map``);
    the model is put in eval mode, moved to ``device`` (and to channels_last) in place.
    """

    def __init__(self, model: nn.Module, image_size: int, threshold: float, class_names: Sequence[str] | None = None,
                 topk: int = 5, multi_contour: bool = False, batch_size: int = 32,
                 device: str | torch.device | None = "auto", channels_last: bool = True,
                 map_kind: str = "combinational", cam_method: str = "native", target_layer: str | None = None,
                 posthoc_options: dict[str, Any] | None = None):
        from .data.dataset import build_eval_transform
        from .posthoc import NATIVE, check_method

        if int(image_size) < 1:
            raise KdcicamError(f"image_size must be >= 1, got {image_size}")
        if int(topk) < 1:
            raise KdcicamError(f"topk must be >= 1, got {topk}")
        if int(batch_size) < 1:
            raise KdcicamError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.image_size = int(image_size)
        self.threshold = _check_threshold(threshold, "threshold")
        self.topk = int(topk)
        self.multi_contour = bool(multi_contour)
        self.batch_size = int(batch_size)
        self.channels_last = bool(channels_last)
        self.map_kind = map_kind
        self.model = model.eval().to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        num_classes = int(getattr(model, "num_classes", 0) or 0)
        if class_names is None:
            class_names = [str(i) for i in range(num_classes)]
        self.class_names = list(class_names)
        self.transform = build_eval_transform(self.image_size)
        self.checkpoint: Path | None = None
        self.method: str | None = getattr(model, "method", None)
        self.threshold_source = "given"
        # post-hoc maps (Grad-CAM & co., kdcicam.posthoc) instead of the model's own: same resize, same boxes
        self.cam_method = check_method(cam_method)
        self.posthoc = None
        if self.cam_method != NATIVE:
            from .posthoc import create_posthoc

            self.posthoc = create_posthoc(self.model, self.cam_method, target_layer, image_size=self.image_size,
                                          **(posthoc_options or {}))
        elif target_layer is not None:
            raise KdcicamError(f"target layer {target_layer!r}: only post-hoc CAM methods take one (cam_method), "
                               "not the native map")

    # -------------------------------------------------------------------------------- construction
    @classmethod
    def from_checkpoint(cls, path_or_run_dir: str | os.PathLike, device: str | torch.device | None = "auto",
                        threshold: float | None = None, topk: int = 5, multi_contour: bool = False,
                        batch_size: int = 32, cam_method: str = "native",
                        target_layer: str | None = None) -> Localizer:
        """Load a run (single-stage or KD: the student is used) or a checkpoint file.

        ``threshold=None`` uses the box threshold chosen on the validation split during training (native
        map), or, for a post-hoc ``cam_method``, the one ``kdcicam evaluate --cam-method`` chose on val for
        that method (never the native map's: each map has its own scale of foreground).
        """
        from .checkpoints import load_checkpoint, threshold_from_run
        from .posthoc import NATIVE, check_method

        cam_method = check_method(cam_method)
        loaded = load_checkpoint(path_or_run_dir)
        ckpt, cfg = loaded.path, loaded.config
        if threshold is None and cam_method != NATIVE:
            threshold, source = _posthoc_threshold(ckpt, cam_method, target_layer)
        elif threshold is None:
            threshold, source = threshold_from_run(ckpt, loaded.box_threshold)
            if threshold is None and loaded.val_has_boxes is False:
                raise NoBoxThresholdError(ckpt, cfg.data.val_split, flag="a threshold (--threshold T)")
            if threshold is None:
                raise KdcicamError(f"{ckpt}: the checkpoint stores no box threshold (no validation ran) and the run "
                                   "has no metrics.json; pass a threshold (--threshold T)")
        else:
            source = "given"
        num_classes = loaded.num_classes
        names = list(loaded.class_names) if loaded.class_names else [str(i) for i in range(num_classes)]
        loc = cls(loaded.model, image_size=cfg.data.image_size, threshold=threshold, class_names=names, topk=topk,
                  multi_contour=multi_contour, batch_size=batch_size, device=device,
                  channels_last=cfg.trainer.channels_last, map_kind=cfg.model.localization_map,
                  cam_method=cam_method, target_layer=target_layer)
        loc.checkpoint = ckpt
        loc.method = cfg.method
        loc.threshold_source = source
        return loc

    @classmethod
    def from_model(cls, model: nn.Module, target_layer: str | None = None, *, threshold: float,
                   cam_method: str = "grad-cam", image_size: int = 224,
                   mean: Sequence[float] | None = (0.485, 0.456, 0.406),
                   std: Sequence[float] | None = (0.229, 0.224, 0.225), class_names: Sequence[str] | None = None,
                   topk: int = 5, multi_contour: bool = False, batch_size: int = 32,
                   device: str | torch.device | None = "auto", channels_last: bool = False,
                   score_batch_size: int = 32) -> Localizer:
        """Any torch classifier (a torchvision or timm CNN: ``model(x) -> logits [B, C]``) with a post-hoc CAM
        method (:data:`kdcicam.posthoc.CAM_METHODS`) at ``target_layer`` (a name from ``model.named_modules()``;
        default: the last layer with a spatial feature map).

        The model is fed images resized to ``image_size`` and normalised with ``mean`` / ``std`` (ImageNet's by
        default; ``None`` feeds [0, 1]). ``threshold`` is required: there is no validation split here to choose
        it on (for a kdcicam run, ``kdcicam evaluate --cam-method`` chooses it on val). A kdcicam model is taken
        as it is (its backbone normalises; ``mean`` / ``std`` are not used).
        """
        from .posthoc import NATIVE, check_method, is_kdcicam_model

        if check_method(cam_method) == NATIVE:
            raise KdcicamError("Localizer.from_model computes post-hoc maps; for the native map of a kdcicam model "
                               "use Localizer(model, ...) or Localizer.from_checkpoint")
        options: dict[str, Any] = {"score_batch_size": score_batch_size}
        if not is_kdcicam_model(model):
            options.update(mean=mean, std=std)
        return cls(model, image_size=image_size, threshold=threshold, class_names=class_names, topk=topk,
                  multi_contour=multi_contour, batch_size=batch_size, device=device, channels_last=channels_last,
                   cam_method=cam_method, target_layer=target_layer, posthoc_options=options)

    # -------------------------------------------------------------------------------- inference
    def preprocess(self, image: ImageInput, name: str = "image") -> tuple[torch.Tensor, tuple[int, int], str | None]:
        """One input → (float [3, S, S] model input, original (w, h), source path)."""
        tensor, source = to_image_tensor(image, name)
        h, w = int(tensor.shape[-2]), int(tensor.shape[-1])
        x = self.transform(tv_tensors.Image(tensor))
        return x.as_subclass(torch.Tensor), (w, h), source

    @torch.inference_mode()
    def forward_batch(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Model input [B, 3, S, S] → (softmax probabilities [B, C], score maps [B, S, S] float32)."""
        from .scoremaps import scoremaps_for_evaluation

        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.posthoc is not None:  # the post-hoc method's own forward (with gradients where it needs them)
            logits, maps = self.posthoc(x)
            if not torch.isfinite(logits).all():
                raise KdcicamError(f"{self.checkpoint or 'the model'}: the model's outputs are NaN or inf")
            return torch.softmax(logits, dim=1).cpu().numpy(), scoremaps_for_evaluation(maps, self.image_size)
        out = self.model(x)
        if not torch.isfinite(out["logits"]).all():  # never write NaN scores into boxes.json
            raise KdcicamError(f"{self.checkpoint or 'the model'}: the model's outputs are NaN or inf; "
                               "the checkpoint has diverged")
        maps = self.model.localization_map(out, kind=self.map_kind)  # type: ignore[operator]
        probs = torch.softmax(out["logits"].float(), dim=1).cpu().numpy()
        return probs, scoremaps_for_evaluation(maps, self.image_size)

    def boxes_on_grid(self, cam: np.ndarray) -> np.ndarray:
        """The evaluator's boxes for one score map at this threshold; no foreground → ``[0, 4]``."""
        return grid_boxes(cam, self.threshold, self.multi_contour)

    def _result(self, probs: np.ndarray, cam: np.ndarray, size: tuple[int, int], source: str | None) -> LocalizationResult:
        return build_result(probs, cam, size, source, image_size=self.image_size, threshold=self.threshold,
                            topk=self.topk, multi_contour=self.multi_contour, class_names=self.class_names)

    def predict(self, images: ImageInput | Iterable[ImageInput]) -> list[LocalizationResult]:
        """Localize one image or a sequence of images (paths, PIL images, HxWxC / HxW numpy arrays,
        CxHxW tensors; uint8, or float in [0, 1]), in batches of ``batch_size``."""
        items = _as_list(images)
        results: list[LocalizationResult] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            prepared = [self.preprocess(im, f"images[{start + i}]") for i, im in enumerate(chunk)]
            probs, cams = self.forward_batch(torch.stack([p[0] for p in prepared]))
            results += [self._result(probs[i], cams[i], p[1], p[2]) for i, p in enumerate(prepared)]
        return results

    __call__ = predict

    def describe(self) -> dict[str, Any]:
        """Settings worth recording next to results (which model, which threshold and why)."""
        return {"checkpoint": None if self.checkpoint is None else str(self.checkpoint), "method": self.method,
                "image_size": self.image_size, "threshold": self.threshold, "threshold_source": self.threshold_source,
                "multi_contour": self.multi_contour, "topk": self.topk, "map_kind": self.map_kind,
                "device": str(self.device), "backend": "torch", "class_names": list(self.class_names),
                **({"cam_method": "native"} if self.posthoc is None else self.posthoc.describe())}


__all__ = ["ImageInputError", "LocalizationResult", "Localizer", "resolve_device", "to_image_tensor"]
