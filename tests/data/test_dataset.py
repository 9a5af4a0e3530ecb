from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from kdcicam.data.dataset import (
    AugmentConfig,
    PCALighting,
    WSOLDataset,
    build_eval_transform,
    build_train_transform,
    collate_wsol,
    load_image_rgb,
)
from kdcicam.data.metadata import DatasetInfo, Metadata, MetadataError, write_dataset_info, write_metadata
from kdcicam.errors import ConfigError, ImageReadError


# ---------------------------------------------------------------------------------------- decoding
def _rgb(path: Path) -> np.ndarray:
    im = load_image_rgb(path)
    assert im.mode == "RGB"
    return np.asarray(im).astype(int)


def test_decode_greyscale(tmp_path):
    Image.new("L", (5, 4), 77).save(tmp_path / "l.png")
    arr = _rgb(tmp_path / "l.png")
    assert arr.shape == (4, 5, 3) and (arr == 77).all()


def test_decode_rgba_composites_on_white(tmp_path):
    arr = np.zeros((2, 3, 4), np.uint8)
    arr[0, 0] = (255, 0, 0, 255)  # opaque red
    arr[0, 1] = (0, 0, 0, 0)  # fully transparent (black underneath)
    arr[0, 2] = (0, 0, 255, 128)  # half-transparent blue
    Image.fromarray(arr, "RGBA").save(tmp_path / "rgba.png")
    out = _rgb(tmp_path / "rgba.png")
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert np.abs(out[0, 2] - (127, 127, 255)).max() <= 1
    Image.fromarray(arr[..., [0, 3]].copy(), "LA").save(tmp_path / "la.png")
    assert tuple(_rgb(tmp_path / "la.png")[0, 1]) == (255, 255, 255)


def test_decode_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 1))
    im.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    im.putdata([0, 1, 1, 0])
    im.save(tmp_path / "p.png", transparency=0)
    out = _rgb(tmp_path / "p.png")
    assert [tuple(p) for p in out[0]] == [(255, 255, 255), (0, 200, 0), (0, 200, 0), (255, 255, 255)]
    im.save(tmp_path / "p_opaque.png")
    assert tuple(_rgb(tmp_path / "p_opaque.png")[0, 0]) == (0, 0, 0)


def test_decode_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    r, g, b = _rgb(tmp_path / "cmyk.jpg")[8, 8]
    assert r > 220 and g < 40 and b < 40  # red


def test_decode_16bit_png_scales_not_clips(tmp_path):
    arr = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = _rgb(tmp_path / "g16.png")
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()


