"""The confounded-objects dataset: the "fish in water" confounder made measurable.

Each of K classes is an object **shape with its own texture** (disc with dots, square with a
checker, ...). Each class also owns a background **habitat**: a procedural texture (blobs, grain,
stripes at an angle, ripples, ...) in its own hue family. Splits:

========== ======================================================================
train, val habitat = the class's own with probability ``rho``, else another, uniformly
test       habitat independent of the class (balanced over all K)
conflict   ``test_conflict``: always another class's habitat (balanced)
========== ======================================================================

Habitat assignment is by exact, balanced allocation, not coin flips: class ``c`` with ``n_c``
images gets exactly ``round_half_up(rho * n_c)`` own-habitat images in train/val, so the
confounding strength is what was asked for, not a noisy draw of it.

Object colours are drawn from the same palettes as the habitats (a random habitat's palette,
uniformly), so colour says nothing about the class: the class lives in shape and texture, and the
habitat is the easy shortcut a CAM model is tempted to use. Optional pixel noise (``noise``, off by
default because it makes PNGs incompressible: 180 MB instead of about 70 MB) covers the whole image
when used, so it marks no region. Boxes are exact: the tight box of the mask with
exclusive ``x1, y1`` (``(xmin, ymin, xmax + 1, ymax + 1)``); masks are 0/255 PNGs.

Layout under ``out``::

    images/<split>/<class>/<n>.png, <n>_mask.png
    <split>/image_ids.txt, class_labels.txt, image_sizes.txt, localization.txt (boxes),
            masks.txt (path,mask_path,), habitats.txt (path,habitat_class)
    dataset.yaml    (written last; image_root "images"; extra keys seed, rho, size, habitats)

Determinism: every image is rendered from its own generator seeded by ``(seed, split, index)``
with element-wise numpy maths and written as PNG with fixed compression and no timestamps, so the
same config gives byte-identical files, in one process or many.

**Variants.** ``variant="v1"`` (the default) is the dataset above, frozen byte for byte because
published results were measured on it (``tests/data/test_synthetic_v1_frozen.py``). ``variant="v2"``
(:mod:`kdcicam.data.synthetic_v2`) is calibrated so that the confounder bites: objects that differ in
detail only, a stronger habitat correlation, a ``val_conflict`` split to calibrate on; its knobs are
the v2-only fields of :class:`SyntheticConfig`, which v1 refuses to take.
"""
from __future__ import annotations

import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .metadata import (
    DATASET_YAML,
    DatasetInfo,
    Metadata,
    atomic_write_text,
    write_dataset_info,
    write_metadata,
)
from .numbers import round_half_up

SHAPES = ("disc", "square", "triangle", "star", "cross", "ring", "ellipse", "hexagon", "crescent", "arrow")
HABITATS = ("blobs", "grain", "stripes_0", "stripes_60", "stripes_120", "gradient", "checker", "ripples",
            "bubbles", "waves")
SPLITS = ("train", "val", "test", "test_conflict")
#: v2's splits: val_conflict (always another class's habitat) is made for calibration, never test
SPLITS_V2 = ("train", "val", "val_conflict", "test", "test_conflict")
_SPLIT_CODE = {name: i for i, name in enumerate(SPLITS)} | {"val_conflict": 4}
VARIANTS = ("v1", "v2")
_PNG_COMPRESSION = 3
HABITATS_FILE = "habitats.txt"


