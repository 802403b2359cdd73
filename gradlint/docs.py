"""Rule pages for docs/rules/, generated from the rules' docstrings (one source).

Run `python -m gradlint.docs` to regenerate; a test fails when a page drifts.
"""

from __future__ import annotations

from pathlib import Path

from gradlint.rules import ALL_RULES, Rule


def render_rule_page(rule: type[Rule]) -> str:
    default = "on by default" if rule.default_enabled else "off by default (enable with `--select`)"
    return (
        f"# {rule.code}: {rule.name}\n\n"
        f"*{default}; `gradlint rule {rule.code}` prints this page.*\n\n"
        f"{rule.documentation()}\n"
    )


def render_rule_table() -> str:
    """The README's rule table rows."""
    rows = []
    for rule in ALL_RULES:
        note = "" if rule.default_enabled else " (off by default)"
        rows.append(f"| [{rule.code}](docs/rules/{rule.code}.md) | {rule.name} | {rule.summary()}{note} |")
    return "\n".join(rows)


def write_pages(root: Path) -> list[Path]:
    out = []
    folder = root / "docs" / "rules"
    folder.mkdir(parents=True, exist_ok=True)
    for rule in ALL_RULES:
        path = folder / f"{rule.code}.md"
        path.write_text(render_rule_page(rule), encoding="utf-8")
        out.append(path)
    return out


if __name__ == "__main__":
    for written in write_pages(Path.cwd()):
        print(written)
