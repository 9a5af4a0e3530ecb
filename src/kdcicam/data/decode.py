"""Decoding an image file exactly as the training loader does (EXIF orientation, alpha on white, 16-bit
and float greyscale scaled), without torch: tools that only read pixels (``kdcicam data conflict``)
need not import it. :mod:`kdcicam.data.dataset` re-exports :func:`load_image_rgb`."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

from ..errors import ImageReadError

_WHITE = (255, 255, 255, 255)


# ------------------------------------------------------------------------------------------ decoding
def load_image_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode any image file to an 8-bit RGB PIL image, in its displayed orientation.

    - EXIF orientation is applied (``ImageOps.exif_transpose``), so metadata sizes and boxes must
      be those of the displayed image (the CUB converter takes care of it).
    - Transparency (RGBA, LA, P or L/RGB with a transparent colour) is composited on **white**, as
      viewers show it; dropping alpha would expose whatever the encoder left under transparent
      pixels (often black), which would be a fake, class-independent "object".
    - 16-bit and 32-bit integer greyscale (``I;16*``, ``I``) is scaled by 255/65535, not clipped;
      float (``F``) is taken as 0..1 when its maximum is <= 1, else as 0..255.
    - Palette, CMYK, YCbCr, bilevel, greyscale: Pillow's conversion.

    Any failure (missing, empty, truncated, not an image) raises :class:`ImageReadError` naming
    the file. Truncated files are not silently accepted (``LOAD_TRUNCATED_IMAGES`` is left alone).
    """
    try:
        with Image.open(path) as f:
            f.load()
            im = ImageOps.exif_transpose(f)
        return _to_rgb(im)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types (OSError, SyntaxError, struct.error...)
        reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise ImageReadError(path, reason) from None


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.float64)
        arr = np.floor(np.clip(arr, 0, 65535) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(im).astype(np.float64)
        scale = 255.0 if np.nanmax(arr, initial=0.0) <= 1.0 else 1.0
        arr = np.floor(np.clip(np.nan_to_num(arr) * scale, 0, 255) + 0.5).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    return im.convert("RGB")