@dataclass
class SyntheticConfig:
    """Defaults train a small CNN on CPU in minutes: 128 px, 8 classes, 2400/400/800/800 images."""

    seed: int = 0
    size: int = 128
    num_classes: int = 8
    rho: float = 0.9
    n_train: int = 2400
    n_val: int = 400
    n_test: int = 800
    n_test_conflict: int = 800
    #: object radius (its circumscribed circle) as a fraction of the image side
    min_radius: float = 0.16
    max_radius: float = 0.30
    #: pixel noise (std, on a 0..1 scale) over the whole image; 0 keeps the PNGs small
    noise: float = 0.0
    #: worker processes; 0 = one per CPU core. Output does not depend on it.
    workers: int = 0
    #: "v1" (frozen) or "v2" (calibrated confounder); the fields below are v2's knobs, v1 takes none of them
    variant: str = "v1"
    n_val_conflict: int = 0
    #: v2: amplitude of the class-telling boundary lobes (objects are discs with 3..12 lobes; small = subtle)
    shape_detail: float = 0.12
    #: v2: contrast of the class's own texture inside the object, 0 (none: shape only) .. 1 (v1's full texture)
    class_texture: float = 0.35
    #: v2: weight of a class-independent smooth texture mixed into every object (hides the class texture)
    texture_noise: float = 0.3
    #: v2: contrast of the habitat pattern, 0 (flat colour) .. 1 (v1's)
    habitat_contrast: float = 1.0
    #: v2: habitats keep their own hue family (True, v1's) or draw one at random (False: pattern only)
    habitat_colour: bool = True
    #: v2: which draw of test / test_conflict (0: the first; k > 0: a fresh pair from its own seed stream, for
    #: when a draw has been read and shaped a choice). train, val and val_conflict do not depend on it.
    test_draw: int = 0

    def validate(self) -> None:
        if not 32 <= self.size <= 4096:
            raise ConfigError(f"size must be in 32..4096, got {self.size}")
        if not 2 <= self.num_classes <= len(SHAPES):
            raise ConfigError(f"classes must be in 2..{len(SHAPES)}, got {self.num_classes}")
        if not 0.0 <= self.rho <= 1.0:
            raise ConfigError(f"rho must be in [0, 1], got {self.rho}")
        for split in SPLITS:
            if self.count(split) < 0:
                raise ConfigError(f"n_{split} must be >= 0, got {self.count(split)}")
        if self.n_train == 0:
            raise ConfigError("n_train must be > 0")
        if not 0.05 <= self.min_radius <= self.max_radius <= 0.45:
            raise ConfigError(f"need 0.05 <= min_radius <= max_radius <= 0.45, got {self.min_radius}, {self.max_radius}")
        if not 0.0 <= self.noise <= 0.5:
            raise ConfigError(f"noise must be in [0, 0.5], got {self.noise}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.variant == "v1":
            changed = [k for k, v in V2_DEFAULTS.items() if getattr(self, k) != v]
            if changed:
                raise ConfigError(f"{', '.join(changed)}: v2 knobs, not taken by variant v1 (set variant='v2')")
        else:
            from .synthetic_v2 import validate_v2

            validate_v2(self)

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLITS_V2 if self.variant == "v2" else SPLITS

    def settings(self) -> dict:
        """What ``dataset.yaml`` records: every field but ``workers``; v1 leaves out the v2 knobs, so its
        yaml is byte-identical to the one written before v2 existed."""
        skip = {"workers"} | (set(V2_DEFAULTS) if self.variant == "v1" else set())
        if self.test_draw == 0:
            skip.add("test_draw")  # so that the first draw's dataset.yaml reads as it did before draws existed
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def count(self, split: str) -> int:
        return int(getattr(self, f"n_{split}"))

    @property
    def class_names(self) -> list[str]:
        if self.variant == "v2":
            from .synthetic_v2 import v2_class_names

            return v2_class_names(self.num_classes)
        return list(SHAPES[: self.num_classes])

    @property
    def habitat_names(self) -> list[str]:
        return list(HABITATS[: self.num_classes])


#: the v2-only fields and their defaults: v1 must leave them as they are
V2_DEFAULTS = {f.name: f.default for f in fields(SyntheticConfig) if f.name in (
    "variant", "n_val_conflict", "shape_detail", "class_texture", "texture_noise", "habitat_contrast", "habitat_colour",
    "test_draw")}


# -------------------------------------------------------------------------------------- allocation
def class_counts(n: int, num_classes: int) -> list[int]:
    """Balanced class sizes: the first ``n % K`` classes get one more image."""
    return [n // num_classes + (1 if c < n % num_classes else 0) for c in range(num_classes)]


def plan_split(config: SyntheticConfig, split: str) -> list[tuple[int, int]]:
    """``(label, habitat)`` for every image of a split, class-major, by exact balanced allocation."""
    if config.variant == "v2":
        from .synthetic_v2 import plan_split_v2

        return plan_split_v2(config, split)
    K = config.num_classes
    rng = np.random.default_rng([config.seed, 0, _SPLIT_CODE[split]])
    plan: list[tuple[int, int]] = []
    for c, n_c in enumerate(class_counts(config.count(split), K)):
        others = [h for h in range(K) if h != c]
        offset = int(rng.integers(K))
        if split in ("train", "val"):
            own = round_half_up(config.rho * n_c)
            habitats = [c] * own + [others[(offset + j) % (K - 1)] for j in range(n_c - own)]
        elif split == "test":
            habitats = [(offset + j) % K for j in range(n_c)]
        else:  # test_conflict
            habitats = [others[(offset + j) % (K - 1)] for j in range(n_c)]
        order = rng.permutation(n_c)
        plan.extend((c, habitats[i]) for i in order)
    return plan


# ---------------------------------------------------------------------------------------- drawing
def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    h = (h % 1.0) * 6.0
    i = int(h) % 6
    f = h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float64)


def _palette(rng: np.random.Generator, family: int, num_families: int) -> tuple[np.ndarray, np.ndarray]:
    """A (light, dark) colour pair from hue family ``family``; habitats and objects share this."""
    hue = (family + 0.5) / num_families
    light = _hsv_to_rgb(hue + rng.normal(0, 0.02), rng.uniform(0.45, 0.9), rng.uniform(0.6, 0.95))
    dark = _hsv_to_rgb(hue + rng.normal(0, 0.02), rng.uniform(0.3, 0.8), rng.uniform(0.15, 0.45))
    return light, dark


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a random ``cells``-grid, smoothstep-interpolated (element-wise only)."""
    grid = rng.random((cells + 1, cells + 1))
    pos = (np.arange(size) + 0.5) * (cells / size)
    i = np.minimum(pos.astype(np.int64), cells - 1)
    f = pos - i
    f = f * f * (3 - 2 * f)
    iy, ix, fy, fx = i[:, None], i[None, :], f[:, None], f[None, :]
    top = grid[iy, ix] * (1 - fx) + grid[iy, ix + 1] * fx
    bottom = grid[iy + 1, ix] * (1 - fx) + grid[iy + 1, ix + 1] * fx
    return top * (1 - fy) + bottom * fy


def _stripes(x: np.ndarray, y: np.ndarray, angle: float, period: float, phase: float) -> np.ndarray:
    d = x * math.cos(angle) + y * math.sin(angle)
    return 0.5 + 0.5 * np.sin(2 * math.pi * d / period + phase)


def habitat_pattern(rng: np.random.Generator, habitat: int, size: int) -> np.ndarray:
    """Mixing weight in [0, 1] (light vs dark colour) of habitat ``habitat``, image frame."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    s = size / 128.0  # patterns scale with the image
    jitter = rng.uniform(-0.15, 0.15)  # angle jitter, radians
    phase = rng.uniform(0, 2 * math.pi)
    name = HABITATS[habitat]
    if name == "blobs":
        return _value_noise(rng, size, 4)
    if name == "grain":
        return 0.6 * _value_noise(rng, size, 32) + 0.4 * _value_noise(rng, size, 8)
    if name.startswith("stripes_"):
        angle = math.radians(int(name.split("_")[1])) + jitter
        return _stripes(x, y, angle, rng.uniform(11, 15) * s, phase)
    if name == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        d = (x - size / 2) * math.cos(angle) + (y - size / 2) * math.sin(angle)
        return np.clip(0.5 + d / size, 0, 1) * 0.8 + 0.2 * _value_noise(rng, size, 6)
    if name == "checker":
        period = rng.uniform(20, 28) * s
        u = x * math.cos(jitter) + y * math.sin(jitter)
        v = -x * math.sin(jitter) + y * math.cos(jitter)
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float64)
    if name == "ripples":
        cx, cy = rng.uniform(0, size, 2)
        return 0.5 + 0.5 * np.sin(2 * math.pi * np.hypot(x - cx, y - cy) / (rng.uniform(9, 13) * s) + phase)
    if name == "bubbles":
        period = rng.uniform(14, 18) * s
        ox, oy = rng.uniform(0, period, 2)
        fx = ((x + ox) / period) % 1 - 0.5
        fy = ((y + oy) / period) % 1 - 0.5
        return (fx * fx + fy * fy < 0.09).astype(np.float64)
    if name == "waves":
        amp = rng.uniform(6, 10) * s
        return 0.5 + 0.5 * np.sin(2 * math.pi * (y + amp * np.sin(2 * math.pi * x / (40 * s) + phase)) / (16 * s))
    raise ValueError(f"unknown habitat {habitat}")


