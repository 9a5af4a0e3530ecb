"""Image → model input in numpy, bit for bit what the evaluation transform gives, without torch.

The evaluation transform (``build_eval_transform``: ``Resize((S, S), antialias=True)`` then
``ToDtype(float32, scale=True)``) resizes 8-bit images with PyTorch's native uint8 kernel: a separable
antialiased bilinear filter (a triangle stretched by the scale when shrinking), horizontal pass first,
with integer weights of adaptive precision (the largest that keeps them in int16) and rounding to uint8
after each pass. :func:`resize_uint8` computes the same integers, so the ONNX backend feeds its graph
exactly the input the PyTorch path feeds the model (tests/test_onnx.py compares them on random sizes).

Two limits, stated rather than hidden:

- torchvision uses that uint8 kernel on CPUs with AVX2 / AVX-512 and on ARM; on an x86 CPU without AVX2
  it resizes in float and rounds, which can differ by one grey level on a few pixels;
- float images (numpy arrays in [0, 1]) are resized with the same filter in float64 and agree with
  torch's float kernel to about 1e-6, not bit for bit.
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from .data.decode import _to_rgb, load_image_rgb
from .localization import ImageInputError

#: what the numpy path accepts: a file path, a PIL image, or an HxW / HxWxC (C in 1, 3, 4) uint8 or float array
ArrayImageInput = str | os.PathLike | Image.Image | np.ndarray


@lru_cache(maxsize=64)
def _filter(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Source indices ``[out, k]``, float weights ``[out, k]`` (rows sum to 1), their int16 form and its
    precision in bits, for resizing one axis from ``in_size`` to ``out_size``."""
    scale = in_size / out_size
    support = max(scale, 1.0)  # the bilinear triangle has half-width 1, stretched when shrinking
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    center = scale * (np.arange(out_size, dtype=np.float64) + 0.5)
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)
    xsize = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    j = np.arange(int(xsize.max()))
    w = np.clip(1.0 - np.abs((j[None, :] + xmin[:, None] - center[:, None] + 0.5) * invscale), 0.0, None)
    w[j[None, :] >= xsize[:, None]] = 0.0
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total != 0, w / np.where(total != 0, total, 1.0), w)
    precision = 0
    while precision < 22 and int(0.5 + w.max() * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    fixed = np.trunc(w * (1 << precision) + np.where(w < 0, -0.5, 0.5)).astype(np.int64)  # C's (int)(x ± 0.5)
    index = np.minimum(xmin[:, None] + j[None, :], in_size - 1)
    return index, w, fixed, precision


def _pass_uint8(arr: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    index, _, fixed, precision = _filter(arr.shape[axis], out_size)
    src = np.moveaxis(arr, axis, 0).astype(np.int64)
    acc = np.einsum("ok...,ok->o...", src[index], fixed) + (1 << (precision - 1))
    return np.moveaxis(np.clip(acc >> precision, 0, 255).astype(np.uint8), 0, axis)


def _pass_float(arr: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    index, w, _, _ = _filter(arr.shape[axis], out_size)
    src = np.moveaxis(arr, axis, 0).astype(np.float64)
    return np.moveaxis(np.einsum("ok...,ok->o...", src[index], w), 0, axis)


def resize_uint8(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """HxWxC uint8 → ``height × width × C`` uint8, as torchvision's antialiased bilinear Resize on a uint8
    tensor (horizontal pass, then vertical; an axis already at its size is left alone)."""
    out = image
    if out.shape[1] != width:
        out = _pass_uint8(out, 1, width)
    if out.shape[0] != height:
        out = _pass_uint8(out, 0, height)
    return out


def resize_float(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """HxWxC float → ``height × width × C`` float32 with the same antialiased bilinear filter."""
    out = image.astype(np.float64)
    if out.shape[1] != width:
        out = _pass_float(out, 1, width)
    if out.shape[0] != height:
        out = _pass_float(out, 0, height)
    return out.astype(np.float32)


def _rgba_on_white(arr: np.ndarray) -> np.ndarray:
    return np.array(_to_rgb(Image.fromarray(np.ascontiguousarray(arr), mode="RGBA")))


def _array_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    """A numpy image → HxWx3, uint8 or float32 in [0, 1] (the rules of the PyTorch Localizer's inputs)."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageInputError(f"{name}: a numpy image must be HxW (grey) or HxWxC with C in 1, 3, 4 "
                              f"(RGB order), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageInputError(f"{name}: empty image of shape {arr.shape}")
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise ImageInputError(f"{name}: numpy images must be uint8 (0-255) or float (0-1), got dtype {arr.dtype}")
    return pixels_rgb(arr, name)


def pixels_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    """HxWxC (C in 1, 3, 4) uint8 or float → HxWx3 uint8, or float32 checked to lie in [0, 1].

    The one definition of an image's pixel rules (finite, in range, alpha composited on white as
    ``load_image_rgb`` does, grey to RGB), shared by the numpy path and the PyTorch Localizer's tensor path:
    callers check their own layout (HxWxC / CxHxW) and dtype family first."""
    if arr.dtype == np.uint8:
        if arr.shape[2] == 4:
            arr = _rgba_on_white(arr)
    else:
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise ImageInputError(f"{name}: the image contains NaN or inf")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ImageInputError(f"{name}: float images must lie in [0, 1], got min {lo:g}, max {hi:g} "
                                  "(pass uint8, or divide by 255)")
        if arr.shape[2] == 4:
            arr = arr[:, :, :3] * arr[:, :, 3:] + (1.0 - arr[:, :, 3:])  # on white, as load_image_rgb does
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)


def image_array(image: Any, name: str = "image") -> tuple[np.ndarray, str | None]:
    """Any input the numpy path accepts → (HxWx3 uint8, or float32 in [0, 1]; the file path if it was one).

    Files are decoded by :func:`kdcicam.data.decode.load_image_rgb`, as the training loader does
    (:class:`~kdcicam.errors.ImageReadError` names a file that cannot be read)."""
    if isinstance(image, (str, os.PathLike)):
        return np.asarray(load_image_rgb(image)), str(image)
    if isinstance(image, Image.Image):
        return np.asarray(_to_rgb(image)), None
    if isinstance(image, np.ndarray):
        return _array_rgb(image, name), None
    raise ImageInputError(f"{name}: expected a path, PIL image or numpy array, got {type(image).__name__} "
                          "(the ONNX backend takes no torch tensors: pass tensor.permute(1, 2, 0).numpy())")


def model_input(image: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 uint8 / float image → the model input, float32 ``[3, size, size]`` in [0, 1]."""
    if image.dtype == np.uint8:
        resized = resize_uint8(image, size, size)
        x = resized.astype(np.float32) * np.float32(1.0 / 255.0)  # ToDtype(scale=True): x.to(float) * (1 / 255)
    else:
        x = resize_float(image, size, size) if image.shape[:2] != (size, size) else image.astype(np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


__all__ = ["ArrayImageInput", "image_array", "model_input", "resize_float", "resize_uint8"]
