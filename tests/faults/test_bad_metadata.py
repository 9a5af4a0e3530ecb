"""Bad metadata and bad CAM files, through the CLI: exit 2, one line naming the file (and the line
where there is one), no traceback unless --debug; .npy files are never unpickled."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from kdcicam.data.metadata import MetadataError, read_metadata

from .conftest import run_cli, train_args

CAT = "bad metadata and CAM files"
SIZE = 32  # the CAM grid of these tests


def _edit_line(path: Path, number: int, new: str | None) -> None:
    """Replace (or delete, ``new=None``) the 1-based line ``number``."""
    lines = path.read_text().splitlines()
    if new is None:
        del lines[number - 1]
    else:
        lines[number - 1] = new
    path.write_text("\n".join(lines) + "\n")


def _field(path: Path, number: int, index: int, value: str) -> None:
    fields = path.read_text().splitlines()[number - 1].split(",")
    fields[index] = value
    _edit_line(path, number, ",".join(fields))


def _id(split: Path, number: int) -> str:
    return (split / "image_ids.txt").read_text().splitlines()[number - 1]


# (name, file the message must name, line it must name or None, words it must contain, mutation of the split)
Case = tuple[str, str, "int | None", str, Callable[[Path], None]]
CASES: list[Case] = [
    ("image_ids.txt: line with 2 fields", "image_ids.txt", 3, "expected 1 field",
     lambda s: _edit_line(s / "image_ids.txt", 3, _id(s, 3) + ",extra")),
    ("image_ids.txt: duplicate id", "image_ids.txt", 5, "duplicate image id",
     lambda s: _edit_line(s / "image_ids.txt", 5, _id(s, 1))),
    ("image_ids.txt: empty file", "image_ids.txt", None, "no image ids",
     lambda s: (s / "image_ids.txt").write_text("\n\n")),
    ("image_ids.txt: not UTF-8", "image_ids.txt", None, "not UTF-8",
     lambda s: (s / "image_ids.txt").write_bytes(b"\xff\xfe\x00bad\n")),
    ("class_labels.txt: class is not a number", "class_labels.txt", 4, "is not a number",
     lambda s: _field(s / "class_labels.txt", 4, 1, "bird")),
    ("class_labels.txt: class is not an integer", "class_labels.txt", 4, "not an integer",
     lambda s: _field(s / "class_labels.txt", 4, 1, "1.5")),
    ("class_labels.txt: class is NaN", "class_labels.txt", 4, "not finite",
     lambda s: _field(s / "class_labels.txt", 4, 1, "nan")),
    ("class_labels.txt: class outside 0..C-1", "class_labels.txt", 4, "class 99 is outside 0..3",
     lambda s: _field(s / "class_labels.txt", 4, 1, "99")),
    ("class_labels.txt: negative class", "class_labels.txt", 4, "class -1 is outside 0..3",
     lambda s: _field(s / "class_labels.txt", 4, 1, "-1")),
    ("class_labels.txt: line with 3 fields", "class_labels.txt", 2, "expected 2 fields",
     lambda s: _edit_line(s / "class_labels.txt", 2, (s / "class_labels.txt").read_text().splitlines()[1] + ",1")),
    ("class_labels.txt: id not in image_ids.txt", "class_labels.txt", 2, "is not in image_ids.txt",
     lambda s: _field(s / "class_labels.txt", 2, 0, "test/nowhere.png")),
    ("class_labels.txt: image without a label", "class_labels.txt", None,
     "(line 3 of image_ids.txt) has no entry here (1 missing in all)",
     lambda s: _edit_line(s / "class_labels.txt", 3, None)),
    ("class_labels.txt: duplicate entry", "class_labels.txt", 6, "duplicate image id",
     lambda s: _edit_line(s / "class_labels.txt", 6, (s / "class_labels.txt").read_text().splitlines()[0])),
    ("class_labels.txt: file missing", "class_labels.txt", None, "file not found",
     lambda s: (s / "class_labels.txt").unlink()),
    ("image_ids.txt: absolute path", "image_ids.txt", 1, "is absolute",
     lambda s: _edit_line(s / "image_ids.txt", 1, "/abs/1.png")),
    ("image_ids.txt: path escaping the image root", "image_ids.txt", 2, "escapes the image root",
     lambda s: _edit_line(s / "image_ids.txt", 2, "test/../../2.png")),
    ("image_sizes.txt: id not in image_ids.txt", "image_sizes.txt", 2, "is not in image_ids.txt",
     lambda s: _field(s / "image_sizes.txt", 2, 0, "test/nowhere.png")),
    ("image_sizes.txt: file missing (a box split needs it)", "image_sizes.txt", None, "file not found",
     lambda s: (s / "image_sizes.txt").unlink()),
    ("image_sizes.txt: line with 2 fields", "image_sizes.txt", 2, "expected 3 fields",
     lambda s: _edit_line(s / "image_sizes.txt", 2, ",".join((s / "image_sizes.txt").read_text()
                                                              .splitlines()[1].split(",")[:2]))),
    ("image_sizes.txt: width is not a number", "image_sizes.txt", 2, "width 'wide' is not a number",
     lambda s: _field(s / "image_sizes.txt", 2, 1, "wide")),
    ("image_sizes.txt: zero width", "image_sizes.txt", 2, "is not positive",
     lambda s: _field(s / "image_sizes.txt", 2, 1, "0")),
    ("image_sizes.txt: fractional height", "image_sizes.txt", 2, "not an integer",
     lambda s: _field(s / "image_sizes.txt", 2, 2, "63.5")),
    ("image_sizes.txt: infinite width", "image_sizes.txt", 2, "not finite",
     lambda s: _field(s / "image_sizes.txt", 2, 1, "inf")),
    ("localization.txt: inverted box (x1 < x0)", "localization.txt", 3, "need x1 >= x0 and y1 >= y0",
     lambda s: _field(s / "localization.txt", 3, 3, "0")),
    ("localization.txt: box outside the image", "localization.txt", 3, "lies outside",
     lambda s: _field(s / "localization.txt", 3, 4, "650")),
    ("localization.txt: 4 fields", "localization.txt", 3, "expected 5 fields",
     lambda s: _edit_line(s / "localization.txt", 3, ",".join((s / "localization.txt").read_text()
                                                               .splitlines()[2].split(",")[:4]))),
    ("localization.txt: coordinate 1e999", "localization.txt", 3, "not finite",
     lambda s: _field(s / "localization.txt", 3, 1, "1e999")),
    ("localization.txt: coordinate NaN", "localization.txt", 3, "not finite",
     lambda s: _field(s / "localization.txt", 3, 3, "nan")),
    ("masks.txt: 2 fields", "masks.txt", 2, "expected 3 fields",
     lambda s: _edit_line(s / "masks.txt", 2, ",".join((s / "masks.txt").read_text().splitlines()[1].split(",")[:2]))),
    ("class_labels.txt: empty image path", "class_labels.txt", 2, "empty image path",
     lambda s: _field(s / "class_labels.txt", 2, 0, "")),
    ("masks.txt: mask path with ..", "masks.txt", 3, "escapes the image root",
     lambda s: _field(s / "masks.txt", 3, 1, "../m.png")),
    ("masks.txt: ignore-mask path with ..", "masks.txt", 2, "escapes the image root",
     lambda s: _field(s / "masks.txt", 2, 2, "../../ignore.png")),
    ("metadata folder missing", "", None, "metadata folder not found",
     lambda s: __import__("shutil").rmtree(s)),
    ("dataset.yaml: invalid YAML", "dataset.yaml", 2, "invalid YAML",
     lambda s: (s.parent / "dataset.yaml").write_text("name: x\nimage_root: : images\nclass_names: [a]\n")),
    ("dataset.yaml: class_names missing", "dataset.yaml", None, "missing key 'class_names'",
     lambda s: (s.parent / "dataset.yaml").write_text("image_root: images\n")),
    ("dataset.yaml: class_names not a list of strings", "dataset.yaml", None, "class_names must be",
     lambda s: (s.parent / "dataset.yaml").write_text("image_root: images\nclass_names: {a: 1}\n")),
    ("dataset.yaml: image_root missing", "dataset.yaml", None, "missing key 'image_root'",
     lambda s: (s.parent / "dataset.yaml").write_text("class_names: [a, b, c, d]\n")),
    ("dataset.yaml: a list, not a mapping", "dataset.yaml", None, "expected a mapping",
     lambda s: (s.parent / "dataset.yaml").write_text("- images\n- [a, b]\n")),
]


def _where(split: Path, file: str, line: int | None) -> str:
    path = split.parent / file if file == "dataset.yaml" else split / file if file else split
    return f"{path}:{line}:" if line is not None else f"{path}:"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_metadata_through_score(case: Case, dataset: Path, tmp_path: Path, cli, fault):
    name, file, line, words, mutate = case
    rec = fault(name, CAT, "`kdcicam score` exits 2 with one line naming the file" +
                (f" and line {line}" if line else "") + "; no traceback")
    split = dataset / "test"
    mutate(split)
    (tmp_path / "cams").mkdir()
    r = cli("score", tmp_path / "cams", "--metadata", split, "--cam-size", SIZE)
    rec.observed = r.error_lines("score")[0] if r.error_lines("score") else f"exit {r.rc}: {r.err[-300:]}"
    message = r.one_line_error("score")
    assert _where(split, file, line) in message and words in message


TRAIN_CASES = [c for c in CASES if c[0] in ("image_ids.txt: duplicate id", "localization.txt: box outside the image",
                                            "dataset.yaml: invalid YAML")]


@pytest.mark.parametrize("case", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_bad_metadata_through_train(case: Case, dataset: Path, empty_config: Path, tmp_path: Path, cli, fault):
    name, file, line, words, mutate = case
    rec = fault(f"{name} (training split)", CAT, "`kdcicam train` exits 2 with one line naming file and line, "
                "before any checkpoint")
    split = dataset / "train"
    mutate(split)
    r = cli(*train_args(empty_config, dataset, tmp_path / "run"))
    rec.observed = r.error_lines("train")[0] if r.error_lines("train") else f"exit {r.rc}: {r.err[-300:]}"
    message = r.one_line_error("train")
    assert _where(split, file, line) in message and words in message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_image_file_through_train(dataset: Path, empty_config: Path, tmp_path: Path, cli, fault):
    rec = fault("image listed in image_ids.txt but missing on disk", CAT,
                "`kdcicam train` exits 2 naming image_ids.txt, the line and the image")
    image_id = _id(dataset / "train", 7)
    (dataset / "images" / image_id).unlink()
    r = cli(*train_args(empty_config, dataset, tmp_path / "run"))
    rec.observed = r.error_lines("train")[0] if r.error_lines("train") else f"exit {r.rc}: {r.err[-300:]}"
    message = r.one_line_error("train")
    assert f"{dataset / 'train' / 'image_ids.txt'}:7:" in message and image_id in message


def _no_image_root(dataset: Path) -> None:
    info = dataset / "dataset.yaml"
    info.write_text(info.read_text().replace("image_root: images", "image_root: moved_away"))


def _no_mask(dataset: Path) -> None:
    line = (dataset / "train" / "masks.txt").read_text().splitlines()[3]
    (dataset / "images" / line.split(",")[1]).unlink()


@pytest.mark.parametrize("name, mutate, where, words", [
    # the mask check runs before the root check, so the first error names a mask file under the moved root
    ("dataset.yaml image_root is not a folder", _no_image_root, "masks.txt:1:", "moved_away"),
    ("mask file listed in masks.txt missing on disk", _no_mask, "train/masks.txt:4:", "not found under"),
])
def test_missing_files_through_train(name, mutate, where, words, dataset: Path, empty_config: Path, tmp_path: Path,
                                     cli, fault):
    rec = fault(f"{name} (training)", CAT, "`kdcicam train` exits 2 with one line naming the file (and line)")
    mutate(dataset)
    r = cli(*train_args(empty_config, dataset, tmp_path / "run"))
    rec.observed = r.error_lines("train")[0] if r.error_lines("train") else f"exit {r.rc}: {r.err[-300:]}"
    message = r.one_line_error("train")
    assert where in message and words in message


def test_missing_mask_file_through_score(dataset: Path, tmp_path: Path, cli, fault):
    rec = fault("mask file listed in masks.txt missing on disk (`kdcicam score`)", CAT,
                "exit 2 with one line naming the mask file")
    line = (dataset / "test" / "masks.txt").read_text().splitlines()[3]
    mask = dataset / "images" / line.split(",")[1]
    mask.unlink()
    cams = tmp_path / "cams"
    _write_cams(dataset / "test", cams)
    r = cli("score", cams, "--metadata", dataset / "test", "--cam-size", SIZE)
    rec.observed = r.error_lines("score")[0] if r.error_lines("score") else f"exit {r.rc}: {r.err[-300:]}"
    assert str(mask) in r.one_line_error("score")


def test_debug_shows_the_traceback(dataset: Path, tmp_path: Path, fault):
    rec = fault("bad metadata with --debug", CAT, "the MetadataError propagates (full traceback for debugging)")
    _edit_line(dataset / "test" / "image_ids.txt", 5, _id(dataset / "test", 1))
    (tmp_path / "cams").mkdir()
    with pytest.raises(MetadataError) as e:
        run_cli("--debug", "score", tmp_path / "cams", "--metadata", dataset / "test", "--cam-size", SIZE)
    rec.observed = f"raised MetadataError: {e.value}"
    assert e.value.line == 5


def test_real_process_prints_one_line_and_no_traceback(dataset: Path, tmp_path: Path, fault):
    rec = fault("bad metadata, `kdcicam score` as a separate process", CAT,
                "stderr is exactly one line, exit code 2")
    _edit_line(dataset / "test" / "image_ids.txt", 5, _id(dataset / "test", 1))
    (tmp_path / "cams").mkdir()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-m", "kdcicam.cli", "score", str(tmp_path / "cams"), "--metadata",
                        str(dataset / "test")], capture_output=True, text=True, env=env, timeout=120, check=False)
    rec.observed = f"exit {p.returncode}, stderr: {p.stderr.strip()}"
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "image_ids.txt:5:" in p.stderr


# ------------------------------------------------------------------------------------------ CAM files
def _write_cams(split: Path, cam_dir: Path) -> list[str]:
    rng = np.random.default_rng(0)
    ids = read_metadata(split, check_images=False).image_ids
    for image_id in ids:
        path = cam_dir / f"{image_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, rng.random((SIZE, SIZE)).astype(np.float32))
    return ids


class _Marker:
    """Unpickling this object creates a file: proof that a .npy was unpickled."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _object_array(path: Path, marker: Path) -> None:
    arr = np.empty((SIZE, SIZE), dtype=object)
    arr[0, 0] = _Marker(marker)
    np.save(path, arr, allow_pickle=True)


