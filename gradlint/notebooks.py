"""Jupyter notebooks: code cells, in order, as one program; locations mapped back to `cell N:row:col`.

IPython syntax (`%magic`, `!shell`, `x = !cmd`, `%%cell magic`, `obj?`) is not Python. Those lines are
replaced by Python of the same line count (`pass` at the same indentation, or `x = ...`), so every other
line keeps its row and column and a block whose only statement was a magic still parses. A `%%` cell
is not Python at all (`%%bash`, `%%writefile`): all of its lines are blanked.
Cell numbers are 1-based and count every cell, markdown included, as ruff counts them and as a
notebook UI shows them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from gradlint.diagnostics import Diagnostic, FileError

_LINE_MAGIC = re.compile(r"^(?P<indent>[ \t]*)(?:[%!]|\?\??[A-Za-z_])")
_ASSIGNED_MAGIC = re.compile(r"^(?P<head>[ \t]*[A-Za-z_][\w.]*(?:[ \t]*,[ \t]*[A-Za-z_][\w.]*)*[ \t]*=[ \t]*)[%!]")
_HELP_SUFFIX = re.compile(r"^(?P<indent>[ \t]*)[A-Za-z_][\w.]*\?\??[ \t]*$")


class NotebookError(ValueError):
    pass


@dataclass
class Notebook:
    source: str  # the code cells, magics neutralised, joined
    # row of `source` (1-based) -> (cell number, row within the cell), both 1-based
    rows: list[tuple[int, int]] = field(default_factory=list)
    # cell number -> its original lines, for source excerpts
    cell_lines: dict[int, list[str]] = field(default_factory=dict)

    def locate(self, row: int) -> tuple[int, int]:
        if 1 <= row <= len(self.rows):
            return self.rows[row - 1]
        return self.rows[-1] if self.rows else (1, row)

    def line(self, cell: int, row: int) -> str | None:
        lines = self.cell_lines.get(cell, [])
        return lines[row - 1] if 1 <= row <= len(lines) else None


def parse(text: str) -> Notebook:
    """Read a notebook's JSON (nbformat 4). Raises NotebookError with the reason."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(f"not a valid notebook: invalid JSON at line {exc.lineno} column {exc.colno}: "
                            f"{exc.msg}") from None
    except RecursionError:
        raise NotebookError("not a valid notebook: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise NotebookError("not a valid notebook: the top level is not a JSON object")
    if "worksheets" in data and "cells" not in data:
        raise NotebookError("nbformat 3 notebooks are not supported; convert with `jupyter nbconvert --to notebook`")
    cells = data.get("cells")
    if not isinstance(cells, list):
        raise NotebookError("not a valid notebook: no `cells` list")
    sources: list[str] = []
    notebook = Notebook(source="")
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_type"), str):
            raise NotebookError(f"not a valid notebook: cell {number} has no `cell_type`")
        if cell["cell_type"] != "code":
            continue
        raw = cell.get("source", "")
        if isinstance(raw, list) and all(isinstance(part, str) for part in raw):
            raw = "".join(raw)
        if not isinstance(raw, str):
            raise NotebookError(f"not a valid notebook: the source of cell {number} is not text")
        lines = raw.splitlines()
        notebook.cell_lines[number] = lines
        code = _neutralise(lines)
        sources.extend(line + "\n" for line in code)
        notebook.rows.extend((number, row) for row in range(1, len(code) + 1))
    notebook.source = "".join(sources)
    return notebook


def language(text: str) -> str | None:
    """The notebook's kernel language when it declares one (`python`, `julia`, `R`...)."""
    try:
        meta = json.loads(text).get("metadata", {})
        info = meta.get("language_info", {}).get("name") or meta.get("kernelspec", {}).get("language")
    except (ValueError, AttributeError, RecursionError):
        return None
    return info.lower() if isinstance(info, str) else None


def _neutralise(lines: list[str]) -> list[str]:
    first = next((line for line in lines if line.strip()), "")
    if first.lstrip().startswith("%%"):
        return [""] * len(lines)
    out = []
    state = _Scanner()
    magic_continues = False  # a `\` continuation line of a magic is part of the magic
    for line in lines:
        at_statement_start = state.at_statement_start()
        if magic_continues:
            out.append("")
            magic_continues = line.rstrip().endswith("\\")
            continue
        if at_statement_start and (_LINE_MAGIC.match(line) or _HELP_SUFFIX.match(line)):
            indent = re.match(r"[ \t]*", line).group(0)  # type: ignore[union-attr]
            out.append(indent + "pass")
            magic_continues = line.rstrip().endswith("\\")
            continue
        assigned = _ASSIGNED_MAGIC.match(line) if at_statement_start else None
        if assigned is not None:
            out.append(assigned.group("head") + "...")
            magic_continues = line.rstrip().endswith("\\")
            continue
        out.append(line)
        state.feed(line)
    return out


class _Scanner:
    """Just enough of Python's lexer to know whether a line starts a new statement: not inside
    brackets, a triple-quoted string, or after a backslash continuation. `%` can begin a line
    inside `("a"\n % b)`, and that is not a magic."""

    def __init__(self) -> None:
        self.depth = 0
        self.triple: str | None = None
        self.backslash = False

    def at_statement_start(self) -> bool:
        return self.depth == 0 and self.triple is None and not self.backslash

    def feed(self, line: str) -> None:
        i, n = 0, len(line)
        self.backslash = False
        while i < n:
            if self.triple is not None:
                end = line.find(self.triple, i)
                while end > 0 and _escaped(line, end):
                    end = line.find(self.triple, end + 1)
                if end == -1:
                    return
                i = end + 3
                self.triple = None
                continue
            ch = line[i]
            if ch == "#":
                return
            if ch in "([{":
                self.depth += 1
            elif ch in ")]}":
                self.depth = max(0, self.depth - 1)
            elif ch in "\"'":
                if line.startswith(ch * 3, i):
                    self.triple = ch * 3
                    i += 3
                    continue
                end = i + 1
                while end < n and (line[end] != ch or _escaped(line, end)):
                    end += 1
                i = end + 1
                continue
            elif ch == "\\" and i == n - 1:
                self.backslash = True
            i += 1


def _escaped(line: str, index: int) -> bool:
    backslashes = 0
    while index - 1 - backslashes >= 0 and line[index - 1 - backslashes] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def relocate(diagnostic: Diagnostic, notebook: Notebook) -> Diagnostic:
    """A diagnostic on the joined source, as `cell N:row:col`. A span that runs into a later cell is
    cut at the end of its first cell."""
    cell, row = notebook.locate(diagnostic.row)
    end_cell, end_row = notebook.locate(diagnostic.end_row)
    end_column = diagnostic.end_column
    if end_cell != cell:
        end_row = len(notebook.cell_lines.get(cell, [])) or row
        end_column = len(notebook.line(cell, end_row) or "") + 1
    return Diagnostic(diagnostic.filename, row, diagnostic.column, diagnostic.code, diagnostic.message,
                      end_row, end_column, cell)


# CPython's syntax errors name other lines of the joined program too ("expected an indented block
# after function definition on line 59"): those are relocated like the error's own line.
_ON_LINE = re.compile(r"\bon line (\d+)\b")


def relocate_error(error: FileError, notebook: Notebook) -> FileError:
    if error.row is None:
        return error
    cell, row = notebook.locate(error.row)

    def relocated(match: re.Match[str]) -> str:
        other_cell, other_row = notebook.locate(int(match.group(1)))
        return f"on line {other_row}" if other_cell == cell else f"on line {other_row} of cell {other_cell}"

    reason = _ON_LINE.sub(relocated, error.reason)
    return FileError(f"{error.filename}:cell {cell}", reason, row, error.column, error.traceback)
