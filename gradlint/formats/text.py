"""Formats for people: `text` (with a source excerpt and caret) and `concise` (one line each)."""

from __future__ import annotations

from gradlint.diagnostics import Diagnostic
from gradlint.formats.report import Report

_BOLD, _RED, _CYAN, _BLUE, _RESET = "\033[1m", "\033[31m", "\033[36m", "\033[34m", "\033[0m"


def _paint(report: Report, code: str, text: str) -> str:
    return f"{code}{text}{_RESET}" if report.color else text


def _header(report: Report, d: Diagnostic) -> str:
    marker = " [*]" if report.fixable(d) else ""  # ruff's mark: `--fix` would fix this one
    return f"{_paint(report, _BOLD, d.location())}: {_paint(report, _BOLD + _RED, d.code)}{marker} {d.message}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _summary(report: Report) -> str:
    count = len(report.diagnostics)
    fixed = report.fixed or 0
    unchecked = f"{_plural(report.files_with_errors, 'file')} could not be checked." if report.files_with_errors else ""
    if not count and not fixed:
        # Not "All checks passed." when some file was not checked at all (an error exits 2).
        return f"No problems found in the files checked; {unchecked}" if unchecked else "All checks passed."
    if fixed:
        line = f"Found {_plural(count + fixed, 'problem')} ({fixed} fixed, {count} remaining)."
    else:
        line = f"Found {_plural(count, 'problem')} in {_plural(report.files_with_findings(), 'file')}."
    # As ruff: what --fix would do now, and the unsafe fixes it would not.
    fixable = sum(1 for d in report.diagnostics if report.fixable(d))
    hidden = sum(1 for d in report.diagnostics if d.fix is not None and not report.fixable(d))
    fixes = f"{hidden} hidden {'fix' if hidden == 1 else 'fixes'}"
    hint = f" ({fixes} can be enabled with the `--unsafe-fixes` option)" if hidden else ""
    if fixable:
        line += f"\n[*] {fixable} fixable with the `--fix` option{hint}."
    elif hidden:
        line += f"\nNo fixes available{hint}."
    return f"{line}\n{unchecked}" if unchecked else line


def render_concise(report: Report) -> str:
    lines = [_header(report, d) for d in report.diagnostics]
    if report.summary:
        lines.append(_summary(report))
    return "".join(line + "\n" for line in lines)


def render_full(report: Report) -> str:
    blocks = []
    for d in report.diagnostics:
        blocks.append(_header(report, d))
        excerpt = _excerpt(report, d)
        if excerpt:
            blocks.extend(excerpt)
        blocks.append("")
    if report.summary:
        blocks.append(_summary(report))
    return "".join(block + "\n" for block in blocks)


def _excerpt(report: Report, d: Diagnostic) -> list[str]:
    """The reported line with a caret under the span (to the end of the line when it spans more)."""
    line = report.line(d)
    if line is None:
        return []
    line = line.expandtabs(1)  # one column per tab keeps the caret under the reported column
    gutter = str(d.row)
    pad = " " * len(gutter)
    start = max(d.column - 1, 0)
    end = d.end_column - 1 if d.end_row == d.row else len(line.rstrip())
    width = max(end - start, 1)
    bar = _paint(report, _BLUE, "|")
    return [
        f"{pad} {bar}",
        f"{_paint(report, _BLUE, gutter)} {bar} {line.rstrip()}",
        f"{pad} {bar} {' ' * start}{_paint(report, _RED, '^' * width)} {_paint(report, _RED, d.code)}",
    ]
