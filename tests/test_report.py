"""`kdcicam report` / `kdcicam.viz.write_report`: one valid, self-contained HTML file with every
run's numbers, evaluating runs that have no metrics yet; and the small README overlays."""
from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from kdcicam.cli import main

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}


class TagChecker(HTMLParser):
    """Records tags, text and attributes; fails on a closing tag that does not match the open one."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.seen: dict[str, int] = {}
        self.text: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.seen[tag] = self.seen.get(tag, 0) + 1
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _copy_run(src: Path, dst: Path, kd_layout: bool = False) -> Path:
    """A copy of the trained run (as a KD run, under student/, when asked), without metrics.json."""
    target = dst / "student" if kd_layout else dst
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("metrics.json", "tb"))
    return dst


@pytest.fixture()
def runs(trained_run: Path, tmp_path: Path):
    plain = _copy_run(trained_run, tmp_path / "cam <&> run")  # a name that must be escaped
    kd = _copy_run(trained_run, tmp_path / "kd-ci-cam", kd_layout=True)
    return plain, kd


def test_report_is_valid_self_contained_html_with_every_number(runs, tmp_path: Path):
    from kdcicam.evaluation.table import TABLE_ROWS, metric_value
    from kdcicam.training.evaluate import evaluate
    from kdcicam.viz import write_report

    plain, kd = runs
    first = write_report([plain], tmp_path / "first.html", splits=["test", "test_conflict"], num_images=0,
                         evaluate=evaluate)
    assert first.is_file() and (plain / "metrics.json").is_file()  # evaluated on the fly, written by evaluate
    metrics = json.loads((plain / "metrics.json").read_text())
    # the KD run gets hand-edited metrics (its numbers must differ) for test only: test_conflict is missing
    edited = {k: v for k, v in metrics.items() if k != "test_conflict"}
    edited["test"] = {**metrics["test"], "top1_cls": 12.345, "context_leakage": 77.777}
    (kd / "student" / "metrics.json").write_text(json.dumps(edited))

    out = write_report([plain, kd], tmp_path / "sub" / "report.html", splits=["test_conflict", "test"], num_images=4,
                       evaluate=evaluate)
    text = out.read_text(encoding="utf-8")
    checker = TagChecker()
    checker.feed(text)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    for tag in ("html", "head", "body", "table", "h2", "img"):
        assert checker.seen.get(tag, 0) >= 1, tag
    assert text.lstrip().startswith("<!DOCTYPE html>")
    # every run's numbers, as formatted in the table; the hand-edited ones prove metrics.json is read
    final = [json.loads(p.read_text()) for p in (plain / "metrics.json", kd / "student" / "metrics.json")]
    assert final[1]["test"]["top1_cls"] == 12.345  # kept; only the missing split was evaluated
    for run_metrics in final:
        for split in ("test", "test_conflict"):
            for _, key in TABLE_ROWS:
                value = metric_value(run_metrics[split], key)
                if value is not None:
                    assert f">{value:.2f}<" in text, (split, key, value)
    assert ">12.35<" in text and ">77.78<" in text
    # self-contained: every image inline, nothing fetched from elsewhere
    sources = [v for tag, k, v in checker.attrs if k in ("src", "href")]
    assert sources and all(v.startswith("data:image/png;base64,") for v in sources)
    # curves for both splits, the leakage chart, the training curves, and 4 images x (plain + 2 runs) in the grid
    assert len(sources) == 2 + 1 + 1 + 4 * 3
    assert "alt='training curves'" in text and "Mechanisms, last epoch" in text
    # the escaped run name shows up as text, never as markup
    assert "cam <&> run" in "".join(checker.text) and "cam <&> run" not in text
    grid = text.split("Heatmaps on the same images")[1]
    assert 0 <= grid.index("alt='test_conflict/") < grid.index("alt='test/")  # the confounder's cases first


def test_without_an_evaluate_function_missing_splits_are_noted(runs, tmp_path: Path):
    """kdcicam.viz stands beside training: it evaluates a missing split only with the function it is given."""
    from kdcicam.viz import write_report

    plain, _ = runs
    text = write_report([plain], tmp_path / "r.html", splits=["test"], num_images=0).read_text(encoding="utf-8")
    assert not (plain / "metrics.json").exists()
    assert "no metrics for test" in text and "kdcicam evaluate" in text


def test_report_command(runs, tmp_path: Path, capsys):
    plain, _ = runs
    out = tmp_path / "cli.html"
    assert main(["report", str(plain), "--out", str(out), "--split", "test", "--images", "2", "--device", "cpu"]) == 0
    assert str(out) in capsys.readouterr().out
    assert out.read_text().count("data:image/png;base64,") == 1 + 1 + 1 + 2 * 2  # curves, leakage, training curves, 2 images x (plain + run)
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "x.html")]) == 2


def test_doc_overlays_are_small_pngs(trained_run: Path, tiny_data: Path, tmp_path: Path):
    from kdcicam.viz import save_doc_overlays

    images = sorted((tiny_data / "images" / "test_conflict").rglob("*.png"))[:3]
    paths = save_doc_overlays(trained_run, images, tmp_path / "docs" / "images", max_side=256, max_bytes=300_000)
    assert [p.name for p in paths] == ["overlay_0.png", "overlay_1.png", "overlay_2.png"]
    for p in paths:
        assert p.stat().st_size < 300_000
        with Image.open(p) as im:
            assert im.format == "PNG" and max(im.size) == 256
