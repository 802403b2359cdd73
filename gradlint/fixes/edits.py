"""What a fix is, in two forms: edits on LibCST nodes (what rules build) and text edits with
positions (what is applied, shown in a diff and written to JSON; in gradlint/fixes/text.py, which
needs no LibCST, and re-exported here)."""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from enum import Enum

import libcst as cst
from libcst.metadata import CodeRange

from gradlint.fixes.text import Applicability, TextEdit, TextFix  # re-exported: existing imports keep working
from gradlint.lines import line_starts


class EditKind(Enum):
    REPLACE = "replace"  # the node's own text (an expression) becomes `text`
    REMOVE = "remove"  # the node's whole lines go (a statement, an `else:` clause)
    INSERT_BEFORE = "insert_before"  # new statement lines above the node's first line, same indent
    INSERT_AFTER = "insert_after"  # new statement lines below the node's last line, same indent
    REPLACE_LINES = "replace_lines"  # the node's whole lines become `text` (statements), same indent


@dataclass(frozen=True)
class NodeEdit:
    kind: EditKind
    node: cst.CSTNode
    # REPLACE: an expression. Statement kinds: source lines indented relative to the node
    # (nested blocks use the module's indent unit), without the node's own indentation.
    text: str = ""
    above: int = 0  # REMOVE: also the own-line comments right above (they move with the code)


@dataclass(frozen=True)
class Fix:
    applicability: Applicability
    message: str
    edits: tuple[NodeEdit, ...]


class Lines:
    """Offsets of line starts, to turn (line, column) into string offsets and back."""

    def __init__(self, source: str) -> None:
        self.source = source
        # Python's line ends, as LibCST's positions count them: a lone `\r` (old Mac files) ends a line too.
        self.starts = line_starts(source)

    def offset(self, line: int, column: int) -> int:
        return self.starts[line - 1] + column

    def line_end(self, line: int) -> int:
        """Offset just past the line's newline (or the end of the source)."""
        return self.starts[line] if line < len(self.starts) else len(self.source)

    def text(self, line: int) -> str:
        return self.source[self.starts[line - 1]:self.line_end(line)]

    def position(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.starts, offset)
        return line, offset - self.starts[line - 1] + 1


class FixUnavailable(Exception):
    """A node edit that cannot be turned into text edits cleanly (code shares its line)."""


def to_text(fix: Fix, positions: dict[cst.CSTNode, CodeRange], source: str, indent_unit: str,
            newline: str, lines: Lines | None = None) -> TextFix | None:
    """Text edits for a fix, or None when a statement shares its line with other code."""
    lines = lines or Lines(source)
    edits: list[TextEdit] = []
    try:
        for edit in fix.edits:
            edits.append(_text_edit(edit, positions[edit.node], lines, indent_unit, newline))
    except FixUnavailable:
        return None
    edits.sort()
    if any(a.end > b.start for a, b in itertools.pairwise(edits)):
        return None  # a builder bug must never produce overlapping text
    located = []
    for e in edits:
        row, column = lines.position(e.start)
        end_row, end_column = lines.position(e.end)
        located.append(TextEdit(e.start, e.end, e.content, row, column, end_row, end_column))
    return TextFix(fix.applicability, fix.message, tuple(located))


def _text_edit(edit: NodeEdit, where: CodeRange, lines: Lines, indent_unit: str, newline: str) -> TextEdit:
    start = lines.offset(where.start.line, where.start.column)
    end = lines.offset(where.end.line, where.end.column)
    if edit.kind is EditKind.REPLACE:
        return TextEdit(start, end, edit.text)
    first = lines.text(where.start.line)
    indent = first[: where.start.column]
    if indent.strip():
        raise FixUnavailable  # code before the statement on its line (`a = 1; opt.zero_grad()`)
    rest = lines.text(where.end.line)[where.end.column:]
    if rest.strip() and not rest.strip().startswith("#"):
        raise FixUnavailable  # code after it on its line
    first_line = where.start.line - edit.above
    if first_line < 1 or not all(lines.text(n).strip().startswith("#") for n in range(first_line, where.start.line)):
        raise FixUnavailable  # the comments above are not where the tree said
    line_start = lines.starts[first_line - 1]
    after = lines.line_end(where.end.line)
    body = _indent(edit.text, indent, indent_unit, newline)
    if not lines.source[line_start:after].endswith(("\n", "\r")) and edit.kind is not EditKind.INSERT_BEFORE:
        body = newline + body  # the last line of a file without a final newline
        if edit.kind is EditKind.INSERT_AFTER:
            return TextEdit(after, after, body.rstrip("\r\n"))
    if edit.kind is EditKind.REMOVE:
        return TextEdit(line_start, after, "")
    if edit.kind is EditKind.INSERT_BEFORE:
        return TextEdit(line_start, line_start, body)
    if edit.kind is EditKind.INSERT_AFTER:
        return TextEdit(after, after, body)
    return TextEdit(line_start, after, body)


def _indent(text: str, indent: str, unit: str, newline: str) -> str:
    """Indent statement lines written with four-space nesting to the node's indent and the file's unit."""
    out = []
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        depth = (len(line) - len(stripped)) // 4
        out.append(f"{indent}{unit * depth}{stripped}{newline}" if stripped else newline)
    return "".join(out)

