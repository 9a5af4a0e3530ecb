"""The fish-and-water test on real photos: each object moved onto another class's habitat.

For every image of a split (``test`` by default) of a CUB-style dataset, the object's box region is
pasted, at the same place and scale, onto a **background canvas**: the largest bird-free strip of an
image of *another* class (a warbler over an albatross's sea), cropped to the object image's aspect
ratio and resized to its size. The host's own object is never in the canvas: the strip lies outside
its box grown by ``margin``. Boxes and masks are exact: the pasted region is the object's integer box,
and the feathered edge is a linear ramp of width ``feather`` (a fraction of the box's shorter side)
centred on the box border, so that the blend weight is above one half on exactly the box's pixels,
which are the mask (a rectangle) and the box written.

Splits written, all **paired** (the same objects in each, in the same order; an object for which some
composite finds no host is left out of all of them and counted):

- ``<split>_original``: the object images themselves, their bytes unchanged: the baseline.
- ``<split>_conflict``: the probe.

Controls (``control=True``), on the same canvases with the same seams:

- ``<split>_same``: the object pasted onto the background of another image of **its own** class. The
  same cut, resampling and seams as the probe with the habitat left consistent, so that
  "``_same`` minus ``_conflict``" measures the habitat and "original minus ``_same``" the pasting.
- ``<split>_seam``: no object at all: a background patch of a third class's image pasted, at the
  object's box and with the same feathering, onto the probe's canvas; its mask/box is the patch. A
  CAM drawn to seams puts more of its mass inside the box, or on its border, than it does on
  ``_canvas``. Labels are the object's class, so the CAM scored is the one the probe scores at that place.
- ``<split>_canvas``: the probe's canvas exactly as the probe and ``_seam`` use it, nothing pasted; box,
  mask and label are the object's. The counterfactual of both: ``_seam`` minus ``_canvas`` at the box is
  what pasting a patch does to a CAM, ``_conflict`` minus ``_canvas`` what pasting the bird does, image
  by image (a CAM's centre bias and the canvas's own content cancel).

Choices are deterministic (seeded numpy generators per image and purpose). A host must leave a large
enough background strip (its crop upscaled by at most ``max_upscale``). Output:
``images/<split>/<source path>.jpg`` (JPEG, fixed quality: the whole composite is re-encoded once, like
the source JPEGs; or PNG, lossless) and ``_mask.png``, metadata per split, ``paste_sources.txt``
(``path,object_image,background_image,patch_image``) and ``dataset.yaml``, written last.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import ConfigError
from .atomic import atomic_write_bytes
from .metadata import (
    DATASET_YAML,
    Box,
    DatasetInfo,
    Metadata,
    MetadataError,
    atomic_write_text,
    read_dataset_info,
    read_metadata,
    write_dataset_info,
    write_metadata,
)

SOURCES_FILE = "paste_sources.txt"
_STREAM = {"conflict": 0, "same": 1, "seam": 2}
IntBox = tuple[int, int, int, int]


@dataclass
class ConflictConfig:
    """Why each default: feather 0.05 hides the cut without smearing the object; max_upscale 2 keeps the
    canvas about as sharp as the object (a blurry habitat would be a cue of its own)."""

    split: str = "test"
    seed: int = 0
    #: width of the blend ramp, a fraction of the box's shorter side (0: a hard cut)
    feather: float = 0.05
    #: the host's box grown by this fraction of its longer side before a background strip is sought
    margin: float = 0.02
    #: the background crop may be upscaled by at most this factor to the object image's size
    max_upscale: float = 2.0
    #: also write the ``_same``, ``_seam`` and ``_canvas`` control splits
    control: bool = False
    #: "jpg" (the source photos' kind, re-encoded once as a whole) or "png" (lossless: exact pixels)
    image_format: str = "jpg"
    jpeg_quality: int = 95
    #: only the first N images of the split (quick looks, tests); 0 = all
    limit: int = 0

    def validate(self) -> None:
        if not 0.0 <= self.feather <= 0.5:
            raise ConfigError(f"--feather must be in [0, 0.5], got {self.feather}")
        if not 0.0 <= self.margin <= 0.25:
            raise ConfigError(f"--margin must be in [0, 0.25], got {self.margin}")
        if not self.max_upscale >= 1.0:
            raise ConfigError(f"--max-upscale must be >= 1, got {self.max_upscale}")
        if self.image_format not in ("jpg", "png"):
            raise ConfigError(f"--format must be jpg or png, got {self.image_format!r}")
        if not 50 <= self.jpeg_quality <= 100:
            raise ConfigError(f"--quality must be in 50..100, got {self.jpeg_quality}")
        if self.limit < 0:
            raise ConfigError(f"--limit must be >= 0, got {self.limit}")


# -------------------------------------------------------------------------------------------- geometry
def integer_box(boxes: list[tuple[float, float, float, float]], size: tuple[int, int]) -> IntBox:
    """The tight integer box (round half-up) around an image's GT boxes, clipped to the image."""
    w, h = size
    x0 = min(math.floor(b[0] + 0.5) for b in boxes)
    y0 = min(math.floor(b[1] + 0.5) for b in boxes)
    x1 = max(math.floor(b[2] + 0.5) for b in boxes)
    y1 = max(math.floor(b[3] + 0.5) for b in boxes)
    return max(0, min(x0, w)), max(0, min(y0, h)), max(0, min(x1, w)), max(0, min(y1, h))


