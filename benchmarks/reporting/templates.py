"""The prose of docs/benchmarks.md, kept out of the code in benchmarks/report_templates/*.md so that no
sentence
stating a number or a result is typed by hand: a template names its numbers as ``$placeholders`` and the
section
that renders it fills them in from the results files (or from the shipped config and the stated targets).

A template file holds blocks, each opened by a line ``<!-- block: NAME -->``. A block's paragraphs (separated
by
blank lines) become one line each of the page; the physical lines of a paragraph are joined by one space, so
the
templates stay readable at any width. Filling is strict (:meth:`string.Template.substitute`): a placeholder
without a value is an error, never a blank.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).resolve().parents[1] / "report_templates"
_MARK = re.compile(r"^<!-- block: (\S+) -->\s*$", re.MULTILINE)


class TemplateError(KeyError):
    """A block that does not exist, or a placeholder without a value."""


@cache
def blocks(file: str) -> dict[str, str]:
    """The blocks of ``report_templates/<file>.md`` by name (text before the first block is a comment)."""
    parts = _MARK.split((TEMPLATES / f"{file}.md").read_text(encoding="utf-8"))
    return dict(zip(parts[1::2], parts[2::2], strict=False))


def placeholders(file: str, block: str) -> set[str]:
    """The names a block needs filled."""
    return {
        m.group("named") or m.group("braced")
        for m in Template.pattern.finditer(blocks(file)[block])
        if m.group("named") or m.group("braced")
    }


def render(file: str, block: str, **values: object) -> list[str]:
    """The block's paragraphs with ``values`` filled in, one string each."""
    source = blocks(file).get(block)
    if source is None:
        raise TemplateError(f"report_templates/{file}.md has no block {block}")
    try:
        text = Template(source).substitute({k: str(v) for k, v in values.items()})
    except KeyError as e:
        raise TemplateError(f"report_templates/{file}.md, block {block}: no value for {e}") from None
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    return [
        " ".join([lines[0].rstrip(), *(x.strip() for x in lines[1:])]).rstrip()
        for lines in (p.strip("\n").splitlines() for p in paragraphs)
    ]


def paragraph(file: str, block: str, **values: object) -> str:
    """A block of exactly one paragraph, filled in."""
    (text,) = render(file, block, **values)
    return text


def has(file: str, block: str) -> bool:
    return block in blocks(file)
