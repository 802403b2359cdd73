"""Fixes as text edits with positions: what is applied, shown in a diff, written to JSON and stored in
the cache. Plain data, no LibCST: a warm run loads these from the cache without importing it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Applicability(Enum):
    SAFE = "safe"  # applied by --fix: keeps what the code means to do, changes only the reported code
    UNSAFE = "unsafe"  # applied only with --unsafe-fixes: a choice the user should review


@dataclass(frozen=True, order=True)
class TextEdit:
    start: int  # offsets into the source string
    end: int
    content: str
    row: int = 0  # 1-based, for JSON
    column: int = 0
    end_row: int = 0
    end_column: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"content": self.content, "location": {"row": self.row, "column": self.column},
                "end_location": {"row": self.end_row, "column": self.end_column}}


@dataclass(frozen=True)
class TextFix:
    applicability: Applicability
    message: str
    edits: tuple[TextEdit, ...]

    def to_json(self) -> dict[str, Any]:
        return {"applicability": self.applicability.value, "message": self.message,
                "edits": [e.to_json() for e in self.edits]}
