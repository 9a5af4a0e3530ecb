"""Maps read by the kernel's workers (:class:`~kdcicam.evaluation.engine.MapSource`, what ``kdcicam score``
uses for boxes and leakage) give the array path's numbers, in both evaluators and on any number of threads;
the first bad map in file order is the one reported, whether unreadable or holding bad values; and the
kernel's integer check of [0, 1] agrees with the float comparison on every edge value."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _eval_helpers import make_metadata, smooth_map

from kdcicam.evaluation import _compiled
from kdcicam.evaluation.cam_batches import CamFiles
from kdcicam.evaluation.engine import MapSource, batch_box_ious, read_all
from kdcicam.evaluation.metrics import BoxEvaluator, WSOLEvaluator
from kdcicam.evaluation.saved_cams import CamFileError, cam_path, score_saved_cams


class ArraySource:
    """The simplest source: rows of an array (and a record of which rows were read)."""

    def __init__(self, maps: np.ndarray):
        self.maps = maps
        self.shape = maps.shape[1:]
        self.read: list[int] = []

    def __len__(self) -> int:
        return len(self.maps)

    def read_into(self, index: int, out: np.ndarray) -> None:
        self.read.append(index)
        out[...] = self.maps[index]

    def invalid(self, index: int) -> Exception:
        return ValueError(f"map {index} is invalid")


def _case(n: int, seed: int) -> tuple[np.ndarray, list[str], object]:
    rng = np.random.default_rng(seed)
    maps = np.stack([smooth_map(rng, size=64, low=int(rng.choice([7, 14]))) for _ in range(n)])
    maps[1] = 0.1
    maps[1, 5:15, 5:15] = maps[1, 40:50, 30:40] = 0.8  # two equal squares: a tie for the largest contour, traced
    maps[3] = np.floor(maps[3] * 6) / 6  # plateaus
    maps[2] = 0.0
    ids = [f"c/{k}.jpg" for k in range(n)]
    md = make_metadata(boxes={i: [(5 + k, 8, 50, 40 + k % 9)] + [(0, 0, 12, 12)] * (k % 2) for k, i in enumerate(ids)},
                       sizes={i: (64, 64) for i in ids})
    return maps, ids, md


def test_array_source_is_a_map_source():
    assert isinstance(ArraySource(np.zeros((1, 2, 2))), MapSource)
    assert not isinstance(np.zeros((1, 2, 2)), MapSource)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_source_gives_the_array_paths_numbers(workers: int):
    maps, ids, _ = _case(23, 0)
    gts = [np.array([[5 + k, 8, 50, 40 + k % 9]]) for k in range(len(maps))]
    thresholds = np.arange(0, 1, 0.01)
    for multi in (False, True):
        want = batch_box_ious(maps, gts, thresholds, ids, workers=workers, multi_contour=multi,
                              single_contour=not multi, leakage=True)
        source = ArraySource(maps)
        got = batch_box_ious(source, gts, thresholds, ids, workers=workers, multi_contour=multi,
                             single_contour=not multi, leakage=True)
        best_want, best_got = (want.multi, got.multi) if multi else (want.single, got.single)
        assert np.array_equal(best_got, best_want)
        assert np.array_equal(got.leakage, want.leakage)
        assert got.traced == want.traced and (multi or got.traced > 0)
        assert sorted(source.read) == list(range(len(maps)))  # each map read once


@pytest.mark.parametrize("workers", [1, 2])
def test_evaluators_take_a_source(workers: int):
    maps, ids, md = _case(17, 1)
    for make in (lambda: BoxEvaluator(md, 64, multi_contour=True, workers=workers),
                 lambda: BoxEvaluator(md, 64, workers=workers), lambda: WSOLEvaluator(md, 64, workers=workers)):
        from_array, from_source = make(), make()
        from_array.accumulate(maps[:9], ids[:9])
        from_array.accumulate(maps[9:], ids[9:])
        from_source.accumulate(ArraySource(maps[:9]), ids[:9])
        from_source.accumulate(ArraySource(maps[9:]), ids[9:])
        assert from_source.compute() == from_array.compute()


def test_a_source_is_checked_like_an_array():
    maps, ids, md = _case(4, 2)
    maps, ids = maps[:3], ids[:3]
    ev = BoxEvaluator(md, 64)
    with pytest.raises(ValueError, match="3 score maps but 2 image ids"):
        ev.accumulate(ArraySource(maps), ids[:2])
    with pytest.raises(ValueError, match=r"shape \(32, 64\), expected \(64, 64\)"):
        ev.accumulate(ArraySource(maps[:, :32]), ids)
    with pytest.raises(ValueError, match="not in the metadata"):
        ev.accumulate(ArraySource(maps), [*ids[:2], "nowhere.jpg"])
    assert np.array_equal(read_all(ArraySource(maps)), maps)


def _save_all(root: Path, ids: list[str], maps: np.ndarray) -> None:
    for image_id, m in zip(ids, maps, strict=True):
        path = cam_path(root, image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, m)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_first_bad_file_in_order_is_reported(tmp_path: Path, workers: int):
    """Chunks run in any order on the pool; the error is the earliest image's, an unreadable file or bad
    values alike."""
    maps, ids, md = _case(24, 3)
    maps[15, 3, 3] = np.nan
    maps[20, 0, 0] = 1.5
    _save_all(tmp_path, ids, maps)
    cam_path(tmp_path, ids[18]).write_text("junk")
    ev = BoxEvaluator(md, 64, workers=workers)
    with pytest.raises(CamFileError, match=r"'c/15\.jpg'.*NaN or inf"):
        ev.accumulate(CamFiles(tmp_path, ids, (64, 64), False), ids)
    cam_path(tmp_path, ids[9]).unlink()
    with pytest.raises(CamFileError, match=r"'c/9\.jpg'.*not found"):
        ev.accumulate(CamFiles(tmp_path, ids, (64, 64), False), ids)
    ok = [i for k, i in enumerate(ids) if k not in (9, 15, 18)]
    with pytest.raises(CamFileError, match=r"'c/20\.jpg'.*values must lie in \[0, 1\]"):
        ev.accumulate(CamFiles(tmp_path, ok, (64, 64), False), ok)


def test_score_reads_through_the_source_and_names_the_file(tmp_path: Path):
    """``score_saved_cams`` (boxes and leakage: the source path) equals the in-memory evaluator, in both
    the default and the one-mode commands; a bad file in the middle is named."""
    from _eval_helpers import write_split

    maps, ids, md = _case(30, 4)
    split = write_split(tmp_path, md)
    cams = tmp_path / "cams"
    _save_all(cams, ids, maps)
    ev = WSOLEvaluator(md, 64)
    ev.accumulate(maps, ids)
    want = ev.compute()
    got = score_saved_cams(cams, split)
    assert got["max_box_acc"] == want["max_box_acc"] and got["max_box_acc_v2"] == want["max_box_acc_v2"]
    assert got["context_leakage"] == want["context_leakage"]
    one = score_saved_cams(cams, split, multi_contour=True, one_mode=True)
    assert one["max_box_acc_v2"] == want["max_box_acc_v2"]
    np.save(cam_path(cams, ids[17]), np.full((64, 64), -0.5))
    with pytest.raises(CamFileError, match=r"'c/17\.jpg'.*values must lie in \[0, 1\]"):
        score_saved_cams(cams, split)


EDGES = [0.0, -0.0, 1.0, 0.5, 5e-324, np.nextafter(1.0, 2.0), -5e-324, -1.0, 2.0, np.inf, -np.inf, np.nan,
         -np.nan, 1e300]


@pytest.mark.parametrize("value", EDGES)
def test_integer_range_check_agrees_with_floats(value: float):
    """The kernel tests [0, 1] on the values' bits: every edge value is accepted or refused as the float
    comparison does, and an accepted map is quantised as numpy casts it."""
    scoremap = np.full((5, 7), 0.75)
    scoremap[2, 3] = value
    q = np.empty((5, 7), dtype=np.uint8)
    hist = np.empty((4, 256), dtype=np.int64)
    top = _compiled.quantize(scoremap, q, hist)
    inside = bool((scoremap >= 0.0).all() and (scoremap <= 1.0).all())
    assert (top >= 0) == inside
    if inside:
        assert np.array_equal(q, (scoremap * 255.0).astype(np.uint8)) and top == q.max()


def test_kernel_leakage_with_negative_zero_minimum():
    """A map whose minimum is -0.0: the kernel's leakage (its minimum from the bit check) equals the per-map
    pass's bits."""
    rng = np.random.default_rng(5)
    maps = np.stack([smooth_map(rng, size=32) for _ in range(3)])
    maps[:, 0, :5] = -0.0
    maps[1, 4, 4] = 0.0
    gts = [np.array([[4, 4, 20, 20]])] * 3
    got = batch_box_ious(maps, gts, np.arange(0, 1, 0.01), workers=1, leakage=True).leakage
    region = np.zeros((32, 32), dtype=np.uint8)
    region[4:21, 4:21] = 1
    assert got is not None
    for k in range(3):
        assert got[k] == _compiled.leakage_share(maps[k], region)