def test_decode_exif_rotated_jpeg(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)  # stored 40 wide, 20 high: left half red, right half blue
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: the left half ends up on top
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = _rgb(tmp_path / "rot.jpg")
    assert out.shape == (40, 20, 3)
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60  # top is red
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 60  # bottom is blue


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    noise.save(tmp_path / "full.png")
    noise.save(tmp_path / "full.jpg", quality=90)
    files = {}
    for ext in ("png", "jpg"):
        data = (tmp_path / f"full.{ext}").read_bytes()
        files[f"truncated {ext}"] = tmp_path / f"truncated.{ext}"
        files[f"truncated {ext}"].write_bytes(data[: len(data) // 2])
    files["zero bytes"] = tmp_path / "empty.jpg"
    files["zero bytes"].write_bytes(b"")
    files["text"] = tmp_path / "notes.jpg"
    files["text"].write_text("this is not an image\n")
    files["missing"] = tmp_path / "missing.png"
    return files


def test_undecodable_files_raise_image_read_error_naming_the_file(tmp_path):
    for what, path in _bad_files(tmp_path).items():
        with pytest.raises(ImageReadError) as err:
            load_image_rgb(path)
        assert err.value.path == str(path), what
        assert str(path) in str(err.value), what


# ----------------------------------------------------------------------------------------- dataset
def _write_split(root: Path, images: dict[str, np.ndarray], boxes: dict, masks: dict | None = None,
                 labels: dict | None = None) -> Path:
    """Write images (+ mask PNGs given as arrays) under root/images and a split at root/test."""
    for name, arr in images.items():
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / "images" / name)
    mask_paths = {}
    for name, arrays in (masks or {}).items():
        mask_paths[name] = []
        for k, arr in enumerate(arrays):
            rel = name.replace(".png", f"_m{k}.png")
            Image.fromarray(arr).save(root / "images" / rel)
            mask_paths[name].append(rel)
    ids = list(images)
    md = Metadata(image_ids=ids, class_labels=labels or {i: n % 2 for n, i in enumerate(ids)},
                  image_sizes={i: (a.shape[1], a.shape[0]) for i, a in images.items()}, boxes=boxes,
                  masks=mask_paths)
    write_metadata(md, root / "test")
    write_dataset_info(root, DatasetInfo(image_root=root / "images", class_names=["a", "b"]))
    return root / "test"


def _rect_image(w=160, h=120, box=(50, 30, 110, 80)) -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 255
    mask[y0:y1, x0:x1] = 255
    return image, mask


def test_sample_without_transform(tmp_path):
    image, _ = _rect_image()
    m1 = np.zeros((120, 160), np.uint8)
    m1[30:60, 50:110] = 255
    m2 = np.zeros((120, 160), np.uint8)
    m2[50:80, 50:110] = 255
    split = _write_split(tmp_path, {"x/0.png": image}, {"x/0.png": [(50, 30, 110, 80), (0, 0, 10, 10)]},
                         masks={"x/0.png": [m1, m2]})
    ds = WSOLDataset(split, load_masks=True)
    s = ds[0]
    assert isinstance(s["image"], torch.Tensor) and s["image"].dtype == torch.float32
    assert s["image"].shape == (3, 120, 160) and s["image"].min() >= 0 and s["image"].max() == 1.0
    assert isinstance(s["boxes"], tv_tensors.BoundingBoxes) and s["boxes"].canvas_size == (120, 160)
    assert s["boxes"].tolist() == [[50, 30, 110, 80], [0, 0, 10, 10]]
    assert isinstance(s["mask"], tv_tensors.Mask) and s["mask"].shape == (1, 120, 160)
    assert s["mask"].dtype == torch.uint8 and s["mask"].sum() == 50 * 60  # the two masks merged with max
    assert (s["label"], s["image_id"], s["index"], s["orig_size"]) == (0, "x/0.png", 0, (160, 120))
    with pytest.raises(IndexError):
        ds[1]


def test_load_masks_needs_masks(tmp_path):
    split = _write_split(tmp_path, {"0.png": _rect_image()[0]}, {"0.png": [(50, 30, 110, 80)]})
    with pytest.raises(MetadataError, match="no masks"):
        WSOLDataset(split, load_masks=True)


def test_decoded_size_must_match_metadata(tmp_path):
    split = _write_split(tmp_path, {"0.png": _rect_image()[0]}, {"0.png": [(50, 30, 110, 80)]})
    Image.new("RGB", (100, 120)).save(tmp_path / "images" / "0.png")
    with pytest.raises(MetadataError, match=r"decodes to 100x120 but the metadata says 160x120") as err:
        WSOLDataset(split)[0]
    assert Path(err.value.file).name == "image_sizes.txt"


def test_bad_images_skipped_or_raised(tmp_path, caplog):
    images = {f"{i}.png": _rect_image()[0] for i in range(3)}
    split = _write_split(tmp_path, images, {k: [(50, 30, 110, 80)] for k in images})
    bad = tmp_path / "images" / "1.png"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(ImageReadError, match=r"1\.png"):
        WSOLDataset(split)[1]
    ds = WSOLDataset(split, skip_bad_images=True)
    with caplog.at_level(logging.WARNING):
        s = ds[1]
    assert s["image_id"] == "2.png" and s["index"] == 2
    assert ds.bad_images == [str(bad)] and "1.png" in caplog.text
    assert ds[1]["index"] == 2 and ds.bad_images == [str(bad)]  # remembered, not re-read
    bad2 = tmp_path / "images" / "2.png"
    bad2.write_bytes(b"")
    assert ds[1]["index"] == 0  # wraps around
    assert ds.bad_images == [str(bad), str(bad2)]


def test_collate_and_subclass_hook(tmp_path):
    images = {f"{i}.png": _rect_image()[0] for i in range(3)}
    masks = {k: [_rect_image()[1]] for k in images}
    split = _write_split(tmp_path, images, {k: [(50, 30, 110, 80)] for k in images}, masks=masks)

    class Routed(WSOLDataset):
        def apply_transform(self, index, sample):
            size = 32 if index % 2 else 48  # per-sample transform choice
            sample = super().apply_transform(index, sample)
            return {**sample, **build_eval_transform(size)({k: sample[k] for k in ("image", "boxes", "mask")})}

    ds = Routed(split, transform=build_eval_transform(64), load_masks=True)
    assert ds[1]["image"].shape == (3, 32, 32) and ds[2]["image"].shape == (3, 48, 48)
    batch = collate_wsol([ds[0], ds[2]])
    assert batch["image"].shape == (2, 3, 48, 48) and batch["label"].dtype == torch.long
    assert batch["label"].tolist() == [0, 0] and batch["index"].tolist() == [0, 2]
    assert batch["mask"].shape == (2, 1, 48, 48) and batch["image_id"] == ["0.png", "2.png"]
    assert len(batch["boxes"]) == 2 and batch["orig_size"] == [(160, 120), (160, 120)]
    extra = collate_wsol([{**ds[0], "route": 2, "w": 0.5, "t": torch.ones(2), "tag": "a"},
                          {**ds[2], "route": 0, "w": 1.5, "t": torch.zeros(2), "tag": "b"}])
    assert extra["route"].tolist() == [2, 0] and extra["route"].dtype == torch.long
    assert extra["w"].tolist() == [0.5, 1.5] and extra["t"].shape == (2, 2) and extra["tag"] == ["a", "b"]


# -------------------------------------------------------------------------------------- transforms
PIPELINES = {
    "resize_crop shorter": lambda: build_train_transform(AugmentConfig(kind="resize_crop", resize=100, crop=80)),
    "resize_crop square": lambda: build_train_transform(
        AugmentConfig(kind="resize_crop", resize=100, crop=80, resize_mode="square")),
    "rrc": lambda: build_train_transform(AugmentConfig(kind="rrc", crop=64, scale=(0.1, 1.0))),
    "rrc + jitter + lighting": lambda: build_train_transform(
        AugmentConfig(kind="rrc", crop=64, color_jitter=0.4, lighting=0.1)),
    "eval wsol": lambda: build_eval_transform(96),
    "eval official": lambda: build_eval_transform(160, kind="official", resize=200),
}


def _bbox(binary: torch.Tensor) -> tuple[int, int, int, int] | None:
    ys, xs = torch.nonzero(binary, as_tuple=True)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("rect", [(50, 30, 110, 80), (2, 10, 40, 60)], ids=["centre", "edge"])
@pytest.mark.parametrize("name", list(PIPELINES))
def test_box_and_mask_follow_the_object(tmp_path, name, rect):
    image, mask = _rect_image(box=rect)
    split = _write_split(tmp_path, {"0.png": image}, {"0.png": [rect]}, masks={"0.png": [mask]})
    ds = WSOLDataset(split, transform=PIPELINES[name](), load_masks=True)
    seen_object = 0
    for seed in range(12):
        torch.manual_seed(seed)
        s = ds[0]
        box = s["boxes"][0].tolist()
        h, w = s["image"].shape[1:]
        assert s["mask"].shape == (1, h, w) and s["boxes"].canvas_size == (h, w)
        assert 0 <= box[0] <= box[2] <= w and 0 <= box[1] <= box[3] <= h
        visible = _bbox(s["image"].mean(0) > 0.5)
        if visible is None:  # object cropped away: its box must have (almost) no area left
            assert (box[2] - box[0]) * (box[3] - box[1]) < 2.0, (name, seed, box)
            continue
        seen_object += 1
        assert np.abs(np.subtract(visible, box)).max() <= 1.5, (name, seed, visible, box)
        assert np.abs(np.subtract(_bbox(s["mask"][0] > 0), box)).max() <= 1.0, (name, seed, box)
    assert seen_object >= 6


def test_train_pipeline_flips_boxes(tmp_path):
    image, _ = _rect_image(box=(10, 30, 50, 80))  # left side of a 160-wide image
    split = _write_split(tmp_path, {"0.png": image}, {"0.png": [(10, 30, 50, 80)]})
    ds = WSOLDataset(split, transform=build_train_transform(
        AugmentConfig(kind="resize_crop", resize=120, crop=120, resize_mode="square")))
    lefts = set()
    for seed in range(10):
        torch.manual_seed(seed)
        s = ds[0]
        x0 = s["boxes"][0, 0].item()
        lefts.add(x0 < 60)
        assert np.abs(np.subtract(_bbox(s["image"].mean(0) > 0.5), s["boxes"][0].tolist())).max() <= 1.5
    assert lefts == {True, False}  # both flipped and unflipped were drawn


def test_official_eval_geometry():
    image = tv_tensors.Image(torch.zeros(3, 120, 160, dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes([[50, 30, 110, 80], [2, 10, 40, 60]], format="XYXY", canvas_size=(120, 160),
                                       dtype=torch.float32)
    out = build_eval_transform(160, kind="official", resize=200)({"image": image, "boxes": boxes})
    assert out["image"].shape == (3, 160, 160)
    # x scales by 200/160 then the crop removes 20 px; y scales by 200/120 then minus 20; clamped to the crop
    expected = [[42.5, 30.0, 117.5, 113.333], [0.0, 0.0, 30.0, 80.0]]
    assert np.allclose(out["boxes"].tolist(), expected, atol=1e-3)
    wsol = build_eval_transform(80)({"image": image, "boxes": boxes})
    assert np.allclose(wsol["boxes"].tolist(), [[25, 20, 55, 160 / 3], [1, 20 / 3, 20, 40]], atol=1e-3)


def test_randaugment_runs_with_boxes_and_masks(tmp_path):
    image, mask = _rect_image()
    split = _write_split(tmp_path, {"0.png": image}, {"0.png": [(50, 30, 110, 80)]}, masks={"0.png": [mask]})
    cfg = AugmentConfig(kind="rrc", crop=64, randaugment=True, color_jitter=0.4, lighting=0.1)
    ds = WSOLDataset(split, transform=build_train_transform(cfg), load_masks=True)
    for seed in range(5):
        torch.manual_seed(seed)
        s = ds[0]
        assert s["image"].shape == (3, 64, 64) and s["image"].dtype == torch.float32
        assert s["mask"].shape == (1, 64, 64) and s["boxes"].shape == (1, 4)


def test_pca_lighting_shifts_each_channel_by_a_constant():
    torch.manual_seed(0)
    image = tv_tensors.Image(torch.rand(3, 8, 8))
    boxes = tv_tensors.BoundingBoxes([[1, 1, 4, 4]], format="XYXY", canvas_size=(8, 8))
    out = PCALighting(0.1)({"image": image, "boxes": boxes})
    delta = out["image"] - image
    assert isinstance(out["image"], tv_tensors.Image)
    assert torch.allclose(delta, delta[:, :1, :1].expand_as(delta)) and delta.abs().max() > 0
    assert out["boxes"].tolist() == [[1, 1, 4, 4]]
    with pytest.raises(TypeError, match="float"):
        PCALighting(0.1)(tv_tensors.Image(torch.zeros(3, 2, 2, dtype=torch.uint8)))


@pytest.mark.parametrize("cfg,words", [
    (AugmentConfig(kind="crop"), "kind"),
    (AugmentConfig(kind="resize_crop", resize=200, crop=224), "resize (200) must be >= crop (224)"),
    (AugmentConfig(kind="resize_crop", resize_mode="long"), "resize_mode"),
    (AugmentConfig(scale=(0.0, 1.0)), "scale needs 0 < min <= max"),
    (AugmentConfig(randaugment=True, ra_magnitude=31), "ra_magnitude"),
])
def test_bad_augment_config(cfg, words):
    with pytest.raises(ConfigError, match=None) as err:
        build_train_transform(cfg)
    assert words in str(err.value)


def test_bad_eval_config():
    with pytest.raises(ConfigError, match="needs resize"):
        build_eval_transform(224, kind="official")
    with pytest.raises(ConfigError, match="kind"):
        build_eval_transform(224, kind="centre")
