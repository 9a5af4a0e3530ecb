"""Packaging facts that need no build: the version's one source, the shipped configs by name."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import kdcicam
from kdcicam.config import load_config, resolve_config, shipped_configs
from kdcicam.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_citation_and_changelog_agree_with_the_version():
    cff = (REPO / "CITATION.cff").read_text(encoding="utf-8")
    assert re.search(r"^version:\s*(\S+)\s*$", cff, re.MULTILINE).group(1) == kdcicam.__version__
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    project = pyproject.split("\n[project]\n", 1)[1].split("\n[", 1)[0]
    assert 'dynamic = ["version"]' in project and not re.search(r"^version\s*=", project, re.MULTILINE)
    assert 'version = { attr = "kdcicam.__version__" }' in pyproject
    assert "## [Unreleased]" in (REPO / "CHANGELOG.md").read_text(encoding="utf-8")


def test_shipped_configs_live_in_the_package_and_load_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shipped = shipped_configs()
    assert {"synthetic", "synthetic_v2", "cub50", "cub"} <= set(shipped)
    assert all(p.parent == Path(kdcicam.__file__).resolve().parent / "configs" for p in shipped.values())
    # the checkout's configs/ is the same folder
    assert (REPO / "configs").resolve() == Path(kdcicam.__file__).resolve().parent / "configs"
    monkeypatch.chdir(tmp_path)  # anywhere, not the checkout
    assert resolve_config("synthetic_v2") == resolve_config("synthetic_v2.yaml") == shipped["synthetic_v2"]
    assert load_config("synthetic_v2", method="cam") == load_config(shipped["synthetic_v2"], method="cam")
    # a file of that name in the working folder wins: a path means that file
    (tmp_path / "synthetic_v2").write_text("name: mine\n")
    assert load_config("synthetic_v2").name == "mine"
    with pytest.raises(ConfigError, match=r"'synthetc_v2': no such file, and not the name of a shipped config"):
        resolve_config("synthetc_v2")
    with pytest.raises(ConfigError, match="no such file"):
        resolve_config("elsewhere/synthetic_v2.yaml")
