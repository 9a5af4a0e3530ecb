"""`kdcicam.Localizer`: boxes in the original image's pixels, the evaluator's conventions, batching
that changes nothing, and every input kind giving the same answer.

The tiny synthetic set and the one-epoch CAM run are the shared session fixtures of tests/conftest.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

from kdcicam.errors import ImageReadError, KdcicamError


@pytest.fixture(scope="session")
def localizer(trained_run: Path):
    from kdcicam import Localizer

    return Localizer.from_checkpoint(trained_run, device="cpu")


def _test_images(tiny_data: Path, n: int = 6) -> list[Path]:
    return sorted((tiny_data / "images" / "test").rglob("*.png"))[::5][:n]


# ------------------------------------------------------------------------ a model with a known CAM
class BrightnessModel(nn.Module):
    """CAM = image brightness on the input grid, so the box of a bright rectangle is known exactly."""

    num_classes = 2
    method = "brightness"

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        cam = x.mean(1, keepdim=True)
        level = cam.mean((1, 2, 3))
        return {"logits": torch.stack([level, 1 - level], 1) * 10, "cams": torch.cat([cam, 1 - cam], 1)}

    def localization_map(self, out: dict[str, torch.Tensor], kind: str = "combinational") -> torch.Tensor:
        return out["cams"][:, 0]


def _rectangle_image(w: int, h: int, rect: tuple[int, int, int, int], mode: str) -> Image.Image:
    im = Image.new(mode, (w, h), 0 if mode == "L" else (0, 0, 0) if mode == "RGB" else (0, 0, 0, 255))
    x0, y0, x1, y1 = rect
    fill = 255 if mode == "L" else (255, 255, 255) if mode == "RGB" else (255, 255, 255, 255)
    ImageDraw.Draw(im).rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)  # covers x0..x1-1: edges x0 and x1
    return im


@pytest.mark.parametrize("size,mode", [((64, 64), "RGB"), ((256, 192), "RGB"), ((50, 90), "L"),
                                       ((333, 121), "RGBA"), ((640, 480), "L")])
def test_drawn_rectangle_comes_back_in_original_pixels(size: tuple[int, int], mode: str, tmp_path: Path):
    from kdcicam import Localizer

    w, h = size
    rect = (int(0.23 * w), int(0.31 * h), int(0.71 * w), int(0.83 * h))
    image = _rectangle_image(w, h, rect, mode)
    loc = Localizer(BrightnessModel(), image_size=64, threshold=0.5, class_names=["bright", "dark"], device="cpu")
    path = tmp_path / f"rect_{mode}.png"
    image.save(path)
    inputs = {"path": path, "pil": image, "numpy": np.asarray(image)}
    for kind, item in inputs.items():
        [r] = loc.predict(item)
        assert r.size == (w, h), kind
        assert r.boxes.shape == (1, 4), kind
        cell_w, cell_h = w / 64, h / 64  # one CAM grid cell in original pixels
        tol = np.array([cell_w, cell_h, cell_w, cell_h]) + 1.0
        assert (np.abs(r.boxes[0] - np.array(rect)) <= tol).all(), (kind, r.boxes[0], rect)
        assert r.class_name == "dark" and r.cam.shape == (64, 64)
        assert r.cam_resized().shape == (h, w)


def test_no_foreground_gives_no_box():
    from kdcicam import Localizer

    loc = Localizer(BrightnessModel(), image_size=32, threshold=0.5, device="cpu")
    [r] = loc.predict(np.full((40, 30, 3), 128, dtype=np.uint8))  # constant map: nothing is foreground
    assert r.boxes.shape == (0, 4) and r.to_dict()["boxes"] == []


# ------------------------------------------------------------------------ the trained checkpoint
def test_from_checkpoint_reads_threshold_names_and_config(localizer, trained_run: Path):
    from kdcicam.checkpoints import read_checkpoint

    ckpt = read_checkpoint(str(trained_run / "checkpoints" / "best.ckpt"))
    assert localizer.threshold == pytest.approx(ckpt["kdcicam"]["box_threshold"])
    assert "checkpoint" in localizer.threshold_source
    assert localizer.class_names == ckpt["kdcicam"]["class_names"] == ["disc", "square", "triangle", "star"]
    assert localizer.image_size == 64 and localizer.method == "cam"


def test_boxes_scale_back_exactly_from_the_model_input(localizer, tiny_data: Path):
    """The model sees Resize((S, S)) of any image; feeding that resized copy itself (S x S) must give
    the same grid boxes, and the original's boxes are those times (w / S, h / S)."""
    from torchvision.transforms.v2 import functional as TF

    from kdcicam import Localizer

    loc = Localizer(localizer.model, image_size=64, threshold=0.4, class_names=localizer.class_names,
                    device="cpu", multi_contour=True)
    src = Image.open(_test_images(tiny_data)[1]).convert("RGB")
    for w, h in [(128, 128), (200, 120), (48, 90)]:
        big = src.resize((w, h), Image.Resampling.BICUBIC)
        small = TF.resize(TF.pil_to_tensor(big), [64, 64], antialias=True)  # exactly what the model gets
        r_big, r_small = loc.predict([big, small])
        assert r_small.size == (64, 64) and r_big.size == (w, h)
        np.testing.assert_array_equal(r_big.grid_boxes, r_small.grid_boxes)
        np.testing.assert_allclose(r_big.boxes, r_small.boxes * np.array([w / 64, h / 64, w / 64, h / 64]))
        assert (r_big.boxes[:, [0, 2]] <= w).all() and (r_big.boxes[:, [1, 3]] <= h).all()
        assert r_big.class_ids == r_small.class_ids


