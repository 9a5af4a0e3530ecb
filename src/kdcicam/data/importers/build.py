"""The import itself: the splits read, checked together and written as wsolevaluation metadata, all or nothing
(see the package's doc for the decisions)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..cub import _header_size, exif_transpose_box, stratified_holdout
from ..metadata import (
    DATASET_YAML,
    DatasetInfo,
    Metadata,
    MetadataError,
    read_metadata,
    write_dataset_info,
    write_metadata,
)
from ..numbers import round_half_up
from .boxes import BoxRecord, _ImageIndex, read_boxes
from .labels import LabeledImage, read_labels

BOX_CONVENTION = (
    "x0=round_half_up(x0), y0=round_half_up(y0), x1=round_half_up(x1), y1=round_half_up(y1), "
    "clipped to the image; VOC xmin/ymin are 1-based (x0 = xmin - 1); COCO x1 = x + width"
)


SPLITS = ("train", "val", "test")


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
            raise record.error(
                f"the annotation says the image is {record.size[0]}x{record.size[1]} but "
                f"{image.path} is {w}x{h} (a resized copy?)"
            )
        clipped = (
            max(0, min(box[0], w)),
            max(0, min(box[1], h)),
            max(0, min(box[2], w)),
            max(0, min(box[3], h)),
        )
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            raise record.error(
                f"box ({x0:g},{y0:g},{x1:g},{y1:g}) is empty after rounding and clipping to the "
                f"{w}x{h} image {image.path}"
            )
        self.clipped += clipped != box
        return clipped

    def image_id(self, image: LabeledImage) -> str:
        image_id = image.path.relative_to(self.image_root).as_posix()
        if "," in image_id or image_id != image_id.strip() or any(c in image_id for c in "\r\n"):
            file, line = image.where()
            raise MetadataError(
                file,
                line,
                f"image path {image_id!r} has a comma, a line break or leading/trailing "
                "spaces, which the comma-separated metadata cannot hold; rename the file",
            )
        return image_id


def _assign_boxes(
    records: list[BoxRecord], index: _ImageIndex, split: str
) -> dict[Path, list[tuple[BoxRecord, LabeledImage]]]:
    found: dict[Path, list[tuple[BoxRecord, LabeledImage]]] = {}
    for record in records:
        image = index.find(record)
        if image is None:
            raise record.error(f"image {record.key!r} is not among the {split} images")
        found.setdefault(image.path, []).append((record, image))
    return found


def _settle_labels(
    images: list[LabeledImage], boxes: dict[Path, list[tuple[BoxRecord, LabeledImage]]], split: str
) -> None:
    """An image's class: its label source's, checked against its boxes' labels; or, with none, the one
    label all its boxes carry."""
    for image in images:
        labelled = [r for r, _ in boxes.get(image.path, []) if r.label is not None]
        if image.label is None:
            names = {r.label for r in labelled}
            if len(names) != 1:
                file, line = image.where()
                raise MetadataError(
                    file,
                    line,
                    f"{split} image {image.path} has no class: put it in a class folder, "
                    "list it in a path,label CSV, or label its boxes"
                    + (f" (its boxes name {len(names)} classes)" if names else ""),
                )
            image.label = names.pop()
            continue
        for record in labelled:
            if record.label != image.label:
                raise record.error(
                    f"box label {record.label!r} differs from the image's class {image.label!r} "
                    f"({_where(image)}); WSOL needs one class per image"
                )


def _prepare_out(out: Path, image_root: Path, overwrite: bool) -> None:
    if out.resolve() == image_root or out.resolve() in image_root.parents:
        raise MetadataError(
            out,
            None,
            f"the output folder holds the images ({image_root}); write the metadata to another folder",
        )
    if out.exists() and not out.is_dir():
        raise MetadataError(out, None, "output exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / DATASET_YAML).is_file():
            raise MetadataError(
                out,
                None,
                "output folder is not empty and holds no dataset.yaml; choose an empty or new folder",
            )
        if not overwrite:
            raise MetadataError(
                out, None, "output folder already holds a dataset; pass --overwrite to replace it"
            )


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


Placed = dict[Path, list[tuple[BoxRecord, LabeledImage]]]


def _read_sources(
    train_labels: Path, val: SplitSpec, test: SplitSpec, image_root: str | os.PathLike | None
) -> tuple[dict[str, list[LabeledImage]], Path]:
    """Step 1: every label source, and the image root they all lie under (given, else their common folder)."""
    root_arg = Path(image_root).resolve() if image_root is not None else None
    sources = {"train": read_labels(train_labels, root_arg)}
    for split, spec in (("val", val), ("test", test)):
        if spec.labels is not None:
            sources[split] = read_labels(spec.labels, root_arg)
    all_images = [im for ims in sources.values() for im in ims]
    root = root_arg or _common_root([im.path for im in all_images])
    for im in all_images:
        if root not in im.path.parents:
            file, line = im.where()
            raise MetadataError(file, line, f"image {im.path} is outside the image root {root}")
    return sources, root


def _place_boxes(
    box_records: dict[str, list[BoxRecord]], sources: dict[str, list[LabeledImage]], root: Path
) -> tuple[dict[str, list[LabeledImage]], dict[str, Placed], set[Path]]:
    """Step 2: the val/test images and their boxes. Boxes are matched within their split's images, or (no
    source
    given for the split) pick its images out of train; a val/test image inside the train folder leaves train.
    Returns the images per split, the boxes per split and image, and every image taken out of train."""
    picked: set[Path] = set()
    split_images: dict[str, list[LabeledImage]] = {}
    split_boxes: dict[str, Placed] = {}
    for split in ("val", "test"):
        if split not in box_records:
            continue
        pool = sources.get(split, sources["train"])
        found = _assign_boxes(
            box_records[split], _ImageIndex(pool, root), split if split in sources else "train"
        )
        split_boxes[split] = found
        if split not in sources:
            chosen = [im for im in pool if im.path in found]
            clash = picked & {im.path for im in chosen}
            if clash:
                raise MetadataError(
                    box_records[split][0].file,
                    None,
                    f"image {min(clash)} has boxes in both the val and the test box files",
                )
            picked |= {im.path for im in chosen}
            split_images[split] = chosen
    for split in ("val", "test"):
        if split in sources:
            split_images[split] = sources[split]
            picked |= {im.path for im in sources[split]}
    return split_images, split_boxes, picked


def _split_val(
    split_images: dict[str, list[LabeledImage]],
    train_images: list[LabeledImage],
    val: SplitSpec,
    val_fraction: float,
    seed: int,
) -> tuple[list[str], dict[str, int], str]:
    """Step 3: the classes (train's labels, sorted) and, where val was neither given nor named by a box file,
    a
    per-class seeded hold-out of train (``split_images`` gets ``train`` and ``val``). Returns the classes,
    their
    ids and where val came from."""
    # every label is settled by now (_settle_labels): str() only tells the type checker so
    classes = _sort_classes(str(im.label) for im in train_images)
    class_id = {c: i for i, c in enumerate(classes)}
    val_origin = "given" if val.labels is not None else ("boxes" if "val" in split_images else "held out")
    if val_origin == "held out":
        held = stratified_holdout([class_id[str(im.label)] for im in train_images], val_fraction, seed)
        split_images["val"] = [im for i, im in enumerate(train_images) if i in held]
        train_images = [im for i, im in enumerate(train_images) if i not in held]
    split_images["train"] = train_images
    return classes, class_id, val_origin


def _check_splits(
    split_images: dict[str, list[LabeledImage]],
    classes: list[str],
    class_id: dict[str, int],
    train_labels: Path,
) -> None:
    """Step 4: no image in two splits, no class that train never shows, images left to train on, two
    classes."""
    seen: dict[Path, str] = {}
    for split in SPLITS:
        for im in split_images.get(split, []):
            if im.path in seen and seen[im.path] != split:
                file, line = im.where()
                raise MetadataError(file, line, f"image {im.path} is in both {seen[im.path]} and {split}")
            seen[im.path] = split
            if im.label not in class_id:
                file, line = im.where()
                raise MetadataError(
                    file,
                    line,
                    f"class {im.label!r} of {split} image {im.path} does not occur in "
                    f"train (train classes: {', '.join(classes[:8])}"
                    f"{' ...' if len(classes) > 8 else ''})",
                )
    if not split_images["train"]:
        raise MetadataError(train_labels, None, "no training images left after taking out val/test")
    if len(classes) < 2:
        raise MetadataError(train_labels, None, f"train has {len(classes)} class; WSOL needs at least 2")


def _split_metadata(
    split_images: dict[str, list[LabeledImage]],
    split_boxes: dict[str, Placed],
    box_records: dict[str, list[BoxRecord]],
    builder: _Builder,
    class_id: dict[str, int],
) -> tuple[dict[str, Metadata], dict[str, int]]:
    """Step 5: each split's metadata (image ids under the image root, displayed sizes, rounded and clipped
    boxes), every image of a split with boxes having at least one. Returns it with the box count per split."""
    metas: dict[str, Metadata] = {}
    box_counts: dict[str, int] = {}
    for split in SPLITS:
        images = split_images.get(split, [])
        if not images:
            continue
        images = sorted(images, key=lambda im: builder.image_id(im))
        ids = [builder.image_id(im) for im in images]
        sizes = {i: builder.size(im)[:2] for i, im in zip(ids, images, strict=True)}
        boxes: dict[str, list[tuple[float, float, float, float]]] = {}
        found = split_boxes.get(split, {})
        if found:
            missing = [im for im in images if im.path not in found]
            if missing:
                file, line = missing[0].where()
                raise MetadataError(
                    file,
                    line,
                    f"{split} image {missing[0].path} has no box in "
                    f"{box_records[split][0].file} ({len(missing)} of {len(images)} {split} images "
                    "have none); every image of a split with boxes needs at least one",
                )
            for i, im in zip(ids, images, strict=True):
                boxes[i] = [builder.box(record, im) for record, _ in found[im.path]]
        labels = {i: class_id[str(im.label)] for i, im in zip(ids, images, strict=True)}
        metas[split] = Metadata(
            image_ids=ids, class_labels=labels, image_sizes=sizes, boxes=boxes, num_classes=len(class_id)
        )
        box_counts[split] = sum(len(b) for b in boxes.values())
    return metas, box_counts


def _write(out: Path, metas: dict[str, Metadata], info: DatasetInfo) -> None:
    """Step 6: the splits written to a temporary folder beside ``out``, read back with the package's own
    reader,
    then renamed into place; on any error the temporary folder is removed and ``out`` is as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.import."))
    try:
        for split, meta in metas.items():
            write_metadata(meta, tmp / split)
            read_metadata(tmp / split, image_root=info.image_root, num_classes=len(info.class_names))
        write_dataset_info(tmp, info)
        _install(tmp, out, list(metas))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def import_dataset(
    out: str | os.PathLike,
    train: SplitSpec,
    val: SplitSpec | None = None,
    test: SplitSpec | None = None,
    image_root: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    name: str = "",
    overwrite: bool = False,
) -> ImportSummary:
    """Read, check and write ``out/{train,val,test}`` and ``out/dataset.yaml``; see the package's doc."""
    out = Path(out)
    val, test = val or SplitSpec(), test or SplitSpec()
    if train.labels is None:
        raise MetadataError(
            Path("."), None, "train needs image-level labels (a folder of class folders or a CSV)"
        )
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    sources, root = _read_sources(train.labels, val, test, image_root)
    _prepare_out(out, root, overwrite)
    builder = _Builder(root)

    box_records = {
        split: read_boxes(spec.boxes) for split, spec in (("val", val), ("test", test)) if spec.boxes
    }
    split_images, split_boxes, picked = _place_boxes(box_records, sources, root)
    train_images = [im for im in sources["train"] if im.path not in picked]
    moved = len(sources["train"]) - len(train_images)
    for split, images in split_images.items():
        _settle_labels(images, split_boxes.get(split, {}), split)
    _settle_labels(train_images, {}, "train")

    classes, class_id, val_origin = _split_val(split_images, train_images, val, val_fraction, seed)
    _check_splits(split_images, classes, class_id, Path(train.labels))
    metas, box_counts = _split_metadata(split_images, split_boxes, box_records, builder, class_id)

    notes = []
    if moved:
        notes.append(f"{moved} image(s) of the train source belong to val/test and were left out of train")
    if "val" not in metas:
        notes.append("no val split (val fraction 0 and no val source): training needs one")
    elif not box_counts.get("val"):
        notes.append(
            "val has no boxes: training picks checkpoints by val/top1_cls and `kdcicam evaluate` needs "
            "--box-threshold T for Top-1/GT-known Loc; give --val-boxes to choose the threshold on val"
        )
    extra: dict[str, object] = {
        "imported_from": {
            s: {k: str(v) for k, v in (("labels", spec.labels), ("boxes", spec.boxes)) if v}
            for s, spec in (("train", train), ("val", val), ("test", test))
            if spec.labels or spec.boxes
        },
        "val_origin": val_origin,
        "box_convention": BOX_CONVENTION,
    }
    if val_origin == "held out":
        extra.update(val_fraction=float(val_fraction), seed=int(seed))
    _write(
        out,
        metas,
        DatasetInfo(
            image_root=root, class_names=classes, splits=list(metas), name=name or out.name, extra=extra
        ),
    )
    counts = {s: len(m) for s, m in metas.items()}
    per_class = Counter(metas["train"].class_labels.values())
    if min(per_class.get(c, 0) for c in range(len(classes))) < 5:
        rare = [classes[c] for c in range(len(classes)) if per_class.get(c, 0) < 5]
        notes.append(f"{len(rare)} class(es) have fewer than 5 training images (e.g. {rare[0]!r})")
    return ImportSummary(
        out=out,
        image_root=root,
        class_names=classes,
        counts=counts,
        boxes=box_counts,
        val_origin=val_origin,
        clipped_boxes=builder.clipped,
        exif_rotated_boxes=builder.rotated,
        notes=notes,
    )
