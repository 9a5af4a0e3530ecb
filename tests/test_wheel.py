"""kdcicam as a user gets it: the wheel is built from a copy of the sources, installed into a fresh virtual
environment, and its console script runs from a folder outside the repository -- `data synthetic`, a
one-epoch `train` by a shipped config's NAME, `evaluate`, `score` and `localize`. What the checkout has and
the wheel lacks (configs, data files) fails here.

The new environment sees this interpreter's packages through a ``.pth`` line (so torch is not installed
again), after its own site-packages, where the wheel goes: ``kdcicam.__file__`` is checked to be the
wheel's. The wheel is built without its ahead-of-time kernels (``KDCICAM_NO_AOT``: that build takes a
minute); where the checkout has a current build of them (built from the same ``_kernels.py`` for this CPU:
this process runs on it), it is put where ``pip install`` puts its own, so the installed package loads it
from site-packages as a user's does; otherwise the package JIT-compiles them on first use (about 20 s of CPU),
as it does when that build fails. Which of the two ran is checked."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: what a source distribution holds: the build needs these and nothing else from the checkout
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "src")
#: a few seconds of training: 32 px, only the head trains, one epoch, one CPU thread
FAST = ["model.pretrained=true", "model.freeze_stages=12", "data.image_size=32", "data.augment.resize=36",
        "data.batch_size=16", "data.eval_batch_size=32", "optim.epochs=1", "trainer.progress_bar=false",
        "trainer.num_threads=1", "data.test_splits=[test]", "model.pool_rate_target=null"]

#: which kdcicam runs, and on which kernel build
PROBE = "import kdcicam; print(kdcicam.__file__); from kdcicam.evaluation import _compiled as c; print(c.BACKEND)"

pytestmark = [pytest.mark.slow, pytest.mark.wheel]  # the default timeout (pyproject) applies


def _env(venv_dir: Path) -> dict[str, str]:
    """The environment of a user's shell with the new venv activated: no PYTHONPATH pointing at a checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(VIRTUAL_ENV=str(venv_dir), PATH=f"{venv_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", KDCICAM_NO_AOT="1")
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "10000000000")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "10000000000")
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(venv folder, its environment) with the freshly built wheel installed."""
    if sys.platform == "win32":  # pragma: no cover - the paths below are POSIX venv paths
        pytest.skip("the wheel test uses a POSIX virtual environment layout")
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src-copy"  # the build writes build/ and *.egg-info beside its sources: not in the checkout
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns(
                "__pycache__", "*.pyc", "*.egg-info", "_kernels_aot.*"))
        else:
            shutil.copy2(REPO / name, src / name)
    dist = root / "dist"
    env = {**os.environ, "KDCICAM_NO_AOT": "1"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(dist), str(src)], check=True, env=env, capture_output=True)
    wheel = next(dist.glob("kdcicam-*.whl"))
    venv_dir = root / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(venv_dir)
    purelib = Path(subprocess.run([str(venv_dir / "bin" / "python"), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    # this interpreter's packages (torch, numpy, ...) after the venv's own: the wheel's kdcicam comes first
    (purelib / "zz_test_host_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv_dir / "bin" / "python"), "install",
                    "--no-deps", "--no-index", "--quiet", str(wheel)], check=True, capture_output=True)
    from kdcicam.evaluation import _compiled

    if _compiled.BACKEND == "aot":  # the checkout's build is current: where pip's own build would be
        built = Path(_compiled._impl.__file__)
        shutil.copy2(built, purelib / "kdcicam" / "evaluation" / built.name)
    return venv_dir, _env(venv_dir)


def test_the_installed_wheel_runs_the_pipeline_outside_the_checkout(installed, tmp_path: Path):
    venv_dir, env = installed
    work = tmp_path / "user"  # a user's folder: no configs/, no src/
    work.mkdir()
    where, backend = _run([str(venv_dir / "bin" / "python"), "-c", PROBE], work, env).splitlines()[:2]
    assert Path(where).is_relative_to(venv_dir), where  # the wheel's kdcicam, not the checkout's
    from kdcicam.evaluation import _compiled

    assert backend == _compiled.BACKEND  # the kernels the fixture provided (see the module's docstring)
    kdcicam = str(venv_dir / "bin" / "kdcicam")
    import kdcicam as here

    assert _run([kdcicam, "--version"], work, env).strip() == f"kdcicam {here.__version__}"

    _run([kdcicam, "data", "synthetic", "--out", "data", "--size", "32", "--classes", "2", "--train", "16",
          "--val", "8", "--test", "8", "--test-conflict", "2"], work, env)
    out = _run([kdcicam, "train", "synthetic", "--method", "cam", "--out", "runs/cam", "data.root=data", *FAST],
               work, env)
    assert "run folder: runs/cam" in out and "Tip" not in out and (work / "runs/cam/checkpoints/best.ckpt").is_file()
    assert (work / "runs/cam/config.yaml").read_text().startswith("method: cam\nname: synthetic\n")

    _run([kdcicam, "evaluate", "runs/cam", "--split", "test", "--save-cams", "cams", "--json", "eval.json"], work, env)
    evaluated = json.loads((work / "eval.json").read_text())["test"]
    _run([kdcicam, "score", "cams/test", "--metadata", "data/test", "--json", "score.json"], work, env)
    scored = json.loads((work / "score.json").read_text())
    assert scored["num_images"] == 8
    assert scored["max_box_acc_v2"] == pytest.approx(evaluated["max_box_acc_v2"])

    images = sorted((work / "data").rglob("*.png"))[:2]
    _run([kdcicam, "localize", "runs/cam", *map(str, images), "--out", "loc"], work, env)
    boxes = json.loads((work / "loc" / "boxes.json").read_text())
    assert len(boxes if isinstance(boxes, list) else boxes["images"]) == 2


def test_the_installed_demo_runs_outside_the_checkout(installed, tmp_path: Path):
    """`kdcicam demo` after a non-editable install, from a folder with no configs/ nor src/: every registered
    method, every KD stage, the evaluation and the HTML report (``--smoke``: a 32-px dataset, one epoch each)."""
    venv_dir, env = installed
    work = tmp_path / "user"
    work.mkdir()
    out = _run([str(venv_dir / "bin" / "kdcicam"), "demo", "--smoke", "--out", "demo"], work, env)
    import kdcicam as here

    summary = json.loads((work / "demo" / "summary.json").read_text())
    assert sorted(summary) == sorted(here.list_models())
    for method, splits in summary.items():
        assert {"test", "test_conflict"} <= set(splits), method
    assert (work / "demo" / "report.html").is_file() and (work / "data" / "synth_v2_smoke" / "dataset.yaml").is_file()
    assert "Tip" not in out and "[demo] done in" in out
