"""Python's line ends (`\\r\\n`, a lone `\\r`, `\\n`: not `str.splitlines`', which also splits on form
feeds and Unicode separators), defined once for positions, fix edits, the partial parse and the
tree builder: LibCST's positions and CPython's line numbers count lines this way."""

from __future__ import annotations

import re

LINE_END = re.compile(r"\r\n|\r|\n")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")


def line_starts(text: str) -> list[int]:
    """The offset where each line of `text` starts."""
    return [0, *(match.end() for match in LINE_END.finditer(text))]


def source_lines(source: str) -> list[str]:
    """The lines of `source` with their ends, split where Python splits them."""
    return [m.group() for m in _LINE.finditer(source)]
