"""How the evaluator's numba kernels should be compiled (issue 27), measured: ahead of time at install
(``numba.pycc``, :mod:`kdcicam.evaluation._aot`) or numba's JIT with its on-disk cache (``cache=True``).

Each measurement is a fresh process, timed whole (wall seconds, and CPU seconds of the child: user +
system, every thread; CPU seconds vary less than wall time on a shared machine):

- ``import_aot``: ``from kdcicam.evaluation import _compiled`` with the AOT module (numba never imported);
- ``import_jit_cached``: the same on the JIT with a warm cache (numba's import and its cache look-up);
- ``jit_first_call``: the JIT with an empty cache, importing and calling every exported kernel once: what
  the first ``kdcicam score`` after an install without the AOT module pays;
- ``aot_build``: building the AOT module (what ``pip install`` / ``make kernels`` pays, once);
- ``score_aot`` / ``score_jit_cached``: ``kdcicam score`` end to end on the same maps with each build
  (when ``--cams`` and ``--metadata`` are given; :mod:`evaluator_speed` passes its end-to-end folder);
- ``pycc_warning``: what importing ``numba.pycc`` warns (its pending deprecation).

Results: ``benchmarks/results/kernel_builds.json`` (min of ``--repeat`` runs each).

    python benchmarks/kernel_builds.py [--repeat R] [--cams DIR --metadata SPLIT] [--no-build] [--out PATH]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from provenance import cpu_model, git_commit

from kdcicam.data.metadata import atomic_write_text

OUT = ROOT / "benchmarks" / "results" / "kernel_builds.json"

#: a child that loads the kernels and calls each exported one once (compiling it on an empty JIT cache)
FIRST_CALL = """
import numpy as np
from kdcicam.evaluation import _compiled as c
maps = np.random.default_rng(0).random((2, 32, 32))
th = np.arange(0, 1, 0.01)
b, nt = 2, len(th)
c.batch_box_ious(maps, th, np.array([[1, 1, 10, 10]]), np.array([0, 1, 1]), 0, b, np.zeros((b, nt)), np.zeros((b, nt)),
                 np.zeros((b, nt), np.uint8), np.zeros((b, nt), np.int64), np.ones(b, np.bool_), True, np.zeros(b))
c.quantize(maps[0], np.empty((32, 32), np.uint8), np.empty((4, 256), np.int64))
c.best_ious(np.zeros((1, 4), np.int64), np.zeros((1, 4), np.int64))
edges = np.append(th, [1.0, 2.0, 3.0])
c.mask_histograms(maps[0], np.zeros((32, 32), np.uint8), edges, np.zeros(len(edges) - 1, np.int64),
                  np.zeros(len(edges) - 1, np.int64))
