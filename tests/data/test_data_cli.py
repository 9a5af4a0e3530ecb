from __future__ import annotations

import pytest

from kdcicam.cli import main
from kdcicam.data.metadata import read_dataset_info, read_metadata


def test_data_synthetic_command(tmp_path, capsys):
    out = tmp_path / "synth"
    rc = main(["data", "synthetic", "--out", str(out), "--size", "40", "--classes", "3", "--rho", "0.8",
               "--train", "12", "--val", "3", "--test", "6", "--test-conflict", "6", "--seed", "4", "--workers", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "train 12, val 3, test 6, test_conflict 6" in printed and str(out) in printed
    info = read_dataset_info(out)
    assert info.class_names == ["disc", "square", "triangle"]
    assert (info.extra["seed"], info.extra["rho"], info.extra["size"]) == (4, 0.8, 40)
    assert len(read_metadata(out / "test_conflict")) == 6


def test_data_cub_command(tiny_cub, tmp_path, capsys):
    rc = main(["data", "cub", str(tiny_cub.root), "--out", str(tmp_path / "cub"), "--val-fraction", "0.3"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "3 classes" in printed and "train 15, val 6" in printed and "test 9" in printed
    assert "x0=int(x+0.5)" in printed and "1 clipped" in printed
    assert len(read_metadata(tmp_path / "cub" / "val")) == 6


def test_data_errors_are_one_line_with_exit_2(tiny_cub, tmp_path, capsys):
    (tiny_cub.root / "classes.txt").unlink()
    assert main(["data", "cub", str(tiny_cub.root), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "classes.txt" in err and "file not found" in err
    assert main(["data", "cub", str(tiny_cub.root), "--out", str(tmp_path / "c"), "--val-fraction", "1.5"]) == 2
    assert "--val-fraction" in capsys.readouterr().err
    assert main(["data", "synthetic", "--out", str(tmp_path / "s"), "--classes", "1"]) == 2
    assert "classes must be in 2..10" in capsys.readouterr().err


def test_data_needs_a_dataset_name(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data"])
    assert exit_.value.code == 2
    assert "DATASET" in capsys.readouterr().err


def test_data_synthetic_v2_command(tmp_path, capsys):
    out = tmp_path / "v2"
    rc = main(["data", "synthetic", "--variant", "v2", "--out", str(out), "--size", "40", "--classes", "3",
               "--train", "6", "--val", "3", "--val-conflict", "3", "--test", "3", "--test-conflict", "3",
               "--shape-detail", "0.05", "--no-habitat-colour", "--max-radius", "0.2", "--workers", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "v2" in printed and "train 6, val 3, val_conflict 3, test 3, test_conflict 3" in printed
    info = read_dataset_info(out)
    assert info.class_names == ["lobes3", "lobes4", "lobes5"]
    assert (info.extra["rho"], info.extra["shape_detail"], info.extra["habitat_colour"]) == (0.97, 0.05, False)
    assert (info.extra["min_radius"], info.extra["max_radius"]) == (0.12, 0.2)


def test_data_synthetic_v1_refuses_v2_flags(tmp_path, capsys):
    assert main(["data", "synthetic", "--out", str(tmp_path / "s"), "--shape-detail", "0.1",
                 "--no-habitat-colour"]) == 2
    err = capsys.readouterr().err
    assert "--shape-detail, --no-habitat-colour: v2 knobs; add --variant v2" in err
    assert not (tmp_path / "s").exists()