CAM_CASES: list[tuple[str, str, Callable[[Path, Path], None]]] = [
    ("wrong shape (16x16 for a 32x32 grid)", "shape (16, 16)",
     lambda p, m: np.save(p, np.zeros((16, 16), np.float32))),
    ("3-D array", "shape (1, 32, 32)", lambda p, m: np.save(p, np.zeros((1, SIZE, SIZE), np.float32))),
    ("integer dtype", "expected a float array", lambda p, m: np.save(p, np.zeros((SIZE, SIZE), np.int64))),
    ("dtype object (pickled payload)", "without unpickling", _object_array),
    ("NaN values", "NaN or inf", lambda p, m: np.save(p, np.full((SIZE, SIZE), np.nan, np.float32))),
    ("inf values", "NaN or inf", lambda p, m: np.save(p, np.full((SIZE, SIZE), np.inf, np.float64))),
    ("values outside [0, 1]", "values must lie in [0, 1]", lambda p, m: np.save(p, np.full((SIZE, SIZE), 1.5))),
    ("not a .npy file (text)", "cannot load", lambda p, m: p.write_text("0.1,0.2\n")),
    ("empty file", "not a readable .npy file", lambda p, m: p.write_bytes(b"")),
    ("truncated .npy", "not fully written", lambda p, m: p.write_bytes(p.read_bytes()[:200])),
    (".npz archive named .npy", "not a single array",
     lambda p, m: (np.savez(str(p) + ".npz", a=np.zeros(3)), os.replace(str(p) + ".npz", p))),
    ("missing CAM file for an image id", "score map file not found", lambda p, m: p.unlink()),
]


