"""Bad and unusual image files in training, evaluation and `localize`.

Unreadable files (truncated, empty, not an image) must stop training / evaluation with one line
naming the file, or, with ``data.skip_bad_images=true``, be skipped and counted in the log.
Unusual but valid files (16-bit, palette, alpha, CMYK, EXIF-rotated, 1x1, 10000x10) must decode to
what a viewer shows and go through training, evaluation and localize.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdcicam.data.dataset import load_image_rgb
from kdcicam.data.metadata import read_metadata

from .conftest import copy_dataset, link_run, run_cli, train_args
from .images import BAD, ODD, Kind, alpha_of, grey, install

CAT = "bad images"


def _ids(kinds: list[Kind]) -> list[str]:
    return [k.name for k in kinds]


# ------------------------------------------------------------------------------------- unreadable
@pytest.mark.parametrize("kind", BAD, ids=_ids(BAD))
def test_unreadable_image_stops_training_naming_the_file(kind: Kind, dataset: Path, empty_config: Path,
                                                         tmp_path: Path, cli, fault):
    rec = fault(f"{kind.name} in the training split", CAT,
                "`kdcicam train` exits 2 with one line naming the file; no checkpoint is written")
    _, path = install(dataset, "train", 5, kind)
    r = cli(*train_args(empty_config, dataset, tmp_path / "run"))
    rec.observed = r.error_lines("train")[0] if r.error_lines("train") else f"exit {r.rc}: {r.err[-300:]}"
    line = r.one_line_error("train")
    assert str(path) in line and "cannot read image" in line
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("kind", BAD, ids=_ids(BAD))
def test_unreadable_image_stops_evaluation_naming_the_file(kind: Kind, dataset: Path, run_copy: Path, cli, fault):
    rec = fault(f"{kind.name} in the evaluated split", CAT,
                "`kdcicam evaluate` exits 2 with one line naming the file; metrics.json is not written")
    _, path = install(dataset, "test", 2, kind)
    r = cli("evaluate", run_copy, "--split", "test", "--data-root", dataset, "--device", "cpu")
    rec.observed = r.error_lines("evaluate")[0] if r.error_lines("evaluate") else f"exit {r.rc}: {r.err[-300:]}"
    line = r.one_line_error("evaluate")
    assert str(path) in line
    assert not (run_copy / "metrics.json").exists()


def test_skip_bad_images_in_training_logs_each_file_and_a_count(dataset: Path, empty_config: Path, tmp_path: Path,
                                                                 cli, fault, caplog: pytest.LogCaptureFixture):
    rec = fault("3 unreadable training images with data.skip_bad_images=true", CAT,
                "training finishes; the log names each skipped file and how many were skipped")
    paths = [install(dataset, "train", i, kind)[1] for i, kind in zip((3, 9, 20), BAD, strict=True)]
    caplog.set_level(logging.WARNING, logger="kdcicam")
    r = cli(*train_args(empty_config, dataset, tmp_path / "run", "data.skip_bad_images=true"))
    assert r.rc == 0, r.err[-2000:]
    messages = [m.getMessage() for m in caplog.records if "unreadable" in m.getMessage()]
    rec.observed = f"exit 0; {len(messages)} warnings, last: {messages[-1] if messages else '-'}"
    for path in paths:
        assert sum(str(path) in m for m in messages) == 1, (path, messages)
    assert any("3 unreadable" in m for m in messages), messages  # the running count reaches 3
    assert (tmp_path / "run" / "done.json").is_file()


def test_skip_bad_images_in_validation_scores_each_image_once(dataset: Path, fault):
    rec = fault("unreadable validation image with data.skip_bad_images=true", CAT,
                "the validation loader skips the file: every other image scored exactly once")
    from kdcicam.config import load_config
    from kdcicam.training.datamodule import WSOLDataModule

    from .conftest import FAST

    bad_id, _ = install(dataset, "val", 4, BAD[0])
    cfg = load_config(None, [f"data.root={dataset}", *FAST, "data.skip_bad_images=true"], method="cam")
    ids = [i for batch in WSOLDataModule(cfg).val_dataloader() for i in batch["image_id"]]
    rec.observed = f"{len(ids)} ids scored, {len(set(ids))} distinct; unreadable one present: {bad_id in ids}"
    assert bad_id not in ids
    assert len(ids) == len(set(ids)), "an image was scored twice"


# ------------------------------------------------------------------------------------- unusual, valid
@pytest.fixture(scope="module")
def odd(fault_data: Path, fault_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One dataset with every unusual-but-valid kind in train (indices 0..6) and test; one training
    run and one evaluation (with saved CAMs) over it, shared by the per-kind tests."""
    base = tmp_path_factory.mktemp("odd")
    root = copy_dataset(fault_data, base / "data")
    installed = {}
    for i, kind in enumerate(ODD):
        installed[kind.name] = {"train": install(root, "train", i, kind), "test": install(root, "test", i, kind)}
    config = base / "empty.yaml"
    config.write_text("{}\n")
    train = run_cli(*train_args(config, root, base / "run"))
    run = link_run(fault_run, base / "evalrun")
    evaluate = run_cli("evaluate", run, "--split", "test", "--data-root", root, "--device", "cpu",
                       "--save-cams", base / "cams")
    return {"root": root, "installed": installed, "train": train, "evaluate": evaluate, "cams": base / "cams"}