def test_boxes_and_cams_are_the_evaluators(localizer, tiny_data: Path):
    """Same preprocessing, map and box rule as `kdcicam evaluate`: the CAM equals the evaluation
    pipeline's score map, and the boxes equal scoremap_to_boxes at the threshold."""
    from kdcicam.evaluation import scoremap_to_boxes
    from kdcicam.scoremaps import scoremaps_for_evaluation
    from kdcicam.training.datamodule import WSOLDataModule
    from kdcicam.training.module import load_module

    module = load_module(str(localizer.checkpoint))
    dm = WSOLDataModule(module.cfg)
    ds = dm.eval_dataset("test", load_masks=False)
    samples = [ds[i] for i in range(0, 32, 8)]
    with torch.inference_mode():
        out = module(torch.stack([s["image"] for s in samples]))
        maps = scoremaps_for_evaluation(module.model.localization_map(out, kind="combinational"), 64)
    results = localizer.predict([ds.metadata.image_path(s["image_id"]) for s in samples])
    for r, cam, logits in zip(results, maps, out["logits"], strict=True):
        np.testing.assert_allclose(r.cam, cam, atol=1e-5)
        assert r.class_id == int(logits.argmax())
        expected = scoremap_to_boxes(r.cam, [localizer.threshold])[0]
        expected = expected[(expected != 0).any(axis=1)]
        np.testing.assert_array_equal(r.grid_boxes, expected)


def test_batched_equals_one_by_one(localizer, tiny_data: Path):
    from kdcicam import Localizer

    paths = _test_images(tiny_data, 5)
    images = [Image.open(p).convert("RGB").resize(s) for p, s in zip(paths, [(64, 64), (100, 80), (37, 61),
                                                                            (64, 64), (150, 150)], strict=True)]
    loc = Localizer(localizer.model, image_size=64, threshold=0.3, class_names=localizer.class_names,
                    device="cpu", batch_size=3)
    batched = loc.predict(images)
    single = [loc.predict(im)[0] for im in images]
    assert len(batched) == len(single) == 5
    for a, b in zip(batched, single, strict=True):
        assert a.size == b.size and a.class_ids == b.class_ids
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_allclose(a.cam, b.cam, atol=1e-4)  # batched convolutions sum in another order


def test_input_kinds_agree(localizer, tiny_data: Path):
    path = _test_images(tiny_data)[2]
    pil = Image.open(path)
    arr = np.asarray(pil.convert("RGB"))
    chw = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    r_path, r_pil, r_np, r_t = localizer.predict([path, pil, arr, chw])
    assert r_path.source == str(path) and r_pil.source is None
    for r in (r_pil, r_np, r_t):
        assert r.class_ids == r_path.class_ids and r.size == r_path.size
        np.testing.assert_array_equal(r.boxes, r_path.boxes)
        np.testing.assert_allclose(r.scores, r_path.scores, atol=1e-6)
    # float [0, 1] tensors skip the uint8 rounding of the resize, so they agree closely, not bit for bit
    [r_float] = localizer.predict(chw.float() / 255)
    assert r_float.class_id == r_path.class_id
    np.testing.assert_allclose(r_float.scores, r_path.scores, atol=1e-3)
    # a 4-D array is a batch; grey images work
    batch = localizer.predict(np.stack([arr, arr]))
    assert len(batch) == 2 and np.array_equal(batch[0].boxes, r_path.boxes)
    [grey] = localizer.predict(arr.mean(axis=2).astype(np.uint8))
    assert grey.size == r_path.size and len(grey.class_ids) == 4


