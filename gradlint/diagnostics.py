"""Diagnostics (located findings) and per-file errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gradlint import catalog

if TYPE_CHECKING:
    from gradlint.fixes.text import TextFix

# Where each rule's page lives (docs/rules/GANNN.md, generated from the rule's docstring): the JSON
# `url` field (as ruff's) and SARIF's helpUri. Change this one template if the project moves.
RULE_DOCS_URL = "https://github.com/gradlint/gradlint/blob/main/docs/rules/{code}.md"


def rule_url(code: str) -> str:
    return RULE_DOCS_URL.format(code=code)


@dataclass(frozen=True, order=True)
class Diagnostic:
    filename: str
    row: int  # 1-based
    column: int  # 1-based
    code: str
    message: str
    end_row: int
    end_column: int
    cell: int | None = None  # 1-based cell of a notebook; rows and columns are then within the cell
    fix: TextFix | None = field(default=None, compare=False)

    @property
    def severity(self) -> str:
        """"error", or "warning" for a performance rule (the code is correct, only slower)."""
        rule = catalog.BY_CODE.get(self.code)
        return rule.severity if rule is not None else "error"

    def location(self) -> str:
        """`path:row:col`, or `path:cell N:row:col` in a notebook (as ruff writes it)."""
        cell = f"cell {self.cell}:" if self.cell is not None else ""
        return f"{self.filename}:{cell}{self.row}:{self.column}"

    def to_json(self) -> dict[str, Any]:
        """ruff's JSON fields, so tools that read ruff's output can read ours."""
        return {
            "code": self.code,
            "message": self.message,
            "filename": self.filename,
            "location": {"row": self.row, "column": self.column},
            "end_location": {"row": self.end_row, "column": self.end_column},
            "url": rule_url(self.code) if self.code in catalog.BY_CODE else None,
            "fix": self.fix.to_json() if self.fix is not None else None,
            "noqa_row": self.row,
            "cell": self.cell,
            "severity": self.severity,
        }


@dataclass(frozen=True)
class FileError:
    """A file that could not be checked: missing, unreadable, not UTF-8, unparsable, or an
    internal error. Always makes the exit code 2."""

    filename: str
    reason: str
    row: int | None = None
    column: int | None = None
    traceback: str | None = None

    def describe(self) -> str:
        where = self.filename
        if self.row is not None:
            where += f":{self.row}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class FileWarning:
    """Worth saying, not a failure: an empty file named on the command line, a skipped huge file."""

    filename: str
    reason: str
    row: int | None = None

    def describe(self) -> str:
        where = f"{self.filename}:{self.row}" if self.row is not None else self.filename
        return f"{where}: {self.reason}"