def background_crop(size: tuple[int, int], box: IntBox, margin: float,
                    target: tuple[int, int]) -> tuple[IntBox, float] | None:
    """The largest crop of aspect ``target`` (w, h) inside one of the four strips of an image of
    ``size`` that avoid ``box`` grown by ``margin``; with the factor it must be upscaled by to reach
    ``target``. None when no strip holds a crop of 8 px or more."""
    W, H = size
    tw, th = target
    grow = margin * max(W, H)
    gx0, gy0 = max(0, math.floor(box[0] - grow)), max(0, math.floor(box[1] - grow))
    gx1, gy1 = min(W, math.ceil(box[2] + grow)), min(H, math.ceil(box[3] + grow))
    strips = [(0, 0, gx0, H), (gx1, 0, W, H), (0, 0, W, gy0), (0, gy1, W, H)]
    best: tuple[IntBox, float] | None = None
    for sx0, sy0, sx1, sy1 in strips:
        sw, sh = sx1 - sx0, sy1 - sy0
        if sw <= 0 or sh <= 0:
            continue
        if sw * th > sh * tw:  # strip wider than the target: full height
            cw, ch = max(1, min(sw, round(sh * tw / th))), sh
        else:
            cw, ch = sw, max(1, min(sh, round(sw * th / tw)))
        if min(cw, ch) < 8:
            continue
        cx0, cy0 = sx0 + (sw - cw) // 2, sy0 + (sh - ch) // 2
        scale = max(tw / cw, th / ch)
        if best is None or scale < best[1]:
            best = ((cx0, cy0, cx0 + cw, cy0 + ch), scale)
    return best


def feathered_alpha(size: tuple[int, int], box: IntBox, feather_px: float) -> np.ndarray:
    """Blend weight [H, W] in [0, 1]: a ramp of width ``feather_px`` centred on the box border, so that
    the weight is > 0.5 exactly on the box's pixels (0 px: the box's indicator)."""
    W, H = size
    x0, y0, x1, y1 = box
    xs = np.arange(W) + 0.5
    ys = np.arange(H) + 0.5
    dx = np.minimum(xs - x0, x1 - xs)
    dy = np.minimum(ys - y0, y1 - ys)
    d = np.minimum(dy[:, None], dx[None, :])  # signed distance to the border, positive inside
    if feather_px <= 0:
        return (d > 0).astype(np.float64)
    return np.clip(0.5 + d / feather_px, 0.0, 1.0)


