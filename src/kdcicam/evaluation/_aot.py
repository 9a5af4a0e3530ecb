"""Ahead-of-time build of the evaluator's kernels (:mod:`._kernels`) into a plain extension module,
``_kernels_aot``, so that no process ever compiles them: ``pip install`` builds it (``setup.py``),
``make kernels`` rebuilds it in a checkout. Why ahead of time rather than numba's on-disk cache: the
cache is keyed on the source file's path and modification time, which an install changes, so a
cache made at build time would be stale in the installed package; and the compiled module needs
neither numba's import (a third of a second) nor its cache look-up.

The module records the hash of the ``_kernels.py`` it was built from and, when it was compiled for
the host CPU, of that CPU's instruction-set flags; :mod:`._compiled` uses it only when both match
(an edited kernel is never shadowed by an old build; a wheel carried to another CPU falls back to
the JIT instead of failing on an unknown instruction).

    python -m kdcicam.evaluation._aot OUT_DIR [TARGET_CPU]   # builds OUT_DIR/_kernels_aot.<abi>.so
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from ._build_id import cpu_flags_hash, source_hash

MODULE = "_kernels_aot"

#: exported kernel -> numba signature (the only argument types the compiled module accepts; the
#: wrappers in :mod:`._compiled` make the arguments match)
SIGNATURES = {
    "batch_box_ious": "void(f8[:,:,::1], f8[::1], i8[:,::1], i8[::1], i8, i8, f8[:,::1], f8[:,::1], u1[:,::1], "
                      "i8[:,::1], b1[::1], b1, f8[::1], b1)",
    "quantize": "i8(f8[:,::1], u1[:,::1], i8[:,::1])",
    "best_ious": "f8[::1](i8[:,::1], i8[:,::1])",
    "mask_histograms": "void(f8[:,::1], u1[:,::1], f8[::1], i8[::1], i8[::1])",
    "leakage_share": "f8(f8[:,::1], u1[:,::1])",
}


def build(output_dir: str | os.PathLike, target_cpu: str | None = None) -> Path:
    """Compile the exported kernels into ``output_dir``; returns the module's path.

    ``target_cpu`` is LLVM's CPU name (``""``: the architecture's generic CPU). By default it is
    ``"host"`` where /proc/cpuinfo names the CPU's flags (the module then records them and is used
    only on a CPU with the same flags), else generic: for the host the kernels took about 15 % less CPU
    time than for generic x86-64 (AMD EPYC, numba 0.68). Compiles in a fresh numba cache directory: a kernel
    loaded from a cache cannot be linked into the module."""
    cache = tempfile.mkdtemp(prefix="kdcicam-aot-cache-")
    previous = os.environ.get("NUMBA_CACHE_DIR")
    os.environ["NUMBA_CACHE_DIR"] = cache
    try:
        return _compile(output_dir, target_cpu)
    finally:  # the cache only served this build: leave no folder behind in /tmp
        shutil.rmtree(cache, ignore_errors=True)
        if previous is None:
            os.environ.pop("NUMBA_CACHE_DIR", None)
        else:
            os.environ["NUMBA_CACHE_DIR"] = previous


def _compile(output_dir: str | os.PathLike, target_cpu: str | None) -> Path:
    from numba.pycc import CC
    from numba.pycc import compiler as pycc_compiler

    from . import _kernels

    class ReleaseGil(pycc_compiler.Flags):
        """pycc's wrappers hold the GIL through the call unless asked (it has no option for it): the
        kernels must release it, as their JIT form does (``nogil=True``), or the thread pool that
        shares images between cores would run them one at a time."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.release_gil = True

    pycc_compiler.Flags = ReleaseGil  # type: ignore[misc]  # deliberate: pycc has no option for it (above)

    cc = CC(MODULE)
    cc.output_dir = str(output_dir)
    cc.verbose = False
    flags = cpu_flags_hash()
    if target_cpu is None:
        target_cpu = "host" if flags else ""
    if target_cpu:
        cc.target_cpu = target_cpu
    for name, signature in SIGNATURES.items():
        cc.export(name, signature)(getattr(_kernels, name).py_func)
    digest = source_hash()
    cpu = flags if target_cpu == "host" else 0  # 0: runs on any CPU the build's target names

    def kernels_source_hash():
        return digest

    def kernels_cpu_flags_hash():
        return cpu

    cc.export("source_hash", "i8()")(kernels_source_hash)
    cc.export("cpu_flags_hash", "i8()")(kernels_cpu_flags_hash)
    cc.compile()
    built = sorted(Path(output_dir).glob(MODULE + ".*"))
    if not built:
        raise RuntimeError(f"numba.pycc wrote no {MODULE} module into {output_dir}")
    return built[-1]


def main(argv: list[str] | None = None) -> int:
    """Build into a temporary folder beside the target, then move the module into place (a process
    importing the kernels meanwhile sees the old module or the new one, never half of one)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m kdcicam.evaluation._aot OUT_DIR [TARGET_CPU]", file=sys.stderr)
        return 2
    out = Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".aot-", dir=out) as tmp:
        built = build(tmp, *args[1:])
        final = out / built.name
        os.replace(built, final)
    print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
