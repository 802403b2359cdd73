"""Every fixture script is checked twice:

- against its `# expect: GA00N` markers, written by hand: the (line, code) pairs must match
  exactly, so a missed bug and a false alarm both fail;
- against its `.expected` snapshot beside it: the exact output (columns and messages).

Both on the whole file; then as a discovered and as a named file, whose speed-ups (the text test,
the tree built from CPython's) must find the same.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gradlint.checker import check_path, check_source
from gradlint.rules import ALL_RULES

from .conftest import FIXTURES, UPDATE_SNAPSHOTS

MARKER = re.compile(r"#\s*expect:\s*([A-Z]{2}\d{3}(?:\s*,\s*[A-Z]{2}\d{3})*)")
# fixtures/fixes/ holds `.in.py` / `.out.py` pairs for --fix (tests/test_fixes.py), without markers.
SCRIPTS = sorted(p for p in FIXTURES.rglob("*.py") if "probe" not in p.parts and "fixes" not in p.parts)
RULES = [rule() for rule in ALL_RULES]
CODES = [rule.code for rule in ALL_RULES]  # check_path takes codes


def _expected_markers(path: Path) -> set[tuple[int, str]]:
    out = set()
    for row, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = MARKER.search(line)
        if match:
            out.update((row, code.strip()) for code in match.group(1).split(","))
    return out


def _render(path: Path) -> tuple[set[tuple[int, str]], str]:
    # The whole file, no stage: the reference every staged path is compared with.
    result = check_source(path.read_text(encoding="utf-8"), str(path), RULES)
    assert result.error is None, result.error
    lines = [f"{d.row}:{d.column}: {d.code} {d.message}" for d in result.diagnostics]
    return {(d.row, d.code) for d in result.diagnostics}, "".join(f"{line}\n" for line in lines)


def test_fixtures_exist() -> None:
    assert len(SCRIPTS) >= 20
    assert any(p.parent.name == "clean" for p in SCRIPTS)
    for rule in ALL_RULES:
        assert any(p.parent.name == rule.code for p in SCRIPTS), f"no fixture for {rule.code}"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixture(path: Path) -> None:
    found, rendered = _render(path)
    expected = _expected_markers(path)
    if path.parent.name == "clean":
        assert not expected, "clean fixtures carry no markers"
    else:
        assert any(code == path.parent.name for _, code in expected), "a bug fixture must expect its own rule"
    assert sorted(found) == sorted(expected)
    # Found by directory search and as a named file too: the text test and the tree built from
    # CPython's lose nothing here.
    for explicit in (False, True):
        staged = check_path(str(path), explicit, CODES)
        assert {(d.row, d.code) for d in staged.diagnostics} == found

    snapshot = path.with_suffix(".expected")
    if UPDATE_SNAPSHOTS:
        snapshot.write_text(rendered, encoding="utf-8")
    assert snapshot.exists(), f"missing snapshot {snapshot.name} (run with GRADLINT_UPDATE_SNAPSHOTS=1)"
    assert rendered == snapshot.read_text(encoding="utf-8")
