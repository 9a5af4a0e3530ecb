"""Torch dataset over one metadata split, and the train / eval transforms (torchvision v2), so
boxes and masks follow every resize, crop and flip of the image.

A sample is a dict:

- ``image``: float tensor [3, H, W] in [0, 1], **not** normalised (each backbone normalises itself);
- ``label`` (int), ``image_id`` (str), ``index`` (int), ``orig_size`` ((w, h) of the decoded image);
- ``boxes``: ``tv_tensors.BoundingBoxes`` (XYXY, float) in the transformed image's pixels;
- ``mask`` (only with ``load_masks``): ``tv_tensors.Mask`` [1, H, W] uint8 0/1, all masks of the
  image merged with max.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError, ImageReadError
from .cache import DecodedImageCache
from .decode import _to_rgb, load_image_rgb  # noqa: F401 - re-exported: the loader's decoding lives there
from .metadata import IMAGE_SIZES, Metadata, MetadataError, read_metadata

log = logging.getLogger(__name__)

def _load_mask(path: Path) -> np.ndarray:
    """A mask file as a bool array (pixel > 127), decoded like an image."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("L"))
    except FileNotFoundError:
        raise ImageReadError(path, "mask file not found") from None
    except Exception as e:  # noqa: BLE001 - any decode failure is the file's fault
        raise ImageReadError(path, f"{type(e).__name__}: {e}") from None
    return arr > 127


# ------------------------------------------------------------------------------------------ dataset
class WSOLDataset(Dataset):
    """One split of a wsolevaluation-format dataset.

    ``__getitem__`` loads the raw sample (uint8 image, boxes and mask in original pixels) and hands
    it to :meth:`apply_transform`, which a subclass may override to pick a transform per sample
    (the KD student draws a "route" per sample, each with its own augmentation).

    With ``skip_bad_images``, an image that cannot be decoded is skipped: its path is added to
    ``bad_images`` and a warning is logged. For training (``replace_bad_images=True``) it is replaced
    by the next readable index (deterministic; batches keep their size), and the returned ``index``
    is that of the image actually loaded. For evaluation (``replace_bad_images=False``) the sample is
    ``None``, which :func:`collate_wsol` drops, so every other image is scored exactly once and the
    unreadable one not at all. ``cache`` (a :class:`~kdcicam.data.cache.DecodedImageCache`) supplies
    decoded images instead of the files, with the same pixels. In DataLoader worker processes
    ``bad_images`` fills in the worker's copy only. Without it, :class:`ImageReadError` propagates.
    A decoded size that differs from ``image_sizes.txt`` is a metadata error (boxes would be
    wrong) and is always raised.
    """

    def __init__(self, metadata: Metadata | str | os.PathLike, transform: Callable | None = None,
                 load_masks: bool = False, skip_bad_images: bool = False, replace_bad_images: bool = True,
                 cache: DecodedImageCache | None = None):
        if not isinstance(metadata, Metadata):
            metadata = read_metadata(metadata)
        where = metadata.split_dir if metadata.split_dir is not None else "metadata"
        if metadata.image_root is None:
            raise MetadataError(where, None, "no image root: put a dataset.yaml next to the split or pass image_root")
        if load_masks and not metadata.has_masks:
            raise MetadataError(where, None, "load_masks=True but this split lists no masks")
        self.metadata = metadata
        self.transform = transform
        self.load_masks = load_masks
        self.skip_bad_images = skip_bad_images
        self.replace_bad_images = replace_bad_images
        self.cache = cache
        self.bad_images: list[str] = []
        self._bad_indices: set[int] = set()

    def __len__(self) -> int:
        return len(self.metadata)

    @property
    def num_classes(self) -> int:
        return self.metadata.num_classes

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        sample = self.load_sample(index)
        return None if sample is None else self.apply_transform(sample["index"], sample)

    def load_sample(self, index: int) -> dict[str, Any] | None:
        """The raw sample at ``index``; with ``skip_bad_images``, the next readable one (training) or
        ``None`` (evaluation) when it cannot be decoded."""
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a split of {n} images")
        if not self.skip_bad_images:
            return self.load_raw(index)
        if not self.replace_bad_images:
            if index in self._bad_indices:
                return None
            try:
                return self.load_raw(index)
            except ImageReadError as e:
                self._skip(index, e, "not scored")
                return None
        for step in range(n):
            j = (index + step) % n
            if j in self._bad_indices:
                continue
            try:
                return self.load_raw(j)
            except ImageReadError as e:
                self._skip(j, e, "using the next one")
        raise ImageReadError(self.metadata.split_dir or "split", "no readable image in the whole split")

    def _skip(self, index: int, error: ImageReadError, action: str) -> None:
        self._bad_indices.add(index)
        self.bad_images.append(error.path)
        log.warning("skipping unreadable image %s (%s); %s (%d unreadable so far in %s)", error.path, error.reason,
                    action, len(self.bad_images), self.metadata.split_dir or "this split")

    def load_raw(self, index: int) -> dict[str, Any]:
        md = self.metadata
        image_id = md.image_ids[index]
        image = self.cache.get(image_id) if self.cache is not None else None
        if image is None:
            image = TF.pil_to_tensor(load_image_rgb(md.image_path(image_id)))
        h, w = int(image.shape[-2]), int(image.shape[-1])
        expected = md.image_sizes.get(image_id)
        if expected is not None and tuple(expected) != (w, h):
            raise MetadataError(self._file(IMAGE_SIZES), None, f"image {image_id!r} decodes to {w}x{h} but the "
                                f"metadata says {expected[0]}x{expected[1]} (EXIF-rotated or resized copy?)")
        boxes = torch.tensor(md.boxes.get(image_id, []), dtype=torch.float32).reshape(-1, 4)
        sample: dict[str, Any] = {
            "image": tv_tensors.Image(image),
            "label": int(md.class_labels[image_id]),
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "image_id": image_id,
            "index": int(index),
            "orig_size": (w, h),
        }
        if self.load_masks:
            merged = np.zeros((h, w), dtype=bool)
            for path in md.mask_paths(image_id):
                m = _load_mask(path)
                if m.shape != (h, w):
                    raise MetadataError(self._file("masks.txt"), None, f"mask {str(path)!r} is "
                                        f"{m.shape[1]}x{m.shape[0]} but image {image_id!r} is {w}x{h}")
                merged |= m
            sample["mask"] = tv_tensors.Mask(torch.from_numpy(merged).to(torch.uint8)[None])
        return sample

    def apply_transform(self, index: int, sample: dict[str, Any]) -> dict[str, Any]:
        """Run ``self.transform`` on image, boxes and mask together; make the image float [0, 1]."""
        return transform_sample(sample, self.transform)

    def _file(self, name: str) -> Path | str:
        return self.metadata.split_dir / name if self.metadata.split_dir is not None else name


