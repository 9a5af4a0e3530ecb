"""The clovaai/wsolevaluation metadata layout: read, write, validate.

One folder per split holds four comma-separated text files, every line keyed by the image's path
relative to an image root:

- ``image_ids.txt``        ``path``
- ``class_labels.txt``     ``path,class``
- ``image_sizes.txt``      ``path,width,height`` (needed with boxes, which it rescales; a mask-only
                           split may leave it out, as wsolevaluation's OpenImages metadata does)
- ``localization.txt``     ``path,x0,y0,x1,y1`` (one line per box), or, for a mask dataset,
                           ``path,mask_path,ignore_path`` (one line per mask; ``ignore_path`` may be empty)

We add one optional file, ``masks.txt`` (same three-field mask format), so a dataset can carry
boxes *and* masks, as our synthetic data does. The split's parent folder may hold
``dataset.yaml`` (image root, class names); see :func:`read_dataset_info`.

Every problem found is raised as one :class:`MetadataError` naming the file, the line and what is
wrong, because a researcher debugging a 50,000-line file needs the line, not a traceback.
"""
from __future__ import annotations

import codecs
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MetadataError  # MetadataError re-exported: callers import it from here
from .atomic import atomic_write_text  # re-exported: the writers below and many callers use it from here
from .numbers import parse_number

Box = tuple[float, float, float, float]

IMAGE_IDS = "image_ids.txt"
CLASS_LABELS = "class_labels.txt"
IMAGE_SIZES = "image_sizes.txt"
LOCALIZATION = "localization.txt"
MASKS = "masks.txt"
DATASET_YAML = "dataset.yaml"


@dataclass
class DatasetInfo:
    """Contents of ``dataset.yaml``: where images live and what the classes are called."""

    image_root: Path
    class_names: list[str]
    splits: list[str] = field(default_factory=list)
    name: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class Metadata:
    """One split. Boxes are ``(x0, y0, x1, y1)`` in the original image's pixels."""

    image_ids: list[str]
    class_labels: dict[str, int]
    image_sizes: dict[str, tuple[int, int]]
    boxes: dict[str, list[Box]] = field(default_factory=dict)
    masks: dict[str, list[str]] = field(default_factory=dict)
    ignore_masks: dict[str, str] = field(default_factory=dict)
    num_classes: int = 0
    class_names: list[str] | None = None
    image_root: Path | None = None
    split_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def has_boxes(self) -> bool:
        return bool(self.boxes)

    @property
    def has_masks(self) -> bool:
        return bool(self.masks)

    def image_path(self, image_id: str) -> Path:
        if self.image_root is None:
            raise ValueError("this metadata has no image root (no dataset.yaml and none given)")
        return self.image_root / image_id

    def mask_paths(self, image_id: str) -> list[Path]:
        if self.image_root is None:
            raise ValueError("this metadata has no image root (no dataset.yaml and none given)")
        return [self.image_root / p for p in self.masks.get(image_id, [])]


