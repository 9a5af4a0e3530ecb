"""Saved CAM files -> the evaluator: as a :class:`CamFiles` source that the box kernel's workers read
map by map (boxes and leakage), or as batches read on a background thread while the kernel scores the
previous batch (PxAP, which needs whole batches of maps and masks). Reading is what ``kdcicam score``
spends its time on besides the kernel.

A map saved as ``np.save`` writes it (little-endian float64, C order, the grid's shape) is read
straight into the batch buffer: no intermediate array, no cast, and the header parsed once per
distinct header. Any other file (float32, Fortran order, another shape, not a .npy at all) goes
through :func:`~.saved_cams.load_cam`, which converts it or raises its usual error. Values are not
checked here: the kernel checks every map for NaN, inf and values outside [0, 1] anyway, and when it
finds one, :func:`value_error` names the file as :func:`~.saved_cams.load_cam` would have.
"""
from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .engine import invalid_maps
from .saved_cams import CamFileError, cam_path, load_cam

_MAGIC = b"\x93NUMPY"
_PEEK = 256  #: header bytes read with the first read (np.save pads the header to 128 bytes)


class Headers:
    """.npy headers already parsed (most folders have one distinct header): raw bytes -> data offset,
    or -1 when the file is not a plain float64 C-order array of the expected shape."""

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape
        self.offsets: dict[bytes, int] = {}
        #: the last plain header seen (the whole header, data offset included): the next file is read in one call,
        #: header and data together, on the bet that it has the same header (checked, byte for byte)
        self.last: bytes | None = None

    def offset(self, head: bytes) -> int:
        if not head.startswith(_MAGIC) or len(head) < 12:
            return -1
        major = head[6]
        size = 2 if major == 1 else 4
        length = int.from_bytes(head[8:8 + size], "little")
        start = 8 + size
        if major not in (1, 2, 3) or start + length > len(head):
            return -1
        key = head[:start + length]
        found = self.offsets.get(key)
        if found is None:
            found = start + length if self._plain(key[start:]) else -1
            self.offsets[key] = found
        if found >= 0:
            self.last = key
        return found

    def _plain(self, text: bytes) -> bool:
        import ast

        try:
            header = ast.literal_eval(text.decode("latin1"))
        except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
            return False
        if not isinstance(header, dict) or header.keys() != {"descr", "fortran_order", "shape"}:
            return False
        return header["descr"] == "<f8" and header["fortran_order"] is False and header["shape"] == self.shape


def read_into(cam_dir: Path, image_id: str, out: np.ndarray, headers: Headers, normalize: bool) -> None:
    """Fill ``out`` (float64, C order, the grid's shape) with an image's map; values unchecked
    unless ``normalize`` (then the general path: min-max needs them whole anyway)."""
    if not normalize:
        # cam_path's file, without building a Path per map
        path = os.path.join(os.fspath(cam_dir), image_id + ".npy")
        # numpy declares ndarray.__buffer__ for Python >= 3.12 only; the buffer protocol is there
        raw = memoryview(out).cast("B")  # type: ignore[arg-type]
        try:
            done = _read_positional(path, raw, headers) if _POSITIONAL else _read_file(path, raw, headers)
        except OSError:
            done = False  # load_cam names the problem
        if done:
            return
    out[...] = load_cam(cam_dir, image_id, headers.shape, normalize)


#: os.pread / os.preadv (POSIX): a map read with no file object, header and data in one call
_POSITIONAL = hasattr(os, "preadv") and hasattr(os, "pread")


def _read_positional(path: str, raw: memoryview, headers: Headers) -> bool:
    """A plain map's data into ``raw`` (False: not a plain map, or short), with os.open / os.preadv: no file
    object per map, and one call for header and data on the bet that the header is the last file's (checked
    byte for byte). Reading 1,389 maps of 224 x 224 cost 110 -> 65 us each this way (cache-cold)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        last = headers.last
        if last is not None:
            guess = bytearray(len(last))
            if os.preadv(fd, [guess, raw], 0) == len(guess) + len(raw) and guess == last:
                return True
        return _fill(os.pread(fd, _PEEK, 0), raw, headers, lambda view, at: os.preadv(fd, [view], at))
    finally:
        os.close(fd)


def _read_file(path: str, raw: memoryview, headers: Headers) -> bool:
    """:func:`_read_positional` where the OS has no positional reads (Windows): a file object, read in turn."""
    with open(path, "rb", buffering=0) as f:
        return _fill(f.read(_PEEK), raw, headers, lambda view, at: f.readinto(view))


def _fill(head: bytes, raw: memoryview, headers: Headers, read_at: Callable[[memoryview, int], int | None]) -> bool:
    """``raw`` = the data of a file whose first bytes are ``head`` (False: not a plain map, or short);
    ``read_at(view, offset)`` reads the file from ``offset`` into ``view`` (a file object: from where it is,
    which is that offset here), returning how many bytes it read."""
    start = headers.offset(head)
    if start < 0:
        return False
    have = min(len(head) - start, len(raw))  # a tiny map may lie within the first read
    raw[:have] = head[start:start + have]
    while have < len(raw):
        got = read_at(raw[have:], start + have)
        if not got:
            return False
        have += got
    return True


class CamFiles:
    """The maps of ``image_ids`` under ``cam_dir``, read when the evaluator's workers ask for them
    (:class:`~.engine.MapSource`): each straight into the worker's own buffer, scored while it is still in
    that core's cache. ``headers`` may be shared by the sources of one folder."""

    def __init__(self, cam_dir: Path, image_ids: Sequence[str], shape: tuple[int, int], normalize: bool,
                 headers: Headers | None = None):
        if headers is not None and tuple(headers.shape) != tuple(shape):
            raise ValueError(f"headers parsed for shape {headers.shape}, maps of shape {shape}")
        self.cam_dir = cam_dir
        self.image_ids = list(image_ids)
        self.shape = shape
        self.normalize = normalize
        self.headers = headers or Headers(shape)

    def __len__(self) -> int:
        return len(self.image_ids)

    def read_into(self, index: int, out: np.ndarray) -> None:
        read_into(self.cam_dir, self.image_ids[index], out, self.headers, self.normalize)

    def invalid(self, index: int) -> Exception:
        image_id = self.image_ids[index]
        found = _file_error(self.cam_dir, image_id, self.normalize)
        if found is not None:
            return found
        problem = ("values too large to min-max normalise (NaN or inf after --normalize)" if self.normalize
                   else "changed while it was being scored")
        return CamFileError(image_id, cam_path(self.cam_dir, image_id), problem)


