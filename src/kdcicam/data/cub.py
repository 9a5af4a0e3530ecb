"""CUB-200-2011 tree → wsolevaluation metadata (``train`` / ``val`` / ``test``).

Works on the full dataset and on any class subset with the original file layout (e.g. cub50):
``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt``, ``bounding_boxes.txt``,
``classes.txt`` and ``images/``. Images are referenced where they are (``dataset.yaml`` stores the
absolute ``SRC/images``), never copied.

Decisions, so that results are reproducible and comparable:

- **Classes** are the ones that have images, remapped to ``0..C-1`` in ascending original-id order.
  Names are kept verbatim (``"001.Black_footed_Albatross"``): they equal the image folder names and
  stay unambiguous when a subset is used.
- **val** is a per-class hold-out from the official train split: ``round_half_up(val_fraction * n)``
  images of each class (at most ``n - 1``), picked by a numpy ``Generator`` seeded with
  ``(seed, original class id)`` over the class's image ids in ascending order, so it is the same on
  every run and platform. **test** is the official test split, unchanged.
- **Boxes**: CUB stores ``x y w h`` (decimals in reduced copies). wsolevaluation's reader calls
  ``int()`` on coordinates, so we write integers, rounding half-up (see :data:`BOX_ROUNDING`), then
  clip to the image (the original annotations overshoot the border by up to 32 px).
- **Image sizes** come from the image files' headers (no decoding). An EXIF orientation tag is
  honoured as :func:`kdcicam.data.dataset.load_image_rgb` does: size and box are transposed with
  the pixels, so boxes stay on the object the loader shows. A shipped ``image_sizes.txt`` (cub50)
  must agree with the headers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .metadata import (
    DatasetInfo,
    Metadata,
    MetadataError,
    check_relative_path,
    read_metadata,
    read_text_file,
    write_dataset_info,
    write_metadata,
)
from .numbers import parse_number, round_half_up

BOX_ROUNDING = "x0=int(x+0.5), y0=int(y+0.5), x1=int(x+w+0.5), y1=int(y+h+0.5) (round half-up), clipped to the image"

_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt")
_EXIF_ORIENTATION = 0x0112


@dataclass
class _Image:
    line: int  # line in images.txt
    path: str
    label: int = -1  # original class id
    is_train: bool = False
    box_xywh: tuple[float, float, float, float] | None = None
    box_line: int = 0


def _rows(path: Path, nfields: int, what: str) -> list[tuple[int, list[str]]]:
    """(line, fields) of a whitespace-separated CUB file; the last field may contain spaces."""
    text = read_text_file(path, missing="file not found (is this a CUB-200-2011 folder?)")
    rows = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        fields = raw.split(maxsplit=nfields - 1)
        if len(fields) != nfields:
            raise MetadataError(path, number, f"malformed line: expected {nfields} fields ({what}), got {len(fields)}")
        rows.append((number, fields))
    return rows


def _int(value: str, path: Path, line: int, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise MetadataError(path, line, f"{what} {value!r} is not an integer") from None


def cub_box_to_xyxy(x: float, y: float, w: float, h: float) -> tuple[int, int, int, int]:
    """CUB ``x y w h`` → integer ``(x0, y0, x1, y1)`` as in :data:`BOX_ROUNDING` (before clipping)."""
    return round_half_up(x), round_half_up(y), round_half_up(x + w), round_half_up(y + h)


def exif_transpose_box(box: tuple[int, int, int, int], width: int, height: int,
                       orientation: int) -> tuple[int, int, int, int]:
    """Map a box on the stored pixels (``width`` × ``height``) through the EXIF orientation
    transposition that ``PIL.ImageOps.exif_transpose`` applies."""
    x0, y0, x1, y1 = box
    W, H = width, height
    if orientation == 2:  # mirror horizontal
        return W - x1, y0, W - x0, y1
    if orientation == 3:  # rotate 180
        return W - x1, H - y1, W - x0, H - y0
    if orientation == 4:  # mirror vertical
        return x0, H - y1, x1, H - y0
    if orientation == 5:  # transpose
        return y0, x0, y1, x1
    if orientation == 6:  # displayed = stored rotated 90° clockwise
        return H - y1, x0, H - y0, x1
    if orientation == 7:  # transverse
        return H - y1, W - x1, H - y0, W - x0
    if orientation == 8:  # displayed = stored rotated 90° counter-clockwise
        return y0, W - x1, y1, W - x0
    return box


def _header_size(path: Path, images_txt: Path, line: int) -> tuple[int, int, int]:
    """(stored width, stored height, EXIF orientation) from the file header, without decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise MetadataError(images_txt, line, f"image file {str(path)!r} not found")
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MetadataError(images_txt, line, f"cannot read image header of {str(path)!r}: {e}") from None
    return width, height, orientation if 1 <= orientation <= 8 else 1


