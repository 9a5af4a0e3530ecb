"""The authors' evaluation protocol (docs/method.md §5 ``official`` mode), for parity with the paper tables.

It differs from wsolevaluation in every step, so it lives apart from :mod:`kdcicam.evaluation`:

- **view**: CUB images are resized to R×R (aspect ignored) and centre-cropped to ``crop``; the GT
  boxes are mapped the same way and clipped to the crop. The official ImageNet code resizes the
  *shorter side* to R but maps the boxes as if the image had been resized to R×R; here
  ``geometry="shorter"`` maps them with the true shorter-side scale (the fix), ``"square"`` is CUB.
- **box**: one box per image from the score map S (the combinational CAM, min-shifted):
  upsample S bilinearly (align_corners=False) to the crop; ``t = segThr·max S``; zero the pixels
  ``≤ t`` (``cut``); foreground ``cut > mean(cut)``; 4-connected components; keep the one whose
  bounding box has the largest area. As in the code (``scipy.ndimage.find_objects`` slices), the
  box is ``(x_start, y_start, x_stop, y_stop)`` with *exclusive* stops, later scored with the
  inclusive (+1) IoU, so a predicted box is one pixel larger than its component.
- **scores**: IoU ≥ 0.5 against any GT box; Top-1 Loc needs the top-1 class right, Top-5 Loc any
  top-5 class right; GT-known ignores the class.

The settings the authors tuned on the test set are in :data:`OFFICIAL_SETTINGS`; pick segThr on a
held-out validation split instead.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ImageReadError

Box = tuple[float, float, float, float]

#: (resize R, crop, segThr) of the published tables (tuned on test by the authors)
OFFICIAL_SETTINGS: dict[str, dict[str, Any]] = {
    "vgg16_cub": {"resize": 344, "crop": 224, "seg_thr": 0.14, "geometry": "square"},
    "inceptionv3_cub": {"resize": 500, "crop": 299, "seg_thr": 0.21, "geometry": "square"},
    "vgg16_imagenet": {"resize": 288, "crop": 224, "seg_thr": 0.11, "geometry": "shorter"},
}
GEOMETRIES = ("square", "shorter")
KINDS = ("combinational", "plain")


# -------------------------------------------------------------------------------------- box rule
def upsample_maps(maps: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """[B, h, w] → [B, H, W], bilinear, align_corners=False (the code's ``nn.Upsample``)."""
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return F.interpolate(maps[:, None].float(), size=hw, mode="bilinear", align_corners=False)[:, 0]


def official_box(score_map: np.ndarray | torch.Tensor, seg_thr: float) -> tuple[int, int, int, int]:
    """The official box of one map already at crop size: ``(x0, y0, x1, y1)``, stops exclusive.

    A map with no foreground (e.g. constant) has no component; the official code crashes there,
    we return the whole map ``(0, 0, W, H)``.
    """
    s = score_map.detach().cpu().numpy() if isinstance(score_map, torch.Tensor) else np.asarray(score_map)
    if s.ndim != 2:
        raise ValueError(f"score map must be 2-D, got shape {s.shape}")
    s = s.astype(np.float32, copy=False)
    t = np.float32(seg_thr) * s.max()
    cut = np.where(s > t, s, np.float32(0.0))
    fg = (cut > cut.mean()).astype(np.uint8)
    height, width = s.shape
    n, _, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=4)
    if n <= 1:
        return 0, 0, width, height
    comp = stats[1:]  # label 0 is the background
    areas = comp[:, cv2.CC_STAT_WIDTH].astype(np.int64) * comp[:, cv2.CC_STAT_HEIGHT]
    x, y, w, h = (int(v) for v in comp[int(np.argmax(areas)), :4])  # first largest, in raster order
    return x, y, x + w, y + h


def official_boxes(maps: torch.Tensor, crop: int | tuple[int, int], seg_thr: float) -> list[tuple[int, int, int, int]]:
    """Boxes for a batch of feature-size maps [B, h, w]: upsample to the crop, then the box rule."""
    up = upsample_maps(maps, crop).cpu().numpy()
    return [official_box(m, seg_thr) for m in up]


