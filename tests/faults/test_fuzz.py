"""Fuzzing with hypothesis: the metadata parser, the evaluator and the CAM loader must answer any
input with success or a KdcicamError subclass (MetadataError for metadata), never another exception."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kdcicam.data.metadata import Metadata, MetadataError, read_metadata
from kdcicam.errors import KdcicamError

CAT = "fuzzing"
EXAMPLES = 100
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

IDS = ["a/0.png", "a/1.png", "b/2.png"]
VALID = {
    "image_ids.txt": "".join(f"{i}\n" for i in IDS),
    "class_labels.txt": "a/0.png,0\na/1.png,0\nb/2.png,1\n",
    "image_sizes.txt": "a/0.png,20,10\na/1.png,8,8\nb/2.png,30,40\n",
    "localization.txt": "a/0.png,1,1,10,9\na/1.png,0,0,8,8\nb/2.png,2,3,29,39\nb/2.png,5,5,6,6\n",
    "masks.txt": "a/0.png,m/0.png,\na/1.png,m/1.png,m/ignore.png\nb/2.png,m/2.png,\n",
}
FILES = sorted(VALID)

# text made of what metadata lines are made of, plus the characters that break naive parsers
TOKENS = st.sampled_from(["a/0.png", "a/1.png", "b/2.png", "m/0.png", ",", ",", "0", "1", "2", "-1", "8", "1e999",
                          "nan", "inf", "-inf", "3.5", "..", "/", "\\", "C:", " ", "\t", "\r", "\x00", "é", "\ufeff",
                          "99999999999999999999", "0x10", "1_0", "", "#"])
LINE = st.lists(TOKENS, max_size=8).map("".join)


def _write_split(root: Path, files: dict[str, bytes]) -> Path:
    split = root / "split"
    split.mkdir()
    for name, data in files.items():
        (split / name).write_bytes(data)
    for rel in ("a/0.png", "a/1.png", "b/2.png", "m/0.png", "m/1.png", "m/2.png", "m/ignore.png"):
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "images" / rel).write_bytes(b"")  # read_metadata only checks that files exist
    return split


def _check_consistent(md: Metadata) -> None:
    """What a successful parse promises its users."""
    assert md.image_ids and len(set(md.image_ids)) == len(md.image_ids)
    for i in md.image_ids:
        assert 0 <= md.class_labels[i] < md.num_classes
        w, h = md.image_sizes[i]
        assert w > 0 and h > 0
        for x0, y0, x1, y1 in md.boxes.get(i, []):
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    for paths in md.masks.values():
        assert all(not p.startswith("/") and ".." not in Path(p).parts for p in paths)


@st.composite
def mutated_split(draw) -> tuple[dict[str, bytes], str]:
    files = {name: text.encode() for name, text in VALID.items()}
    target = draw(st.sampled_from(FILES))
    how = draw(st.sampled_from(["replace line", "insert line", "delete line", "random bytes", "drop file"]))
    lines = VALID[target].splitlines()
    if how == "random bytes":
        files[target] = draw(st.binary(max_size=200))
    elif how == "drop file":
        del files[target]
    else:
        k = draw(st.integers(0, len(lines) - (1 if how != "insert line" else 0)))
        if how == "delete line":
            del lines[k]
        elif how == "insert line":
            lines.insert(k, draw(LINE))
        else:
            lines[k] = draw(LINE)
        files[target] = ("\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"]))).encode("utf-8", "surrogatepass")
    return files, f"{target}: {how}"


_SEEN: dict[str, int] = {"success": 0, "MetadataError": 0}


@given(case=mutated_split(), check_images=st.booleans())
@FUZZ
def _fuzz_metadata(case, check_images: bool) -> None:
    files, _ = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        split = _write_split(root, files)
        try:
            md = read_metadata(split, image_root=root / "images", check_images=check_images)
        except MetadataError as e:
            assert str(split) in e.file  # the error names a file of this split
            _SEEN["MetadataError"] += 1
            return
        _check_consistent(md)
        _SEEN["success"] += 1


def test_fuzz_metadata_parser(fault):
    rec = fault(f"metadata parser: {EXAMPLES} mutated splits (random lines, tokens, bytes, missing files)", CAT,
                "only MetadataError (naming a file of the split) or a consistent Metadata; never another exception")
    _SEEN.update(success=0, MetadataError=0)
    _fuzz_metadata()
    rec.observed = f"{_SEEN['success']} parsed (all consistent), {_SEEN['MetadataError']} MetadataError, 0 other"


# ------------------------------------------------------------------------------------------ evaluator
def _metadata() -> Metadata:
    return Metadata(image_ids=list(IDS), class_labels={"a/0.png": 0, "a/1.png": 0, "b/2.png": 1},
                    image_sizes={"a/0.png": (20, 10), "a/1.png": (8, 8), "b/2.png": (30, 40)},
                    boxes={"a/0.png": [(1, 1, 10, 9)], "a/1.png": [(0, 0, 8, 8)], "b/2.png": [(2, 3, 29, 39)]},
                    num_classes=2)


GRID = 12
DTYPES = st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.uint8, np.bool_, np.complex64])
FLOATS = st.one_of(st.floats(0, 1), st.floats(allow_nan=True, allow_infinity=True, width=32),
                   st.sampled_from([np.nan, np.inf, -np.inf, -0.0, 1.0000001, -1e-300, 1e300]))


@st.composite
def score_maps(draw) -> np.ndarray:
    dtype = np.dtype(draw(DTYPES))
    shape = draw(st.one_of(
        st.tuples(st.integers(1, 3), st.just(GRID), st.just(GRID)),  # the right shape, usually
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=GRID + 1)))
    if dtype.kind in "fc":
        elements = FLOATS if dtype.itemsize >= 4 else st.floats(0, 1, width=16)
        return draw(hnp.arrays(dtype, shape, elements=elements))
    return draw(hnp.arrays(dtype, shape))


_EVAL: dict[str, int] = {}


@given(maps=score_maps(), ids_kind=st.sampled_from(["known", "unknown"]), compute=st.booleans())
@FUZZ
def _fuzz_evaluator(maps: np.ndarray, ids_kind: str, compute: bool) -> None:
    from kdcicam.evaluation import WSOLEvaluator

    evaluator = WSOLEvaluator(_metadata(), cam_size=GRID)
    n = maps.shape[0] if maps.ndim == 3 else 1
    ids = [IDS[k % len(IDS)] for k in range(n)] if ids_kind == "known" else ["nowhere.png"] * n
    try:
        evaluator.accumulate(maps, ids)
        if compute and evaluator.count:
            result = evaluator.compute()
            assert 0 <= result["max_box_acc_v2"] <= 100
    except KdcicamError as e:
        _EVAL[type(e).__name__] = _EVAL.get(type(e).__name__, 0) + 1
        return
    _EVAL["success"] = _EVAL.get("success", 0) + 1


def test_fuzz_evaluator_score_maps(fault):
    rec = fault(f"evaluator: {EXAMPLES} random score-map batches (NaN/inf, odd shapes, int/bool/complex/float16 "
                "dtypes, unknown ids)", CAT, "only KdcicamError subclasses or success; never another exception")
    _EVAL.clear()
    _fuzz_evaluator()
    rec.observed = ", ".join(f"{v} {k}" for k, v in sorted(_EVAL.items())) + ", 0 other"


@given(logits=hnp.arrays(np.float32, (1, 2), elements=FLOATS))
@FUZZ
def _fuzz_logits(logits: np.ndarray) -> None:
    from kdcicam.evaluation import WSOLEvaluator

    with contextlib.suppress(KdcicamError):
        WSOLEvaluator(_metadata(), cam_size=GRID).accumulate(np.zeros((1, GRID, GRID)), ["a/0.png"], logits)


def test_fuzz_evaluator_logits(fault):
    fault(f"evaluator: {EXAMPLES} random logits (NaN/inf)", CAT, "only KdcicamError subclasses or success")
    _fuzz_logits()


# ------------------------------------------------------------------------------------------ CAM files
_CAMS: dict[str, int] = {}


@given(data=st.one_of(st.binary(max_size=300),
                      st.builds(lambda head, cut: head[:cut], st.sampled_from([b"\x93NUMPY\x01\x00", b"PK\x03\x04",
                                                                               b"\x80\x04\x95"]),
                                st.integers(0, 12)).flatmap(lambda h: st.binary(max_size=200).map(lambda t: h + t))))
@FUZZ
def _fuzz_cam_file(data: bytes) -> None:
    from kdcicam.evaluation.saved_cams import load_cam

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "x.png.npy").write_bytes(data)
        try:
            load_cam(Path(tmp), "x.png", (GRID, GRID), normalize=bool(len(data) % 2))
        except KdcicamError as e:
            _CAMS[type(e).__name__] = _CAMS.get(type(e).__name__, 0) + 1
            return
        _CAMS["success"] = _CAMS.get("success", 0) + 1


def test_fuzz_cam_file_loader(fault):
    rec = fault(f"`kdcicam score` CAM loader: {EXAMPLES} random files (random bytes, npy/zip/pickle headers)", CAT,
                "only CamFileError (KdcicamError) or success; never unpickled")
    _CAMS.clear()
    _fuzz_cam_file()
    rec.observed = ", ".join(f"{v} {k}" for k, v in sorted(_CAMS.items())) + ", 0 other"