def _read_tree(src: Path) -> tuple[dict[int, _Image], dict[int, str]]:
    images_txt = src / "images.txt"
    images: dict[int, _Image] = {}
    paths: dict[str, int] = {}
    for line, (id_s, rel) in _rows(images_txt, 2, "image_id path"):
        image_id = _int(id_s, images_txt, line, "image id")
        if image_id in images:
            raise MetadataError(images_txt, line, f"duplicate image id {image_id} (first on line {images[image_id].line})")
        rel = check_relative_path(rel.strip(), images_txt, line, "image path")
        if rel in paths:
            raise MetadataError(images_txt, line, f"duplicate image path {rel!r} (first on line {images[paths[rel]].line})")
        paths[rel] = image_id
        images[image_id] = _Image(line=line, path=rel)
    if not images:
        raise MetadataError(images_txt, None, "no images listed")

    def per_image(name: str, nfields: int, what: str):
        path = src / name
        seen: dict[int, int] = {}
        for line, fields in _rows(path, nfields, what):
            image_id = _int(fields[0], path, line, "image id")
            if image_id not in images:
                raise MetadataError(path, line, f"image id {image_id} is not in images.txt")
            if image_id in seen:
                raise MetadataError(path, line, f"duplicate image id {image_id} (first on line {seen[image_id]})")
            seen[image_id] = line
            yield path, line, images[image_id], fields[1:]
        missing = [i for i in images if i not in seen]
        if missing:
            raise MetadataError(path, None, f"image id {missing[0]} (line {images[missing[0]].line} of images.txt) "
                                f"has no entry here ({len(missing)} missing in all)")

    for path, line, im, (c,) in per_image("image_class_labels.txt", 2, "image_id class_id"):
        im.label = _int(c, path, line, "class id")
    for path, line, im, (flag,) in per_image("train_test_split.txt", 2, "image_id is_training_image"):
        if flag not in ("0", "1"):
            raise MetadataError(path, line, f"is_training_image must be 0 or 1, got {flag!r}")
        im.is_train = flag == "1"
    for path, line, im, coords in per_image("bounding_boxes.txt", 5, "image_id x y width height"):
        x, y, w, h = (parse_number(v, path, line, n) for v, n in zip(coords, ("x", "y", "width", "height"), strict=True))
        if x < 0 or y < 0 or w <= 0 or h <= 0:
            raise MetadataError(path, line, f"invalid box x={x:g} y={y:g} width={w:g} height={h:g}")
        im.box_xywh, im.box_line = (x, y, w, h), line

    classes_txt = src / "classes.txt"
    names: dict[int, str] = {}
    for line, (id_s, name) in _rows(classes_txt, 2, "class_id name"):
        class_id = _int(id_s, classes_txt, line, "class id")
        if class_id in names:
            raise MetadataError(classes_txt, line, f"duplicate class id {class_id}")
        names[class_id] = name.strip()
    labels_txt = src / "image_class_labels.txt"
    for im in images.values():
        if im.label not in names:
            raise MetadataError(labels_txt, None, f"class id {im.label} (image {im.path!r}) is not in classes.txt")
    return images, names


def _read_shipped_sizes(src: Path, images: dict[int, _Image]) -> dict[int, tuple[int, int, int]]:
    """Optional ``image_sizes.txt`` of reduced copies: ``id width height [orig_w orig_h]``."""
    path = src / "image_sizes.txt"
    sizes: dict[int, tuple[int, int, int]] = {}
    if not path.is_file():
        return sizes
    text = read_text_file(path)
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) not in (3, 5):
            raise MetadataError(path, number, f"malformed line: expected 3 or 5 fields, got {len(fields)}")
        image_id = _int(fields[0], path, number, "image id")
        if image_id in images:
            sizes[image_id] = (_int(fields[1], path, number, "width"), _int(fields[2], path, number, "height"), number)
    return sizes


def _val_count(n: int, val_fraction: float) -> int:
    return min(round_half_up(val_fraction * n), max(n - 1, 0))


