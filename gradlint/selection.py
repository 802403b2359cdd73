"""`--select` / `--ignore`: codes, prefixes and ALL, resolved as ruff does (the most specific
selector wins; on a tie, ignore wins). Works on the catalog: choosing rules imports none of them."""

from __future__ import annotations

from collections.abc import Iterable

from gradlint.catalog import RULES, RuleInfo


class SelectionError(ValueError):
    pass


def _parse(selectors: Iterable[str]) -> list[str]:
    out: list[str] = []
    for raw in selectors:
        for part in raw.split(","):
            part = part.strip().upper()
            if not part:
                continue
            if part != "ALL" and not any(rule.code.startswith(part) for rule in RULES):
                raise SelectionError(f"unknown rule selector `{part}` (known: ALL, GA, "
                                     + ", ".join(r.code for r in RULES) + ")")
            out.append(part)
    return out


def _specificity(selector: str, code: str) -> int:
    if selector == "ALL":
        return 0
    return len(selector) if code.startswith(selector) else -1


def select_rules(select: Iterable[str] | None, ignore: Iterable[str] = ()) -> list[RuleInfo]:
    chosen_select = _parse(select) if select is not None else None
    chosen_ignore = _parse(ignore)
    rules = []
    for rule in RULES:
        if chosen_select is None:
            best_select = 0 if rule.default_enabled else -1
        else:
            best_select = max((_specificity(s, rule.code) for s in chosen_select), default=-1)
        best_ignore = max((_specificity(s, rule.code) for s in chosen_ignore), default=-1)
        if best_select >= 0 and best_select > best_ignore:
            rules.append(rule)
    return rules


def parse_selectors(selectors: Iterable[str]) -> list[str]:
    """Validate and normalise selectors (`GA001`, `GA00`, `ALL`); raises SelectionError."""
    return _parse(selectors)


def resolve_layers(layers: Iterable[tuple[list[str] | None, list[str], list[str]]]) -> list[RuleInfo]:
    """Selections stacked as ruff stacks them (configuration file, then command line): each layer is
    (select, ignore, extend_select). A layer with `select` starts afresh; one without only adds and
    removes. Within a layer the most specific selector wins, and ignore wins a tie."""
    enabled = {rule.code for rule in RULES if rule.default_enabled}
    for select, ignore, extend_select in layers:
        chosen = [*(select or []), *extend_select]
        for rule in RULES:
            best_select = max((_specificity(s, rule.code) for s in chosen), default=-1)
            best_ignore = max((_specificity(s, rule.code) for s in ignore), default=-1)
            if best_select >= 0 and best_select > best_ignore:
                enabled.add(rule.code)
            elif best_ignore >= 0 or select is not None:
                enabled.discard(rule.code)
    return [rule for rule in RULES if rule.code in enabled]
