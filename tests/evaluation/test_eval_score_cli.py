"""``kdcicam score`` on a tiny temp set: the wsolevaluation layout, the JSON, and every input error."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _eval_helpers import make_metadata, smooth_map, write_split

from kdcicam.cli import main
from kdcicam.data.metadata import read_metadata
from kdcicam.evaluation import WSOLEvaluator

IDS = ["001.a/x.jpg", "001.a/y.jpg", "002.b/z.jpg"]


@pytest.fixture
def scored(tmp_path: Path):
    """Metadata (boxes in original pixels) and one .npy per image id: CAM_DIR/<image_id>.npy."""
    md = make_metadata(boxes={i: [(30 + 10 * k, 40, 300, 200 + 20 * k)] for k, i in enumerate(IDS)},
                       sizes={i: (400, 300) for i in IDS}, labels={i: k % 2 for k, i in enumerate(IDS)})
    split = write_split(tmp_path, md)
    cams = tmp_path / "cams"
    rng = np.random.default_rng(0)
    maps = {}
    for image_id in IDS:
        maps[image_id] = smooth_map(rng)
        path = cams / (image_id + ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, maps[image_id])
    return split, cams, maps


def test_score_writes_metrics(scored, tmp_path: Path, capsys):
    split, cams, maps = scored
    out = tmp_path / "m.json"
    assert main(["score", str(cams), "--metadata", str(split), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "MaxBoxAcc@50" in printed and "MaxBoxAccV2" in printed
    assert "GT-known Loc, oracle threshold (best on this split)" in printed  # never a bare "GT-known Loc"
    result = json.loads(out.read_text())
    ev = WSOLEvaluator(read_metadata(split, check_images=False))
    ev.accumulate(np.stack([maps[i] for i in IDS]), IDS)
    expected = ev.compute()
    assert result["max_box_acc"] == expected["max_box_acc"]
    assert result["max_box_acc_v2"] == expected["max_box_acc_v2"]
    assert result["best_threshold"] == {k: expected["best_threshold"][k] for k in ("30", "50", "70")}
    # no val split here: GT-known Loc is the oracle number, and named so
    assert result["oracle_threshold"] == expected["best_threshold"]["50"]
    assert result["gt_known_loc_oracle"] == expected["gt_known_loc_oracle"] and "gt_known_loc" not in result
    assert result["box_acc_curve"] == expected["box_acc_curve"]
    assert result["num_images"] == 3 and result["multi_contour"] is False and "pxap" not in result
    assert not list(tmp_path.glob(".m.json.*"))  # written atomically, no temp file left


def test_score_reads_metadata_saved_with_bom_or_crlf(scored, tmp_path: Path, windows_style):
    """Metadata saved by common Windows editors (UTF-8 with a byte-order mark, CRLF): the same numbers, and
    no "not in the metadata" for the first image id."""
    split, cams, _ = scored
    assert main(["score", str(cams), "--metadata", str(split), "--json", str(tmp_path / "plain.json")]) == 0
    windows_style(split.glob("*.txt"))
    assert main(["score", str(cams), "--metadata", str(split), "--json", str(tmp_path / "windows.json")]) == 0
    plain, windows = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("plain", "windows"))
    assert windows == plain and windows["num_images"] == len(IDS)


def test_score_multi_contour_and_options(scored, tmp_path: Path):
    split, cams, maps = scored
    out = tmp_path / "m.json"
    assert main(["score", str(cams), "--metadata", str(split), "--multi-contour", "--iou", "50", "--interval",
                 "0.05", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert list(result["max_box_acc"]) == ["50"] and result["multi_contour"] is True
    assert len(result["box_acc_curve"]["thresholds"]) == 20
    # MaxBoxAccV2 keeps its definition, the multi-contour mean over IoU 30 / 50 / 70, whatever --iou reports
    ev = WSOLEvaluator(read_metadata(split, check_images=False), cam_curve_interval=0.05)
    ev.accumulate(np.stack([maps[i] for i in IDS]), IDS)
    per_iou = ev.compute()["max_box_acc_v2_per_iou"]
    assert result["max_box_acc"]["50"] == per_iou["50"]
    assert result["max_box_acc_v2"] == pytest.approx(np.mean([per_iou[k] for k in ("30", "50", "70")]), abs=1e-12)
    assert per_iou["30"] != per_iou["50"]  # so the mean differs from the reported IoU's value


@pytest.mark.parametrize("multi", [False, True], ids=["single-contour", "multi-contour"])
def test_one_mode_matches_the_full_run_in_its_mode(scored, tmp_path: Path, capsys, multi: bool):
    """``--one-mode`` computes only the mode asked for (as one wsolevaluation run): every key it writes holds the
    full run's number, bit for bit. GT-known Loc is single-contour by definition, so a multi-contour one-mode
    run has none (and refuses --box-threshold); a single-contour one reads it at the given threshold too."""
    split, cams, _ = scored
    mode = ["--multi-contour"] if multi else []
    given = [] if multi else ["--box-threshold", "0.3"]
    full, one = tmp_path / "full.json", tmp_path / "one.json"
    assert main(["score", str(cams), "--metadata", str(split), *mode, *given, "--json", str(full)]) == 0
    assert main(["score", str(cams), "--metadata", str(split), *mode, *given, "--one-mode", "--json", str(one)]) == 0
    printed = capsys.readouterr().out
    a, b = json.loads(full.read_text()), json.loads(one.read_text())
    assert b["one_mode"] is True and b["context_leakage"] is None and "pxap" not in b
    shared = set(b) - {"one_mode", "context_leakage"}
    assert {k: b[k] for k in shared} == {k: a[k] for k in shared}
    assert ("max_box_acc_v2" in b) == multi
    assert ("gt_known_loc_oracle" in b) != multi and ("gt_known_loc" in b) != multi
    one_table = printed.split("full.json")[-1]  # what the --one-mode run printed
    assert ("GT-known Loc" in one_table) != multi and "leakage" not in one_table
    if multi:
        _fails(capsys, ["score", str(cams), "--metadata", str(split), *mode, "--one-mode", "--box-threshold", "0.3"],
               "--box-threshold", "single-contour")


@pytest.mark.parametrize("one_mode", [[], ["--one-mode"]], ids=["both-modes", "one-mode"])
def test_ious_without_50(scored, tmp_path: Path, one_mode: list[str]):
    """IoU 50 is counted whatever --iou reports (GT-known Loc and the oracle threshold are read there); only the
    IoUs asked for are written, with the same numbers as a run that asks for 50 too."""
    split, cams, _ = scored
    some, every = tmp_path / "some.json", tmp_path / "every.json"
    assert main(["score", str(cams), "--metadata", str(split), "--iou", "30", "70", *one_mode, "--json", str(some)]) == 0
    assert main(["score", str(cams), "--metadata", str(split), *one_mode, "--json", str(every)]) == 0
    a, b = json.loads(some.read_text()), json.loads(every.read_text())
    assert list(a["max_box_acc"]) == ["30", "70"] and list(a["best_threshold"]) == ["30", "70"]
    assert list(a["box_acc_curve"]) == ["thresholds", "30", "70"]
    assert a["max_box_acc"] == {k: b["max_box_acc"][k] for k in ("30", "70")}
    assert (a["gt_known_loc_oracle"], a["oracle_threshold"]) == (b["gt_known_loc_oracle"], b["oracle_threshold"])


@pytest.mark.parametrize("batch", [64, 1], ids=["one-batch", "read-ahead"])
def test_score_mask_split_without_image_sizes(tmp_path: Path, capsys, monkeypatch, batch: int):
    """wsolevaluation's OpenImages layout: localization.txt of masks, no image_sizes.txt. PxAP equals
    the plain histogram formula on the masks as read (PNG, nearest-neighbour resize to the grid), also
    when maps and masks are read on the reader thread, a batch ahead."""
    import cv2

    from kdcicam.evaluation import saved_cams
    from kdcicam.evaluation.reference import reference_pxap

    monkeypatch.setattr(saved_cams, "BATCH", batch)

    rng = np.random.default_rng(3)
    root, cams = tmp_path / "masks", tmp_path / "cams"
    lines, maps, truth = [], [], []
    for k, image_id in enumerate(IDS):
        h, w = 150 + 20 * k, 200 - 10 * k  # original mask sizes differ from the 224 grid
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4: 3 * h // 4, w // 5: w // 2 + 10 * k] = 255
        (root / "m").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "m" / f"{k}.png"), mask)
        lines.append(f"{image_id},m/{k}.png,\n")
        truth.append((cv2.resize(mask, (224, 224), interpolation=cv2.INTER_NEAREST) > 127).astype(np.uint8))
        maps.append(smooth_map(rng))
        path = cams / (image_id + ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, maps[-1])
    split = tmp_path / "split"
    split.mkdir()
    (split / "image_ids.txt").write_text("".join(f"{i}\n" for i in IDS))
    (split / "class_labels.txt").write_text("".join(f"{i},{k % 2}\n" for k, i in enumerate(IDS)))
    (split / "localization.txt").write_text("".join(lines))
    out = tmp_path / "m.json"
    assert main(["score", str(cams), "--metadata", str(split), "--mask-root", str(root), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "max_box_acc" not in result and "max_box_acc_v2" not in result
    assert result["pxap"] == pytest.approx(reference_pxap(maps, truth), abs=1e-9)
    assert "PxAP" in capsys.readouterr().out
    _fails(capsys, ["score", str(cams), "--metadata", str(split), "--mask-root", str(root), "--one-mode"],
           "--one-mode scores boxes")  # a masks-only split has no boxes for it


def _fails(capsys, args: list[str], *needles: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err


def test_missing_map(scored, capsys):
    split, cams, _ = scored
    (cams / "002.b" / "z.jpg.npy").unlink()
    _fails(capsys, ["score", str(cams), "--metadata", str(split)], "002.b/z.jpg", "not found")


def test_wrong_shape(scored, capsys):
    split, cams, _ = scored
    np.save(cams / "001.a" / "y.jpg.npy", np.zeros((100, 224)))
    _fails(capsys, ["score", str(cams), "--metadata", str(split)], "001.a/y.jpg", "shape (100, 224)")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf(scored, capsys, value):
    split, cams, maps = scored
    bad = maps["001.a/x.jpg"].copy()
    bad[3, 3] = value
    np.save(cams / "001.a" / "x.jpg.npy", bad)
    _fails(capsys, ["score", str(cams), "--metadata", str(split)], "001.a/x.jpg", "NaN or inf")


def test_object_dtype_is_never_unpickled(scored, capsys):
    split, cams, _ = scored
    np.save(cams / "001.a" / "x.jpg.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _fails(capsys, ["score", str(cams), "--metadata", str(split)], "001.a/x.jpg", "unpickling")


def test_integer_dtype(scored, capsys):
    split, cams, _ = scored
    np.save(cams / "001.a" / "x.jpg.npy", np.zeros((224, 224), dtype=np.int64))
    _fails(capsys, ["score", str(cams), "--metadata", str(split)], "001.a/x.jpg", "dtype int64")


def test_map_for_unknown_image(scored, capsys):
    split, cams, maps = scored
    np.save(cams / "001.a" / "extra.jpg.npy", maps["001.a/x.jpg"])
    _fails(capsys, ["score", str(cams), "--metadata", str(split)], "001.a/extra.jpg", "not in the metadata")


def test_a_link_to_an_images_map_is_not_a_stray(scored, capsys):
    """Only paths that are not literally ``<id>.npy`` are resolved; a link to an image's own map
    resolves to it and passes, as it always did; a link to a map outside CAM_DIR is a stray."""
    split, cams, maps = scored
    (cams / "001.a" / "alias.jpg.npy").symlink_to(cams / "001.a" / "x.jpg.npy")
    assert main(["score", str(cams), "--metadata", str(split)]) == 0
    capsys.readouterr()
    outside = cams.parent / "elsewhere.npy"
    np.save(outside, maps["001.a/x.jpg"])
    (cams / "001.a" / "other.jpg.npy").symlink_to(outside)
    _fails(capsys, ["score", str(cams), "--metadata", str(split)], "001.a/other.jpg", "not in the metadata")


def test_out_of_range_needs_normalize(scored, capsys):
    split, cams, maps = scored
    np.save(cams / "001.a" / "x.jpg.npy", maps["001.a/x.jpg"] * 7 - 2)
    _fails(capsys, ["score", str(cams), "--metadata", str(split)], "001.a/x.jpg", "--normalize")
    assert main(["score", str(cams), "--metadata", str(split), "--normalize"]) == 0


def test_bad_folders(scored, tmp_path: Path, capsys):
    split, cams, _ = scored
    _fails(capsys, ["score", str(tmp_path / "nope"), "--metadata", str(split)], "CAM folder not found")
    _fails(capsys, ["score", str(cams), "--metadata", str(tmp_path / "nope")], "metadata folder not found")


def test_score_at_a_given_threshold(scored, tmp_path: Path, capsys):
    split, cams, maps = scored
    out = tmp_path / "m.json"
    assert main(["score", str(cams), "--metadata", str(split), "--box-threshold", "0.3", "--json", str(out)]) == 0
    assert "GT-known Loc at the given threshold" in capsys.readouterr().out
    result = json.loads(out.read_text())
    ev = WSOLEvaluator(read_metadata(split, check_images=False))
    ev.accumulate(np.stack([maps[i] for i in IDS]), IDS)
    assert result["gt_known_loc"] == ev.compute(threshold=0.3)["gt_known_loc"] and result["box_threshold"] == 0.3
    assert result["gt_known_loc_oracle"] == ev.compute()["gt_known_loc_oracle"]
    _fails(capsys, ["score", str(cams), "--metadata", str(split), "--box-threshold", "0.305"], "--box-threshold")


def test_grid_is_read_from_the_maps(tmp_path: Path):
    """Maps saved at another size than 224 (e.g. `evaluate --save-cams` of a 128 px run) score without a flag."""
    md = make_metadata(boxes={i: [(30, 40, 300, 200)] for i in IDS}, sizes={i: (400, 300) for i in IDS},
                       labels={i: k % 2 for k, i in enumerate(IDS)})
    split = write_split(tmp_path, md)
    rng = np.random.default_rng(1)
    import cv2

    maps = {i: np.clip(cv2.resize(smooth_map(rng), (128, 96), interpolation=cv2.INTER_AREA), 0, 1) for i in IDS}
    for image_id, cam in maps.items():
        (tmp_path / "cams" / image_id).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "cams" / f"{image_id}.npy", cam)
    out = tmp_path / "m.json"
    assert main(["score", str(tmp_path / "cams"), "--metadata", str(split), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    ev = WSOLEvaluator(read_metadata(split, check_images=False), cam_size=(128, 96))
    ev.accumulate(np.stack([maps[i] for i in IDS]), IDS)
    assert result["cam_size"] == [128, 96] and result["max_box_acc"] == ev.compute()["max_box_acc"]
    assert main(["score", str(tmp_path / "cams"), "--metadata", str(split), "--cam-size", "224"]) == 2


def test_split_with_nothing_to_score(tmp_path: Path, capsys):
    split = tmp_path / "split"
    split.mkdir()
    (split / "image_ids.txt").write_text("".join(f"{i}\n" for i in IDS))
    (split / "class_labels.txt").write_text("".join(f"{i},{k % 2}\n" for k, i in enumerate(IDS)))
    cams = tmp_path / "cams"
    for image_id in IDS:
        (cams / image_id).parent.mkdir(parents=True, exist_ok=True)
        np.save(cams / f"{image_id}.npy", np.zeros((224, 224)))
    _fails(capsys, ["score", str(cams), "--metadata", str(split)], "neither boxes nor masks", "nothing to score")


def test_read_ahead_scores_as_one_batch(tmp_path: Path, monkeypatch, capsys):
    """Many batches read on the reader thread (and more images than PARALLEL_FROM: every core) give the
    one-pass evaluator's numbers; a map with NaN in a later batch is named with its file."""
    from kdcicam.evaluation import saved_cams

    ids = [f"{k % 3:03d}.c/{k}.jpg" for k in range(max(saved_cams.PARALLEL_FROM, 16) + 5)]  # 4+ batches of 4
    md = make_metadata(boxes={i: [(20 + k, 30, 250, 180 + k)] for k, i in enumerate(ids)},
                       sizes={i: (300, 240) for i in ids}, labels={i: k % 3 for k, i in enumerate(ids)})
    split = write_split(tmp_path, md)
    rng = np.random.default_rng(4)
    maps = [smooth_map(rng, low=int(rng.choice([7, 14]))) for _ in ids]
    for image_id, m in zip(ids, maps, strict=True):
        (tmp_path / "cams" / image_id).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "cams" / f"{image_id}.npy", m)
    monkeypatch.setattr(saved_cams, "BATCH", 4)
    out = tmp_path / "m.json"
    for multi in ([], ["--multi-contour"]):
        assert main(["score", str(tmp_path / "cams"), "--metadata", str(split), "--json", str(out), *multi]) == 0
        result = json.loads(out.read_text())
        ev = WSOLEvaluator(read_metadata(split, check_images=False))
        ev.accumulate(np.stack(maps), ids)
        expected = ev.compute()
        assert result["box_acc_curve"] == expected["box_acc_curve_v2" if multi else "box_acc_curve"]
        assert result["context_leakage"] == expected["context_leakage"]
    late = len(ids) - 3  # in the last batch
    bad = maps[late].copy()
    bad[5, 5] = np.nan
    np.save(tmp_path / "cams" / f"{ids[late]}.npy", bad)
    capsys.readouterr()
    _fails(capsys, ["score", str(tmp_path / "cams"), "--metadata", str(split)], repr(ids[late]), "NaN or inf",
           f"{ids[late]}.npy")


