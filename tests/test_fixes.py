"""Fixes: `.in.py` / `.out.py` pairs under fixtures/fixes/ (the fix applied, exactly), idempotence,
and properties over every fixture: the result parses, nothing fixable is left, clean files stay.

Regenerate the `.out.py` files with GRADLINT_UPDATE_SNAPSHOTS=1, then REVIEW the diff."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradlint.checker import check_source
from gradlint.fixing import applicable, apply_edits, fix_source
from gradlint.rules import ALL_RULES

from .conftest import FIXTURES, UPDATE_SNAPSHOTS

RULES = [rule() for rule in ALL_RULES]
PAIRS = sorted((FIXTURES / "fixes").rglob("*.in.py"))
UNSAFE_MARK = "# gradlint-test: unsafe-fixes"
ALL_SCRIPTS = sorted(p for p in FIXTURES.rglob("*.py") if "probe" not in p.parts and not p.name.endswith(".out.py"))


def _out(path: Path) -> Path:
    return path.with_name(path.name.replace(".in.py", ".out.py"))


def test_pairs_cover_every_rule() -> None:
    for rule in ALL_RULES:
        if not rule.offers_fixes():
            continue  # its `## Fix` section says `None:` (tested in test_rule_docs)
        fixed = [p for p in PAIRS if p.parent.name == rule.code]
        assert len(fixed) >= 4, f"fewer than 4 fix fixtures for {rule.code}"


@pytest.mark.parametrize("path", PAIRS, ids=lambda p: str(p.relative_to(FIXTURES / "fixes")))
def test_fix_pair(path: Path) -> None:
    """`name.in.py` fixed gives `name.out.py`; `no_fix_*` and `*_safe_only` (an unsafe fix, not
    applied) have no `.out.py`: they must come out unchanged."""
    source = path.read_text(encoding="utf-8")
    unsafe = UNSAFE_MARK in source
    before = check_source(source, path.name, RULES)
    assert before.error is None and before.diagnostics, "a fix fixture must have findings"
    done = fix_source(source, path.name, RULES, unsafe)
    if path.name.startswith("no_fix") or path.name.endswith("_safe_only.in.py"):
        assert not _out(path).exists(), "an unchanged fixture needs no .out.py"
        assert done.fixed == 0 and done.source == source
        assert not [d for d in done.result.diagnostics if applicable(d, unsafe)]
        return
    if UPDATE_SNAPSHOTS:
        _out(path).write_text(done.source, encoding="utf-8")
    assert done.source == _out(path).read_text(encoding="utf-8")
    assert done.fixed > 0
    # What was fixed is no longer reported; nothing fixable remains; a second run changes nothing.
    assert done.result.error is None
    assert not [d for d in done.result.diagnostics if applicable(d, unsafe)]
    # (fewer when a fix also settles another finding: a clip moved after the gate's `unscale_`;
    # `fixed` counts a finding one fix uncovered and a later pass fixed, too)
    assert len(done.result.diagnostics) <= max(len(before.diagnostics) - done.fixed, 0)
    again = fix_source(done.source, path.name, RULES, unsafe)
    assert again.fixed == 0 and again.source == done.source
    compile(done.source, str(path), "exec")


@pytest.mark.parametrize("path", ALL_SCRIPTS, ids=lambda p: str(p.relative_to(FIXTURES)))
@pytest.mark.parametrize("unsafe", [False, True], ids=["safe", "unsafe"])
def test_fix_everything_property(path: Path, unsafe: bool) -> None:
    """Over every checked fixture: the fixed text parses and compiles, nothing fixable is left, the
    fixed findings are gone, fixing again changes nothing, and clean fixtures are left alone."""
    source = path.read_text(encoding="utf-8")
    before = check_source(source, path.name, RULES)
    done = fix_source(source, path.name, RULES, unsafe)
    assert done.result.error is None
    compile(done.source, str(path), "exec")
    assert not [d for d in done.result.diagnostics if applicable(d, unsafe)]
    assert fix_source(done.source, path.name, RULES, unsafe).source == done.source
    if path.parent.name == "clean":
        assert done.source == source
    fixed_codes = set(done.codes)
    for code in fixed_codes:
        # the fixed finding's own line no longer carries that code; a finding that one fix uncovers
        # and a later pass fixes (GA010's gate fixed, the epoch's tail is GA004's) is gone as well
        after = sum(d.code == code for d in done.result.diagnostics)
        was = sum(d.code == code for d in before.diagnostics)
        assert after < was or after == was == 0


def test_edits_apply_from_the_end() -> None:
    from gradlint.fixes.edits import Applicability, TextEdit, TextFix

    fix = TextFix(Applicability.SAFE, "m", (TextEdit(0, 1, "AB"), TextEdit(2, 2, "C"), TextEdit(3, 4, "")))
    assert apply_edits("abcd", [fix]) == "ABbCc"


def test_a_fix_that_breaks_the_code_is_dropped_with_a_warning() -> None:
    from gradlint.checker import FileResult
    from gradlint.diagnostics import Diagnostic
    from gradlint.fixes.edits import Applicability, TextEdit, TextFix

    source = "def f():\n    return 1\n"
    broken = TextFix(Applicability.SAFE, "drop the colon", (TextEdit(7, 8, ""),))
    first = FileResult("x.py", [Diagnostic("x.py", 1, 1, "GA001", "m", 1, 2, fix=broken)])
    done = fix_source(source, "x.py", RULES, unsafe=False, first=first)
    assert done.source == source and done.fixed == 0
    assert "produced invalid code and was not applied" in done.result.warnings[0].reason


def test_docs_before_and_after_is_current() -> None:
    """docs/fixes.md shows the real diff of fixtures/fixes/combined/all_five_bugs."""
    import re

    from gradlint.fixing import unified_diff

    docs = (FIXTURES.parent / "docs" / "fixes.md").read_text(encoding="utf-8")
    shown = re.search(r"```diff\n\$ gradlint check --diff train.py\n(.*?)```", docs, re.S)
    assert shown, "docs/fixes.md lost its before/after"
    before = (FIXTURES / "fixes" / "combined" / "all_five_bugs.in.py").read_text(encoding="utf-8")
    after = fix_source(before, "train.py", RULES, unsafe=False).source
    assert shown.group(1) == unified_diff(before, after, "train.py")