# -------------------------------------------------------------------------------------------- planning
@dataclass
class _Item:
    image_id: str
    label: int
    size: tuple[int, int]
    box: IntBox


def _pick_host(rng: np.random.Generator, items: list[_Item], by_class: dict[int, list[int]], index: int,
               classes: list[int], cfg: ConflictConfig, exclude: set[int]) -> tuple[int, IntBox] | None:
    """A host among ``classes`` (tried in a seeded order, images too) whose background crop fits."""
    target = items[index].size
    for c in rng.permutation(classes):
        pool = by_class[int(c)]
        for j in rng.permutation(len(pool)):
            host = pool[int(j)]
            if host in exclude:
                continue
            found = background_crop(items[host].size, items[host].box, cfg.margin, target)
            if found is not None and found[1] <= cfg.max_upscale:
                return host, found[0]
    return None


def plan_probe(items: list[_Item], cfg: ConflictConfig) -> dict[str, list[tuple[int, int, IntBox, int, IntBox] | None]]:
    """Per output split, per item: (object, host, host crop, donor, donor crop) or None (skipped; donor
    -1 where no patch is pasted). ``_seam`` uses the ``_conflict`` host, so the two share canvases."""
    by_class: dict[int, list[int]] = {}
    for k, it in enumerate(items):
        by_class.setdefault(it.label, []).append(k)
    labels = sorted(by_class)
    plans: dict[str, list] = {"conflict": [], "same": [], "seam": []}
    for k, it in enumerate(items):
        others = [c for c in labels if c != it.label]
        rng = np.random.default_rng([cfg.seed, _STREAM["conflict"], k])
        host = _pick_host(rng, items, by_class, k, others, cfg, {k}) if others else None
        plans["conflict"].append(None if host is None else (k, host[0], host[1], -1, (0, 0, 0, 0)))
        if not cfg.control:
            continue
        rng = np.random.default_rng([cfg.seed, _STREAM["same"], k])
        same = _pick_host(rng, items, by_class, k, [it.label], cfg, {k})
        plans["same"].append(None if same is None else (k, same[0], same[1], -1, (0, 0, 0, 0)))
        donor = None
        if host is not None:
            rng = np.random.default_rng([cfg.seed, _STREAM["seam"], k])
            third = [c for c in others if c != items[host[0]].label] or [items[host[0]].label]
            donor = _pick_host(rng, items, by_class, k, third, cfg, {k, host[0]})
        plans["seam"].append(None if donor is None or host is None else (k, host[0], host[1], donor[0], donor[1]))
    return {name: plan for name, plan in plans.items() if plan}


# -------------------------------------------------------------------------------------------- drawing
class _Images:
    """Decoded images (displayed orientation, as the training loader shows them), a few kept."""

    def __init__(self, root: Path, keep: int = 32):
        self.root, self.keep = root, keep
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def __call__(self, item: _Item) -> np.ndarray:
        from .decode import load_image_rgb

        if item.image_id in self._cache:
            self._cache.move_to_end(item.image_id)
            return self._cache[item.image_id]
        array = np.asarray(load_image_rgb(self.root / item.image_id), dtype=np.uint8)
        if (array.shape[1], array.shape[0]) != item.size:
            raise MetadataError(self.root / item.image_id, None, f"image is {array.shape[1]}x{array.shape[0]} but "
                                f"the metadata says {item.size[0]}x{item.size[1]}")
        self._cache[item.image_id] = array
        if len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return array


def _canvas(image: np.ndarray, crop: IntBox, size: tuple[int, int]) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = crop
    patch = np.ascontiguousarray(image[y0:y1, x0:x1])
    shrink = size[0] <= x1 - x0 and size[1] <= y1 - y0
    return cv2.resize(patch, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR).astype(np.float64)


