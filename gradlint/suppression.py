"""`# noqa` comments: line-level (`# noqa`, `# noqa: GA001, GA003`) and file-level
(`# gradlint: noqa`, `# gradlint: noqa: GA004`), read from comment tokens only, so a `# noqa`
inside a string never suppresses anything."""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass, field

from gradlint.diagnostics import Diagnostic

ALL = "*"
_CODE = r"[A-Z]+[0-9]+"
# As ruff: `noqa`, `noqa: A1`, `noqa:A1,B2`, `noqa: A1 B2` after a hash; keyword in any case.
_LINE = re.compile(rf"#\s*noqa(?::\s?(?P<codes>{_CODE}(?:[,\s]+{_CODE})*))?", re.I)
_FILE = re.compile(rf"#\s*gradlint\s*:\s*noqa(?::\s?(?P<codes>{_CODE}(?:[,\s]+{_CODE})*))?", re.I)
_OURS = re.compile(r"GA[0-9]+")


@dataclass
class Suppressions:
    lines: dict[int, set[str]] = field(default_factory=dict)  # row -> codes, or {ALL}
    file: set[str] = field(default_factory=set)
    # (row, code) of every GA code named in a noqa, to warn about unknown ones
    named: list[tuple[int, str]] = field(default_factory=list)

    def suppresses(self, diagnostic: Diagnostic) -> bool:
        # The reported line, or the last line of a call that spans several lines.
        on_line = self.lines.get(diagnostic.row, set()) | self.lines.get(diagnostic.end_row, set())
        return any(ALL in codes or diagnostic.code in codes for codes in (self.file, on_line))


def _codes(match: re.Match[str]) -> set[str]:
    text = match.group("codes")
    return set(re.findall(_CODE, text)) if text else {ALL}


def parse_suppressions(source: str) -> Suppressions:
    found = Suppressions()
    if "noqa" not in source.lower():
        return found
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError):
        return found  # the file parsed with LibCST; a tokenizer quirk must not cost the findings
    for token in tokens:
        row = token.start[0]
        file_match = _FILE.search(token.string)
        if file_match:
            codes = _codes(file_match)
            found.file |= codes
        else:
            line_match = _LINE.search(token.string)
            if not line_match:
                continue
            codes = _codes(line_match)
            found.lines.setdefault(row, set()).update(codes)
        found.named += [(row, code) for code in sorted(codes) if _OURS.fullmatch(code)]
    return found


def unknown_codes(suppressions: Suppressions, known: set[str]) -> list[tuple[int, str]]:
    """GA codes in noqa comments that no gradlint rule (static or probe) has."""
    return [(row, code) for row, code in suppressions.named if code not in known]
