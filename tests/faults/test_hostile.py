"""Hostile files: checkpoints and YAML that would run code, metadata paths that leave the dataset.

Each payload creates a marker file when executed; every test first proves the payload is live
(an unsafe loader does run it), then that kdcicam refuses the file and the marker never appears.
"""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from kdcicam.errors import KdcicamError

from .conftest import train_args

CAT = "hostile files"


class _Payload:
    """Unpickling runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def evil_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like a kdcicam checkpoint (state_dict, hyper_parameters) carrying the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # it may be a hard link into the shared run (see conftest.link_run)
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"config": {}, "num_classes": 4},
                "payload": _Payload(marker)}, path)
    return path


@pytest.fixture()
def payload(tmp_path: Path) -> tuple[Path, Path]:
    """(evil checkpoint, marker), with the payload proven live by one unsafe load."""
    marker = tmp_path / "PWNED"
    path = evil_checkpoint(tmp_path / "evil" / "checkpoints" / "best.ckpt", marker)
    torch.load(path, weights_only=False)  # what an unsafe loader would do
    assert marker.exists(), "the payload is not live; the test would prove nothing"
    marker.unlink()
    return path, marker


def test_evaluate_refuses_code_in_checkpoint(payload, cli, fault):
    path, marker = payload
    rec = fault("checkpoint with a pickled object that runs code, given to `kdcicam evaluate`", CAT,
                "refused (weights_only=True): exit 2, one line; the code never runs")
    r = cli("evaluate", path, "--device", "cpu")
    rec.observed = (r.error_lines("evaluate") or [f"exit {r.rc}"])[0][:400] + f"; marker created: {marker.exists()}"
    assert not marker.exists()
    line = r.one_line_error("evaluate")
    assert str(path) in line and "refused" in line


def test_localizer_refuses_code_in_checkpoint(payload, fault):
    from kdcicam import Localizer

    path, marker = payload
    rec = fault("checkpoint with a pickled object that runs code, given to `Localizer.from_checkpoint`", CAT,
                "KdcicamError naming the file; the code never runs")
    with pytest.raises(KdcicamError) as e:
        Localizer.from_checkpoint(path, device="cpu")
    rec.observed = f"{type(e.value).__name__}: {str(e.value)[:300]}; marker created: {marker.exists()}"
    assert not marker.exists() and str(path) in str(e.value)


def test_localize_cli_refuses_code_in_run_folder(payload, fault_data: Path, tmp_path: Path, cli, fault):
    path, marker = payload
    rec = fault("run folder whose best.ckpt runs code, given to `kdcicam localize`", CAT,
                "exit 2, one line; the code never runs")
    image = next((fault_data / "images" / "test").rglob("*.png"))
    r = cli("localize", path.parent.parent, image, "--out", tmp_path / "out", "--device", "cpu")
    rec.observed = (r.error_lines("localize") or [f"exit {r.rc}"])[0][:300] + f"; marker created: {marker.exists()}"
    assert not marker.exists()
    r.one_line_error("localize")


def test_resume_refuses_code_in_last_checkpoint(run_copy: Path, fault_data: Path, empty_config: Path, tmp_path: Path,
                                                cli, fault):
    rec = fault("`kdcicam train --resume` on a run whose last.ckpt runs code", CAT,
                "exit 2 with one line naming last.ckpt; the code never runs; the run folder is left as it was")
    marker = tmp_path / "PWNED"
    (run_copy / "done.json").unlink()
    last = evil_checkpoint(run_copy / "checkpoints" / "last.ckpt", marker)
    before = last.read_bytes()
    r = cli(*train_args(empty_config, fault_data, run_copy, "optim.epochs=2"), "--resume")
    rec.observed = (r.error_lines("train") or [f"exit {r.rc}: {r.err[-300:]}"])[0][:400] + \
        f"; marker created: {marker.exists()}"
    assert not marker.exists()
    line = r.one_line_error("train")
    assert str(last) in line and "posix.system" in line
    rec.data_lost = last.read_bytes() != before
    assert not rec.data_lost


def test_resume_from_corrupt_last_checkpoint_is_a_clear_error(run_copy: Path, fault_data: Path, empty_config: Path,
                                                              cli, fault):
    rec = fault("`kdcicam train --resume` on a run whose last.ckpt is truncated", CAT,
                "exit 2 with one line naming last.ckpt (not a traceback)")
    (run_copy / "done.json").unlink()
    last = run_copy / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.unlink()  # a hard link to the shared run: never write through it
    last.write_bytes(data[: len(data) // 3])
    r = cli(*train_args(empty_config, fault_data, run_copy, "optim.epochs=2"), "--resume")
    rec.observed = (r.error_lines("train") or [f"exit {r.rc}: {r.err[-300:]}"])[0][:400]
    assert str(last) in r.one_line_error("train")


def test_kd_teacher_checkpoint_with_code_is_refused(payload, fault_data: Path, empty_config: Path, tmp_path: Path,
                                                    cli, fault):
    path, marker = payload
    rec = fault("KD-CI-CAM run whose finished teacher stage points at a checkpoint that runs code", CAT,
                "the student stage refuses the teacher: exit 2, one line; the code never runs")
    out = tmp_path / "kd"
    for stage in ("cls_teacher", "loc_teacher"):
        (out / stage).mkdir(parents=True)
        (out / stage / "done.json").write_text(json.dumps({"best": str(path), "stage_dir": str(out / stage)}))
    r = cli(*train_args(empty_config, fault_data, out, method="kd-ci-cam"))
    rec.observed = (r.error_lines("train") or [f"exit {r.rc}: {r.err[-300:]}"])[0][:300] + \
        f"; marker created: {marker.exists()}"
    assert not marker.exists()
    assert str(path) in r.one_line_error("train")


# ------------------------------------------------------------------------------------------ YAML
def _evil_yaml(marker: Path) -> str:
    text = f"method: !!python/object/apply:os.system [\"touch '{marker}'\"]\n"
    yaml.unsafe_load(text)  # what an unsafe loader would do
    assert marker.exists(), "the YAML payload is not live"
    marker.unlink()
    return text


def test_config_yaml_with_object_tags_is_refused(fault_data: Path, tmp_path: Path, cli, fault):
    rec = fault("config YAML with a `!!python/object/apply:os.system` tag", CAT,
                "refused by safe loading: exit 2, one line naming the file and line; nothing executed")
    marker = tmp_path / "PWNED"
    config = tmp_path / "evil.yaml"
    config.write_text("name: x\n" + _evil_yaml(marker))
    r = cli(*train_args(config, fault_data, tmp_path / "run"))
    rec.observed = (r.error_lines("train") or [f"exit {r.rc}"])[0] + f"; marker created: {marker.exists()}"
    assert not marker.exists()
    assert f"{config}:2" in r.one_line_error("train")
    assert not (tmp_path / "run").exists()


def test_saved_run_config_with_object_tags_is_refused_on_resume(run_copy: Path, fault_data: Path, empty_config: Path,
                                                               tmp_path: Path, cli, fault):
    rec = fault("run folder's config.yaml replaced by one with an object tag, then `--resume`", CAT,
                "exit 2 naming config.yaml; nothing executed")
    marker = tmp_path / "PWNED"
    (run_copy / "done.json").unlink()
    (run_copy / "config.yaml").write_text(_evil_yaml(marker))
    r = cli(*train_args(empty_config, fault_data, run_copy), "--resume")
    rec.observed = (r.error_lines("train") or [f"exit {r.rc}"])[0] + f"; marker created: {marker.exists()}"
    assert not marker.exists()
    assert str(run_copy / "config.yaml") in r.one_line_error("train")


def test_dataset_yaml_with_object_tags_is_refused(dataset: Path, tmp_path: Path, cli, fault):
    rec = fault("dataset.yaml with a `!!python/object/apply:os.system` tag", CAT,
                "exit 2 naming dataset.yaml and the line; nothing executed")
    marker = tmp_path / "PWNED"
    (dataset / "dataset.yaml").write_text("image_root: images\nclass_names: [a, b, c, d]\n" + _evil_yaml(marker))
    (tmp_path / "cams").mkdir()
    r = cli("score", tmp_path / "cams", "--metadata", dataset / "test", "--cam-size", 32)
    rec.observed = (r.error_lines("score") or [f"exit {r.rc}"])[0] + f"; marker created: {marker.exists()}"
    assert not marker.exists()
    assert f"{dataset / 'dataset.yaml'}:3" in r.one_line_error("score")


# ------------------------------------------------------------------------------------------ paths
def _replace_id(split: Path, old: str, new: str) -> None:
    for name in ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt", "masks.txt"):
        f = split / name
        f.write_text("\n".join(new + ln[len(old):] if ln.split(",")[0] == old else ln
                               for ln in f.read_text().splitlines()) + "\n")


def _first_id(split: Path) -> str:
    return (split / "image_ids.txt").read_text().splitlines()[0]


PATHS = [
    ("image id with ..", "image_ids.txt", lambda s, i: _replace_id(s, i, "../../../../etc/passwd"), "escapes"),
    ("absolute image id", "image_ids.txt", lambda s, i: _replace_id(s, i, "/etc/passwd"), "is absolute"),
    ("Windows drive image id", "image_ids.txt", lambda s, i: _replace_id(s, i, "C:\\Windows\\win.ini"), "is absolute"),
    ("image id with ..\\ (backslashes)", "image_ids.txt", lambda s, i: _replace_id(s, i, "..\\..\\secret.png"),
     "escapes"),
    ("mask path with ..", "masks.txt",
     lambda s, i: (s / "masks.txt").write_text((s / "masks.txt").read_text().replace(
         f"{i},{i[:-4]}_mask.png", f"{i},../../../secret_mask.png")), "escapes"),
    ("absolute mask path", "masks.txt",
     lambda s, i: (s / "masks.txt").write_text((s / "masks.txt").read_text().replace(
         f"{i},{i[:-4]}_mask.png", f"{i},/etc/shadow")), "is absolute"),
]


@pytest.mark.parametrize("case", PATHS, ids=[c[0] for c in PATHS])
def test_metadata_paths_outside_the_dataset_are_refused(case, dataset: Path, empty_config: Path, tmp_path: Path,
                                                        cli, fault):
    name, file, mutate, words = case
    rec = fault(f"metadata {name}", CAT, f"`kdcicam score` and `kdcicam train` exit 2 naming {file}:1; "
                "nothing outside the dataset is opened")
    for split in ("test", "train"):
        mutate(dataset / split, _first_id(dataset / split))
    (tmp_path / "cams").mkdir()
    score = cli("score", tmp_path / "cams", "--metadata", dataset / "test", "--cam-size", 32)
    train = cli(*train_args(empty_config, dataset, tmp_path / "run"))
    rec.observed = " / ".join((r.error_lines(c) or [f"exit {r.rc}"])[0] for c, r in (("score", score), ("train", train)))
    for command, r, split in (("score", score, "test"), ("train", train, "train")):
        line = r.one_line_error(command)
        assert f"{dataset / split / file}:1:" in line and words in line


def _unsafe_loads(path: Path) -> list[str]:
    """Calls that could execute code from a file: pickle.load(s), yaml.load / unsafe_load / full_load,
    torch.load without weights_only=True, np.load with allow_pickle=True."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)):
            continue
        owner, name = node.func.value.id, node.func.attr
        kw = {k.arg: k.value for k in node.keywords}

        def true(key: str, kw: dict = kw) -> bool:
            return isinstance(kw.get(key), ast.Constant) and kw[key].value is True

        if (owner == "pickle" and name in ("load", "loads")) or \
                (owner == "yaml" and name in ("load", "unsafe_load", "full_load", "load_all")) or \
                (owner == "torch" and name == "load" and not true("weights_only")) or \
                (owner in ("np", "numpy") and name == "load" and true("allow_pickle")):
            found.append(f"{path.name}:{node.lineno}: {owner}.{name}")
    return found


def test_no_unsafe_loader_in_the_package(fault):
    """The static side of this file's claims: every loader in src/ is a safe one, so the tests above
    are not just lucky about which code path they hit."""
    rec = fault("static check: unsafe loaders in src/kdcicam (pickle, yaml.load, torch.load without "
                "weights_only=True, np.load with allow_pickle=True)", CAT, "none")
    src = Path(__file__).resolve().parents[2] / "src" / "kdcicam"
    bad = [hit for path in sorted(src.rglob("*.py")) for hit in _unsafe_loads(path)]
    rec.observed = "none found" if not bad else "; ".join(bad)
    assert not bad