def compose(images: _Images, items: list[_Item], entry: tuple[int, int, IntBox, int, IntBox],
            feather: float) -> np.ndarray:
    """One composite, uint8 RGB: the object's box (or, with a donor, the donor's background at that box)
    blended onto the host's background canvas."""
    k, host, crop, donor, donor_crop = entry
    it = items[k]
    canvas = _canvas(images(items[host]), crop, it.size)
    top = images(it).astype(np.float64) if donor < 0 else _canvas(images(items[donor]), donor_crop, it.size)
    bw, bh = it.box[2] - it.box[0], it.box[3] - it.box[1]
    alpha = feathered_alpha(it.size, it.box, feather * min(bw, bh))[..., None]
    return np.floor(canvas * (1 - alpha) + top * alpha + 0.5).clip(0, 255).astype(np.uint8)


# -------------------------------------------------------------------------------------------- writing
def _encode(array: np.ndarray, ext: str, quality: int) -> bytes:
    import cv2

    if array.ndim == 3:
        array = np.ascontiguousarray(array[..., ::-1])
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(ext, array, params)
    if not ok:  # pragma: no cover
        raise RuntimeError(f"{ext} encoding failed")
    return buf.tobytes()


def _load_source(src: Path, split: str, tmp: Path) -> tuple[Metadata, list[str], str]:
    """The split's metadata from a prepared dataset (dataset.yaml) or a CUB tree (converted into ``tmp``)."""
    if (src / DATASET_YAML).is_file():
        info = read_dataset_info(src)
        meta_dir, name = src, info.name or src.name
    elif (src / "images.txt").is_file():
        from .cub import convert_cub

        convert_cub(src, tmp)
        meta_dir, name = tmp, "CUB-200-2011 tree " + src.name
        info = read_dataset_info(tmp)
    else:
        raise MetadataError(src, None, "neither a prepared dataset (dataset.yaml) nor a CUB tree (images.txt)")
    if not (meta_dir / split).is_dir():
        raise MetadataError(meta_dir / split, None, f"split {split!r} not found (splits: {', '.join(info.splits)})")
    md = read_metadata(meta_dir / split)
    if not md.has_boxes:
        raise MetadataError(meta_dir / split, None, "this split has no boxes: there is no object region to paste")
    return md, info.class_names, name


