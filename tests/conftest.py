"""Fixtures shared by every test folder."""
from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest


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
