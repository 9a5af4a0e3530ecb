"""Image-level labels of a split: a folder of class folders (torchvision's ImageFolder layout) or a
``path,label`` CSV. Every problem names the file and the line."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..metadata import MetadataError, read_text_file

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


_PATH_HEADERS = frozenset(
    {"path", "image", "image_path", "image_id", "file", "filename", "file_name", "name"}
)


@dataclass
class LabeledImage:
    """One image of a label source: absolute path, class name (None: unknown yet) and where it was listed."""

    path: Path
    label: str | None
    source: Path
    line: int | None = None
    base: Path | None = None  # folder its listed path is relative to

    def where(self) -> tuple[Path, int | None]:
        return self.source, self.line


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def read_image_folder(root: str | os.PathLike) -> list[LabeledImage]:
    """ImageFolder layout: ``root/<class>/**/<image>``; images directly in ``root`` get no class."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise MetadataError(root, None, "image folder not found")
    images: list[LabeledImage] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and _is_image(p)):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden folders (.ipynb_checkpoints, .thumbnails ...)
        label = rel.parts[0] if len(rel.parts) > 1 else None
        images.append(LabeledImage(path=path, label=label, source=root, base=root))
    if not images:
        raise MetadataError(
            root, None, f"no images found (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return images


def _csv_rows(path: Path) -> Iterable[tuple[int, list[str]]]:
    """(line, stripped fields) of every non-blank CSV row; quoted fields may hold commas."""
    text = read_text_file(path, missing="file not found", encoding="utf-8-sig")
    reader = csv.reader(io.StringIO(text))
    line = 1
    try:
        for row in reader:
            fields = [f.strip() for f in row]
            if any(fields):
                yield line, fields
            line = reader.line_num + 1
    except csv.Error as e:
        raise MetadataError(path, reader.line_num, f"malformed CSV ({e})") from None


def _resolve_listed(value: str, base: Path, file: Path, line: int) -> Path:
    if not value:
        raise MetadataError(file, line, "empty image path")
    p = Path(value.replace("\\", "/"))
    return _absolute(p if p.is_absolute() else base / p)


def _absolute(path: Path) -> Path:
    """An absolute, normalised path that keeps symlinks (a linked image stays inside its folder)."""
    return Path(os.path.normpath(os.path.abspath(path)))


def read_label_csv(
    path: str | os.PathLike, image_root: str | os.PathLike | None = None
) -> list[LabeledImage]:
    """``path,label`` rows (header allowed); paths relative to ``image_root`` (default: the CSV's folder)."""
    path = Path(path).resolve()
    base = Path(image_root).resolve() if image_root is not None else path.parent
    images: list[LabeledImage] = []
    seen: dict[Path, int] = {}
    for number, fields in _csv_rows(path):
        if not images and not seen and fields[0].lower() in _PATH_HEADERS:
            continue  # header
        if len(fields) != 2:
            raise MetadataError(
                path, number, f"malformed line: expected 2 fields (path,label), got {len(fields)}"
            )
        if not fields[1]:
            raise MetadataError(path, number, "empty label")
        image = _resolve_listed(fields[0], base, path, number)
        if image in seen:
            raise MetadataError(
                path, number, f"image {fields[0]!r} listed twice (first on line {seen[image]})"
            )
        if not image.is_file():
            raise MetadataError(path, number, f"image file {str(image)!r} not found")
        seen[image] = number
        images.append(LabeledImage(path=image, label=fields[1], source=path, line=number, base=base))
    if not images:
        raise MetadataError(path, None, "no images listed")
    return images


def read_labels(source: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[LabeledImage]:
    """A folder of class folders, or a ``path,label`` CSV."""
    source = Path(source)
    if source.is_dir():
        return read_image_folder(source)
    if source.suffix.lower() in (".csv", ".txt"):
        return read_label_csv(source, image_root)
    if not source.exists():
        raise MetadataError(
            source, None, "not found (expected a folder of class folders or a path,label CSV)"
        )
    raise MetadataError(source, None, "expected a folder of class folders or a .csv file of path,label")