@pytest.mark.parametrize("case", CAM_CASES, ids=[c[0] for c in CAM_CASES])
def test_bad_cam_file(case, fault_data: Path, tmp_path: Path, cli, fault):
    name, words, corrupt = case
    rec = fault(f"CAM file: {name}", CAT, "`kdcicam score` exits 2 with one line naming the image id and the file; "
                "nothing unpickled")
    split = fault_data / "test"
    cams = tmp_path / "cams"
    ids = _write_cams(split, cams)
    path = cams / f"{ids[3]}.npy"
    marker = tmp_path / "UNPICKLED"
    corrupt(path, marker)
    r = cli("score", cams, "--metadata", split, "--cam-size", SIZE)
    rec.observed = r.error_lines("score")[0] if r.error_lines("score") else f"exit {r.rc}: {r.err[-300:]}"
    assert not marker.exists(), "a .npy file was unpickled"
    message = r.one_line_error("score")
    assert repr(ids[3]) in message and str(path) in message and words in message


def test_stray_cam_file_is_an_error(fault_data: Path, tmp_path: Path, cli, fault):
    rec = fault("CAM folder with a map for an id that is not in the metadata", CAT,
                "exit 2 naming the stray file (scoring the wrong split must not pass silently)")
    cams = tmp_path / "cams"
    _write_cams(fault_data / "test", cams)
    np.save(cams / "test" / "other.png.npy", np.zeros((SIZE, SIZE)))
    r = cli("score", cams, "--metadata", fault_data / "test", "--cam-size", SIZE)
    rec.observed = r.error_lines("score")[0] if r.error_lines("score") else f"exit {r.rc}"
    assert "other.png" in r.one_line_error("score")


def test_valid_cams_score(fault_data: Path, tmp_path: Path, cli, fault):
    rec = fault("control: a complete, valid CAM folder", CAT, "exit 0 and metrics (the fault tests above fail for "
                "the fault, not the set-up)")
    cams = tmp_path / "cams"
    _write_cams(fault_data / "test", cams)
    r = cli("score", cams, "--metadata", fault_data / "test", "--cam-size", SIZE, "--json", tmp_path / "m.json")
    rec.observed = f"exit {r.rc}"
    assert r.rc == 0, r.err[-2000:]
    assert (tmp_path / "m.json").is_file()