def transform_sample(sample: dict[str, Any], transform: Callable | None) -> dict[str, Any]:
    """Apply a v2 transform to the geometric part of a sample (image, boxes, mask)."""
    if transform is not None:
        keys = [k for k in ("image", "boxes", "mask") if k in sample]
        sample.update(transform({k: sample[k] for k in keys}))
    image = sample["image"]
    if image.dtype == torch.uint8:
        sample["image"] = TF.to_dtype(image, torch.float32, scale=True)
    return sample


def collate_wsol(batch: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Stack images, labels, indices (and masks); keep boxes, ids and sizes as lists. Any other key
    every sample has (e.g. a subclass's per-sample ``route``) is kept too: ints become a LongTensor,
    floats a float tensor, same-shape tensors are stacked, anything else stays a list. ``None``
    samples (unreadable images skipped during evaluation) are dropped; a batch of only those is
    ``None``."""
    samples = [s for s in batch if s is not None]
    if not samples:
        return None
    out: dict[str, Any] = {
        "image": torch.stack([torch.as_tensor(s["image"]) for s in samples]),
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.long),
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
        "boxes": [s["boxes"] for s in samples],
        "image_id": [s["image_id"] for s in samples],
        "orig_size": [s["orig_size"] for s in samples],
    }
    if all("mask" in s for s in samples) and samples:
        out["mask"] = torch.stack([torch.as_tensor(s["mask"]) for s in samples])
    extra = set(samples[0]) - set(out) - {"mask"} if samples else set()
    for key in sorted(k for k in extra if all(k in s for s in samples)):
        values = [s[key] for s in samples]
        if all(isinstance(v, (bool, int)) for v in values):
            out[key] = torch.tensor(values, dtype=torch.long)
        elif all(isinstance(v, float) for v in values):
            out[key] = torch.tensor(values, dtype=torch.float32)
        elif all(isinstance(v, torch.Tensor) and v.shape == values[0].shape for v in values):
            out[key] = torch.stack([torch.as_tensor(v) for v in values])
        else:
            out[key] = values
    return out


# --------------------------------------------------------------------------------------- transforms
#: ImageNet PCA of RGB pixels (AlexNet lighting noise), as in the official KD-CI-CAM code
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))


class PCALighting(v2.Transform):
    """AlexNet-style PCA lighting noise on float images: add ``eigvec @ (alpha * eigval)`` to every
    pixel, ``alpha ~ N(0, alphastd)``. Boxes and masks pass through. Like the official code, the
    result is not clamped, so values may leave [0, 1] by a few hundredths."""

    def __init__(self, alphastd: float = 0.1, eigval=IMAGENET_EIGVAL, eigvec=IMAGENET_EIGVEC):
        super().__init__()
        self.alphastd = float(alphastd)
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        alpha = torch.randn(3) * self.alphastd
        return {"rgb": (self.eigvec * (alpha * self.eigval)[None, :]).sum(1)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.Mask)) or not isinstance(inpt, torch.Tensor):
            return inpt
        if not inpt.is_floating_point():
            raise TypeError("PCALighting needs a float image; put it after ToDtype(float32, scale=True)")
        out = inpt + params["rgb"].to(inpt.dtype).view(3, 1, 1)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


class ImageOnly(v2.Transform):
    """Apply an image-only transform (RandAugment) to the image; boxes and masks pass through
    unchanged, i.e. they do *not* follow its shear/translate/rotate (training uses labels only)."""

    def __init__(self, inner: Callable):
        super().__init__()
        self.inner = inner

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, (tv_tensors.Image, PIL.Image.Image)) or type(inpt) is torch.Tensor:
            return self.inner(inpt)
        return inpt


@dataclass
class AugmentConfig:
    """Training augmentation (docs/method.md §4). Every pipeline ends with a horizontal flip, then the
    optional photometric ops, then float conversion.

    - ``kind="resize_crop"``: Resize then RandomCrop(crop). ``resize_mode="shorter"`` resizes the
      shorter side to ``resize`` (``Resize(int)``, what the official KD-CI-CAM / CI-CAM CUB code
      does); ``"square"`` resizes to ``resize × resize`` (wsolevaluation's train pipeline).
    - ``kind="rrc"``: RandomResizedCrop(crop, scale=scale).
    - ``color_jitter`` > 0: ColorJitter(b, c, s) with that strength (0.4 in the cls-teacher recipe).
    - ``lighting`` > 0: :class:`PCALighting` with that alpha std (0.1 in the cls-teacher recipe).
    - ``randaugment``: torchvision's ``RandAugment(num_ops, magnitude, num_magnitude_bins)`` on the
      uint8 image before the crop; see :func:`build_train_transform` for how it differs from the
      ildoonet version the paper used.
    """

    kind: str = "rrc"
    crop: int = 224
    resize: int = 256
    resize_mode: str = "shorter"
    scale: tuple[float, float] = (0.2, 1.0)
    color_jitter: float = 0.0
    lighting: float = 0.0
    randaugment: bool = False
    ra_num_ops: int = 3
    ra_magnitude: int = 10
    ra_num_bins: int = 31

    def validate(self) -> None:
        if self.kind not in ("resize_crop", "rrc"):
            raise ConfigError(f"augment kind must be 'resize_crop' or 'rrc', got {self.kind!r}")
        if self.crop < 1:
            raise ConfigError(f"augment crop must be >= 1, got {self.crop}")
        if self.kind == "resize_crop":
            if self.resize_mode not in ("shorter", "square"):
                raise ConfigError(f"augment resize_mode must be 'shorter' or 'square', got {self.resize_mode!r}")
            if self.resize < self.crop:
                raise ConfigError(f"augment resize ({self.resize}) must be >= crop ({self.crop})")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"augment scale needs 0 < min <= max, got {tuple(self.scale)}")
        if self.color_jitter < 0 or self.lighting < 0:
            raise ConfigError("augment color_jitter and lighting must be >= 0")
        if self.randaugment and not 0 <= self.ra_magnitude < self.ra_num_bins:
            raise ConfigError(f"augment ra_magnitude must be in 0..{self.ra_num_bins - 1}, got {self.ra_magnitude}")


def build_train_transform(cfg: AugmentConfig | None = None) -> v2.Compose:
    """The training pipeline of ``cfg``: boxes and masks follow every resize, crop and flip.

    RandAugment: the paper used ildoonet/pytorch-randaugment (16 PIL ops drawn with replacement,
    magnitude m/30 of each op's range, including Invert, SolarizeAdd, a grey CutoutAbs of up to
    40 px and absolute translations of up to 100 px). torchvision's ``RandAugment(3, 10, 31)`` is
    the nearest equivalent: 14 ops (no Invert, SolarizeAdd or Cutout; translation relative to the
    image size, 150/331 of it at full magnitude), magnitude bin 10 of 31 (also 1/3 of each range),
    random sign per op, black fill. Boxes and masks do not follow RandAugment's geometric ops.
    """
    cfg = cfg or AugmentConfig()
    cfg.validate()
    ops: list[Callable] = []
    if cfg.randaugment:
        ops.append(ImageOnly(v2.RandAugment(num_ops=cfg.ra_num_ops, magnitude=cfg.ra_magnitude,
                                            num_magnitude_bins=cfg.ra_num_bins)))
    if cfg.kind == "resize_crop":
        size = (cfg.resize, cfg.resize) if cfg.resize_mode == "square" else cfg.resize
        ops += [v2.Resize(size, antialias=True), v2.RandomCrop(cfg.crop)]
    else:
        ops.append(v2.RandomResizedCrop(cfg.crop, scale=tuple(cfg.scale), antialias=True))
    ops.append(v2.RandomHorizontalFlip())
    if cfg.color_jitter > 0:
        ops.append(v2.ColorJitter(cfg.color_jitter, cfg.color_jitter, cfg.color_jitter))
    ops += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if cfg.lighting > 0:
        ops.append(PCALighting(cfg.lighting))
    ops.append(v2.ClampBoundingBoxes())
    return v2.Compose(ops)


def build_eval_transform(size: int = 224, kind: str = "wsol", resize: int | None = None) -> v2.Compose:
    """Evaluation pipeline.

    - ``kind="wsol"`` (wsolevaluation's protocol): Resize((size, size)), no crop; boxes scale with it.
    - ``kind="official"`` (docs/method.md §5, CUB): Resize((resize, resize)) then CenterCrop(size); boxes
      are mapped the same way and clamped to the crop (a box may shrink to zero area if it lies
      outside the crop; it is kept so box counts stay aligned with the metadata).
    """
    if size < 1:
        raise ConfigError(f"eval size must be >= 1, got {size}")
    if kind == "wsol":
        ops: list[Callable] = [v2.Resize((size, size), antialias=True)]
    elif kind == "official":
        if resize is None:
            raise ConfigError("eval kind 'official' needs resize (e.g. 344 for VGG16 on CUB, docs/method.md §5)")
        if resize < size:
            raise ConfigError(f"eval resize ({resize}) must be >= size ({size})")
        ops = [v2.Resize((resize, resize), antialias=True), v2.CenterCrop(size)]
    else:
        raise ConfigError(f"eval kind must be 'wsol' or 'official', got {kind!r}")
    ops += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.ClampBoundingBoxes()]
    return v2.Compose(ops)


__all__ = [
    "IMAGENET_EIGVAL",
    "IMAGENET_EIGVEC",
    "AugmentConfig",
    "ImageOnly",
    "PCALighting",
    "WSOLDataset",
    "build_eval_transform",
    "build_train_transform",
    "collate_wsol",
    "load_image_rgb",
    "transform_sample",
]
