"""Build hook (everything else is in pyproject.toml): compile the evaluator's kernels ahead of time into
``kdcicam/evaluation/_kernels_aot`` (see src/kdcicam/evaluation/_aot.py), so that no run after an
install compiles them. The compilation needs numba and a C compiler; when it fails, the install goes
on without the module and the kernels are compiled by numba's JIT on first use instead (same
results, a few seconds once). ``KDCICAM_NO_AOT=1`` skips it."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
AOT = "kdcicam.evaluation._kernels_aot"


class BuildKernels(build_ext):
    """build_ext that makes the AOT module with numba.pycc (in a child process, so that numba's
    state and cache settings stay out of the build) instead of compiling sources."""

    skipped: set[str] | None = None  #: extensions not built (the install goes on without them)

    def _built_only(self, method: str):
        """``method`` of build_ext over the extensions that were built (an editable install copies each
        one into the source tree and fails on one that is not there)."""
        every = self.extensions
        self.extensions = [e for e in every if e.name not in (self.skipped or set())]
        try:
            return getattr(super(), method)()
        finally:
            self.extensions = every

    def copy_extensions_to_source(self) -> None:
        self._built_only("copy_extensions_to_source")

    def get_outputs(self) -> list[str]:
        return self._built_only("get_outputs")

    def get_output_mapping(self) -> dict[str, str]:
        return self._built_only("get_output_mapping")

    def _skip(self, ext: Extension, why: str) -> None:
        print(f"warning: kdcicam's evaluator kernels were not compiled ahead of time (numba's JIT will compile "
              f"them on first use): {why}", file=sys.stderr)
        self.skipped = (self.skipped or set()) | {ext.name}

    def build_extension(self, ext: Extension) -> None:
        if ext.name != AOT:
            super().build_extension(ext)
            return
        if os.environ.get("KDCICAM_NO_AOT"):
            self._skip(ext, "KDCICAM_NO_AOT is set")
            return
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="kdcicam-aot-") as tmp:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
            done = subprocess.run([sys.executable, "-m", "kdcicam.evaluation._aot", tmp], env=env, cwd=tmp, check=False,
                                  capture_output=True, text=True)
            built = sorted(Path(tmp).glob("_kernels_aot.*"))
            if done.returncode != 0 or not built:
                self._skip(ext, "\n" + (done.stderr or done.stdout).strip()[-2000:])
                return
            tmp_target = target.with_name(target.name + ".tmp")
            tmp_target.write_bytes(built[-1].read_bytes())
            tmp_target.chmod(0o755)
            os.replace(tmp_target, target)


setup(ext_modules=[Extension(AOT, sources=[])], cmdclass={"build_ext": BuildKernels})
