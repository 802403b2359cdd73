"""Renderers: text for people, json for machines (ruff's field names)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from gradlint.diagnostics import Diagnostic


def render_text(diagnostics: Sequence[Diagnostic], files_with_findings: int) -> str:
    lines = [f"{d.filename}:{d.row}:{d.column}: {d.code} {d.message}" for d in diagnostics]
    if diagnostics:
        problems = "problem" if len(diagnostics) == 1 else "problems"
        files = "file" if files_with_findings == 1 else "files"
        lines.append(f"Found {len(diagnostics)} {problems} in {files_with_findings} {files}.")
    else:
        lines.append("All checks passed.")
    return "\n".join(lines) + "\n"


def render_json(diagnostics: Sequence[Diagnostic]) -> str:
    return json.dumps([d.to_json() for d in diagnostics], indent=2) + "\n"


FORMATS = {"text", "json"}
