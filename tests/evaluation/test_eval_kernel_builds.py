"""The kernels' two builds: the ahead-of-time module (when this checkout has a current one) gives the
JIT's numbers exactly; the loader picks the AOT module only when it was built from this source for
this CPU, and KDCICAM_KERNELS forces either build."""
from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from _eval_helpers import smooth_map

import kdcicam
from kdcicam.evaluation import _build_id, _compiled, _kernels
from kdcicam.evaluation.boxes import threshold_list

SRC = Path(kdcicam.__file__).resolve().parents[1]


def _aot_or_skip():
    module, why = _compiled._aot_module()
    if module is None:
        pytest.skip(why)
    return module


def _fake_module(source: int, cpu: int) -> types.ModuleType:
    fake = types.ModuleType("kdcicam.evaluation._kernels_aot")
    fake.source_hash = lambda: source
    fake.cpu_flags_hash = lambda: cpu
    return fake


def test_flags_are_the_kernels():
    assert (_compiled.FLAG_SINGLE, _compiled.FLAG_MULTI) == (_kernels.FLAG_SINGLE, _kernels.FLAG_MULTI)


@pytest.mark.parametrize("interval", [0.01, 0.001])
def test_aot_equals_jit(interval: float):
    """Every output of batch_box_ious (IoUs, flags, levels, validity), quantize, best_ious, the mask
    histograms and leakage, on CAM-like maps at both grids of the protocol, an invalid map included."""
    aot = _aot_or_skip()
    rng = np.random.default_rng(5)
    maps = np.stack([smooth_map(rng, low=int(rng.choice([7, 14]))) for _ in range(24)])
    maps[3] = np.floor(maps[3] * 8) / 8  # plateaus: ties and holes
    maps[7, 5, 5] = 1.5  # invalid
    # a small high plateau with a shallow hole on a ramp, the hole's box as GT: the kernel flags the hole's
    # thresholds for findContours rather than sweep the whole background (test_eval_property's case)
    maps[4] = np.tile(np.linspace(0.1, 0.2, 224), (224, 1))
    maps[4, 40:80, 60:100] = 1.0
    maps[4, 50:53, 70:74] = 1 - 1.5 * interval  # the hole lives at the top threshold only
    thresholds = threshold_list(interval)
    corner = rng.integers(0, 200, (30, 2))
    boxes = np.concatenate([corner, corner + rng.integers(1, 24, (30, 2))], axis=1).astype(np.int64)
    offsets = np.linspace(0, 30, 25).astype(np.int64)  # one or two GT boxes per image
    boxes[offsets[4]:offsets[5]] = [69, 49, 75, 54]  # the hole's contour box
    mask = (rng.random((224, 224)) < 0.3).astype(np.uint8)
    edges = np.append(thresholds, [1.0, 2.0, 3.0])
    b, nt = len(maps), len(thresholds)
    outs = []
    for impl in (aot, _kernels):
        out = (np.zeros((b, nt)), np.zeros((b, nt)), np.zeros((b, nt), np.uint8), np.zeros((b, nt), np.int64),
               np.ones(b, np.bool_), np.zeros(b))
        impl.batch_box_ious(maps, thresholds, boxes, offsets, 0, b, *out[:5], True, out[5], True)
        q, hist = np.empty((224, 224), np.uint8), np.empty((4, 256), np.int64)
        top = impl.quantize(maps[0], q, hist)
        fg, bg = np.zeros(len(edges) - 1, np.int64), np.zeros(len(edges) - 1, np.int64)
        impl.mask_histograms(maps[1], mask, edges, fg, bg)
        outs.append([*out, top, q, hist, impl.best_ious(boxes, boxes[:3]), fg, bg, impl.leakage_share(maps[2], mask)])
    assert not outs[0][4][7] and outs[0][2][4].any()  # the invalid map is seen; the hole map was flagged
    for got, want in zip(*outs, strict=True):
        assert np.array_equal(got, want)


def test_loader_takes_a_current_build_only(monkeypatch):
    here = _build_id.source_hash(), _build_id.cpu_flags_hash()
    cases = {here: True, (here[0], 0): True, (here[0] + 1, here[1]): False, (here[0], here[1] + 1): False}
    for (source, cpu), usable in cases.items():
        monkeypatch.setattr(_compiled.importlib, "import_module", lambda *a, s=source, c=cpu: _fake_module(s, c))
        module, why = _compiled._aot_module()
        assert (module is not None) == usable, (source, cpu, why)
        assert usable or "make kernels" in why


def test_loader_falls_back_on_a_broken_build(monkeypatch):
    monkeypatch.setattr(_compiled.importlib, "import_module", lambda *a: types.ModuleType("old"))  # no hashes
    assert _compiled._aot_module()[0] is None

    def fail(*args):
        raise ImportError("numpy.core.multiarray failed to import")

    monkeypatch.setattr(_compiled.importlib, "import_module", fail)
    module, why = _compiled._aot_module()
    assert module is None and "failed to import" in why


def _backend(value: str) -> subprocess.CompletedProcess:
    env = {**os.environ, _compiled.ENV: value, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from kdcicam.evaluation import _compiled as c; print(c.BACKEND, 'numba' in sys.modules)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)