def iou_inclusive(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU with inclusive pixel coordinates (+1 on widths and heights), as the official code."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = iw * ih
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    union = area_a + area_b - inter
    return float(inter / union) if union > 0 else 0.0


# ------------------------------------------------------------------------------------- geometry
def resized_size(image_size: tuple[int, int], resize: int, geometry: str = "square") -> tuple[int, int]:
    """(width, height) after the official resize: R×R, or shorter side R (torchvision's rule)."""
    if geometry not in GEOMETRIES:
        raise ConfigError(f"unknown geometry {geometry!r}; valid: {', '.join(GEOMETRIES)}")
    w, h = image_size
    if geometry == "square":
        return resize, resize
    if w <= h:
        return resize, int(resize * h / w)
    return int(resize * w / h), resize


def map_box_official(box: Sequence[float], image_size: tuple[int, int], resize: int, crop: int,
                     geometry: str = "square") -> Box:
    """Map a GT box ``(x0, y0, x1, y1)`` of the original image into the centre crop, clipped to
    ``[0, crop]`` like the official ``ResizedBBoxCrop`` + ``CenterBBoxCrop`` (floats kept)."""
    w, h = image_size
    ow, oh = resized_size(image_size, resize, geometry)
    sx, sy = ow / w, oh / h
    top = round((oh - crop) / 2.0)  # Python rounding (half to even), as torchvision
    left = round((ow - crop) / 2.0)
    x0 = max(left, box[0] * sx) - left
    y0 = max(top, box[1] * sy) - top
    x1 = min(left + crop, box[2] * sx) - left
    y1 = min(top + crop, box[3] * sy) - top
    return float(x0), float(y0), float(x1), float(y1)


def official_image_transform(resize: int, crop: int, geometry: str = "square") -> Any:
    """The test view as a torchvision v2 transform: PIL → float tensor in [0, 1] of crop×crop."""
    from torchvision.transforms import v2

    if geometry not in GEOMETRIES:
        raise ConfigError(f"unknown geometry {geometry!r}; valid: {', '.join(GEOMETRIES)}")
    size: int | list[int] = [resize, resize] if geometry == "square" else resize
    return v2.Compose([v2.ToImage(), v2.Resize(size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
                       v2.CenterCrop(crop), v2.ToDtype(torch.float32, scale=True)])


# -------------------------------------------------------------------------------------- metrics
@dataclass
class OfficialBoxMetrics:
    """Accumulates Top-1/Top-5 Cls, Top-1/Top-5 Loc and GT-known Loc the official way."""

    topk: int = 5
    iou_threshold: float = 0.5
    counts: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known"), 0.0))
    n: int = 0

    def reset(self) -> None:
        self.counts = dict.fromkeys(self.counts, 0.0)
        self.n = 0

    def _hit(self, box: Sequence[float], gt_boxes: Sequence[Sequence[float]]) -> bool:
        return max((iou_inclusive(box, g) for g in gt_boxes), default=0.0) >= self.iou_threshold

    def update(self, pred_boxes: Sequence[float] | Sequence[Sequence[float]], gt_boxes: Sequence[Sequence[float]],
               ranked_classes: Sequence[int], label: int, gt_known_box: Sequence[float] | None = None) -> None:
        """One image. ``pred_boxes`` is one box (used for every class, the combinational case) or
        one box per ranked class (plain CAM); ``ranked_classes`` are class ids by decreasing
        score; ``gt_known_box`` defaults to the (first) predicted box."""
        if not gt_boxes:
            raise ValueError("an image needs at least one GT box")
        ranked = [int(c) for c in list(ranked_classes)[: self.topk]]
        single = len(pred_boxes) == 4 and not isinstance(pred_boxes[0], (list, tuple, np.ndarray))
        boxes: list[Any] = [pred_boxes] * len(ranked) if single else list(pred_boxes)[: len(ranked)]
        if len(boxes) < len(ranked):
            raise ValueError(f"got {len(boxes)} boxes for {len(ranked)} ranked classes")
        hits = [c == int(label) and self._hit(b, gt_boxes) for c, b in zip(ranked, boxes, strict=True)]
        self.counts["top1_cls"] += float(ranked[0] == int(label))
        self.counts["top5_cls"] += float(int(label) in ranked)
        self.counts["top1_loc"] += float(hits[0])
        self.counts["top5_loc"] += float(any(hits))
        known: Any = gt_known_box if gt_known_box is not None else boxes[0]
        self.counts["gt_known"] += float(self._hit(known, gt_boxes))
        self.n += 1

    def compute(self) -> dict[str, float]:
        """Percentages, plus the image count."""
        scale = 100.0 / self.n if self.n else 0.0
        out = {k: v * scale for k, v in self.counts.items()}
        out["num_images"] = float(self.n)
        return out


# ----------------------------------------------------------------------------------- evaluation
def _load_image(path: Any) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise ImageReadError(path, str(e)) from None


def _batches(metadata: Any, transform: Any, batch_size: int) -> Iterable[tuple[list[str], torch.Tensor]]:
    ids = list(metadata.image_ids)
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        yield chunk, torch.stack([transform(_load_image(metadata.image_path(i))) for i in chunk])


@torch.no_grad()
def evaluate_official(model: Any, metadata: Any, *, resize: int, crop: int, seg_thr: float,
                      geometry: str = "square", kind: str = "combinational", batch_size: int = 16,
                      device: str | torch.device | None = None, topk: int = 5) -> dict[str, float]:
    """Score ``model`` on a split (:class:`kdcicam.data.metadata.Metadata` with boxes) with the
    official protocol. ``kind="combinational"`` gives one box for every class (the papers'
    setting); ``"plain"`` boxes each top-k class's own CAM and uses the GT-class CAM for GT-known
    (both min-shifted first, as the code does)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    if not 0.0 <= seg_thr < 1.0:
        raise ConfigError(f"seg_thr must lie in [0, 1), got {seg_thr}")
    if not getattr(metadata, "boxes", None):
        raise ConfigError("official evaluation needs box annotations (localization.txt with boxes)")
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    model.eval()
    transform = official_image_transform(resize, crop, geometry)
    metrics = OfficialBoxMetrics(topk=topk)
    for ids, images in _batches(metadata, transform, batch_size):
        out = model(images.to(device))
        logits, cams = out["logits"].float(), out["cams"].float()
        ranked = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :topk].cpu()
        labels = torch.tensor([metadata.class_labels[i] for i in ids])
        if kind == "combinational":
            boxes = official_boxes(model.localization_map(out, "combinational"), crop, seg_thr)
            per_image: list[tuple[Any, Any]] = [(b, None) for b in boxes]
        else:
            bidx = torch.arange(len(ids))
            shifted = cams - cams.flatten(2).amin(dim=2)[:, :, None, None]
            gt_maps = official_boxes(shifted[bidx, labels.to(shifted.device)], crop, seg_thr)
            k_boxes = [official_boxes(shifted[bidx, ranked[:, j].to(shifted.device)], crop, seg_thr)
                       for j in range(ranked.shape[1])]
            per_image = [([k_boxes[j][n] for j in range(ranked.shape[1])], gt_maps[n]) for n in range(len(ids))]
        for n, image_id in enumerate(ids):
            gts = [map_box_official(b, metadata.image_sizes[image_id], resize, crop, geometry)
                   for b in metadata.boxes[image_id]]
            pred, known = per_image[n]
            metrics.update(pred, gts, ranked[n].tolist(), int(labels[n]), gt_known_box=known)
    result = metrics.compute()
    result.update({"resize": float(resize), "crop": float(crop), "seg_thr": float(seg_thr)})
    return result