class BadSource(ArraySource):
    """An ArraySource whose listed maps cannot be read."""

    def __init__(self, maps: np.ndarray, unreadable: set[int]):
        super().__init__(maps)
        self.unreadable = unreadable

    def read_into(self, index: int, out: np.ndarray) -> None:
        if index in self.unreadable:
            raise OSError(f"map {index} is unreadable")
        super().read_into(index, out)


def test_read_all_reports_the_first_bad_map_in_order():
    maps, _, _ = _case(8, 6)
    maps[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match="map 2 is invalid"):
        read_all(BadSource(maps, {4}))
    with pytest.raises(OSError, match="map 1 is unreadable"):
        read_all(BadSource(maps, {1}))
    maps[2, 0, 0] = 0.5
    maps[6, 1, 1] = 1.5
    with pytest.raises(ValueError, match="map 6 is invalid"):
        read_all(ArraySource(maps))


def test_workers_stop_at_the_first_bad_map():
    """A bad map early in a long batch: the error comes without the rest of the batch being read."""
    maps = np.full((200, 16, 16), 0.5)
    source = BadSource(maps, {3})
    gts = [np.array([[2, 2, 10, 10]])] * len(maps)
    with pytest.raises(OSError, match="map 3 is unreadable"):
        batch_box_ious(source, gts, np.arange(0, 1, 0.01), workers=2)
    assert len(source.read) < 50