def test_environment_variable_forces_a_build():
    jit = _backend("jit")
    assert jit.returncode == 0 and jit.stdout.split() == ["jit", "True"], jit.stderr
    bad = _backend("fast")
    assert bad.returncode != 0 and "KDCICAM_KERNELS='fast'" in bad.stderr
    aot = _backend("aot")
    if _compiled._aot_module()[0] is None:
        assert aot.returncode != 0 and "KDCICAM_KERNELS=aot" in aot.stderr
    else:  # the compiled module runs without numba
        assert aot.returncode == 0 and aot.stdout.split() == ["aot", "False"], aot.stderr


def test_wrappers_refuse_output_buffers_they_cannot_write():
    maps = np.zeros((1, 8, 8))
    q = np.empty((8, 16), np.uint8)[:, ::2]  # not contiguous: a copy would be filled
    with pytest.raises(TypeError, match="q: expected a writable C-contiguous uint8"):
        _compiled.quantize(maps[0], q, np.empty((4, 256), np.int64))
    with pytest.raises(TypeError, match="hist"):
        _compiled.quantize(maps[0], np.empty((8, 8), np.uint8), np.empty((4, 256), np.int32))
    with pytest.raises(ValueError, match="image range"):
        _compiled.batch_box_ious(maps, np.zeros(1), np.zeros((1, 4), np.int64), np.array([0, 1]), 0, 2,
                                 *(np.zeros((1, 1)),) * 2, np.zeros((1, 1), np.uint8), np.zeros((1, 1), np.int64),
                                 np.ones(1, bool), True)


def test_inputs_are_made_to_fit():
    """Non-contiguous, other-dtype inputs give the contiguous float64 answer (the AOT module would read
    them wrongly as they are)."""
    rng = np.random.default_rng(2)
    m = smooth_map(rng, size=32)
    mask = rng.random((32, 32)) < 0.5
    wide = np.zeros((32, 64))
    wide[:, ::2] = m
    assert _compiled.leakage_share(wide[:, ::2], mask) == _compiled.leakage_share(m, mask.astype(np.uint8))
    assert _compiled.leakage_share(m.astype(np.float32), mask) == _compiled.leakage_share(
        m.astype(np.float32).astype(np.float64), mask.astype(np.uint8))


def test_build_identity(tmp_path: Path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: sse2 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fma sse2 avx2\n")
    reordered = tmp_path / "cpuinfo2"
    reordered.write_text("flags : fma avx2 sse2\n")
    assert _build_id.cpu_flags_hash(cpuinfo) == _build_id.cpu_flags_hash(reordered) > 0
    fewer = tmp_path / "cpuinfo3"
    fewer.write_text("flags : sse2\n")
    assert _build_id.cpu_flags_hash(fewer) != _build_id.cpu_flags_hash(cpuinfo)
    assert _build_id.cpu_flags_hash(tmp_path / "missing") == 0
    source = tmp_path / "k.py"
    source.write_text("x = 1\n")
    first = _build_id.source_hash(source)
    source.write_text("x = 2\n")
    assert 0 < first < 2 ** 63 and _build_id.source_hash(source) != first


def test_aot_kernel_releases_the_gil():
    """The thread pool shares a batch between cores only if the kernel lets go of the GIL: Python code on
    another thread must run in the middle of a long kernel call (with the GIL held it could only run
    for a switch interval, 5 ms, before the call starts or after it ends)."""
    import threading
    import time

    aot = _aot_or_skip()
    rng = np.random.default_rng(8)
    maps = np.repeat(np.stack([smooth_map(rng) for _ in range(4)]), 64, axis=0)  # 0.1 s of kernel or more
    thresholds = threshold_list(0.001)
    b, nt = len(maps), len(thresholds)
    out = (np.zeros((b, nt)), np.zeros((b, nt)), np.zeros((b, nt), np.uint8), np.zeros((b, nt), np.int64),
           np.ones(b, np.bool_))
    span: list[float] = []
    started = threading.Event()

    def kernel() -> None:
        started.set()
        span.append(time.perf_counter())
        aot.batch_box_ious(maps, thresholds, np.array([[10, 10, 100, 100]]), np.zeros(b + 1, np.int64), 0, b,
                           *out, True, np.zeros(b), True)
        span.append(time.perf_counter())

    thread = threading.Thread(target=kernel)
    thread.start()
    started.wait()
    seen = []
    while thread.is_alive():
        seen.append(time.perf_counter())
    thread.join()
    start, end = span
    quarter = (end - start) / 4
    assert quarter > 0.01
    assert sum(start + quarter < t < end - quarter for t in seen) > 0


def test_score_says_when_it_falls_back_to_the_jit(monkeypatch, capsys, tmp_path: Path):
    """Without a current AOT module (nobody asked for the JIT), `kdcicam score` says so on stderr, with the
    reason and the cost, and scores as usual; with the AOT module, or the JIT asked for, it says nothing."""
    from _eval_helpers import make_metadata, write_split

    from kdcicam.cli import main

    md = make_metadata(boxes={"a/x.jpg": [(10, 20, 100, 150)]}, sizes={"a/x.jpg": (224, 224)})
    split = write_split(tmp_path, md)
    (tmp_path / "cams" / "a").mkdir(parents=True)
    np.save(tmp_path / "cams" / "a" / "x.jpg.npy", smooth_map(np.random.default_rng(0)))
    args = ["score", str(tmp_path / "cams"), "--metadata", str(split)]
    monkeypatch.setattr(_compiled, "_FALLBACK", "no usable ahead-of-time kernels (ImportError: gone)")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "ImportError: gone" in err and "numba's JIT" in err and "first one compiles" in err
    monkeypatch.setattr(_compiled, "_FALLBACK", "")
    assert main(args) == 0
    assert capsys.readouterr().err == ""