def test_score_loads_no_heavy_module_up_front():
    """What `kdcicam score` imports before scoring: neither torch, nor YAML (unless a dataset.yaml is read),
    nor OpenCV (loaded on a pool thread when a map needs tracing); numba only without current AOT kernels."""
    import os
    import subprocess
    import sys

    import kdcicam
    from kdcicam.evaluation import _compiled

    src = str(Path(kdcicam.__file__).resolve().parents[1])
    code = ("import sys\nfrom kdcicam.cli import build_parser\nbuild_parser('score')\n"
            "import kdcicam.evaluation.saved_cams, kdcicam.evaluation.cam_batches, kdcicam.evaluation.metrics\n"
            "print(' '.join(m for m in ('torch', 'yaml', 'cv2', 'numba') if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ([] if _compiled.BACKEND == "aot" else ["numba"]), done.stdout


def test_score_in_a_process_that_goes_on_leaves_it_as_it_was(tmp_path: Path):
    """``main(["score", ...])`` called from a process that goes on: the collector is on again afterwards and
    no OpenBLAS setting is left in the environment (only the ``kdcicam`` entry point tunes its own process)."""
    import gc
    import os

    import numpy as np
    from _eval_helpers import make_metadata, write_split

    from kdcicam.evaluation.saved_cams import cam_path

    ids = [f"c/{k}.jpg" for k in range(5)]
    md = make_metadata(boxes={i: [(4, 4, 20, 20)] for i in ids}, sizes={i: (32, 32) for i in ids})
    split = write_split(tmp_path, md)
    for i in ids:
        path = cam_path(tmp_path / "cams", i)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.random.default_rng(0).random((32, 32)))
    assert gc.isenabled()
    before = os.environ.get("OPENBLAS_NUM_THREADS")
    assert main(["score", str(tmp_path / "cams"), "--metadata", str(split)]) == 0
    assert gc.isenabled()
    assert os.environ.get("OPENBLAS_NUM_THREADS") == before
