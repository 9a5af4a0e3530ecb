"""Your own images → wsolevaluation metadata (``kdcicam data import``).

WSOL trains on image-level labels only; boxes are needed on val (to choose the box threshold) and
on test (to score localization). So the importer reads, per split:

- **labels**: a folder with one sub-folder per class (torchvision's ImageFolder layout; a class is
  its folder name; images directly in the folder have no class until a box file gives one), or a
  CSV ``path,label`` (a header line is allowed; paths relative to the CSV's folder, or absolute);
- **boxes** (val/test): a CSV ``path,x0,y0,x1,y1[,label]`` (pixels, x1/y1 exclusive corners), a
  Pascal VOC folder (one ``.xml`` per image; VOC's 1-based inclusive ``xmin..xmax`` becomes
  ``xmin-1..xmax``) or a COCO JSON file (``bbox`` = ``x, y, width, height``).

A box file names an image by its path relative to the split's source, relative to the image root,
relative to the box file, or by its bare file name when that is unique in the split.

Decisions, so that an import is reproducible:

- **Classes** are the train split's labels, sorted (numerically when every label is an integer);
  a val/test label that train never shows is an error (the model could not predict it).
- **val**, when not given as a source: the images a ``val`` box file names, taken out of train;
  else a per-class seeded hold-out of train (:func:`stratified_holdout`, the same rule as
  ``kdcicam data cub``).
- **Boxes** are rounded half-up to integers (wsolevaluation's reader calls ``int()``) and clipped to
  the image; an empty or inverted box is an error. Boxes are taken in the *displayed* orientation
  (EXIF applied, as the loader shows the image); a VOC/COCO file that states the stored size of a
  90°-rotated image had its boxes drawn on the stored pixels, and they are rotated with the image.
- **Nothing is written on error**: everything is read and checked first, the splits are written to
  a temporary folder, read back with the package's own reader, then renamed into place.

Every problem raises :class:`~kdcicam.data.metadata.MetadataError` naming the file and the line
(or, in JSON and XML, the entry).
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from xml.parsers import expat

from .cub import _header_size, exif_transpose_box, stratified_holdout
from .metadata import (
    DATASET_YAML,
    DatasetInfo,
    Metadata,
    MetadataError,
    read_metadata,
    read_text_file,
    write_dataset_info,
    write_metadata,
)
from .numbers import parse_number, round_half_up

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
_PATH_HEADERS = frozenset({"path", "image", "image_path", "image_id", "file", "filename", "file_name", "name"})
BOX_CONVENTION = ("x0=round_half_up(x0), y0=round_half_up(y0), x1=round_half_up(x1), y1=round_half_up(y1), "
                  "clipped to the image; VOC xmin/ymin are 1-based (x0 = xmin - 1); COCO x1 = x + width")
SPLITS = ("train", "val", "test")


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


@dataclass
class BoxRecord:
    """One box as an annotation file states it (``x0, y0, x1, y1`` in that file's pixel frame)."""

    key: str
    box: tuple[float, float, float, float]
    label: str | None
    file: Path
    line: int | None
    entry: str = ""  # e.g. "object 2" or "annotations[5]" where there is no line
    size: tuple[int, int] | None = None  # the image size the file states (VOC / COCO)
    alt_keys: tuple[str, ...] = ()

    def error(self, problem: str) -> MetadataError:
        return MetadataError(self.file, self.line, f"{self.entry + ': ' if self.entry else ''}{problem}")


# ------------------------------------------------------------------------------------------ labels
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
        raise MetadataError(root, None, f"no images found (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
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


def read_label_csv(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[LabeledImage]:
    """``path,label`` rows (header allowed); paths relative to ``image_root`` (default: the CSV's folder)."""
    path = Path(path).resolve()
    base = Path(image_root).resolve() if image_root is not None else path.parent
    images: list[LabeledImage] = []
    seen: dict[Path, int] = {}
    for number, fields in _csv_rows(path):
        if not images and not seen and fields[0].lower() in _PATH_HEADERS:
            continue  # header
        if len(fields) != 2:
            raise MetadataError(path, number, f"malformed line: expected 2 fields (path,label), got {len(fields)}")
        if not fields[1]:
            raise MetadataError(path, number, "empty label")
        image = _resolve_listed(fields[0], base, path, number)
        if image in seen:
            raise MetadataError(path, number, f"image {fields[0]!r} listed twice (first on line {seen[image]})")
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
        raise MetadataError(source, None, "not found (expected a folder of class folders or a path,label CSV)")
    raise MetadataError(source, None, "expected a folder of class folders or a .csv file of path,label")


# ------------------------------------------------------------------------------------------ boxes
def read_boxes_csv(path: str | os.PathLike) -> list[BoxRecord]:
    """``path,x0,y0,x1,y1[,label]`` rows (header allowed)."""
    path = Path(path).resolve()
    records: list[BoxRecord] = []
    first = True
    for number, fields in _csv_rows(path):
        if first and fields[0].lower() in _PATH_HEADERS:
            first = False
            continue
        first = False
        if len(fields) not in (5, 6):
            raise MetadataError(path, number, f"malformed line: expected 5 or 6 fields (path,x0,y0,x1,y1[,label]), "
                                f"got {len(fields)}")
        if not fields[0]:
            raise MetadataError(path, number, "empty image path")
        x0, y0, x1, y1 = (parse_number(v, path, number, n) for v, n in zip(fields[1:5], ("x0", "y0", "x1", "y1")))
        label = fields[5] if len(fields) == 6 and fields[5] else None
        records.append(BoxRecord(key=fields[0], box=(x0, y0, x1, y1), label=label, file=path, line=number))
    if not records:
        raise MetadataError(path, None, "no boxes listed")
    return records


@dataclass
class _Node:
    tag: str
    line: int
    text: str = ""
    children: list[_Node] = field(default_factory=list)

    def find(self, tag: str) -> _Node | None:
        return next((c for c in self.children if c.tag == tag), None)

    def findtext(self, tag: str) -> str | None:
        node = self.find(tag)
        return None if node is None else node.text.strip()


def parse_xml(path: Path) -> _Node:
    """A small XML tree with line numbers. DOCTYPE and entity declarations are refused, so no
    entity is ever expanded (no billion laughs, no external files)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MetadataError(path, None, f"cannot read ({e.strerror})") from None
    parser = expat.ParserCreate()
    stack: list[_Node] = []
    root: list[_Node] = []

    def refuse(*_args: object) -> None:
        raise MetadataError(path, parser.CurrentLineNumber, "DOCTYPE / entity declarations are refused in annotation "
                            "files (they could expand entities)")

    def start(tag: str, _attrs: dict) -> None:
        node = _Node(tag=tag, line=parser.CurrentLineNumber)
        (stack[-1].children if stack else root).append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        raise MetadataError(path, e.lineno, f"invalid XML ({expat.ErrorString(e.code)})") from None
    return root[0]


def read_voc_file(path: str | os.PathLike) -> list[BoxRecord]:
    """One Pascal VOC annotation: ``filename``, ``size``, and ``object/name`` + ``object/bndbox``."""
    path = Path(path).resolve()
    root = parse_xml(path)
    if root.tag != "annotation":
        raise MetadataError(path, root.line, f"expected an <annotation> element, got <{root.tag}>")
    filename = root.findtext("filename")
    if not filename:
        raise MetadataError(path, root.line, "missing <filename>")
    folder = root.findtext("folder")
    size = None
    size_node = root.find("size")
    if size_node is not None and size_node.findtext("width") and size_node.findtext("height"):
        w = parse_number(size_node.findtext("width"), path, size_node.line, "width")
        h = parse_number(size_node.findtext("height"), path, size_node.line, "height")
        size = (int(w), int(h)) if w > 0 and h > 0 else None
    records = []
    for k, obj in enumerate(c for c in root.children if c.tag == "object"):
        entry = f"object {k + 1}"
        bnd = obj.find("bndbox")
        if bnd is None:
            raise MetadataError(path, obj.line, f"{entry}: missing <bndbox>")
        values = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            v = bnd.findtext(tag)
            if v is None:
                raise MetadataError(path, bnd.line, f"{entry}: missing <{tag}>")
            values.append(parse_number(v, path, bnd.line, tag, entry=entry))
        xmin, ymin, xmax, ymax = values
        label = obj.findtext("name") or None
        alt = (f"{folder}/{filename}",) if folder else ()
        records.append(BoxRecord(key=filename, box=(xmin - 1, ymin - 1, xmax, ymax), label=label, file=path,
                                 line=bnd.line, entry=entry, size=size, alt_keys=alt))
    return records


def read_voc(path: str | os.PathLike) -> list[BoxRecord]:
    """A VOC ``.xml`` file, or a folder of them (``Annotations/``), read in sorted order."""
    path = Path(path).resolve()
    files = sorted(path.rglob("*.xml")) if path.is_dir() else [path]
    if not files:
        raise MetadataError(path, None, "no .xml annotation files found")
    records = [r for f in files for r in read_voc_file(f)]
    if not records:
        raise MetadataError(path, None, "no <object> boxes in the annotation files")
    return records


def read_coco(path: str | os.PathLike) -> list[BoxRecord]:
    """COCO detection JSON: ``images`` (id, file_name, width, height), ``annotations`` (image_id,
    bbox = x, y, width, height, category_id) and ``categories`` (id, name). Crowd boxes are kept."""
    path = Path(path).resolve()
    text = read_text_file(path, missing="file not found", encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise MetadataError(path, e.lineno, f"invalid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or \
            not isinstance(data.get("annotations"), list):
        raise MetadataError(path, None, "expected a COCO object with 'images' and 'annotations' lists")
    categories: dict[object, str] = {}
    for k, cat in enumerate(data.get("categories") or []):
        if not isinstance(cat, dict) or "id" not in cat or not isinstance(cat.get("name"), str):
            raise MetadataError(path, None, f"categories[{k}]: expected an object with 'id' and a string 'name'")
        categories[cat["id"]] = cat["name"]
    images: dict[object, tuple[str, tuple[int, int] | None]] = {}
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise MetadataError(path, None, f"images[{k}]: expected an object with 'id' and a string 'file_name'")
        if im["id"] in images:
            raise MetadataError(path, None, f"images[{k}]: duplicate image id {im['id']!r}")
        w, h = im.get("width"), im.get("height")
        size = (int(w), int(h)) if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0 \
            else None
        images[im["id"]] = (im["file_name"], size)
    records = []
    for k, ann in enumerate(data["annotations"]):
        entry = f"annotations[{k}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        if not isinstance(ann, dict) or "image_id" not in ann or "bbox" not in ann:
            raise MetadataError(path, None, f"{entry}: expected an object with 'image_id' and 'bbox'")
        if ann["image_id"] not in images:
            raise MetadataError(path, None, f"{entry}: image_id {ann['image_id']!r} is not in 'images'")
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise MetadataError(path, None, f"{entry}: bbox must be [x, y, width, height], got {bbox!r}")
        x, y, w, h = (parse_number(v, path, None, n, entry=entry) for v, n in zip(bbox, ("x", "y", "width", "height")))
        if w < 0 or h < 0:
            raise MetadataError(path, None, f"{entry}: negative width or height in bbox {bbox!r}")
        cat = ann.get("category_id")
        if cat is not None and categories and cat not in categories:
            raise MetadataError(path, None, f"{entry}: category_id {cat!r} is not in 'categories'")
        file_name, size = images[ann["image_id"]]
        records.append(BoxRecord(key=file_name, box=(x, y, x + w, y + h), label=categories.get(cat), file=path,
                                 line=None, entry=entry, size=size))
    if not records:
        raise MetadataError(path, None, "no annotations")
    return records


def read_boxes(path: str | os.PathLike) -> list[BoxRecord]:
    """Dispatch on the file: ``.csv`` → CSV, ``.json`` → COCO, ``.xml`` or a folder → Pascal VOC."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".xml":
        if not path.exists():
            raise MetadataError(path, None, "not found")
        return read_voc(path)
    if path.suffix.lower() == ".json":
        return read_coco(path)
    if path.suffix.lower() in (".csv", ".txt"):
        return read_boxes_csv(path)
    raise MetadataError(path, None, "unknown box format: give a .csv (path,x0,y0,x1,y1[,label]), a COCO .json, "
                        "or a Pascal VOC .xml file or folder")


# ------------------------------------------------------------------------------------------ matching
def _norm(key: str) -> str:
    key = key.strip().replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


class _ImageIndex:
    """Finds a split's image from the name a box file uses for it."""

    def __init__(self, images: list[LabeledImage], image_root: Path):
        self.exact: dict[str, LabeledImage] = {}
        self.by_name: dict[str, list[LabeledImage]] = {}
        self.by_path: dict[Path, LabeledImage] = {im.path: im for im in images}
        for im in images:
            keys = {im.path.relative_to(image_root).as_posix()}
            if im.base is not None and (im.base == im.path.parent or im.base in im.path.parents):
                keys.add(im.path.relative_to(im.base).as_posix())
            for key in keys:
                self.exact.setdefault(key, im)
            self.by_name.setdefault(im.path.name, []).append(im)

    def find(self, record: BoxRecord) -> LabeledImage | None:
        for key in (*record.alt_keys, record.key):
            key = _norm(key)
            if key in self.exact:
                return self.exact[key]
            as_path = Path(key)
            resolved = _absolute(as_path if as_path.is_absolute() else record.file.parent / as_path)
            if resolved in self.by_path:
                return self.by_path[resolved]
        name = PurePosixPath(_norm(record.key)).name
        matches = self.by_name.get(name, [])
        if len(matches) > 1:
            raise record.error(f"image {record.key!r} matches {len(matches)} images by file name "
                               f"({matches[0].path}, {matches[1].path}, ...); write its path instead")
        return matches[0] if matches else None


# ------------------------------------------------------------------------------------------ import
@dataclass
class SplitSpec:
    """What the user gave for one split: a label source and/or a box file."""

    labels: Path | None = None
    boxes: Path | None = None


@dataclass
class ImportSummary:
    out: Path
    image_root: Path
    class_names: list[str]
    counts: dict[str, int]
    boxes: dict[str, int]  # boxes per split
    val_origin: str  # "given", "boxes" (images named by the val box file) or "held out"
    clipped_boxes: int = 0
    exif_rotated_boxes: int = 0
    notes: list[str] = field(default_factory=list)


def _sort_classes(names: Iterable[str]) -> list[str]:
    names = set(names)
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _common_root(paths: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def _where(image: LabeledImage) -> str:
    return f"{image.source}:{image.line}" if image.line else str(image.path)


class _Builder:
    """Collects the splits in memory and checks them before anything is written."""

    def __init__(self, image_root: Path):
        self.image_root = image_root
        self.sizes: dict[Path, tuple[int, int, int]] = {}
        self.clipped = 0
        self.rotated = 0

    def size(self, image: LabeledImage) -> tuple[int, int, int]:
        """(displayed width, displayed height, EXIF orientation)."""
        if image.path not in self.sizes:
            file, line = image.where()
            w, h, orientation = _header_size(image.path, file, line)  # type: ignore[arg-type]
            if orientation >= 5:
                w, h = h, w
            self.sizes[image.path] = (w, h, orientation)
        return self.sizes[image.path]

    def box(self, record: BoxRecord, image: LabeledImage) -> tuple[int, int, int, int]:
        """The record's box on the displayed image, rounded and clipped."""
        w, h, orientation = self.size(image)
        x0, y0, x1, y1 = record.box
        if x1 < x0 or y1 < y0:
            raise record.error(f"inverted box ({x0:g},{y0:g},{x1:g},{y1:g}): need x1 >= x0 and y1 >= y0")
        box = (round_half_up(x0), round_half_up(y0), round_half_up(x1), round_half_up(y1))
        stored = (h, w) if orientation >= 5 else (w, h)
        if record.size is not None and orientation >= 5 and record.size == stored and stored != (w, h):
            # drawn on the stored (unrotated) pixels: rotate it with the image, as the loader does
            box = exif_transpose_box(box, stored[0], stored[1], orientation)
            self.rotated += 1
        elif record.size is not None and record.size != (w, h):
            raise record.error(f"the annotation says the image is {record.size[0]}x{record.size[1]} but "
                               f"{image.path} is {w}x{h} (a resized copy?)")
        clipped = (max(0, min(box[0], w)), max(0, min(box[1], h)), max(0, min(box[2], w)), max(0, min(box[3], h)))
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            raise record.error(f"box ({x0:g},{y0:g},{x1:g},{y1:g}) is empty after rounding and clipping to the "
                               f"{w}x{h} image {image.path}")
        self.clipped += clipped != box
        return clipped

    def image_id(self, image: LabeledImage) -> str:
        image_id = image.path.relative_to(self.image_root).as_posix()
        if "," in image_id or image_id != image_id.strip() or any(c in image_id for c in "\r\n"):
            file, line = image.where()
            raise MetadataError(file, line, f"image path {image_id!r} has a comma, a line break or leading/trailing "
                                "spaces, which the comma-separated metadata cannot hold; rename the file")
        return image_id


def _assign_boxes(records: list[BoxRecord], index: _ImageIndex, split: str
                  ) -> dict[Path, list[tuple[BoxRecord, LabeledImage]]]:
    found: dict[Path, list[tuple[BoxRecord, LabeledImage]]] = {}
    for record in records:
        image = index.find(record)
        if image is None:
            raise record.error(f"image {record.key!r} is not among the {split} images")
        found.setdefault(image.path, []).append((record, image))
    return found


def _settle_labels(images: list[LabeledImage], boxes: dict[Path, list[tuple[BoxRecord, LabeledImage]]],
                   split: str) -> None:
    """An image's class: its label source's, checked against its boxes' labels; or, with none, the one
    label all its boxes carry."""
    for image in images:
        labelled = [r for r, _ in boxes.get(image.path, []) if r.label is not None]
        if image.label is None:
            names = {r.label for r in labelled}
            if len(names) != 1:
                file, line = image.where()
                raise MetadataError(file, line, f"{split} image {image.path} has no class: put it in a class folder, "
                                    "list it in a path,label CSV, or label its boxes"
                                    + (f" (its boxes name {len(names)} classes)" if names else ""))
            image.label = names.pop()
            continue
        for record in labelled:
            if record.label != image.label:
                raise record.error(f"box label {record.label!r} differs from the image's class {image.label!r} "
                                   f"({_where(image)}); WSOL needs one class per image")


def _prepare_out(out: Path, image_root: Path, overwrite: bool) -> None:
    if out.resolve() == image_root or out.resolve() in image_root.parents:
        raise MetadataError(out, None, f"the output folder holds the images ({image_root}); write the metadata to "
                            "another folder")
    if out.exists() and not out.is_dir():
        raise MetadataError(out, None, "output exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / DATASET_YAML).is_file():
            raise MetadataError(out, None, "output folder is not empty and holds no dataset.yaml; choose an empty or "
                                "new folder")
        if not overwrite:
            raise MetadataError(out, None, "output folder already holds a dataset; pass --overwrite to replace it")


def _install(tmp: Path, out: Path, splits: list[str]) -> None:
    """Move the checked splits from ``tmp`` into ``out``: a new folder is one rename; an existing
    dataset gets each split folder swapped by rename, dataset.yaml last (removed first, so it never
    points at a half-replaced set)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    (out / DATASET_YAML).unlink(missing_ok=True)
    for split in SPLITS:
        old = out / split
        trash = None
        if old.exists():
            trash = Path(tempfile.mkdtemp(dir=out, prefix=f".{split}.old."))
            os.replace(old, trash / split)
        if split in splits:
            os.replace(tmp / split, old)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    os.replace(tmp / DATASET_YAML, out / DATASET_YAML)
    shutil.rmtree(tmp, ignore_errors=True)


def import_dataset(out: str | os.PathLike, train: SplitSpec, val: SplitSpec | None = None,
                   test: SplitSpec | None = None, image_root: str | os.PathLike | None = None,
                   val_fraction: float = 0.1, seed: int = 0, name: str = "", overwrite: bool = False) -> ImportSummary:
    """Read, check and write ``out/{train,val,test}`` and ``out/dataset.yaml``; see the module doc."""
    out = Path(out)
    val, test = val or SplitSpec(), test or SplitSpec()
    if train.labels is None:
        raise MetadataError(Path("."), None, "train needs image-level labels (a folder of class folders or a CSV)")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    root_arg = Path(image_root).resolve() if image_root is not None else None
    sources = {"train": read_labels(train.labels, root_arg)}
    for split, spec in (("val", val), ("test", test)):
        if spec.labels is not None:
            sources[split] = read_labels(spec.labels, root_arg)
    all_images = [im for ims in sources.values() for im in ims]
    root = root_arg or _common_root([im.path for im in all_images])
    for im in all_images:
        if root not in im.path.parents:
            file, line = im.where()
            raise MetadataError(file, line, f"image {im.path} is outside the image root {root}")
    _prepare_out(out, root, overwrite)
    builder = _Builder(root)

    # boxes: matched within their split's images, or (no source given) picked out of train
    box_records = {split: read_boxes(spec.boxes) for split, spec in (("val", val), ("test", test)) if spec.boxes}
    picked: set[Path] = set()
    split_images: dict[str, list[LabeledImage]] = {}
    split_boxes: dict[str, dict[Path, list[tuple[BoxRecord, LabeledImage]]]] = {}
    for split in ("val", "test"):
        if split not in box_records:
            continue
        pool = sources.get(split, sources["train"])
        found = _assign_boxes(box_records[split], _ImageIndex(pool, root), split if split in sources else "train")
        split_boxes[split] = found
        if split not in sources:
            chosen = [im for im in pool if im.path in found]
            clash = picked & {im.path for im in chosen}
            if clash:
                raise MetadataError(box_records[split][0].file, None, f"image {min(clash)} has boxes in both "
                                    "the val and the test box files")
            picked |= {im.path for im in chosen}
            split_images[split] = chosen
    for split in ("val", "test"):
        if split in sources:
            split_images[split] = sources[split]
            picked |= {im.path for im in sources[split]}  # a val/test image inside the train folder leaves train
    train_images = [im for im in sources["train"] if im.path not in picked]
    moved = len(sources["train"]) - len(train_images)
    for split, images in split_images.items():
        _settle_labels(images, split_boxes.get(split, {}), split)
    _settle_labels(train_images, {}, "train")

    classes = _sort_classes(im.label for im in train_images)
    class_id = {c: i for i, c in enumerate(classes)}
    val_origin = "given" if val.labels is not None else ("boxes" if "val" in split_images else "held out")
    if val_origin == "held out":
        held = stratified_holdout([class_id[im.label] for im in train_images], val_fraction, seed)
        split_images["val"] = [im for i, im in enumerate(train_images) if i in held]
        train_images = [im for i, im in enumerate(train_images) if i not in held]
    split_images["train"] = train_images

    seen: dict[Path, str] = {}
    for split in SPLITS:
        for im in split_images.get(split, []):
            if im.path in seen and seen[im.path] != split:
                file, line = im.where()
                raise MetadataError(file, line, f"image {im.path} is in both {seen[im.path]} and {split}")
            seen[im.path] = split
            if im.label not in class_id:
                file, line = im.where()
                raise MetadataError(file, line, f"class {im.label!r} of {split} image {im.path} does not occur in "
                                    f"train (train classes: {', '.join(classes[:8])}{' ...' if len(classes) > 8 else ''})")
    if not split_images["train"]:
        raise MetadataError(Path(train.labels), None, "no training images left after taking out val/test")
    if len(classes) < 2:
        raise MetadataError(Path(train.labels), None, f"train has {len(classes)} class; WSOL needs at least 2")

    metas: dict[str, Metadata] = {}
    box_counts: dict[str, int] = {}
    for split in SPLITS:
        images = split_images.get(split, [])
        if not images:
            continue
        images = sorted(images, key=lambda im: builder.image_id(im))
        ids = [builder.image_id(im) for im in images]
        sizes = {i: builder.size(im)[:2] for i, im in zip(ids, images)}
        boxes: dict[str, list[tuple[int, int, int, int]]] = {}
        found = split_boxes.get(split, {})
        if found:
            missing = [im for im in images if im.path not in found]
            if missing:
                file, line = missing[0].where()
                raise MetadataError(file, line, f"{split} image {missing[0].path} has no box in "
                                    f"{box_records[split][0].file} ({len(missing)} of {len(images)} {split} images have "
                                    "none); every image of a split with boxes needs at least one")
            for i, im in zip(ids, images):
                boxes[i] = [builder.box(record, im) for record, _ in found[im.path]]
        metas[split] = Metadata(image_ids=ids, class_labels={i: class_id[im.label] for i, im in zip(ids, images)},
                                image_sizes=sizes, boxes=boxes, num_classes=len(classes))
        box_counts[split] = sum(len(b) for b in boxes.values())

    notes = []
    if moved:
        notes.append(f"{moved} image(s) of the train source belong to val/test and were left out of train")
    if "val" not in metas:
        notes.append("no val split (val fraction 0 and no val source): training needs one")
    elif not box_counts.get("val"):
        notes.append("val has no boxes: training picks checkpoints by val/top1_cls and `kdcicam evaluate` needs "
                     "--box-threshold T for Top-1/GT-known Loc; give --val-boxes to choose the threshold on val")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.import."))
    try:
        for split, meta in metas.items():
            write_metadata(meta, tmp / split)
            read_metadata(tmp / split, image_root=root, num_classes=len(classes))  # the package's own reader agrees
        extra = {"imported_from": {s: {k: str(v) for k, v in (("labels", spec.labels), ("boxes", spec.boxes)) if v}
                                   for s, spec in (("train", train), ("val", val), ("test", test))
                                   if spec.labels or spec.boxes},
                 "val_origin": val_origin, "box_convention": BOX_CONVENTION}
        if val_origin == "held out":
            extra.update(val_fraction=float(val_fraction), seed=int(seed))
        info = DatasetInfo(image_root=root, class_names=classes, splits=list(metas), name=name or out.name, extra=extra)
        write_dataset_info(tmp, info)
        _install(tmp, out, list(metas))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts = {s: len(m) for s, m in metas.items()}
    per_class = Counter(metas["train"].class_labels.values())
    if min(per_class.get(c, 0) for c in range(len(classes))) < 5:
        rare = [classes[c] for c in range(len(classes)) if per_class.get(c, 0) < 5]
        notes.append(f"{len(rare)} class(es) have fewer than 5 training images (e.g. {rare[0]!r})")
    return ImportSummary(out=out, image_root=root, class_names=classes, counts=counts, boxes=box_counts,
                         val_origin=val_origin, clipped_boxes=builder.clipped, exif_rotated_boxes=builder.rotated,
                         notes=notes)
