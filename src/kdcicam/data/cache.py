"""Decoded images held in memory (``data.cache_images``), so that an epoch on a GPU is not waiting on
JPEG decoding.

The cache is filled once, in the process that builds the loaders and before any DataLoader worker
starts: forked workers then read the same pages (copy-on-write) instead of each decoding and holding
its own copy. An entry is exactly what :func:`~kdcicam.data.dataset.load_image_rgb` gives for the file
(uint8 CxHxW, at the file's own size), so a cached run draws the same pixels as an uncached one; the
transforms make new tensors and never write into an entry.

An image that cannot be decoded is left out: the dataset decodes it again when it is used and fails
(or skips it) there exactly as without a cache. Memory: width × height × 3 bytes per image (cub50's
2,889 images of about 384×256: 0.85 GB), in every DDP rank.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError, ImageReadError
from .metadata import Metadata

log = logging.getLogger(__name__)

#: refuse a cache that would take more than this share of the memory available now
MAX_SHARE_OF_AVAILABLE = 0.8


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None (no check)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def estimated_bytes(metadata: Metadata) -> int | None:
    """Decoded size of a split from image_sizes.txt (3 bytes a pixel); None when sizes are missing."""
    sizes = [metadata.image_sizes.get(i) for i in metadata.image_ids]
    if any(s is None for s in sizes):
        return None
    return sum(3 * int(w) * int(h) for w, h in sizes)  # type: ignore[misc]


class DecodedImageCache:
    """image id → decoded uint8 CxHxW tensor."""

    def __init__(self) -> None:
        self._images: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._images)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._images

    def get(self, image_id: str) -> torch.Tensor | None:
        return self._images.get(image_id)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._images.values())

    @classmethod
    def fill(cls, metadata: Metadata, threads: int | None = None, where: str = "data.cache_images") -> DecodedImageCache:
        """Decode every image of ``metadata`` (in threads: Pillow's decoders release the GIL).
        Refuses (ConfigError) a split whose decoded size would not fit the memory available."""
        from .dataset import load_image_rgb

        need, free = estimated_bytes(metadata), available_memory_bytes()
        if need is not None and free is not None and need > MAX_SHARE_OF_AVAILABLE * free:
            split = metadata.split_dir or "this split"
            raise ConfigError(f"{where}: the {len(metadata)} images of {split} need {need / 2**30:.2f} GiB decoded but "
                              f"only {free / 2**30:.2f} GiB of memory is available; set data.cache_images=false")

        def decode(image_id: str) -> tuple[str, torch.Tensor | None]:
            try:
                return image_id, TF.pil_to_tensor(load_image_rgb(metadata.image_path(image_id)))
            except ImageReadError:
                return image_id, None  # the dataset meets it again at use, and fails or skips it there

        cache = cls()
        workers = threads or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for image_id, tensor in pool.map(decode, metadata.image_ids):
                if tensor is not None:
                    cache._images[image_id] = tensor
        log.info("cached %d decoded images of %s (%.2f GiB)", len(cache), metadata.split_dir or "a split",
                 cache.nbytes / 2**30)
        return cache


__all__ = ["DecodedImageCache", "available_memory_bytes", "estimated_bytes"]
