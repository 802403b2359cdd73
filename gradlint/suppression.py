"""`# noqa` comments: which diagnostics a file's comments suppress, and which comments are wrong.

Forms, as ruff and flake8 users write them:

- `# noqa: GA001` / `# noqa: GA001, GA003` on the reported line (the diagnostic's first row), or on the
  last line of the statement that row belongs to (the place a formatter leaves a trailing comment of a
  call that spans several lines);
- bare `# noqa`: every code on that line;
- `# gradlint: noqa` anywhere in the file: every code; `# gradlint: noqa: GA004`: those codes.

Only real comments count: they are found with `tokenize`, so `"# noqa"` inside a string is text.
Other tools' codes in the same comment (`# noqa: E501, GA001`) are theirs: they are neither ours to
apply nor ours to complain about. An unknown *GA* code is a warning, since it is most likely a typo
that leaves the finding it meant to silence unsuppressed.
"""

from __future__ import annotations

import functools
import io
import re
import tokenize
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gradlint import catalog
from gradlint.diagnostics import Diagnostic


@functools.cache
def known_codes() -> frozenset[str]:
    """Codes a suppression may name without a warning: the static rules and the probe's own codes.
    Looked up when a comment is read, not at import: a warm run reads none and needs no probe module."""
    from gradlint.probe.model import RULE_NAMES as PROBE_CODES

    return frozenset(catalog.BY_CODE) | frozenset(PROBE_CODES)


# `noqa` as a word, then optionally `: CODES`. Codes are ruff-shaped (letters then digits), separated by
# commas and/or spaces. Anything after the codes (a reason, say) is prose.
_NOQA = re.compile(r"#\s*noqa(?![\w-])(?P<colon>\s*:\s*(?P<codes>[A-Za-z]+[0-9]+(?:[\s,]+[A-Za-z]+[0-9]+)*)?)?",
                   re.IGNORECASE)
_FILE_NOQA = re.compile(r"#\s*gradlint\s*:\s*noqa(?![\w-])(?P<colon>\s*:\s*(?P<codes>[A-Za-z]+[0-9]+"
                        r"(?:[\s,]+[A-Za-z]+[0-9]+)*)?)?", re.IGNORECASE)
_SPLIT = re.compile(r"[\s,]+")
_LINES = re.compile(r"\r\n|\r|\n")  # the line ends tokenize knows
_OURS = re.compile(r"GA[0-9]+")
ALL = None  # a suppression that names no codes covers every code


@dataclass(frozen=True)
class SuppressionWarning:
    row: int
    message: str


@dataclass
class Suppressions:
    # row -> codes suppressed on that row (ALL for a bare noqa comment)
    lines: dict[int, frozenset[str] | None] = field(default_factory=dict)
    file_codes: frozenset[str] | None = frozenset()  # ALL for `# gradlint: noqa`
    # a row inside a multi-line statement -> the statement's last row
    statement_end: dict[int, int] = field(default_factory=dict)
    warnings: list[SuppressionWarning] = field(default_factory=list)

    def suppresses(self, diagnostic: Diagnostic) -> bool:
        if _covers(self.file_codes, diagnostic.code):
            return True
        row = diagnostic.row
        if row in self.lines and _covers(self.lines[row], diagnostic.code):
            return True
        end = self.statement_end.get(row)
        return end is not None and end in self.lines and _covers(self.lines[end], diagnostic.code)


def _covers(codes: frozenset[str] | None, code: str) -> bool:
    return codes is ALL or code in codes


def scan(source: str) -> Suppressions:
    """Read the suppression comments of `source`. Cheap for the common case: no `noqa` text at all."""
    found = Suppressions()
    if "noqa" not in source.lower():
        return found
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        # LibCST parsed it, the running Python's tokenizer did not (newer syntax): fall back to
        # comments LibCST sees, which are exact too, only slower to collect.
        _scan_comments(found, _libcst_comments(source))
        return found
    _scan_comments(found, ((tok.start[0], tok.string) for tok in tokens if tok.type == tokenize.COMMENT))
    _record_statements(found, tokens)
    return found