def _expected(kind: Kind, src: np.ndarray, decoded: np.ndarray) -> None:
    """What a viewer would show, per kind."""
    diff = lambda a, b: float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
    if kind.name.startswith("16-bit"):
        assert (decoded == grey(src)[..., None]).all(), "16-bit values must scale by 255/65535, not clip"
    elif kind.name.startswith("RGBA"):
        transparent = alpha_of(src) == 0
        assert (decoded[transparent] == 255).all(), "transparent pixels must be composited on white"
        assert (decoded[~transparent] == src[~transparent]).all()
    elif kind.name.startswith(("palette", "CMYK", "EXIF")):
        assert decoded.shape == src.shape, f"decoded {decoded.shape[1]}x{decoded.shape[0]}, displayed is 64x64"
        assert diff(decoded, src) < 12, diff(decoded, src)
    elif kind.name.startswith("1x1"):
        assert decoded.shape == (1, 1, 3)
    else:
        assert decoded.shape == (10, 10000, 3)


@pytest.mark.parametrize("kind", ODD, ids=_ids(ODD))
def test_unusual_valid_image_decodes_trains_and_evaluates(kind: Kind, odd: dict, fault_data: Path, fault):
    rec = fault(kind.name, CAT, "decoded as a viewer shows it (RGB uint8, displayed orientation); training and "
                "`kdcicam evaluate` accept it and its CAM is scored")
    image_id, path = odd["installed"][kind.name]["test"]
    md = read_metadata(fault_data / "test", check_images=False)
    src = np.asarray(Image.open(md.image_path(md.image_ids[ODD.index(kind)])).convert("RGB"))
    decoded = np.asarray(load_image_rgb(path))
    assert decoded.dtype == np.uint8 and decoded.ndim == 3 and decoded.shape[2] == 3
    _expected(kind, src, decoded)
    train, evaluate = odd["train"], odd["evaluate"]
    rec.observed = (f"decoded {decoded.shape[1]}x{decoded.shape[0]} RGB; train exit {train.rc}, "
                    f"evaluate exit {evaluate.rc}")
    assert train.rc == 0, train.err[-2000:]
    assert evaluate.rc == 0, evaluate.err[-2000:]
    cam = np.load(odd["cams"] / "test" / f"{image_id}.npy", allow_pickle=False)
    assert cam.shape == (32, 32) and np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1


def test_exif_rotated_image_with_stored_size_in_metadata_is_a_clear_error(dataset: Path, empty_config: Path,
                                                                           tmp_path: Path, cli, fault):
    rec = fault("EXIF-rotated JPEG whose metadata gives the stored (unrotated) size", CAT,
                "exit 2 naming image_sizes.txt and the image: boxes in the wrong orientation must not be trained on")
    md = read_metadata(dataset / "train")
    image_id = md.image_ids[6]
    src = np.asarray(Image.open(md.image_path(image_id)).convert("RGB"))[:40]  # displayed 64 wide, 40 high
    stored = Image.fromarray(src).transpose(Image.Transpose.ROTATE_90)  # stored 40 wide, 64 high
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(md.image_path(image_id), format="JPEG", quality=95, exif=exif.tobytes())
    sizes = dataset / "train" / "image_sizes.txt"
    sizes.write_text(sizes.read_text().replace(f"{image_id},64,64", f"{image_id},40,64"))
    loc = dataset / "train" / "localization.txt"
    loc.write_text("".join(f"{ln.split(',')[0]},0,0,40,40\n" if ln.startswith(image_id + ",") else ln + "\n"
                           for ln in loc.read_text().splitlines()))
    r = cli(*train_args(empty_config, dataset, tmp_path / "run"))
    rec.observed = r.error_lines("train")[0] if r.error_lines("train") else f"exit {r.rc}"
    line = r.one_line_error("train")
    assert "image_sizes.txt" in line and image_id in line and "64x40" in line


# ------------------------------------------------------------------------------------- localize
def test_localize_skips_and_reports_unreadable_files(fault_run: Path, fault_data: Path, tmp_path: Path, cli, fault):
    rec = fault("unreadable and unusual files given to `kdcicam localize`", CAT,
                "each unreadable file is named on stderr and listed under 'skipped' (exit 1); every valid "
                "file gets boxes inside its own image")
    folder = tmp_path / "photos"
    folder.mkdir()
    md = read_metadata(fault_data / "test", check_images=False)
    src = np.asarray(Image.open(md.image_path(md.image_ids[0])).convert("RGB"))
    for i, kind in enumerate(BAD + ODD):
        data, _ = kind.make(src)
        (folder / f"{i:02d}.{kind.ext}").write_bytes(data)
    bad = {str(folder / f"{i:02d}.{k.ext}") for i, k in enumerate(BAD)}
    r = cli("localize", fault_run, folder, "--out", tmp_path / "out", "--device", "cpu", "--no-overlays")
    doc = json.loads((tmp_path / "out" / "boxes.json").read_text())
    rec.observed = f"exit {r.rc}; {doc['num_images']} localized, {len(doc['skipped'])} skipped"
    assert r.rc == 1, r.err[-2000:]
    assert {s["file"] for s in doc["skipped"]} == bad
    for path in bad:
        assert f"skipped {path}" in r.err
    assert doc["num_images"] == len(ODD)
    for image in doc["images"]:
        for box in image["boxes"]:
            assert 0 <= box["x0"] <= box["x1"] <= image["width"] and 0 <= box["y0"] <= box["y1"] <= image["height"]
