"""Boxes of a split as annotation files state them (CSV, Pascal VOC, COCO JSON), and the matching of each
box to the split's image it names. Every problem names the file and the line (in JSON and XML, the entry)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NoReturn
from xml.parsers import expat

from ..metadata import MetadataError, read_text_file
from ..numbers import parse_number
from .labels import _PATH_HEADERS, LabeledImage, _absolute, _csv_rows


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
            raise MetadataError(
                path,
                number,
                f"malformed line: expected 5 or 6 fields (path,x0,y0,x1,y1[,label]), got {len(fields)}",
            )
        if not fields[0]:
            raise MetadataError(path, number, "empty image path")
        x0, y0, x1, y1 = (
            parse_number(v, path, number, n)
            for v, n in zip(fields[1:5], ("x0", "y0", "x1", "y1"), strict=False)
        )
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

    def refuse(*_args: object) -> NoReturn:
        raise MetadataError(
            path,
            parser.CurrentLineNumber,
            "DOCTYPE / entity declarations are refused in annotation files (they could expand entities)",
        )

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
        records.append(
            BoxRecord(
                key=filename,
                box=(xmin - 1, ymin - 1, xmax, ymax),
                label=label,
                file=path,
                line=bnd.line,
                entry=entry,
                size=size,
                alt_keys=alt,
            )
        )
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
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise MetadataError(path, None, "expected a COCO object with 'images' and 'annotations' lists")
    categories: dict[object, str] = {}
    for k, cat in enumerate(data.get("categories") or []):
        if not isinstance(cat, dict) or "id" not in cat or not isinstance(cat.get("name"), str):
            raise MetadataError(
                path, None, f"categories[{k}]: expected an object with 'id' and a string 'name'"
            )
        categories[cat["id"]] = cat["name"]
    images: dict[object, tuple[str, tuple[int, int] | None]] = {}
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise MetadataError(
                path, None, f"images[{k}]: expected an object with 'id' and a string 'file_name'"
            )
        if im["id"] in images:
            raise MetadataError(path, None, f"images[{k}]: duplicate image id {im['id']!r}")
        w, h = im.get("width"), im.get("height")
        size = (
            (int(w), int(h))
            if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0
            else None
        )
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
        x, y, w, h = (
            parse_number(v, path, None, n, entry=entry)
            for v, n in zip(bbox, ("x", "y", "width", "height"), strict=False)
        )
        if w < 0 or h < 0:
            raise MetadataError(path, None, f"{entry}: negative width or height in bbox {bbox!r}")
        cat = ann.get("category_id")
        if cat is not None and categories and cat not in categories:
            raise MetadataError(path, None, f"{entry}: category_id {cat!r} is not in 'categories'")
        file_name, size = images[ann["image_id"]]
        records.append(
            BoxRecord(
                key=file_name,
                box=(x, y, x + w, y + h),
                label=categories.get(cat),
                file=path,
                line=None,
                entry=entry,
                size=size,
            )
        )
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
    raise MetadataError(
        path,
        None,
        "unknown box format: give a .csv (path,x0,y0,x1,y1[,label]), a COCO .json, "
        "or a Pascal VOC .xml file or folder",
    )


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
            raise record.error(
                f"image {record.key!r} matches {len(matches)} images by file name "
                f"({matches[0].path}, {matches[1].path}, ...); write its path instead"
            )
        return matches[0] if matches else None
