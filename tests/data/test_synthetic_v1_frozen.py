"""Synthetic v1 is frozen: existing results were measured on it, so a change to the generator (v2 work,
refactors) must leave every pixel and every metadata byte of a v1 dataset as it was.

The expected hashes were computed with main's code at 3c4a79e, before the v2 generator existed: of the
decoded pixels of every PNG plus the bytes of the text files. PNG bytes are not compared -- another
OpenCV/zlib may encode the same pixels differently, and the pixels are what the results were measured on.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import pytest

from kdcicam.data.synthetic import SyntheticConfig, generate_synthetic

FROZEN = {
    "default_small": (
        {"size": 48, "num_classes": 4, "n_train": 12, "n_val": 4, "n_test": 8, "n_test_conflict": 8, "workers": 1},
        "db0469f90984c55cc8c24c3be1d2d84c5b58e0cbc0de8ed178598d64258d3e23"),
    "noise_rho": (
        {"seed": 3, "size": 40, "num_classes": 3, "rho": 0.75, "noise": 0.05, "n_train": 6, "n_val": 3, "n_test": 3,
         "n_test_conflict": 3, "workers": 1, "min_radius": 0.2, "max_radius": 0.25},
        "b30384427c8a08bc90ef4b6fd979c69d5aed00549f5cd4e22053225322735db4"),
}


def pixel_hash(root: Path) -> str:
    """Every file's relative path and content, in sorted order; PNGs contribute their decoded pixels."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0")
            if p.suffix == ".png":
                a = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
                h.update(repr(a.shape).encode() + a.tobytes())
            else:
                h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_v1_pixels_and_metadata_unchanged(tmp_path, name):
    kwargs, want = FROZEN[name]
    generate_synthetic(tmp_path / "ds", SyntheticConfig(**kwargs))
    assert pixel_hash(tmp_path / "ds") == want, f"synthetic v1 ({name}): the pixels or the metadata changed since 3c4a79e"
