"""Heatmap overlays: a CAM blended on its image with the ground-truth and predicted boxes, drawn off-screen
(OpenCV and Pillow), as PNG files for the CLI and the README."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data.atomic import atomic_write_bytes
from ..errors import KdcicamError

if TYPE_CHECKING:  # pragma: no cover
    from ..inference import LocalizationResult, Localizer


PRED_COLOR = (255, 40, 40)


GT_COLOR = (40, 220, 60)


def _rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        from ..data.decode import _to_rgb

        return np.asarray(_to_rgb(image))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
        raise KdcicamError(f"overlay: expected an HxWx3 uint8 RGB image, got shape {arr.shape} {arr.dtype}")
    return arr[:, :, :3]


def heatmap_overlay(
    image: Image.Image | np.ndarray, cam: np.ndarray, alpha: float = 0.5, colormap: int = cv2.COLORMAP_JET
) -> np.ndarray:
    """The CAM (any grid, values in [0, 1]) resized to the image and blended on it with a colormap."""
    rgb = _rgb_array(image)
    h, w = rgb.shape[:2]
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != (h, w):
        cam = cv2.resize(cam, (w, h), interpolation=cv2.INTER_CUBIC)
    heat = cv2.applyColorMap(np.clip(cam * 255.0 + 0.5, 0, 255).astype(np.uint8), colormap)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(np.ascontiguousarray(rgb), 1.0 - alpha, heat, alpha, 0.0)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font only
        return ImageFont.load_default()


def draw_boxes(
    image: Image.Image,
    boxes: Iterable[Sequence[float]],
    color: tuple[int, int, int],
    labels: Sequence[str | None] | None = None,
    width: int | None = None,
) -> Image.Image:
    """Rectangles (``x0, y0, x1, y1`` in the image's pixels) with optional labels on a filled tag."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    line = width or max(1, round(min(image.size) / 120))
    font = _font(max(10, min(image.size) // 18))
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=color, width=line)
        text = labels[i] if labels is not None and i < len(labels) else None
        if text:
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            tw, th = right - left, bottom - top
            ty = y0 - th - 4 if y0 - th - 4 >= 0 else y0 + line
            tx = min(max(0.0, x0), max(0.0, image.size[0] - tw - 4))
            draw.rectangle([tx, ty, tx + tw + 4, ty + th + 4], fill=color)
            draw.text((tx + 2 - left, ty + 2 - top), text, fill=(0, 0, 0), font=font)
    return image


def render_result(
    image: Image.Image | np.ndarray,
    result: LocalizationResult,
    gt_boxes: np.ndarray | None = None,
    alpha: float = 0.5,
    label: bool = True,
    max_side: int | None = None,
) -> Image.Image:
    """One overlay: heatmap, ground-truth boxes (green, if given) and predicted boxes (red) with the
    top-1 class and probability. ``max_side`` scales the picture (both ways) so its longer side fits."""
    rgb = _rgb_array(image)
    h, w = rgb.shape[:2]
    if (w, h) != result.size:
        raise KdcicamError(
            f"overlay: the image is {w}x{h} but the result is for {result.width}x{result.height}"
        )
    scale = 1.0
    if max_side is not None and max(w, h) != max_side:
        scale = max_side / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
        rgb = cv2.resize(rgb, size, interpolation=interp)
    out = Image.fromarray(heatmap_overlay(rgb, result.cam, alpha))
    if gt_boxes is not None and len(gt_boxes):
        out = draw_boxes(out, np.asarray(gt_boxes, dtype=np.float64) * scale, GT_COLOR)
    text = f"{result.class_name} {result.score:.2f}" if label else None
    labels: list[str | None] | None = [text] + [None] * (len(result.boxes) - 1) if text else None
    return draw_boxes(out, result.boxes * scale, PRED_COLOR, labels)


def png_bytes(image: Image.Image, optimize: bool = True) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=optimize)
    return buf.getvalue()


def save_overlay(
    path: str | os.PathLike,
    image: Image.Image | np.ndarray,
    result: LocalizationResult,
    gt_boxes: np.ndarray | None = None,
    max_side: int | None = None,
) -> Path:
    """Render :func:`render_result` and write it as a PNG (atomically)."""
    return atomic_write_bytes(path, png_bytes(render_result(image, result, gt_boxes, max_side=max_side)))


def save_doc_overlays(
    localizer: Localizer | str | os.PathLike,
    images: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike = "docs/images",
    prefix: str = "overlay",
    max_side: int = 320,
    max_bytes: int = 300_000,
) -> list[Path]:
    """A few overlays for the README: ``{prefix}_{i}.png`` scaled to ``max_side`` and kept under
    ``max_bytes`` each (colours are quantised, then the side reduced, until it fits)."""
    from ..data.dataset import load_image_rgb
    from ..inference import Localizer

    loc = localizer if isinstance(localizer, Localizer) else Localizer.from_checkpoint(localizer)
    paths = []
    for i, (path, result) in enumerate(zip(images, loc.predict(list(images)), strict=False)):
        image = load_image_rgb(path)
        side = max_side
        while True:
            picture = render_result(image, result, max_side=side)
            data = png_bytes(picture)
            if len(data) > max_bytes:
                data = png_bytes(picture.quantize(colors=128, method=Image.Quantize.MEDIANCUT))
            if len(data) <= max_bytes or side <= 64:
                break
            side = int(side * 0.8)
        if len(data) > max_bytes:
            raise KdcicamError(f"{path}: overlay stays above {max_bytes} bytes even at {side} px")
        paths.append(atomic_write_bytes(Path(out_dir) / f"{prefix}_{i}.png", data))
    return paths