def may_warn(source: str) -> bool:
    """Whether `scan(source)` could warn, without tokenizing: a file with no findings needs its
    suppressions only for their warnings, and torch alone has thousands of `# noqa: E501`.

    Every real comment is the tail of its line from its `#`, and no match of either pattern holds a
    second `#`, so matching each line whole finds every directive the comments hold (and perhaps
    some inside strings): this can say yes where `scan` has nothing to say, never the reverse."""
    if "noqa" not in source.lower():
        return False
    scratch = Suppressions()
    for line in _LINES.split(source):
        if "noqa" not in line.lower():
            continue
        for pattern, form in ((_FILE_NOQA, "gradlint: noqa"), (_NOQA, "noqa")):
            for match in pattern.finditer(line):
                _codes(scratch, 0, match, form)
        if scratch.warnings:
            return True
    return False


def _scan_comments(found: Suppressions, comments: Iterable[tuple[int, str]]) -> None:
    file_codes: set[str] = set()
    file_all = False
    for row, text in comments:
        file_match = _FILE_NOQA.match(text)
        if file_match is not None:
            codes = _codes(found, row, file_match, "gradlint: noqa")
            if codes is ALL:
                file_all = True
            elif codes:
                file_codes.update(codes)
            continue
        match = _NOQA.search(text)
        if match is None:
            continue
        codes = _codes(found, row, match, "noqa")
        if codes is ALL:
            found.lines[row] = ALL
        elif codes:
            previous = found.lines.get(row, frozenset())
            found.lines[row] = ALL if previous is ALL else previous | codes
    found.file_codes = ALL if file_all else frozenset(file_codes)


def _codes(found: Suppressions, row: int, match: re.Match[str], form: str) -> frozenset[str] | None:
    if match.group("colon") is None:
        return ALL
    raw = match.group("codes")
    if raw is None:
        # `noqa:` followed by no code: ruff treats it as invalid rather than as a blanket noqa.
        # A word there that is not ours (torch's `set_linter` after `noqa:`) is another tool's directive.
        following = match.string[match.end():].split(maxsplit=1)
        if following and not following[0].upper().startswith("GA"):
            return frozenset()
        found.warnings.append(SuppressionWarning(row, f"`# {form}:` names no rule code; it suppresses nothing"))
        return frozenset()
    codes = frozenset(c.upper() for c in _SPLIT.split(raw.strip()) if c)
    for code in sorted(codes):
        if _OURS.fullmatch(code) and code not in known_codes():
            found.warnings.append(SuppressionWarning(
                row, f"unknown rule code `{code}` in `# {form}` (known: {', '.join(sorted(known_codes()))})"))
    return frozenset(c for c in codes if c in known_codes())


def _record_statements(found: Suppressions, tokens: Sequence[tokenize.TokenInfo]) -> None:
    """Map each row of a multi-line logical line to that line's last row (the NEWLINE token's row)."""
    if not found.lines:
        return
    start: int | None = None
    for tok in tokens:
        if tok.type in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            continue
        if tok.type == tokenize.NEWLINE:
            if start is not None and tok.start[0] > start and tok.start[0] in found.lines:
                for row in range(start, tok.start[0]):
                    found.statement_end[row] = tok.start[0]
            start = None
        elif start is None:
            start = tok.start[0]


def _libcst_comments(source: str) -> list[tuple[int, str]]:
    import libcst as cst
    from libcst.metadata import MetadataWrapper, PositionProvider

    class Collect(cst.CSTVisitor):
        METADATA_DEPENDENCIES = (PositionProvider,)

        def __init__(self) -> None:
            self.comments: list[tuple[int, str]] = []

        def visit_Comment(self, node: cst.Comment) -> None:
            self.comments.append((self.get_metadata(PositionProvider, node).start.line, node.value))

    try:
        wrapper = MetadataWrapper(cst.parse_module(source))
    except (cst.ParserSyntaxError, RecursionError):
        return []
    visitor = Collect()
    wrapper.visit(visitor)
    return visitor.comments


def apply(diagnostics: Sequence[Diagnostic], suppressions: Suppressions) -> list[Diagnostic]:
    return [d for d in diagnostics if not suppressions.suppresses(d)]
