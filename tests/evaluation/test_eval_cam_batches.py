"""Reading saved CAMs for ``kdcicam score``: the fast path gives np.load's maps for every layout np.save
writes, anything else goes through load_cam (same maps or same errors), and the prefetching reader
hands batches over in order with each error at its own batch."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from _eval_helpers import smooth_map

from kdcicam.evaluation import cam_batches
from kdcicam.evaluation.saved_cams import CamFileError, load_cam


def _save(root: Path, image_id: str, array: np.ndarray) -> Path:
    path = root / (image_id + ".npy")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 7), (224, 224), (96, 128)])
def test_read_batch_equals_np_load(tmp_path: Path, size: tuple[int, int]):
    """float64 (fast path, a map smaller than the first read included), float32, big-endian and
    Fortran order (general path): the maps np.load reads, cast to float64."""
    rng = np.random.default_rng(0)
    base = [rng.random(size) for _ in range(4)]
    arrays = [base[0], base[1].astype(np.float32), base[2].astype(">f8"), np.asfortranarray(base[3])]
    ids = [f"c/{k}.jpg" for k in range(len(arrays))]
    for image_id, a in zip(ids, arrays, strict=True):
        _save(tmp_path, image_id, a)
    got = cam_batches.read_batch(tmp_path, ids, size, normalize=False)
    want = np.stack([np.load(tmp_path / (i + ".npy")).astype(np.float64) for i in ids])
    assert got.dtype == np.float64 and np.array_equal(got, want)


def test_read_batch_normalizes_like_load_cam(tmp_path: Path):
    raw = np.random.default_rng(1).normal(size=(6, 5)) * 7
    _save(tmp_path, "a", raw)
    got = cam_batches.read_batch(tmp_path, ["a"], (6, 5), normalize=True)
    assert np.array_equal(got[0], load_cam(tmp_path, "a", (6, 5), True))


def test_files_the_fast_path_refuses_raise_load_cams_errors(tmp_path: Path):
    good = np.zeros((8, 8))
    cases = {
        "short": lambda p: p.write_bytes(p.read_bytes()[:200]),
        "shape": lambda p: np.save(p, np.zeros((8, 9))),
        "text": lambda p: p.write_text("0.5\n"),
        "ints": lambda p: np.save(p, np.zeros((8, 8), np.int64)),
        "missing": lambda p: p.unlink(),
    }
    for name, corrupt in cases.items():
        path = _save(tmp_path, name, good)
        corrupt(path)
        with pytest.raises(CamFileError) as caught:
            cam_batches.read_batch(tmp_path, [name], (8, 8), normalize=False)
        with pytest.raises(CamFileError) as expected:
            load_cam(tmp_path, name, (8, 8), False)
        assert str(caught.value) == str(expected.value), name


def test_value_errors_name_the_first_bad_file(tmp_path: Path):
    maps = np.full((4, 3, 3), 0.5)
    maps[1, 0, 0] = np.nan
    maps[2, 1, 1] = 2.0
    ids = ["a", "b", "c", "d"]
    for i, m in zip(ids, maps, strict=True):
        _save(tmp_path, i, m)
    read = cam_batches.read_batch(tmp_path, ids, (3, 3), normalize=False)  # values are not checked here
    error = cam_batches.value_error(tmp_path, ids, read)
    assert isinstance(error, CamFileError) and "'b'" in str(error) and "NaN or inf" in str(error)
    assert cam_batches.value_error(tmp_path, ids[2:], read[2:]).args[0].endswith("(use --normalize for raw CAMs)")
    assert cam_batches.value_error(tmp_path, ["a"], read[:1]) is None
    # an unreadable file after a map with bad values: the bad values are reported, as in file order
    (tmp_path / "d.npy").write_text("junk")
    with pytest.raises(CamFileError, match=r"'b'.*NaN or inf"):
        cam_batches.read_batch(tmp_path, ids, (3, 3), normalize=False)


def test_batches_come_in_order_with_extras(tmp_path: Path):
    rng = np.random.default_rng(3)
    ids = [f"{k:03d}.png" for k in range(23)]
    maps = {i: smooth_map(rng, size=16) for i in ids}
    for i, m in maps.items():
        _save(tmp_path, i, m)
    seen = []
    for batch, read, extra in cam_batches.batches(tmp_path, ids, (16, 16), False, 5, extra=lambda b: b[::-1]):
        assert extra == batch[::-1] and np.array_equal(read, np.stack([maps[i] for i in batch]))
        seen += batch
    assert seen == ids
    assert [b for b, _, _ in cam_batches.batches(tmp_path, ids[:3], (16, 16), False, 5)] == [ids[:3]]


def test_a_read_error_comes_after_the_batches_before_it(tmp_path: Path):
    ids = [f"{k}.png" for k in range(12)]
    for i in ids:
        _save(tmp_path, i, np.zeros((4, 4)))
    (tmp_path / "9.png.npy").unlink()
    got = []
    with pytest.raises(CamFileError, match=r"'9\.png'.*not found"):
        for batch, _, _ in cam_batches.batches(tmp_path, ids, (4, 4), False, 4, prefetch=1):
            got.append(batch)
    assert got == [ids[:4], ids[4:8]]


def test_leaving_early_stops_the_reader(tmp_path: Path):
    ids = [f"{k}.png" for k in range(40)]
    for i in ids:
        _save(tmp_path, i, np.zeros((4, 4)))
    reader = cam_batches.batches(tmp_path, ids, (4, 4), False, 2, prefetch=1)
    assert next(reader)[0] == ids[:2]
    closing = threading.Thread(target=reader.close, daemon=True)  # joins the reader: must not hang on a full queue
    closing.start()
    closing.join(timeout=30)
    assert not closing.is_alive(), "leaving the loop early hangs on the reader thread"
    assert not [t for t in threading.enumerate() if t.name == "kdcicam-cam-reader" and t.is_alive()]


def test_reused_buffers_hold_each_batch_until_the_next_is_asked_for(tmp_path: Path):
    """``reuse=True`` (what ``kdcicam score`` uses): the reader fills a small ring of buffers ahead of
    the consumer; a batch must stay intact while the consumer works on it, however far ahead the
    reader gets."""
    import time

    rng = np.random.default_rng(4)
    ids = [f"{k:03d}.png" for k in range(37)]
    maps = {i: smooth_map(rng, size=8) for i in ids}
    for i, m in maps.items():
        _save(tmp_path, i, m)
    for prefetch in (1, 2, 3):
        seen = []
        buffers = set()
        for batch, read, _ in cam_batches.batches(tmp_path, ids, (8, 8), False, 4, prefetch=prefetch, reuse=True):
            time.sleep(0.01)  # the reader runs ahead meanwhile
            assert np.array_equal(read, np.stack([maps[i] for i in batch]))
            buffers.add(read.__array_interface__["data"][0])
            seen += batch
        assert seen == ids
        assert len(buffers) <= prefetch + 2


def test_one_call_reads_bet_on_the_last_header_and_check_it(tmp_path: Path):
    """Files read in turn with one ``Headers`` (as a folder is): each is read header and data in one call on
    the bet that its header is the last one's; a file whose header differs (another dtype, order or header
    version) or that ends early is read or refused exactly as on its own."""
    rng = np.random.default_rng(6)
    shape = (9, 11)
    plain = rng.random(shape)
    kinds = {
        "a": plain,
        "b": rng.random(shape).astype(np.float32),
        "c": np.asfortranarray(rng.random(shape)),
        "d": rng.random(shape),
        "e": rng.random(shape),
    }
    for name, array in kinds.items():
        _save(tmp_path, name, array)
    short = tmp_path / "d.npy"
    short.write_bytes(short.read_bytes()[:-8])  # the same header as "a", one value missing
    headers = cam_batches.Headers(shape)
    out = np.empty(shape)
    for name in ["a", "b", "c", "a", "d", "e", "e"]:
        if name == "d":
            with pytest.raises(CamFileError) as caught:
                cam_batches.read_into(tmp_path, name, out, headers, False)
            with pytest.raises(CamFileError) as expected:
                load_cam(tmp_path, name, shape, False)
            assert str(caught.value) == str(expected.value)
            continue
        cam_batches.read_into(tmp_path, name, out, headers, False)
        assert np.array_equal(out, np.load(tmp_path / f"{name}.npy").astype(np.float64)), name
    assert headers.last is not None and headers.last.startswith(b"\x93NUMPY")