def test_wsol_evaluator_with_masks_reads_a_source_whole():
    """Pixel metrics need the maps whole: a source is read (and checked) first, then scored as an array."""
    maps, ids, md = _case(9, 7)
    masks = (np.random.default_rng(8).random(maps.shape) < 0.3).astype(np.uint8)
    from_array, from_source = WSOLEvaluator(md, 64, workers=2), WSOLEvaluator(md, 64, workers=2)
    from_array.accumulate(maps, ids, gt_masks=masks)
    from_source.accumulate(ArraySource(maps), ids, gt_masks=masks)
    assert from_source.compute() == from_array.compute()
    maps[4, 2, 2] = np.inf
    with pytest.raises(ValueError, match="map 4 is invalid"):
        WSOLEvaluator(md, 64).accumulate(ArraySource(maps), ids, gt_masks=masks)


def test_cam_files_must_match_their_ids_and_headers(tmp_path: Path):
    from kdcicam.evaluation.cam_batches import Headers

    maps, ids, md = _case(4, 9)
    maps, ids = maps[:3], ids[:3]
    _save_all(tmp_path, ids, maps)
    with pytest.raises(ValueError, match="other image ids"):
        BoxEvaluator(md, 64).accumulate(CamFiles(tmp_path, ids[::-1], (64, 64), False), ids)
    with pytest.raises(ValueError, match="headers parsed for shape"):
        CamFiles(tmp_path, ids, (64, 64), False, Headers((32, 32)))


@pytest.mark.parametrize("positional", [True, False])
def test_files_read_with_and_without_positional_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      positional: bool):
    """Where the OS has no os.preadv (Windows), maps are read through a file object: the same maps."""
    from kdcicam.evaluation import cam_batches

    monkeypatch.setattr(cam_batches, "_POSITIONAL", positional)
    maps, ids, _ = _case(6, 10)
    _save_all(tmp_path, ids, maps)
    np.save(cam_path(tmp_path, ids[2]), maps[2].astype(np.float32))  # another header: the general path
    files = CamFiles(tmp_path, ids, (64, 64), False)
    got = read_all(files)
    want = np.stack([np.load(cam_path(tmp_path, i)).astype(np.float64) for i in ids])
    assert np.array_equal(got, want)


def test_read_all_reports_an_unreadable_first_map():
    with pytest.raises(OSError, match="map 0 is unreadable"):
        read_all(BadSource(np.full((3, 4, 4), 0.5), {0}))
