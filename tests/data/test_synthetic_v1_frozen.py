"""Synthetic v1 is frozen: existing results were measured on it, so a change to the generator (v2 work,
refactors) must leave every byte of a v1 dataset as it was.

The expected hashes were computed with main's code at 3c4a79e, before the v2 generator existed. Two
hashes per config: of the files' bytes (the promise), and of the decoded pixels plus the text files, so
that a failure says whether the pictures changed or only the PNG encoder (an OpenCV/zlib upgrade).
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
        "888e64dd26ebb9a399c6d1411d81f8a5f84ac4fab2c14ce28d6854c6a4010441",
        "db0469f90984c55cc8c24c3be1d2d84c5b58e0cbc0de8ed178598d64258d3e23"),
    "noise_rho": (
        {"seed": 3, "size": 40, "num_classes": 3, "rho": 0.75, "noise": 0.05, "n_train": 6, "n_val": 3, "n_test": 3,
         "n_test_conflict": 3, "workers": 1, "min_radius": 0.2, "max_radius": 0.25},
        "b15e02ad97b9298b9ae6d278bb60a34375147ff5fb099fe633d44caf6a72bf0c",
        "b30384427c8a08bc90ef4b6fd979c69d5aed00549f5cd4e22053225322735db4"),
}


def tree_hash(root: Path) -> str:
    """Every file's relative path and bytes, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def pixel_hash(root: Path) -> str:
    """As :func:`tree_hash`, but PNGs contribute their decoded pixels, not their encoding."""
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
def test_v1_bytes_unchanged(tmp_path, name):
    kwargs, want_bytes, want_pixels = FROZEN[name]
    generate_synthetic(tmp_path / "ds", SyntheticConfig(**kwargs))
    got_bytes = tree_hash(tmp_path / "ds")
    if got_bytes != want_bytes:
        same_pixels = pixel_hash(tmp_path / "ds") == want_pixels
        pytest.fail(f"synthetic v1 ({name}) is no longer byte-identical to 3c4a79e: "
                    + ("the pixels and metadata are the same, only the PNG encoding changed (OpenCV/zlib?)"
                       if same_pixels else "the pixels or the metadata changed"))
