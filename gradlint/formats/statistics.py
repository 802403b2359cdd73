"""`--statistics`: how many findings per code, most frequent first."""

from __future__ import annotations

import json

from gradlint import catalog
from gradlint.formats.report import Report


def render_statistics_text(report: Report) -> str:
    counts = statistics(report)
    if not counts:
        return ""
    width = max(len(str(n)) for _, _, n in counts)
    return "".join(f"{n:>{width}}\t{code}\t{name}\n" for code, name, n in counts)


def render_statistics_json(report: Report) -> str:
    return json.dumps([{"code": code, "name": name, "count": n} for code, name, n in statistics(report)],
                      indent=2) + "\n"


def statistics(report: Report) -> list[tuple[str, str, int]]:
    """(code, name, count), most frequent first, then by code."""
    counts: dict[str, int] = {}
    for d in report.diagnostics:
        counts[d.code] = counts.get(d.code, 0) + 1
    return sorted(((code, catalog.BY_CODE[code].name if code in catalog.BY_CODE else "", n)
                   for code, n in counts.items()), key=lambda item: (-item[2], item[0]))

