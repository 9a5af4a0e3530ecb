"""Fixtures shared by every test folder: the tiny synthetic dataset and the one-epoch CAM run trained on it
(each built once per session, read-only: copy before changing), the cub50 tree where it exists, and
Windows-style text files."""
from __future__ import annotations

import codecs
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from _datasets import RUN_RECIPE  # shared with the tests that train other methods the same way

REPO = Path(__file__).resolve().parents[1]
#: the reduced CUB-200-2011 tree (classes 1-50) beside the checkout; KDCICAM_CUB50 points elsewhere
CUB50 = Path(os.environ.get("KDCICAM_CUB50") or REPO / ".." / "shared" / "data" / "cub50")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Floors `kdcicam baseline` caches go to a session folder, not the user's ~/.cache."""
    before = os.environ.get("KDCICAM_CACHE_DIR")
    os.environ["KDCICAM_CACHE_DIR"] = str(tmp_path_factory.mktemp("kdcicam_cache"))
    yield
    if before is None:
        os.environ.pop("KDCICAM_CACHE_DIR", None)
    else:
        os.environ["KDCICAM_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic dataset: 64 px, 4 classes, 64 / 32 / 32 / 32 train / val / test / test_conflict."""
    from kdcicam.data.synthetic import SyntheticConfig, generate_synthetic

    root = tmp_path_factory.mktemp("tiny_synth")
    generate_synthetic(root, SyntheticConfig(seed=1, size=64, num_classes=4, n_train=64, n_val=32, n_test=32,
                                             n_test_conflict=32, workers=1))
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A CAM run trained for one epoch on :func:`tiny_data` (:data:`RUN_RECIPE`); never modified by the tests."""
    from kdcicam.config import load_config
    from kdcicam.training.pipeline import train

    run = tmp_path_factory.mktemp("tiny_run") / "cam"
    train(load_config(None, [f"data.root={tiny_data}", *RUN_RECIPE], method="cam"), run)
    return run


@pytest.fixture
def cub50() -> Path:
    if not (CUB50 / "images.txt").is_file():
        pytest.skip(f"{CUB50} is not present")
    return CUB50.resolve()


@pytest.fixture(params=[(True, False), (False, True), (True, True)], ids=["bom", "crlf", "bom+crlf"])
def windows_style(request) -> Callable[[Iterable[Path]], None]:
    """Rewrites text files as common Windows editors save them: UTF-8 with a byte-order mark, CRLF line
    ends, or both (a test that uses it runs once per style)."""
    bom, crlf = request.param

    def rewrite(paths: Iterable[Path]) -> None:
        for path in paths:
            data = path.read_bytes()
            assert not data.startswith(codecs.BOM_UTF8) and b"\r" not in data  # plain to begin with
            if crlf:
                data = data.replace(b"\n", b"\r\n")
            if bom:
                data = codecs.BOM_UTF8 + data
            path.write_bytes(data)

    return rewrite
