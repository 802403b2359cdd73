"""Formats for CI services: GitHub workflow commands, SARIF 2.1.0, JUnit XML, GitLab Code Quality."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gradlint import __version__, catalog
from gradlint.catalog import RuleInfo
from gradlint.diagnostics import Diagnostic
from gradlint.formats.report import Report, rule_url


def _relative(filename: str) -> str:
    """The path relative to the working directory when it lies under it (what CI checkouts show)."""
    try:
        return Path(filename).absolute().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return Path(filename).absolute().as_posix()


# -- GitHub Actions: https://docs.github.com/actions/reference/workflow-commands-for-github-actions


def _escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")


def render_github(report: Report) -> str:
    out = []
    for d in report.diagnostics:
        props = [f"file={_escape_property(_relative(d.filename))}"]
        if d.cell is None:  # a notebook's rows are not rows of its JSON file: annotate the file
            props += [f"line={d.row}", f"col={d.column}", f"endLine={d.end_row}", f"endColumn={d.end_column}"]
        props.append(f"title={_escape_property(d.code)}")
        out.append(f"::{d.severity} {','.join(props)}::{_escape_data(f'{d.location()}: {d.code} {d.message}')}")
    return "".join(line + "\n" for line in out)


# -- SARIF 2.1.0 (GitHub code scanning): https://docs.oasis-open.org/sarif/sarif/v2.1.0/


def _sarif_rule(rule: RuleInfo, documentation: str) -> dict[str, Any]:
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": _section(documentation, "Why is this bad?") or rule.summary},
        "help": {"text": documentation, "markdown": documentation},
        "helpUri": rule_url(rule.code),
        "defaultConfiguration": {"level": rule.severity},
        "properties": {"tags": ["performance" if rule.severity == "warning" else "correctness", "pytorch",
                                "gradient-accumulation"]},
    }


def _section(doc: str, title: str) -> str:
    after = doc.split(f"## {title}", 1)
    return after[1].split("\n## ", 1)[0].strip() if len(after) == 2 else ""


def _sarif_result(d: Diagnostic, index: dict[str, int]) -> dict[str, Any]:
    location: dict[str, Any] = {"artifactLocation": {"uri": quote(_relative(d.filename))}}
    path = Path(d.filename)
    if not path.is_absolute() or path.absolute().is_relative_to(Path.cwd()):
        location["artifactLocation"]["uriBaseId"] = "%SRCROOT%"
    else:
        location["artifactLocation"] = {"uri": path.absolute().as_uri()}
    result: dict[str, Any] = {
        "ruleId": d.code,
        "ruleIndex": index[d.code],
        "level": d.severity,
        "message": {"text": d.message if d.cell is None else f"cell {d.cell}:{d.row}:{d.column}: {d.message}"},
        "locations": [{"physicalLocation": location}],
    }
    if d.cell is None:
        location["region"] = {"startLine": d.row, "startColumn": d.column, "endLine": d.end_row,
                              "endColumn": d.end_column}
    else:
        result["properties"] = {"cell": d.cell, "row": d.row, "column": d.column}
    return result


def render_sarif(report: Report) -> str:
    # The help text is each rule's whole docstring, which only the rule classes hold: SARIF is the one
    # format that imports them (and LibCST with them).
    from gradlint.rules import RULES_BY_CODE

    index = {rule.code: i for i, rule in enumerate(catalog.RULES)}
    cwd = Path.cwd().as_uri().rstrip("/") + "/"
    log = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "gradlint",
                "version": __version__,
                "semanticVersion": __version__,
                "informationUri": rule_url("GA001").rsplit("/blob/", 1)[0],
                "rules": [_sarif_rule(rule, RULES_BY_CODE[rule.code].documentation()) for rule in catalog.RULES],
            }},
            "originalUriBaseIds": {"%SRCROOT%": {"uri": cwd}},
            "columnKind": "unicodeCodePoints",
            "results": [_sarif_result(d, index) for d in report.diagnostics],
        }],
    }
    return json.dumps(log, indent=2) + "\n"


# -- JUnit XML: one <testsuite> per file with findings, one failing <testcase> per finding


def render_junit(report: Report) -> str:
    from xml.etree import ElementTree as ET  # here: every run imports this module, few write JUnit

    suites = ET.Element("testsuites", name="gradlint", tests=str(max(len(report.diagnostics), 1)),
                        failures=str(len(report.diagnostics)), errors="0")
    by_file: dict[str, list[Diagnostic]] = {}
    for d in report.diagnostics:
        by_file.setdefault(d.filename, []).append(d)
    if not by_file:
        suite = ET.SubElement(suites, "testsuite", name="gradlint", tests="1", failures="0", errors="0")
        ET.SubElement(suite, "testcase", name="No problems found", classname="gradlint")
    for filename, diagnostics in by_file.items():
        suite = ET.SubElement(suites, "testsuite", name=filename, tests=str(len(diagnostics)),
                              failures=str(len(diagnostics)), errors="0")
        for d in diagnostics:
            case = ET.SubElement(suite, "testcase", name=f"gradlint.{d.code}", classname=filename,
                                 file=filename, line=str(d.row))
            failure = ET.SubElement(case, "failure", message=d.message, type=d.code)
            failure.text = f"{d.location()}: {d.code} {d.message}"
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


# -- GitLab Code Quality: https://docs.gitlab.com/ci/testing/code_quality/#code-quality-report-format


def render_gitlab(report: Report) -> str:
    items = []
    seen: dict[str, int] = {}
    for d in report.diagnostics:
        path = _relative(d.filename)
        base = f"{d.code}:{path}:{d.cell}:{d.message}".encode()
        # Stable across runs and unrelated edits (no row in it); repeats get a counter.
        digest = hashlib.sha256(base).hexdigest()[:32]
        seen[digest] = seen.get(digest, 0) + 1
        fingerprint = digest if seen[digest] == 1 else f"{digest}-{seen[digest]}"
        begin = d.row if d.cell is None else 1
        items.append({
            "description": f"{d.code} {d.message}" if d.cell is None else f"cell {d.cell}:{d.row}: {d.code} "
                                                                          f"{d.message}",
            "check_name": f"{d.code} {catalog.BY_CODE[d.code].name if d.code in catalog.BY_CODE else ''}".strip(),
            "fingerprint": fingerprint,
            "severity": "minor" if d.severity == "warning" else "major",
            "location": {"path": path, "lines": {"begin": begin}},
        })
    return json.dumps(items, indent=2) + "\n"