def stratified_holdout(labels: list[int], fraction: float, seed: int) -> set[int]:
    """Indices to hold out: ``round_half_up(fraction * n)`` of each class's n items (at most n - 1),
    drawn by a numpy Generator seeded with ``(seed, class)`` over the class's items in the given order."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"hold-out fraction must be in [0, 1), got {fraction}")
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    held: set[int] = set()
    for label, items in sorted(by_class.items()):
        k = _val_count(len(items), fraction)
        if k:
            perm = np.random.default_rng([seed, label]).permutation(len(items))
            held.update(items[i] for i in perm[:k])
    return held


def convert_cub(src: str | os.PathLike, out: str | os.PathLike, val_fraction: float = 0.1,
                seed: int = 0) -> dict[str, int]:
    """Convert the CUB tree ``src`` into ``out/{train,val,test}`` metadata and ``out/dataset.yaml``.

    Returns counts: ``train``, ``val``, ``test``, ``classes``, ``clipped_boxes`` (boxes cut at the
    image border after rounding) and ``exif_transposed`` (images with an EXIF rotation/mirror tag).
    Any problem in the tree raises :class:`MetadataError` naming the file and line.
    """
    src = Path(src).resolve()
    out = Path(out)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not src.is_dir():
        raise MetadataError(src, None, "CUB folder not found")
    image_root = src / "images"
    if not image_root.is_dir():
        raise MetadataError(image_root, None, "image folder not found (is this a CUB-200-2011 folder?)")
    images, names = _read_tree(src)
    shipped = _read_shipped_sizes(src, images)

    used = sorted({im.label for im in images.values()})
    remap = {orig: new for new, orig in enumerate(used)}
    images_txt = src / "images.txt"
    boxes_txt = src / "bounding_boxes.txt"

    sizes: dict[str, tuple[int, int]] = {}
    boxes: dict[str, list[tuple[int, int, int, int]]] = {}
    clipped = transposed = 0
    for image_id, im in images.items():
        w, h, orientation = _header_size(image_root / im.path, images_txt, im.line)
        if image_id in shipped and shipped[image_id][:2] != (w, h):
            sw, sh, line = shipped[image_id]
            raise MetadataError(src / "image_sizes.txt", line, f"size {sw}x{sh} disagrees with the image file "
                                f"{im.path!r}, which is {w}x{h}")
        assert im.box_xywh is not None
        x0, y0, x1, y1 = cub_box_to_xyxy(*im.box_xywh)
        box = (max(0, min(x0, w)), max(0, min(y0, h)), max(0, min(x1, w)), max(0, min(y1, h)))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise MetadataError(boxes_txt, im.box_line, f"box ({x0},{y0},{x1},{y1}) is empty after rounding and "
                                f"clipping to the {w}x{h} image")
        clipped += box != (x0, y0, x1, y1)
        if orientation != 1:
            transposed += 1
            box = exif_transpose_box(box, w, h, orientation)
            if orientation >= 5:
                w, h = h, w
        sizes[im.path] = (w, h)
        boxes[im.path] = [box]

    # val: per-class seeded hold-out from the official train split (seeded by the original class id)
    train_ids = [i for i in sorted(images) if images[i].is_train]
    val_ids = {train_ids[k] for k in stratified_holdout([images[i].label for i in train_ids], val_fraction, seed)}

    split_ids = {
        "train": [i for i in sorted(images) if images[i].is_train and i not in val_ids],
        "val": [i for i in sorted(images) if i in val_ids],
        "test": [i for i in sorted(images) if not images[i].is_train],
    }
    class_names = [names[c] for c in used]
    dataset_yaml = out / "dataset.yaml"
    if dataset_yaml.exists():
        dataset_yaml.unlink()  # never leave a yaml pointing at half-rewritten splits
    counts: dict[str, int] = {}
    written: list[str] = []
    for split, ids in split_ids.items():
        counts[split] = len(ids)
        if not ids:
            continue
        paths = [images[i].path for i in ids]
        meta = Metadata(image_ids=paths, class_labels={images[i].path: remap[images[i].label] for i in ids},
                        image_sizes={p: sizes[p] for p in paths}, boxes={p: list(boxes[p]) for p in paths},
                        num_classes=len(used))
        write_metadata(meta, out / split)
        # a cheap self-check with the reader the rest of the package uses
        read_metadata(out / split, image_root=image_root, num_classes=len(used), check_images=False)
        written.append(split)
    write_dataset_info(out, DatasetInfo(
        image_root=image_root, class_names=class_names, splits=written, name=f"CUB-200-2011 ({len(used)} classes)",
        extra={"source": str(src), "val_fraction": float(val_fraction), "seed": int(seed),
               "box_rounding": BOX_ROUNDING, "original_class_ids": list(used)}))
    counts.update(classes=len(used), clipped_boxes=clipped, exif_transposed=transposed)
    return counts
