"""Each rule's docstring carries its own examples (Fixit-style): the `Example` block must trigger
the rule and the `Use instead` block must not. The docs pages are generated from the same text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gradlint import catalog
from gradlint.checker import check_source
from gradlint.docs import CATALOG_PATH, render_catalog, render_rule_page
from gradlint.fixing import fix_source
from gradlint.rules import ALL_RULES, Rule

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"## (Example|Use instead)\n.*?```python\n(.*?)```", re.S)


def _blocks(rule: type[Rule]) -> dict[str, str]:
    return {title: body for title, body in BLOCK.findall(rule.documentation())}


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_docstring_sections(rule: type[Rule]) -> None:
    doc = rule.documentation()
    for section in ("## What it does", "## Why is this bad?", "## Example", "## Use instead", "## Fix"):
        assert section in doc, f"{rule.code} lacks {section}"
    assert rule.summary()


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_example_is_flagged_and_fix_is_clean(rule: type[Rule]) -> None:
    blocks = _blocks(rule)
    bad = check_source(blocks["Example"], "example.py", [rule()])
    good = check_source(blocks["Use instead"], "use_instead.py", [rule()])
    assert [d.code for d in bad.diagnostics] == [rule.code]
    assert good.diagnostics == []


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_fix_turns_the_example_into_use_instead(rule: type[Rule]) -> None:
    """The documented fix is the one `--fix` makes: the Example, fixed, is the Use instead block."""
    blocks = _blocks(rule)
    done = fix_source(blocks["Example"], "example.py", [rule()], unsafe=False)
    if not rule.offers_fixes():
        assert done.fixed == 0  # documented as having no fix: none is offered
        return
    assert done.fixed == 1
    assert done.source == blocks["Use instead"]


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_docs_page_matches_docstring(rule: type[Rule]) -> None:
    page = ROOT / "docs" / "rules" / f"{rule.code}.md"
    assert page.exists(), "run `python -m gradlint.docs` to generate docs/rules/"
    assert page.read_text(encoding="utf-8") == render_rule_page(rule), (
        f"{page} is out of date: run `python -m gradlint.docs`"
    )


def test_catalog_matches_the_rules() -> None:
    """gradlint/catalog.py (rule metadata without LibCST) is what the generator writes, and says
    what the rule classes say."""
    assert (ROOT / CATALOG_PATH).read_text(encoding="utf-8") == render_catalog(), (
        "gradlint/catalog.py is out of date: run `python -m gradlint.docs`"
    )
    from_classes = tuple(catalog.RuleInfo(r.code, r.name, r.default_enabled, r.severity, r.summary(), r.offers_fixes())
                         for r in ALL_RULES)
    assert from_classes == catalog.RULES
    assert list(catalog.BY_CODE) == [r.code for r in ALL_RULES]


def test_codes_and_names_are_unique() -> None:
    assert len({r.code for r in ALL_RULES}) == len(ALL_RULES)
    assert len({r.name for r in ALL_RULES}) == len(ALL_RULES)


def test_readme_rule_table_is_current() -> None:
    from gradlint.docs import render_rule_table

    assert render_rule_table() in (ROOT / "README.md").read_text(encoding="utf-8")
