"""The docs stand alone: no reference to files outside the repository, every `docs/method.md §N` cited by code,
configs, help or docs exists, every relative link resolves, and every `kdcicam` subcommand the README shows
exists."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        files = [REPO / f for f in out.splitlines()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        files = [p for p in REPO.rglob("*") if ".git" not in p.parts and ".venv" not in p.parts]
    keep = {".py", ".md", ".yaml", ".yml", ".cff", ".toml", ""}
    return [f for f in files if f.is_file() and f.suffix in keep and f != Path(__file__).resolve()
            and "results" not in f.parts]


def test_no_reference_to_specs_outside_the_repository():
    bad = []
    for path in tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if re.search(r"\b(METHOD|DESIGN)\.md\b|\bMETHOD §|\bMETHOD's\b", line):
                bad.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    assert not bad, "\n".join(bad)


def method_sections() -> set[str]:
    """'4', '3.1', '7.5' ... for the headings (## N., ### N.M) and §7's numbered list of docs/method.md."""
    text = (REPO / "docs" / "method.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^##+ (\d+(?:\.\d+)?)\.? ", text, flags=re.MULTILINE))
    seven = text.split("## 7.", 1)[1].split("\n## ", 1)[0]
    sections |= {f"7.{n}" for n in re.findall(r"^(\d+)\. ", seven, flags=re.MULTILINE)}
    return sections


def test_every_cited_method_section_exists():
    sections = method_sections()
    assert {"1", "2", "3", "3.1", "3.2", "4", "5", "6", "7", "7.5"} <= sections
    missing = []
    for path in tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for cited in re.findall(r"docs/method\.md §(\d+(?:\.\d+)?)", text):
            if cited not in sections:
                missing.append(f"{path.relative_to(REPO)} cites §{cited}")
        for title in re.findall(r'docs/method\.md, "([^"]+)"', text.replace("\n", " ").replace("# ", "")):
            if title.split()[0] not in (REPO / "docs" / "method.md").read_text(encoding="utf-8"):
                missing.append(f"{path.relative_to(REPO)} cites section {title!r}")
    assert not missing, missing


@pytest.mark.parametrize("doc", ["README.md", *[f"docs/{p.name}" for p in sorted((REPO / "docs").glob("*.md"))]])
def test_relative_links_resolve_and_nothing_points_outside(doc: str):
    path = REPO / doc
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        assert (path.parent / target).exists(), f"{doc}: link to {target} does not resolve"
    assert "../shared" not in text and "/work/" not in text, f"{doc} points at a path outside the repository"


def test_readme_commands_exist():
    from kdcicam.cli import main

    text = (REPO / "README.md").read_text(encoding="utf-8")
    code = "\n".join(re.findall(r"^```(?:bash)?\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL))
    shown = set(re.findall(r"^\$? ?kdcicam ([a-z]+(?: [a-z]+)?)", code, flags=re.MULTILINE))
    assert {"train", "evaluate", "score", "localize", "init"} <= {s.split()[0] for s in shown}
    for command in sorted(shown):
        words = command.split()
        if words[0] == "data" and len(words) == 1:
            continue
        with pytest.raises(SystemExit) as e:
            main([*words, "--help"]) if words[0] == "data" else main([words[0], "--help"])
        assert e.value.code == 0, command


def test_licence_and_citation():
    assert "MIT License" in (REPO / "LICENSE").read_text()
    import yaml

    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    titles = " ".join(r["title"] for r in cff["references"])
    assert "Causal Intervention" in titles and "Causal Knowledge Distillation" in titles
    assert "Evaluating Weakly Supervised Object Localization Methods Right" in titles
