"""Formats for programs: `json` (an array, ruff's field names) and `json-lines` (one object a line)."""

from __future__ import annotations

import json
from typing import Any

from gradlint.diagnostics import Diagnostic
from gradlint.formats.report import Report


def as_json(d: Diagnostic) -> dict[str, Any]:
    return d.to_json()


def render_json(report: Report) -> str:
    return json.dumps([as_json(d) for d in report.diagnostics], indent=2) + "\n"


def render_json_lines(report: Report) -> str:
    return "".join(json.dumps(as_json(d)) + "\n" for d in report.diagnostics)
