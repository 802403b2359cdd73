"""Output formats. Each module renders a Report into one string; `render` picks by name.

text (default: location, message, source excerpt with a caret), concise (one line each), json (ruff's
field names), json-lines, github (workflow commands), sarif (2.1.0), junit, gitlab (Code Quality).
"""

from __future__ import annotations

from collections.abc import Callable

from gradlint.formats import ci, machine, statistics, text
from gradlint.formats.report import Report

RENDERERS: dict[str, Callable[[Report], str]] = {
    "text": text.render_full,
    "concise": text.render_concise,
    "json": machine.render_json,
    "json-lines": machine.render_json_lines,
    "github": ci.render_github,
    "sarif": ci.render_sarif,
    "junit": ci.render_junit,
    "gitlab": ci.render_gitlab,
}
FORMATS = tuple(RENDERERS)


def render(output_format: str, report: Report) -> str:
    return RENDERERS[output_format](report)


def render_statistics(output_format: str, report: Report) -> str:
    """JSON for the JSON formats, ruff's table (count, code, name) for the others."""
    if output_format in ("json", "json-lines"):
        return statistics.render_statistics_json(report)
    return statistics.render_statistics_text(report)


__all__ = ["FORMATS", "Report", "render", "render_statistics"]