# ----------------------------------------------------------------------------------------- reading
def read_text_file(path: str | os.PathLike, missing: str | None = None, encoding: str = "utf-8") -> str:
    """A user's text file: UTF-8 with or without a byte-order mark (common Windows editors write one), line
    ends LF, CRLF or CR, all returned as LF. A missing file (when ``missing`` says how to put it), an
    unreadable one or bytes that are not UTF-8 are a :class:`MetadataError` naming the file (and the byte)."""
    path = Path(path)
    if missing is not None and not path.is_file():
        raise MetadataError(path, None, missing)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MetadataError(path, None, f"cannot read ({e.strerror})") from None
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[skip:].decode(encoding)
    except UnicodeDecodeError as e:
        raise MetadataError(path, None, f"not UTF-8 text ({e.reason} at byte {e.start + skip})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, comma-split fields) for every non-blank line."""
    text = read_text_file(path)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        yield number, [f.strip() for f in line.split(",")]


def check_relative_path(value: str, file: Path, line: int | None, what: str = "path") -> str:
    """Refuse absolute paths and paths that escape the root (``..``): metadata must not point
    anywhere outside the dataset."""
    if not value:
        raise MetadataError(file, line, f"empty {what}")
    if value.startswith(("/", "\\")) or os.path.isabs(value) or (len(value) > 1 and value[1] == ":"):
        raise MetadataError(file, line, f"{what} {value!r} is absolute; paths must be relative to the image root")
    # the components as PurePosixPath(...).parts lists them, as far as ".." goes (it keeps every ".."), without
    # building a path per id: 1,389 ids took 17 ms of `kdcicam score`'s start
    if ".." in value.replace("\\", "/").split("/"):
        raise MetadataError(file, line, f"{what} {value!r} escapes the image root ('..' is not allowed)")
    return value


def _require(path: Path) -> Path:
    if not path.is_file():
        raise MetadataError(path, None, "file not found")
    return path


def read_dataset_info(dataset_dir: str | os.PathLike) -> DatasetInfo:
    """Read ``dataset.yaml`` (safe YAML only). A relative ``image_root`` is relative to the yaml."""
    import yaml  # here: most readers of a split (``kdcicam score``) never read a dataset.yaml

    path = Path(dataset_dir) / DATASET_YAML
    _require(path)
    try:
        data = yaml.safe_load(read_text_file(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]  # one line: the CLI prints one
        raise MetadataError(path, mark.line + 1 if mark else None, f"invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise MetadataError(path, None, "expected a mapping with image_root and class_names")
    for key in ("image_root", "class_names"):
        if key not in data:
            raise MetadataError(path, None, f"missing key {key!r}")
    names = data["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise MetadataError(path, None, "class_names must be a non-empty list of strings")
    root = Path(str(data["image_root"]))
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    extra = {k: v for k, v in data.items() if k not in ("image_root", "class_names", "splits", "name")}
    return DatasetInfo(image_root=root, class_names=list(names), splits=list(data.get("splits") or []),
                       name=str(data.get("name", "")), extra=extra)


def write_dataset_info(dataset_dir: str | os.PathLike, info: DatasetInfo) -> Path:
    """Write ``dataset.yaml``; the image root is stored relative to it when it lies inside."""
    import yaml

    dataset_dir = Path(dataset_dir)
    root, base = Path(info.image_root).resolve(), dataset_dir.resolve()
    # inside the dataset folder → relative (the folder can be moved); elsewhere → absolute
    stored = root.relative_to(base).as_posix() if root == base or base in root.parents else str(root)
    data = {"name": info.name, "image_root": stored, "class_names": list(info.class_names),
            "splits": list(info.splits), **info.extra}
    path = dataset_dir / DATASET_YAML
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def read_metadata(
    split_dir: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    num_classes: int | None = None,
    check_images: bool = True,
) -> Metadata:
    """Read and validate one split folder.

    ``image_root`` and ``num_classes`` default to those of ``dataset.yaml`` in the parent folder;
    without one, ``num_classes`` is inferred as ``max(class) + 1`` and images are not checked
    unless ``image_root`` is given.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise MetadataError(split_dir, None, "metadata folder not found")
    class_names = None
    info_dir = split_dir.parent
    if (info_dir / DATASET_YAML).is_file():
        info = read_dataset_info(info_dir)
        class_names = info.class_names
        if image_root is None:
            image_root = info.image_root
        if num_classes is None:
            num_classes = info.num_classes
    root = Path(image_root) if image_root is not None else None

    ids_file = _require(split_dir / IMAGE_IDS)
    image_ids: list[str] = []
    id_line: dict[str, int] = {}
    for number, fields in _lines(ids_file):
        if len(fields) != 1:
            raise MetadataError(ids_file, number, f"malformed line: expected 1 field (path), got {len(fields)}")
        image_id = check_relative_path(fields[0], ids_file, number, "image path")
        if image_id in id_line:
            raise MetadataError(ids_file, number, f"duplicate image id {image_id!r} (first on line {id_line[image_id]})")
        id_line[image_id] = number
        image_ids.append(image_id)
    if not image_ids:
        raise MetadataError(ids_file, None, "no image ids")

    def keyed(file: Path, nfields: int, what: str, repeat: bool = False) -> Iterator[tuple[int, str, list[str]]]:
        seen: dict[str, int] = {}
        for number, fields in _lines(file):
            if len(fields) != nfields:
                raise MetadataError(file, number, f"malformed line: expected {nfields} fields ({what}), got {len(fields)}")
            image_id = fields[0]
            if image_id not in id_line:  # the ids in it passed check_relative_path already
                check_relative_path(image_id, file, number, "image path")
                raise MetadataError(file, number, f"image id {image_id!r} is not in {IMAGE_IDS}")
            if not repeat and image_id in seen:
                raise MetadataError(file, number, f"duplicate image id {image_id!r} (first on line {seen[image_id]})")
            seen[image_id] = number
            yield number, image_id, fields[1:]
        missing = [i for i in image_ids if i not in seen]
        if missing:
            raise MetadataError(file, None, f"image id {missing[0]!r} (line {id_line[missing[0]]} of {IMAGE_IDS}) "
                                f"has no entry here ({len(missing)} missing in all)")

    labels_file = _require(split_dir / CLASS_LABELS)
    class_labels: dict[str, int] = {}
    rows = list(keyed(labels_file, 2, "path,class"))
    for number, image_id, (value,) in rows:
        class_labels[image_id] = int(parse_number(value, labels_file, number, "class", integer=True))
    inferred = max(class_labels.values()) + 1
    num_classes = inferred if num_classes is None else int(num_classes)
    for number, image_id, _ in rows:
        c = class_labels[image_id]
        if not 0 <= c < num_classes:
            raise MetadataError(labels_file, number, f"class {c} is outside 0..{num_classes - 1}")

    loc_file = split_dir / LOCALIZATION
    first_loc = next(_lines(loc_file), None) if loc_file.is_file() else None
    if first_loc is not None and len(first_loc[1]) not in (3, 5):
        raise MetadataError(loc_file, first_loc[0], f"malformed line: expected 5 fields (path,x0,y0,x1,y1) or 3 "
                            f"(path,mask_path,ignore_path), got {len(first_loc[1])}")
    has_boxes = first_loc is not None and len(first_loc[1]) == 5  # three fields: a mask line
    sizes_file = split_dir / IMAGE_SIZES
    if has_boxes:
        _require(sizes_file)  # boxes are checked against, and rescaled by, the image sizes
    image_sizes: dict[str, tuple[int, int]] = {}
    sizes = keyed(sizes_file, 3, "path,width,height") if sizes_file.is_file() else iter(())
    for number, image_id, (w_text, h_text) in sizes:
        width = int(parse_number(w_text, sizes_file, number, "width", integer=True))
        height = int(parse_number(h_text, sizes_file, number, "height", integer=True))
        if width <= 0 or height <= 0:
            raise MetadataError(sizes_file, number, f"image size {width}x{height} is not positive")
        image_sizes[image_id] = (width, height)

    boxes: dict[str, list[Box]] = {}
    masks: dict[str, list[str]] = {}
    ignore: dict[str, str] = {}

    def read_masks(file: Path, lines: Iterable[tuple[int, str, list[str]]]) -> None:
        for number, image_id, (mask, ignore_path) in lines:
            masks.setdefault(image_id, []).append(check_relative_path(mask, file, number, "mask path"))
            if ignore_path:
                ignore[image_id] = check_relative_path(ignore_path, file, number, "ignore-mask path")
            if root is not None and check_images:
                for p in [mask] + ([ignore_path] if ignore_path else []):
                    if not (root / p).is_file():
                        raise MetadataError(file, number, f"mask file {p!r} not found under {root}")

    if loc_file.is_file():
        if not has_boxes:
            read_masks(loc_file, keyed(loc_file, 3, "path,mask_path,ignore_path", repeat=True))
        else:
            for number, image_id, coords in keyed(loc_file, 5, "path,x0,y0,x1,y1", repeat=True):
                x0, y0, x1, y1 = (parse_number(v, loc_file, number, n) for v, n in zip(coords, ("x0", "y0", "x1", "y1"), strict=True))
                if x1 < x0 or y1 < y0:  # wsolevaluation's check_box_convention: a zero-width box is allowed
                    raise MetadataError(loc_file, number, f"inverted box ({x0:g},{y0:g},{x1:g},{y1:g}): "
                                        "need x1 >= x0 and y1 >= y0")
                w, h = image_sizes[image_id]
                if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                    raise MetadataError(loc_file, number, f"box ({x0:g},{y0:g},{x1:g},{y1:g}) lies outside the "
                                        f"{w}x{h} image")
                boxes.setdefault(image_id, []).append((x0, y0, x1, y1))
    masks_file = split_dir / MASKS
    if masks_file.is_file():
        read_masks(masks_file, keyed(masks_file, 3, "path,mask_path,ignore_path", repeat=True))

    if root is not None and check_images:
        if not root.is_dir():
            raise MetadataError(split_dir / DATASET_YAML if class_names is None else info_dir / DATASET_YAML,
                                None, f"image root {str(root)!r} is not a folder")
        for image_id in image_ids:
            if not (root / image_id).is_file():
                raise MetadataError(ids_file, id_line[image_id], f"image {image_id!r} not found under {root}")

    return Metadata(image_ids=image_ids, class_labels=class_labels, image_sizes=image_sizes, boxes=boxes,
                    masks=masks, ignore_masks=ignore, num_classes=num_classes, class_names=class_names,
                    image_root=root, split_dir=split_dir)


# ----------------------------------------------------------------------------------------- writing
def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def write_metadata(metadata: Metadata, split_dir: str | os.PathLike) -> Path:
    """Write one split folder (each file atomically). Integer coordinates are written as integers,
    because wsolevaluation's reader calls ``int()`` on them."""
    split_dir = Path(split_dir)
    ids = metadata.image_ids
    atomic_write_text(split_dir / IMAGE_IDS, "".join(f"{i}\n" for i in ids))
    atomic_write_text(split_dir / CLASS_LABELS, "".join(f"{i},{metadata.class_labels[i]}\n" for i in ids))
    if metadata.image_sizes or metadata.boxes:
        atomic_write_text(split_dir / IMAGE_SIZES,
                          "".join(f"{i},{metadata.image_sizes[i][0]},{metadata.image_sizes[i][1]}\n" for i in ids))
    else:  # a mask-only split without sizes: an older sizes file would no longer match it
        (split_dir / IMAGE_SIZES).unlink(missing_ok=True)
    mask_lines = "".join(f"{i},{m},{metadata.ignore_masks.get(i, '')}\n" for i in ids for m in metadata.masks.get(i, []))
    if metadata.boxes:
        atomic_write_text(split_dir / LOCALIZATION,
                          "".join(f"{i},{','.join(_fmt(v) for v in box)}\n" for i in ids for box in metadata.boxes.get(i, [])))
        if metadata.masks:
            atomic_write_text(split_dir / MASKS, mask_lines)
    elif metadata.masks:
        atomic_write_text(split_dir / LOCALIZATION, mask_lines)
    return split_dir