c.leakage_share(maps[0], np.zeros((32, 32), np.uint8))
print(c.BACKEND)
"""

PYCC_WARNING = """
import warnings
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    import numba.pycc  # noqa: F401
print(" | ".join(f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in seen) or "none")
"""


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]), **extra}


def timed_child(command: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + system, all threads) of one child process, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, done.stdout.strip()


def best_of(repeat: int, command: list[str], env: dict[str, str]) -> dict[str, float]:
    runs = [timed_child(command, env) for _ in range(repeat)]
    return {"wall_s": round(min(r[0] for r in runs), 4), "cpu_s": round(min(r[1] for r in runs), 4), "runs": repeat}


def measure(repeat: int = 3, cams: Path | None = None, metadata: Path | None = None, build: bool = True) -> dict[str, Any]:
    """Every measurement of the module's doc; the AOT ones only where this checkout has a current AOT module."""
    from kdcicam.evaluation import _compiled

    aot_current = _compiled._aot_module()[0] is not None
    py = sys.executable
    out: dict[str, Any] = {"aot_module_current": aot_current}
    with tempfile.TemporaryDirectory(prefix="kdcicam-kernel-builds-") as tmp:
        cache = Path(tmp) / "numba-cache"
        jit = _env(KDCICAM_KERNELS="jit", NUMBA_CACHE_DIR=str(cache))
        # first: the empty cache (each run in a fresh one), which also leaves a warm cache behind
        first = []
        for k in range(repeat):
            fresh = Path(tmp) / f"fresh-{k}"
            first.append(timed_child([py, "-c", FIRST_CALL], _env(KDCICAM_KERNELS="jit", NUMBA_CACHE_DIR=str(fresh))))
        out["jit_first_call"] = {"wall_s": round(min(r[0] for r in first), 3), "cpu_s": round(min(r[1] for r in first), 3),
                                 "runs": repeat}
        timed_child([py, "-c", FIRST_CALL], jit)  # warm the cache the cached runs use
        out["import_jit_cached"] = best_of(repeat, [py, "-c", "from kdcicam.evaluation import _compiled"], jit)
        out["call_jit_cached"] = best_of(repeat, [py, "-c", FIRST_CALL], jit)
        if aot_current:
            aot = _env(KDCICAM_KERNELS="aot")
            out["import_aot"] = best_of(repeat, [py, "-c", "from kdcicam.evaluation import _compiled"], aot)
            out["call_aot"] = best_of(repeat, [py, "-c", FIRST_CALL], aot)
            out["numba_import_cost_cpu_s"] = round(out["import_jit_cached"]["cpu_s"] - out["import_aot"]["cpu_s"], 3)
        if build:
            target = Path(tmp) / "aot"
            wall, cpu, _ = timed_child([py, "-m", "kdcicam.evaluation._aot", str(target)], _env(), cwd=Path(tmp))
            out["aot_build"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "runs": 1}
        if cams is not None and metadata is not None:
            command = [py, "-m", "kdcicam", "score", str(cams), "--metadata", str(metadata),
                       "--json", str(Path(tmp) / "score.json")]
            out["score_jit_cached"] = best_of(repeat, command, jit)
            if aot_current:
                out["score_aot"] = best_of(repeat, command, _env(KDCICAM_KERNELS="aot"))
        out["pycc_warning"] = timed_child([py, "-c", PYCC_WARNING], _env())[2]
    return out


DECISION = ("AOT by default (numba.pycc at install, `make kernels` in a checkout), numba's cached JIT as the "
            "fallback, with a one-line notice from `kdcicam score` when it runs on the JIT. Why: the JIT path imports "
            "numba in every process (`numba_import_cost_cpu_s` more than the AOT module, paid by every "
            "`kdcicam score`), and its first call with an empty cache compiles for `jit_first_call` seconds; "
            "numba's parallel=True (prange) kernels cannot be built by pycc, and are not needed: the kernels release "
            "the GIL and a thread pool shares the images between cores in both builds. pycc's pending deprecation "
            "(`pycc_warning`) is covered by the fallback: if pycc goes, the install skips the AOT module and the JIT "
            "path runs, slower to start but with the same numbers (tests/evaluation/test_eval_kernel_builds.py).")


def record(measured: dict[str, Any], argv: list[str], out: Path, note: str = "") -> dict[str, Any]:
    import numba
    import numpy as np

    data = {
        "benchmark": "kernel_builds",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(ROOT, mark_dirty=False),
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *argv]),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "numba": numba.__version__, "numpy": np.__version__,
                    "python": sys.version.split()[0]},
        "load_average_1_min": round(os.getloadavg()[0], 2),
        "note": note or "each value: min over the runs of a fresh process; CPU s = user + system of the child",
        "decision": DECISION,
        "results": measured,
    }
    atomic_write_text(out, json.dumps(data, indent=2) + "\n")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cams", type=Path, default=None, help="a folder of saved maps to time `kdcicam score` on")
    parser.add_argument("--metadata", type=Path, default=None, help="its split folder")
    parser.add_argument("--no-build", action="store_true", help="skip timing the AOT build (some 20 s of CPU)")
    parser.add_argument("--note", default="", help="a note stored with the results (e.g. the machine's load)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    measured = measure(args.repeat, args.cams, args.metadata, not args.no_build)
    print(json.dumps(measured, indent=2))
    record(measured, sys.argv[1:] if argv is None else argv, args.out, args.note)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
