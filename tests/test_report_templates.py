"""benchmarks/reporting/templates.py: the report's prose comes from report_templates/*.md blocks, one page
line per
paragraph, and a number the template names but the report does not fill is an error, never a blank."""
from __future__ import annotations

from pathlib import Path

import pytest
from reporting import templates


@pytest.fixture
def template_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(templates, "TEMPLATES", tmp_path)
    templates.blocks.cache_clear()
    yield tmp_path
    templates.blocks.cache_clear()


def test_paragraphs_become_lines_and_a_missing_value_is_refused(template_dir: Path):
    (template_dir / "t.md").write_text("A comment.\n\n<!-- block: b -->\n- first line\nwrapped, $x %\n\n"
                                       "  2. **second** ${y}s\n<!-- block: c -->\none\n", encoding="utf-8")
    assert templates.render("t", "b", x="1.50", y=3) == ["- first line wrapped, 1.50 %", "  2. **second** 3s"]
    assert templates.paragraph("t", "c") == "one" and templates.placeholders("t", "b") == {"x", "y"}
    with pytest.raises(templates.TemplateError, match="block b: no value for 'y'"):
        templates.render("t", "b", x="1.50")
    with pytest.raises(templates.TemplateError, match="has no block d"):
        templates.render("t", "d")


def test_the_shipped_blocks_the_report_fills_exist():
    for file, block in [("page", "intro"), ("page", "se"), ("page", "expected_synthetic-v2"),
                        ("data", "data_cub50"), ("data", "recipe_cub50"),
                        ("data", "spent_synthetic-v2-draw0"),
                        ("notes", "why_leakage"), ("notes", "why_pool"), ("notes", "why_student"),
                        ("mechanisms", "distillation"), ("mechanisms", "lr_measured")]:
        assert templates.has(file, block), (file, block)
    assert {"cam_percent", "ce", "kd", "cam"} <= templates.placeholders("mechanisms", "distillation")
