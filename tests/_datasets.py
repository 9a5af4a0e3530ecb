"""Dataset variants shared by tests (not a test module): a split whose localization is reduced."""
from __future__ import annotations

import shutil
from pathlib import Path

from kdcicam.data.metadata import (
    LOCALIZATION,
    MASKS,
    read_dataset_info,
    read_metadata,
    write_dataset_info,
    write_metadata,
)


def reduce_localization(split_dir: Path, keep: str) -> Path:
    """Rewrite a split in place so that it keeps ``keep`` = "masks" (mask-only: wsolevaluation's OpenImages
    layout) or "none" (labels only)."""
    md = read_metadata(split_dir)
    for name in (LOCALIZATION, MASKS):
        (split_dir / name).unlink(missing_ok=True)
    md.boxes = {}
    if keep == "none":
        md.masks, md.ignore_masks = {}, {}
    write_metadata(md, split_dir)
    again = read_metadata(split_dir)
    assert not again.has_boxes and again.has_masks == (keep == "masks")
    return split_dir


def metadata_copy(src: Path, dst: Path) -> Path:
    """The metadata of dataset ``src`` under ``dst`` (the images stay where they are)."""
    info = read_dataset_info(src)
    for split in info.splits:
        shutil.copytree(src / split, dst / split)
    write_dataset_info(dst, info)
    return dst


def file_tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` by its relative POSIX path, with its bytes: two generations compare whole."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