def shape_mask(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of the object-frame points ``(u, v)``; every shape lies inside the unit disc."""
    r = np.hypot(u, v)
    name = SHAPES[shape]

    def polygon(n: int, radius: float, start: float) -> np.ndarray:
        inner = radius * math.cos(math.pi / n)
        angles = start + 2 * math.pi * np.arange(n) / n
        return np.max(u[..., None] * np.cos(angles) + v[..., None] * np.sin(angles), axis=-1) < inner

    if name == "disc":
        return r < 0.95
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) < 0.7
    if name == "triangle":
        return polygon(3, 1.0, math.pi / 2)
    if name == "star":
        t = (np.arctan2(v, u) * (5 / (2 * math.pi))) % 1.0
        return r < 0.42 + 0.58 * (1 - 2 * np.abs(t - 0.5))
    if name == "cross":
        return ((np.abs(u) < 0.3) & (np.abs(v) < 0.92)) | ((np.abs(u) < 0.92) & (np.abs(v) < 0.3))
    if name == "ring":
        return (r < 0.95) & (r > 0.55)
    if name == "ellipse":
        return u * u + (v / 0.5) ** 2 < 0.95**2
    if name == "hexagon":
        return polygon(6, 0.97, 0.0)
    if name == "crescent":
        return (r < 0.95) & ((u - 0.45) ** 2 + v * v > 0.75**2)
    if name == "arrow":
        shaft = (np.abs(v) < 0.22) & (u > -0.95) & (u < 0.15)
        head = (u >= 0.1) & (u < 0.9) & (np.abs(v) < (0.9 - u) * 0.9)
        return shaft | head
    raise ValueError(f"unknown shape {shape}")


def object_texture(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mixing weight in [0, 1] of the class's own texture, in the object frame (it rotates with it)."""
    name = SHAPES[shape]
    if name == "disc":  # polka dots
        fu, fv = (u * 2.5) % 1 - 0.5, (v * 2.5) % 1 - 0.5
        return (fu * fu + fv * fv < 0.16).astype(np.float64)  # dots cover half the disc
    if name == "square":  # checker
        return ((np.floor(u * 3) + np.floor(v * 3)) % 2).astype(np.float64)
    if name == "triangle":  # stripes across
        return (np.floor(v * 4 + 10.5) % 2).astype(np.float64)
    if name == "star":  # bright core, dark tips
        return np.clip(1.2 - np.hypot(u, v) * 1.3, 0, 1)
    if name == "cross":  # diagonal stripes
        return (np.floor((u + v) * 3 + 10) % 2).astype(np.float64)
    if name == "ring":  # alternating sectors
        return (np.floor(np.arctan2(v, u) * (8 / (2 * math.pi)) + 8) % 2).astype(np.float64)
    if name == "ellipse":  # stripes along the long axis
        return (np.floor(v * 6 + 10) % 2).astype(np.float64)
    if name == "hexagon":  # concentric rings
        return (np.floor(np.hypot(u, v) * 5) % 2).astype(np.float64)
    if name == "crescent":  # gradient
        return np.clip(0.5 + 0.6 * v, 0, 1)
    if name == "arrow":  # fine stripes along the shaft
        return (np.floor(u * 7 + 10) % 2).astype(np.float64)
    raise ValueError(f"unknown shape {shape}")


def render_sample(config: SyntheticConfig, split: str, index: int, label: int,
                  habitat: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """One image: (RGB uint8 [S,S,3], mask uint8 [S,S] 0/255, box (x0, y0, x1, y1) exclusive)."""
    if config.variant == "v2":
        from .synthetic_v2 import render_sample_v2

        return render_sample_v2(config, split, index, label, habitat)
    S, K = config.size, config.num_classes
    rng = np.random.default_rng([config.seed, 1, _SPLIT_CODE[split], index])
    bg_light, bg_dark = _palette(rng, habitat, K)
    t = habitat_pattern(rng, habitat, S)[..., None]
    image = bg_dark * (1 - t) + bg_light * t

    fg_light, fg_dark = _palette(rng, int(rng.integers(K)), K)  # any palette: colour carries no class
    _, u, v = object_frame(rng, config)
    mask = shape_mask(label, u, v)
    w = object_texture(label, u, v)[..., None]
    image = np.where(mask[..., None], fg_dark * (1 - w) + fg_light * w, image)
    return finish_sample(rng, config, image, mask, f"{split} #{index}")


def object_frame(rng: np.random.Generator, config: SyntheticConfig) -> tuple[float, np.ndarray, np.ndarray]:
    """The object's size, aspect, rotation and place, drawn from ``rng`` (v1's order, which v2 shares), as
    (radius in pixels, u, v): every pixel centre in the object's own frame, in units of its two radii."""
    S = config.size
    radius = rng.uniform(config.min_radius, config.max_radius) * S
    aspect = math.exp(rng.uniform(-0.2, 0.2))
    rx, ry = radius * min(1.0, aspect), radius * min(1.0, 1 / aspect)
    theta = rng.uniform(0, 2 * math.pi)
    cx, cy = rng.uniform(radius + 1, S - radius - 1, 2)
    y, x = np.mgrid[0:S, 0:S].astype(np.float64) + 0.5
    dx, dy = x - cx, y - cy
    u = (dx * math.cos(theta) + dy * math.sin(theta)) / rx
    v = (-dx * math.sin(theta) + dy * math.cos(theta)) / ry
    return radius, u, v


def finish_sample(rng: np.random.Generator, config: SyntheticConfig, image: np.ndarray, mask: np.ndarray,
                  what: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Pixel noise, 8-bit rounding, and the box of the mask: (RGB uint8, mask uint8 0/255, box exclusive)."""
    if config.noise > 0:
        image = image + rng.normal(0.0, config.noise, image.shape)
    image = np.floor(np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:  # cannot happen with min_radius >= 0.05 and size >= 32; guard anyway
        raise RuntimeError(f"empty object in {what}")
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return image, mask.astype(np.uint8) * 255, box


# ---------------------------------------------------------------------------------------- writing
def _encode_png(array: np.ndarray) -> bytes:
    import cv2

    if array.ndim == 3:
        array = np.ascontiguousarray(array[..., ::-1])  # OpenCV wants BGR
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, _PNG_COMPRESSION])
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _render_chunk(config: SyntheticConfig, split: str, out: str,
                  items: list[tuple[int, int, int, str]]) -> list[tuple[int, int, int, int]]:
    """Render and write ``(index, label, habitat, stem)`` items; returns their boxes."""
    boxes = []
    for index, label, habitat, stem in items:
        image, mask, box = render_sample(config, split, index, label, habitat)
        Path(out, stem + ".png").write_bytes(_encode_png(image))
        Path(out, stem + "_mask.png").write_bytes(_encode_png(mask))
        boxes.append(box)
    return boxes


def _image_stem(config: SyntheticConfig, split: str, label: int, j: int) -> str:
    digits = max(4, len(str(config.count(split))))
    return f"{split}/{config.class_names[label]}/{j:0{digits}d}"


def generate_synthetic(out: str | os.PathLike, config: SyntheticConfig | None = None) -> dict[str, int]:
    """Write the dataset under ``out``; returns the number of images per split.

    ``dataset.yaml`` is removed first and written last, so an interrupted run never leaves a yaml
    that points at half-written data.
    """
    config = config or SyntheticConfig()
    config.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DATASET_YAML).unlink(missing_ok=True)
    image_root = out / "images"
    workers = config.workers or (os.cpu_count() or 1)
    counts: dict[str, int] = {}
    splits: list[str] = []
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        for split in config.splits:
            plan = plan_split(config, split)
            counts[split] = len(plan)
            if not plan:
                continue
            seen = [0] * config.num_classes
            items = []
            for index, (label, habitat) in enumerate(plan):
                items.append((index, label, habitat, _image_stem(config, split, label, seen[label])))
                seen[label] += 1
            for label in {lab for lab, _ in plan}:
                (image_root / split / config.class_names[label]).mkdir(parents=True, exist_ok=True)
            if pool is None:
                boxes = _render_chunk(config, split, str(image_root), items)
            else:
                step = max(1, math.ceil(len(items) / (workers * 4)))
                chunks = [items[i:i + step] for i in range(0, len(items), step)]
                futures = [pool.submit(_render_chunk, config, split, str(image_root), ch) for ch in chunks]
                boxes = [b for f in futures for b in f.result()]
            ids = [stem + ".png" for _, _, _, stem in items]
            meta = Metadata(
                image_ids=ids,
                class_labels={i: label for i, (label, _) in zip(ids, plan, strict=True)},
                image_sizes={i: (config.size, config.size) for i in ids},
                boxes={i: [box] for i, box in zip(ids, boxes, strict=True)},
                masks={i: [stem + "_mask.png"] for i, (_, _, _, stem) in zip(ids, items, strict=True)},
                num_classes=config.num_classes,
            )
            write_metadata(meta, out / split)
            atomic_write_text(out / split / HABITATS_FILE,
                              "".join(f"{i},{h}\n" for i, (_, h) in zip(ids, plan, strict=True)))
            splits.append(split)
    finally:
        if pool is not None:
            pool.shutdown()
    write_dataset_info(out, DatasetInfo(
        image_root=image_root, class_names=config.class_names, splits=splits,
        name="synthetic confounded objects" + (" v2" if config.variant == "v2" else ""),
        extra={**config.settings(), "habitats": config.habitat_names}))
    return counts


def ensure_synthetic(out: str | os.PathLike, config: SyntheticConfig, regenerate: bool = False) -> Path:
    """``out`` holding the dataset of ``config``: generated when absent. A dataset there made with other
    settings (another variant, an older preset) is regenerated if ``regenerate``, else refused, naming the
    settings that differ: it must never be trained or scored as if it were this one."""
    from .metadata import read_dataset_info

    out = Path(out)
    if (out / DATASET_YAML).is_file():
        extra = {"variant": "v1", **read_dataset_info(out).extra}  # v1's yaml predates the variant key
        wanted = {"variant": config.variant, **config.settings()}  # v1's settings() leave the variant out
        diff = {k: (extra.get(k), v) for k, v in wanted.items() if extra.get(k) != v}
        if not diff:
            return out
        if not regenerate:
            found = ", ".join(f"{k} {a!r} (expected {b!r})" for k, (a, b) in diff.items())
            raise ConfigError(f"{out}: a synthetic dataset made with other settings is there ({found}); "
                              "move it away or choose another folder")
        shutil.rmtree(out / "images", ignore_errors=True)  # no image of the old tree may linger
    generate_synthetic(out, config)
    return out


def read_habitats(split_dir: str | os.PathLike) -> dict[str, int]:
    """``habitats.txt`` of a split: image id → habitat class (to measure confounding and leakage)."""
    from .metadata import MetadataError, read_text_file

    path = Path(split_dir) / HABITATS_FILE
    if not path.is_file():
        raise MetadataError(path, None, "file not found (only synthetic datasets have habitats)")
    result: dict[str, int] = {}
    for number, raw in enumerate(read_text_file(path).splitlines(), start=1):
        if not raw.strip():
            continue
        fields = raw.split(",")
        if len(fields) != 2:
            raise MetadataError(path, number, f"malformed line: expected 2 fields (path,habitat), got {len(fields)}")
        try:
            result[fields[0].strip()] = int(fields[1])
        except ValueError:
            raise MetadataError(path, number, f"habitat {fields[1]!r} is not an integer") from None
    return result
