"""`kdcicam export` and the ONNX backend: the numpy preprocessing is the evaluation transform bit for bit,
the graph reproduces each method's top-1, map and boxes (CI-CAM's trained pool and intervention
included), `localize --backend onnx` runs where torch cannot be imported, and bad input at the new entry
points gives one clear line (exit 2) and leaves nothing half-written.

The CI-CAM and KD-CI-CAM runs are session fixtures trained for one epoch on the tiny synthetic set of
test_inference.py (the KD student reuses the CI-CAM run as both teachers, so only the student trains).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _datasets import RUN_RECIPE as FAST  # the shared one-epoch recipe
from kdcicam.cli import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

SRC = Path(__file__).resolve().parents[1] / "src"
#: maps (the score map the boxes come from, in [0, 1]) may differ by float32 rounding between the backends
MAP_TOLERANCE = 1e-4


# ------------------------------------------------------------------------------------------ fixtures
def _train(run: Path, data: Path, method: str) -> Path:
    from kdcicam.config import load_config
    from kdcicam.training.pipeline import train

    if not (run / "done.json").is_file():
        train(load_config(None, [f"data.root={data}", *FAST], method=method), run)
    return run


@pytest.fixture(scope="session")
def cicam_run(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    return _train(tmp_path_factory.getbasetemp() / "onnx_run_ci-cam", tiny_data, "ci-cam")


@pytest.fixture(scope="session")
def kd_run(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, cicam_run: Path) -> Path:
    """A KD-CI-CAM run whose teacher stages are the CI-CAM run (marked done), so only the student trains."""
    run = tmp_path_factory.getbasetemp() / "onnx_run_kd-ci-cam"
    best = cicam_run / "checkpoints" / "best.ckpt"
    for stage in ("cls_teacher", "loc_teacher"):
        (run / stage).mkdir(parents=True, exist_ok=True)
        (run / stage / "done.json").write_text(json.dumps({"best": str(best), "stage_dir": str(run / stage)}))
    return _train(run, tiny_data, "kd-ci-cam")


@pytest.fixture(scope="session")
def runs(trained_run: Path, cicam_run: Path, kd_run: Path) -> dict[str, Path]:
    return {"cam": trained_run, "ci-cam": cicam_run, "kd-ci-cam": kd_run}


@pytest.fixture(scope="session")
def exports(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from kdcicam.export import export_onnx

    out = tmp_path_factory.mktemp("onnx_exports")
    paths = {}
    for method, run in runs.items():
        paths[method] = out / f"{method}.onnx"
        export_onnx(run, paths[method])
    return paths


def _images(tiny_data: Path, n: int = 8) -> list[Path]:
    files = sorted(p for p in (tiny_data / "images" / "test").rglob("*.png") if not p.stem.endswith("_mask"))
    return files[::3][:n]


# ------------------------------------------------------------------------------------------ preprocessing
@pytest.mark.parametrize("seed", range(4))
def test_numpy_preprocessing_is_the_eval_transform_bit_for_bit(seed: int):
    from torchvision import tv_tensors

    from kdcicam.data.dataset import build_eval_transform
    from kdcicam.preprocess import model_input

    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512") and os.uname().machine not in (
            "aarch64", "arm64"):
        pytest.skip("torchvision resizes uint8 in float on this CPU (see kdcicam.preprocess)")
    rng = np.random.default_rng(seed)
    for _ in range(12):
        size = int(rng.choice([7, 64, 100, 224]))
        h, w = (int(v) for v in rng.integers(1, 700, 2))
        if rng.random() < 0.3:  # one axis already at the model's size: that pass is skipped
            h = size
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if rng.random() < 0.5:
            arr = np.broadcast_to(np.linspace(0, 255, w, dtype=np.uint8)[None, :, None], (h, w, 3)).copy()
        expected = build_eval_transform(size)(tv_tensors.Image(torch.from_numpy(arr).permute(2, 0, 1))).numpy()
        got = model_input(arr, size)
        assert got.dtype == np.float32 and got.shape == (3, size, size)
        assert np.array_equal(got, expected), (h, w, size)


def test_float_input_is_close_and_bad_arrays_are_named():
    from kdcicam.data.dataset import build_eval_transform
    from kdcicam.localization import ImageInputError
    from kdcicam.preprocess import image_array, model_input

    arr = np.random.default_rng(0).random((90, 130, 3)).astype(np.float32)
    expected = build_eval_transform(64)(torch.from_numpy(arr).permute(2, 0, 1)).numpy()
    assert np.abs(model_input(image_array(arr)[0], 64) - expected).max() < 1e-5
    with pytest.raises(ImageInputError, match=r"images\[2\].*\[0, 1\]"):
        image_array(arr * 3, "images[2]")
    with pytest.raises(ImageInputError, match="no torch tensors"):
        image_array(torch.zeros(3, 4, 4))


def test_rank_by_counting_is_the_stable_sort_rank():
    from kdcicam.export import rank_by_counting

    logits = torch.tensor([[0.5, 2.0, 0.5, -1.0, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0], [3.0, 2.0, 1.0, 0.0, -1.0]])
    logits = torch.cat([logits, torch.randn(20, 5)])
    order = torch.sort(logits, dim=1, descending=True, stable=True).indices
    expected = torch.empty_like(order).scatter_(1, order, torch.arange(5).expand(len(order), 5))
    assert torch.equal(rank_by_counting(logits), expected)


# ------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("method", ["cam", "ci-cam", "kd-ci-cam"])
def test_export_reproduces_top1_maps_and_boxes(method: str, runs, exports, tiny_data: Path):
    import onnx

    from kdcicam import Localizer, OnnxLocalizer
    from kdcicam.checkpoints import load_checkpoint
    from kdcicam.localization import grid_boxes

    run, path = runs[method], exports[method]
    torch_loc = Localizer.from_checkpoint(run, device="cpu")
    onnx_loc = OnnxLocalizer(path)
    assert onnx_loc.class_names == torch_loc.class_names and onnx_loc.image_size == torch_loc.image_size
    assert onnx_loc.threshold == torch_loc.threshold and onnx_loc.method == method
    files = _images(tiny_data)
    # the graph itself: logits and the map on the CAM grid, on the same input
    x = np.stack([onnx_loc.preprocess(f)[0] for f in files])
    logits, maps = onnx_loc.run_graph(x)
    with torch.inference_mode():
        out = torch_loc.model(torch.from_numpy(x))
        t_maps = torch_loc.model.localization_map(out, kind=torch_loc.map_kind).numpy()
    assert np.array_equal(logits.argmax(1), out["logits"].numpy().argmax(1))
    assert maps.shape == t_maps.shape == (len(files), *onnx_loc.cam_grid)
    assert np.abs(maps - t_maps).max() <= MAP_TOLERANCE * max(float(np.ptp(t_maps)), 1e-6)
    # end to end, from the files: same classes, score maps within tolerance, identical boxes
    for a, b in zip(torch_loc.predict(files), onnx_loc.predict(files), strict=True):
        assert a.class_ids == b.class_ids and a.size == b.size
        assert np.allclose(a.scores, b.scores, atol=1e-5)
        assert np.abs(a.cam - b.cam).max() <= MAP_TOLERANCE
        assert np.array_equal(a.grid_boxes, b.grid_boxes) and np.array_equal(a.boxes, b.boxes)
        for t in (0.25, 0.5):  # a one-epoch run's val threshold may be 0 (whole-image boxes): check real ones too
            assert np.array_equal(grid_boxes(a.cam, t, True), grid_boxes(b.cam, t, True)), t
    if method != "cam":  # the trained context pool is in the graph, as a constant
        pool = load_checkpoint(run).model.pool.maps.numpy()
        assert np.abs(pool).max() > 0, "the fixture's pool never moved"
        consts = [onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
        assert any(c.shape == pool.shape and np.array_equal(c, pool) for c in consts)


def test_metadata_describes_the_export(exports, runs):
    import onnxruntime

    from kdcicam.onnx_backend import read_metadata

    path = exports["ci-cam"]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = read_metadata(session, path)
    assert meta["class_names"] == ["disc", "square", "triangle", "star"] and meta["image_size"] == 64
    assert meta["normalization"]["applied_in_graph"] and len(meta["normalization"]["mean"]) == 3
    assert meta["map_kind"] == "combinational" and meta["method"] == "ci-cam" and len(meta["cam_grid"]) == 2
    assert 0 <= meta["box_threshold"] < 1 and "validation" in meta["box_threshold_source"]
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert session.get_inputs()[0].shape[0] == "batch"  # dynamic batch axis
    assert [o.name for o in session.get_outputs()] == ["logits", "map"]


# ------------------------------------------------------------------------------------------ without torch
#: a Python that cannot import torch (nor torchvision / lightning): the blocked names resolve to None
NO_TORCH = ("import sys\n"
            "for name in ('torch', 'torchvision', 'lightning', 'pytorch_lightning', 'timm'):\n"
            "    sys.modules[name] = None\n"
            "from kdcicam.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules if sys.modules[m] is not None)\n"
            "sys.exit(rc)\n")


def test_localize_backend_onnx_runs_where_torch_cannot_be_imported(exports, runs, tiny_data: Path,
                                                                      tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for f in _images(tiny_data, 5):
        (folder / f.name).write_bytes(f.read_bytes())
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONWARNINGS": "ignore"}
    probe = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None; import torch"],
                           env=env, capture_output=True, text=True, check=False)
    assert probe.returncode != 0 and "halted" in probe.stderr  # the blocker works (ModuleNotFoundError)
    out = tmp_path / "onnx_out"
    r = subprocess.run([sys.executable, "-c", NO_TORCH, "localize", str(exports["kd-ci-cam"]), str(folder),
                        "--out", str(out), "--backend", "onnx", "--coco", str(out / "coco.json")],
                       env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert main(["localize", str(runs["kd-ci-cam"]), str(folder), "--out", str(tmp_path / "torch_out"),
                 "--no-overlays"]) == 0
    got = json.loads((out / "boxes.json").read_text())
    want = json.loads((tmp_path / "torch_out" / "boxes.json").read_text())
    assert got["backend"] == "onnx" and got["threshold"] == want["threshold"]
    for a, b in zip(got["images"], want["images"], strict=True):
        assert a["file"] == b["file"] and a["boxes"] == b["boxes"]
        assert [t["class_id"] for t in a["topk"]] == [t["class_id"] for t in b["topk"]]
    assert (out / "coco.json").is_file() and (out / "coco_detections.json").is_file()
    assert len(list((out / "overlays").glob("*.png"))) == 5


# ------------------------------------------------------------------------------------------ bad input
def test_export_to_an_unwritable_path_leaves_nothing(runs, tmp_path: Path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file, not a folder")
    assert main(["export", str(runs["cam"]), "--out", str(blocker / "model.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write there" in err[0] and "model.onnx" in err[0]
    folder = tmp_path / "folder"
    folder.mkdir()
    assert main(["export", str(runs["cam"]), "--out", str(folder)]) == 2
    assert "is a folder" in capsys.readouterr().err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            assert main(["export", str(runs["cam"]), "--out", str(locked / "model.onnx")]) == 2
            assert "cannot write there" in capsys.readouterr().err
            assert list(locked.iterdir()) == []
        finally:
            locked.chmod(0o700)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "folder", "locked"][:2 + (os.geteuid() != 0)]
    assert list(folder.iterdir()) == []


def test_not_a_checkpoint_is_refused(tmp_path: Path, capsys):
    fake = tmp_path / "model.ckpt"
    fake.write_text("not a checkpoint")
    out = tmp_path / "model.onnx"
    assert main(["export", str(fake), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.ckpt" in err[0] and not out.exists()
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(image)
    not_onnx = tmp_path / "weights.onnx"
    not_onnx.write_bytes(b"\x00garbage, not a protobuf")
    assert main(["localize", str(not_onnx), str(image), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "weights.onnx" in err and "not a loadable ONNX model" in err


def test_onnx_file_without_kdcicam_metadata_is_refused(exports, tmp_path: Path, capsys):
    import onnx

    proto = onnx.load(str(exports["cam"]))
    del proto.metadata_props[:]
    stranger = tmp_path / "other.onnx"
    onnx.save(proto, str(stranger))
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(image)
    assert main(["localize", str(stranger), str(image), "--out", str(tmp_path / "o")]) == 2
    assert "not one written by `kdcicam export`" in capsys.readouterr().err