def make_conflict(src: str | os.PathLike, out: str | os.PathLike, cfg: ConflictConfig | None = None) -> dict:
    """Write the probe, its paired originals (and with ``cfg.control`` its controls) under ``out``; returns a
    summary: images written and skipped (unpaired) per split."""
    cfg = cfg or ConflictConfig()
    cfg.validate()
    src, out = Path(src).resolve(), Path(out)
    if not src.is_dir():
        raise MetadataError(src, None, "source folder not found")
    if out.resolve() == src or src in out.resolve().parents:
        raise ConfigError(f"--out {out}: must lie outside the source {src} (the source is never written to)")
    with tempfile.TemporaryDirectory() as tmp:
        md, class_names, source_name = _load_source(src, cfg.split, Path(tmp))
    assert md.image_root is not None and md.split_dir is not None  # read_metadata sets both
    source_images = md.image_root.resolve()
    if out.resolve() == source_images or source_images in out.resolve().parents:
        raise ConfigError(f"--out {out}: must lie outside the source images {source_images} (never written to)")
    ids = md.image_ids[: cfg.limit] if cfg.limit else md.image_ids
    items = [_Item(i, md.class_labels[i], md.image_sizes[i], integer_box(md.boxes[i], md.image_sizes[i])) for i in ids]
    empty = [it.image_id for it in items if it.box[2] <= it.box[0] or it.box[3] <= it.box[1]]
    if empty:
        raise MetadataError(md.split_dir / "localization.txt", None, f"image {empty[0]!r}: empty box after rounding")
    if len({it.label for it in items}) < 2:
        raise ConfigError(f"split {cfg.split!r}: a conflict needs images of at least two classes")
    plans = plan_probe(items, cfg)
    # paired: an object enters every split or none, so that split-to-split differences compare the same objects
    paired = [k for k in range(len(items)) if all(plan[k] is not None for plan in plans.values())]
    if not paired:
        raise ConfigError(f"no image of split {cfg.split!r} found " + ("hosts for all of its controls" if cfg.control
                          else "a host") + f" with a large enough background (--max-upscale {cfg.max_upscale}, "
                          f"--margin {cfg.margin})")
    ordered = {"original": None, **({"same": plans["same"]} if cfg.control else {}), "conflict": plans["conflict"],
               **({"seam": plans["seam"], "canvas": plans["conflict"]} if cfg.control else {})}

    out.mkdir(parents=True, exist_ok=True)
    (out / DATASET_YAML).unlink(missing_ok=True)
    image_root = out / "images"
    images = _Images(md.image_root)
    summary: dict[str, dict[str, int]] = {}
    uniform: dict[str, float] = {}
    for kind, plan in ordered.items():
        name = f"{cfg.split}_{kind}"
        summary[name] = {"images": len(paired), "skipped": len(items) - len(paired)}
        new_ids, sources, masks, labels, sizes = [], [], {}, {}, {}
        boxes: dict[str, list[Box]] = {}
        outside = 0.0
        for k in paired:
            it = items[k]
            stem = f"{name}/{PurePosixPath(it.image_id).with_suffix('')}"
            mask_id = stem + "_mask.png"
            if plan is None:  # the object image itself, its bytes unchanged: the paired baseline
                new_id, host, donor = f"{name}/{it.image_id}", -1, -1
                atomic_write_bytes(image_root / new_id, (md.image_root / it.image_id).read_bytes())
            else:
                entry = plan[k]
                assert entry is not None
                _, host, _, donor, _ = entry
                new_id = f"{stem}.{cfg.image_format}"
                if kind == "canvas":  # the _conflict canvas as it is, nothing pasted: the seam check's counterfactual
                    donor = -1
                    pixels = np.floor(_canvas(images(items[host]), entry[2], it.size) + 0.5).clip(0, 255).astype(np.uint8)
                else:
                    pixels = compose(images, items, entry, cfg.feather)
                atomic_write_bytes(image_root / new_id, _encode(pixels, "." + cfg.image_format, cfg.jpeg_quality))
            mask = np.zeros((it.size[1], it.size[0]), dtype=np.uint8)
            mask[it.box[1]:it.box[3], it.box[0]:it.box[2]] = 255
            atomic_write_bytes(image_root / mask_id, _encode(mask, ".png", 0))
            new_ids.append(new_id)
            labels[new_id], sizes[new_id], boxes[new_id], masks[new_id] = it.label, it.size, [it.box], [mask_id]
            sources.append(f"{new_id},{it.image_id},{items[host].image_id if host >= 0 else ''},"
                           f"{items[donor].image_id if donor >= 0 else ''}\n")
            outside += 1.0 - (it.box[2] - it.box[0]) * (it.box[3] - it.box[1]) / (it.size[0] * it.size[1])
        write_metadata(Metadata(image_ids=new_ids, class_labels=labels, image_sizes=sizes, boxes=boxes, masks=masks,
                                num_classes=len(class_names)), out / name)
        atomic_write_text(out / name / SOURCES_FILE, "".join(sources))
        uniform[name] = round(100.0 * outside / len(paired), 4)
    written = list(summary)
    write_dataset_info(out, DatasetInfo(
        image_root=image_root, class_names=class_names, splits=written,
        name=f"conflict probe of {source_name}",
        extra={"source": str(src), **asdict(cfg), "counts": summary, "uniform_map_leakage": uniform}))
    return summary