def test_topk_override_and_all_contours(trained_run: Path, tiny_data: Path):
    from kdcicam import Localizer

    path = _test_images(tiny_data)[3]
    top2 = Localizer.from_checkpoint(trained_run, device="cpu", topk=2, threshold=0.6)
    [r] = top2.predict(path)
    assert len(r.class_ids) == 2 and r.scores[0] >= r.scores[1] and r.threshold == 0.6
    assert top2.threshold_source == "given"
    [full] = Localizer.from_checkpoint(trained_run, device="cpu", topk=10).predict(path)
    assert len(full.scores) == 4 and sum(full.scores) == pytest.approx(1.0, abs=1e-5)  # clipped to C classes
    multi = Localizer.from_checkpoint(trained_run, device="cpu", threshold=0.6, multi_contour=True)
    [m] = multi.predict(path)
    assert len(m.boxes) >= len(r.boxes)
    assert any(np.array_equal(b, r.boxes[0]) for b in m.boxes)  # the largest contour is one of them
    d = m.to_dict()
    assert d["file"] == str(path) and len(d["boxes"]) == len(m.boxes)
    assert all(b["class_name"] == m.class_name for b in d["boxes"])


def test_bad_inputs_are_named(localizer, tmp_path: Path):
    from kdcicam import Localizer

    with pytest.raises(KdcicamError, match=r"images\[1\].*shape"):
        localizer.predict([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 2), np.uint8)])
    with pytest.raises(KdcicamError, match=r"\[0, 1\]"):
        localizer.predict(torch.full((3, 8, 8), 255.0))
    with pytest.raises(KdcicamError, match="dtype"):
        localizer.predict(np.zeros((8, 8, 3), np.int32))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match=r"broken\.jpg"):
        localizer.predict(bad)
    with pytest.raises(KdcicamError, match="no such run folder"):
        Localizer.from_checkpoint(tmp_path / "nope")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(KdcicamError, match=r"junk\.ckpt"):
        Localizer.from_checkpoint(junk)
    with pytest.raises(KdcicamError, match="threshold"):
        Localizer(BrightnessModel(), image_size=32, threshold=1.5)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_tensor_and_numpy_inputs_follow_one_rule(dtype, channels):
    """A CxHxW tensor is read exactly as the same HxWxC numpy image (grey to RGB, alpha on white)."""
    from kdcicam.inference import to_image_tensor

    g = torch.Generator().manual_seed(channels)
    chw = (torch.rand(channels, 5, 7, generator=g) * (255 if dtype == torch.uint8 else 1)).to(dtype)
    hwc = chw.permute(1, 2, 0).numpy()
    from_tensor, _ = to_image_tensor(chw)
    from_numpy, _ = to_image_tensor(hwc.astype(np.float32) if chw.is_floating_point() else hwc)
    assert from_tensor.shape == (3, 5, 7) and torch.equal(from_tensor, from_numpy)


@pytest.mark.parametrize("bad, words", [(1.5, r"must lie in \[0, 1\], got min 0, max 1.5"),
                                        (float("nan"), "NaN or inf"), (-float("inf"), "NaN or inf")])
def test_tensor_and_numpy_inputs_fail_alike(bad, words):
    from kdcicam.inference import to_image_tensor
    from kdcicam.localization import ImageInputError

    arr = np.zeros((4, 4, 3), np.float32)
    arr[1, 2, 0] = bad
    messages = []
    for image in (arr, torch.from_numpy(arr).permute(2, 0, 1)):
        with pytest.raises(ImageInputError, match=words) as err:
            to_image_tensor(image, "images[3]")
        messages.append(str(err.value))
    assert messages[0] == messages[1] and messages[0].startswith("images[3]: ")
