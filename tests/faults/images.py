"""Faulty and unusual image files, and a helper that puts one into a dataset split with consistent
metadata (size, box, mask), so the only fault left is the file itself."""
from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from kdcicam.data.metadata import Metadata, read_metadata, write_metadata


@dataclass(frozen=True)
class Kind:
    """``make(source RGB array) -> (file bytes, displayed (w, h), extension)``; ``readable``: whether
    a correct decoder must accept it."""

    name: str
    ext: str
    readable: bool
    make: Callable[[np.ndarray], tuple[bytes, tuple[int, int]]]


def _save(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _truncated_jpeg(src: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    data = _save(Image.fromarray(src), "JPEG", quality=95)
    return data[: len(data) // 2], (src.shape[1], src.shape[0])


def _zero_bytes(src: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    return b"", (src.shape[1], src.shape[0])


def _text(src: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    return b"name,class\nthis is a CSV file renamed to .jpg\n", (src.shape[1], src.shape[0])


def grey(src: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(src).convert("L"))


def _png16(src: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    return _save(Image.fromarray(grey(src).astype(np.uint16) * 257), "PNG"), (src.shape[1], src.shape[0])


def _palette(src: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    return _save(Image.fromarray(src).convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG"), \
        (src.shape[1], src.shape[0])


def alpha_of(src: np.ndarray) -> np.ndarray:
    """Opaque where the object is bright, fully transparent in the left quarter."""
    a = np.full(src.shape[:2], 255, np.uint8)
    a[:, : src.shape[1] // 4] = 0
    return a


def _alpha(src: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    rgba = np.dstack([src, alpha_of(src)])
    return _save(Image.fromarray(rgba, mode="RGBA"), "PNG"), (src.shape[1], src.shape[0])


def _cmyk(src: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    return _save(Image.fromarray(src).convert("CMYK"), "JPEG", quality=98), (src.shape[1], src.shape[0])


def _exif_rotated(src: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    """Stored rotated 90° counter-clockwise with EXIF orientation 6: displayed as ``src``."""
    stored = Image.fromarray(src).transpose(Image.Transpose.ROTATE_90)
    exif = stored.getexif()
    exif[0x0112] = 6
    return _save(stored, "JPEG", quality=98, exif=exif.tobytes()), (src.shape[1], src.shape[0])


def _one_pixel(src: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    return _save(Image.fromarray(src[src.shape[0] // 2: src.shape[0] // 2 + 1, src.shape[1] // 2:
                                     src.shape[1] // 2 + 1]), "PNG"), (1, 1)


def _very_wide(src: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    wide = np.asarray(Image.fromarray(src).resize((10000, 10), Image.Resampling.BILINEAR))
    return _save(Image.fromarray(wide), "PNG", compress_level=1), (10000, 10)


BAD = [
    Kind("truncated JPEG", "jpg", False, _truncated_jpeg),
    Kind("zero-byte file", "jpg", False, _zero_bytes),
    Kind("text file renamed .jpg", "jpg", False, _text),
]
ODD = [
    Kind("16-bit greyscale PNG", "png", True, _png16),
    Kind("palette PNG", "png", True, _palette),
    Kind("RGBA PNG with transparency", "png", True, _alpha),
    Kind("CMYK JPEG", "jpg", True, _cmyk),
    Kind("EXIF-rotated JPEG (orientation 6)", "jpg", True, _exif_rotated),
    Kind("1x1 image", "png", True, _one_pixel),
    Kind("10000x10 image", "png", True, _very_wide),
]
BY_NAME = {k.name: k for k in BAD + ODD}


def _scale_box(box: tuple[float, ...], old: tuple[int, int], new: tuple[int, int]) -> tuple[float, ...]:
    sx, sy = new[0] / old[0], new[1] / old[1]
    x0, y0, x1, y1 = box
    x0, y0 = min(int(x0 * sx), new[0] - 1), min(int(y0 * sy), new[1] - 1)
    x1, y1 = max(round(x1 * sx), x0 + 1), max(round(y1 * sy), y0 + 1)
    return (x0, y0, min(x1, new[0]), min(y1, new[1]))


def install(root: Path, split: str, index: int, kind: Kind, stem: str | None = None) -> tuple[str, Path]:
    """Replace image ``index`` of ``split`` by a ``kind`` file made from it; rewrite the split's
    metadata (new id, displayed size, boxes and mask scaled to it). Returns (image id, file)."""
    md: Metadata = read_metadata(root / split)
    old_id = md.image_ids[index]
    src = np.asarray(Image.open(md.image_path(old_id)).convert("RGB"))
    data, size = kind.make(src)
    new_id = f"{split}/faults/{stem or kind.name.split()[0].replace('-', '_').lower()}_{index}.{kind.ext}"
    path = md.image_root / new_id
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    old_size = md.image_sizes.pop(old_id)
    md.image_ids[index] = new_id
    md.class_labels[new_id] = md.class_labels.pop(old_id)
    md.image_sizes[new_id] = size
    if old_id in md.boxes:
        md.boxes[new_id] = [_scale_box(b, old_size, size) for b in md.boxes.pop(old_id)]
    if old_id in md.masks:
        mask_rel = new_id.rsplit(".", 1)[0] + "_mask.png"
        old_mask = Image.open(md.mask_paths(old_id)[0]).convert("L")
        old_mask.resize(size, Image.Resampling.NEAREST).save(md.image_root / mask_rel)
        md.masks.pop(old_id)
        md.masks[new_id] = [mask_rel]
    write_metadata(md, root / split)
    return new_id, path