def _file_error(cam_dir: Path, image_id: str, normalize: bool = False) -> CamFileError | None:
    """What :func:`~.saved_cams.load_cam` says of an image's file (``None``: nothing wrong)."""
    try:
        load_cam(cam_dir, image_id, None, normalize)
    except CamFileError as e:
        return e
    return None


def value_error(cam_dir: Path, image_ids: Sequence[str], maps: np.ndarray) -> CamFileError | None:
    """The first map with NaN, inf or a value outside [0, 1], as :func:`~.saved_cams.load_cam`
    reports it (``None`` if all are valid)."""
    if len(maps) == 0:
        return None
    for k in invalid_maps(maps):
        found = _file_error(cam_dir, image_ids[int(k)])
        if found is not None:
            return found
    return None


def read_batch(cam_dir: Path, image_ids: Sequence[str], shape: tuple[int, int], normalize: bool,
               headers: Headers | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Maps ``[B, H, W]`` of ``image_ids``, in order (into the first ``B`` rows of ``out``, a float64
    C-order buffer of at least ``B`` maps, when given). A file that cannot be read raises its
    :class:`~.saved_cams.CamFileError`, unless an earlier map of the batch has invalid values: that one's
    error comes first, as if the files had been checked one by one."""
    headers = headers or Headers(shape)
    maps = np.empty((len(image_ids), *shape), dtype=np.float64) if out is None else out[:len(image_ids)]
    for k, image_id in enumerate(image_ids):
        try:
            read_into(cam_dir, image_id, maps[k], headers, normalize)
        except CamFileError:
            earlier = value_error(cam_dir, image_ids[:k], maps[:k]) if not normalize else None
            if earlier is not None:
                raise earlier from None
            raise
    return maps


def batches(cam_dir: Path, image_ids: Sequence[str], shape: tuple[int, int], normalize: bool, size: int,
            extra: Callable[[list[str]], Any] | None = None, prefetch: int = 2,
            reuse: bool = False) -> Iterator[tuple[list[str], np.ndarray, Any]]:
    """``(ids, maps, extra(ids))`` per batch of ``size`` images, read ``prefetch`` batches ahead on a
    thread (file reads and ``extra``, e.g. reading masks, release the GIL). An error is raised where
    its batch would be yielded, so batches before it are scored first, as when reading in turn.

    ``reuse``: the maps of a batch are valid only until the next one is asked for (its buffer is
    then refilled): ``prefetch + 2`` buffers are allocated once and written over, rather than fresh
    memory per batch, whose page faults cost as much as the copy from the page cache."""
    groups = [list(image_ids[i:i + size]) for i in range(0, len(image_ids), size)]
    headers = Headers(shape)
    ring: list[np.ndarray] = []
    if reuse and groups:  # the consumer's batch, ``prefetch`` queued ones and the one being read
        ring = [np.empty((min(size, len(image_ids)), *shape), dtype=np.float64)
                for _ in range(min(len(groups), prefetch + 2))]
    position = iter(range(len(groups)))

    def one(ids: list[str]) -> tuple[list[str], np.ndarray, Any]:
        out = ring[next(position) % len(ring)] if ring else None
        return ids, read_batch(cam_dir, ids, shape, normalize, headers, out), extra(ids) if extra else None

    if len(groups) <= 1:
        yield from (one(ids) for ids in groups)
        return
    done: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def reader() -> None:
        for ids in groups:
            if stop.is_set():
                return
            try:
                item: tuple[bool, Any] = (True, one(ids))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
                item = (False, e)
            while not stop.is_set():
                try:
                    done.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not item[0]:
                return

    thread = threading.Thread(target=reader, name="kdcicam-cam-reader", daemon=True)
    thread.start()
    try:
        for _ in groups:
            ok, value = done.get()
            if not ok:
                raise value
            yield value
    finally:
        stop.set()
        thread.join()
