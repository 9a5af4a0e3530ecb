"""Uploaded bytes → the RGB image the model sees, refusing what a local page should not decode.

Limits are checked before any pixel is decoded: the byte count first (the caller knows it from the
request), then the pixel count from the file header, which Pillow reads without decoding, so a small
file that declares a huge image (a "decompression bomb") costs nothing. Decoding itself is
:func:`kdcicam.data.decode.load_image_rgb`, the training loader's (EXIF orientation, alpha on white,
16-bit grey scaled), so the page shows what ``kdcicam localize`` would compute for the same file.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from ..data.decode import load_image_rgb
from ..errors import ImageReadError, KdcicamError

MB = 1024 * 1024


@dataclass(frozen=True)
class UploadLimits:
    """What the page accepts: bytes per upload and pixels per image (width × height)."""

    max_bytes: int = 32 * MB
    max_pixels: int = 50_000_000

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise KdcicamError(f"upload limits must be positive, got {self.max_bytes} bytes, {self.max_pixels} pixels")


class UploadError(KdcicamError):
    """An upload the page refuses; ``status`` is the HTTP status, the message is shown on the page."""

    def __init__(self, message: str, status: int = 400):
        self.status = status
        super().__init__(message)


def describe_bytes(n: int) -> str:
    """``33554432`` → ``32.0 MB`` (binary megabytes, as the limit option counts them)."""
    return f"{n / MB:.1f} MB" if n >= MB / 10 else f"{n} bytes"


def check_size(name: str, num_bytes: int, limits: UploadLimits) -> None:
    """Refuse an upload by its size alone (before reading it)."""
    if num_bytes > limits.max_bytes:
        raise UploadError(f"{name}: {describe_bytes(num_bytes)} is over the upload limit of "
                          f"{describe_bytes(limits.max_bytes)} (kdcicam app --max-upload-mb)", status=413)
    if num_bytes == 0:
        raise UploadError(f"{name}: the file is empty")


def decode_upload(data: bytes, name: str, limits: UploadLimits) -> Image.Image:
    """Bytes of one image file → 8-bit RGB PIL image; :class:`UploadError` naming ``name`` otherwise."""
    check_size(name, len(data), limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides, below
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
    except Image.DecompressionBombError as e:  # over Pillow's own hard limit (about 179 MP), whatever ours is
        raise UploadError(f"{name}: {e}", status=413) from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for a non-image (UnidentifiedImageError, ...)
        raise UploadError(f"{name}: cannot read the image, it is not one Pillow knows ({type(e).__name__}: {e})") from None
    if width * height > limits.max_pixels:
        raise UploadError(f"{name}: {width} × {height} pixels ({width * height / 1e6:.1f} MP) is over the limit of "
                          f"{limits.max_pixels / 1e6:g} MP (kdcicam app --max-megapixels)", status=413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return load_image_rgb(io.BytesIO(data))  # type: ignore[arg-type]  # Image.open reads file objects too
    except ImageReadError as e:
        raise UploadError(f"{name}: cannot read the image ({e.reason})") from None


__all__ = ["MB", "UploadError", "UploadLimits", "check_size", "decode_upload", "describe_bytes"]
