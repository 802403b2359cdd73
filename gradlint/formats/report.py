"""What every format renders: the diagnostics plus the source lines they point at."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gradlint.diagnostics import Diagnostic, rule_url

if TYPE_CHECKING:
    from gradlint.notebooks import Notebook

__all__ = ["Report", "rule_url"]


@dataclass
class Report:
    diagnostics: list[Diagnostic]
    files_checked: int = 0
    color: bool = False
    sources: dict[str, str] = field(default_factory=dict)  # .py files with diagnostics
    notebooks: dict[str, Notebook] = field(default_factory=dict)
    unsafe_fixes: bool = False  # unsafe fixes count as fixable (--unsafe-fixes)
    fixed: int | None = None  # with --fix: how many findings were fixed
    files_with_errors: int = 0  # files that could not be checked (their errors went to stderr)
    summary: bool = True  # the text formats' closing lines ("Found 3 problems ..."); not with --quiet
    _lines: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def line(self, diagnostic: Diagnostic, row: int | None = None) -> str | None:
        """The source line at `row` (default: the diagnostic's first row), as the user wrote it."""
        row = diagnostic.row if row is None else row
        if diagnostic.cell is not None:
            notebook = self.notebooks.get(diagnostic.filename)
            return notebook.line(diagnostic.cell, row) if notebook is not None else None
        if diagnostic.filename not in self._lines:
            source = self.sources.get(diagnostic.filename)
            if source is None:
                return None
            self._lines[diagnostic.filename] = source.splitlines()
        lines = self._lines[diagnostic.filename]
        return lines[row - 1] if 1 <= row <= len(lines) else None

    def fixable(self, diagnostic: Diagnostic) -> bool:
        fix = diagnostic.fix
        return fix is not None and (self.unsafe_fixes or fix.applicability.value == "safe")

    def files_with_findings(self) -> int:
        return len({d.filename for d in self.diagnostics})
