"""Applying fixes: pick non-overlapping fixes, apply them, re-parse and re-check, until nothing
more applies (a few rounds at most, as ruff does); then a diff, or an atomic write."""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import tempfile
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass, field

from gradlint.checker import FileResult, check_source
from gradlint.diagnostics import Diagnostic, FileError, FileWarning
from gradlint.fixes.edits import Applicability, TextEdit, TextFix
from gradlint.rules import Rule

MAX_ROUNDS = 10


@dataclass
class Fixed:
    source: str  # the fixed text (the original when nothing applied)
    result: FileResult  # the check of `source`: what remains
    fixed: int = 0  # findings fixed
    codes: list[str] = field(default_factory=list)


def applicable(diagnostic: Diagnostic, unsafe: bool) -> bool:
    fix = diagnostic.fix
    return fix is not None and (unsafe or fix.applicability is Applicability.SAFE)


def _select(diagnostics: Sequence[Diagnostic], unsafe: bool) -> list[Diagnostic]:
    """Fixes whose edits touch no other chosen fix's text; the rest wait for the next round."""
    chosen: list[Diagnostic] = []
    taken: list[TextEdit] = []
    for d in sorted((d for d in diagnostics if applicable(d, unsafe)), key=lambda d: d.fix.edits[0].start):  # type: ignore[union-attr]
        edits = d.fix.edits  # type: ignore[union-attr]
        if any(_overlap(a, b) for a in edits for b in taken):
            continue
        chosen.append(d)
        taken.extend(edits)
    return chosen


def _overlap(a: TextEdit, b: TextEdit) -> bool:
    return a.start == b.start or (a.start < b.end and b.start < a.end)


def apply_edits(source: str, fixes: Sequence[TextFix]) -> str:
    edits = sorted((e for f in fixes for e in f.edits), key=lambda e: (e.start, e.end))
    out = source
    for e in reversed(edits):  # from the end, so earlier offsets stay valid
        out = out[: e.start] + e.content + out[e.end:]
    return out


def fix_source(source: str, filename: str, rules: Sequence[Rule], unsafe: bool,
               first: FileResult | None = None) -> Fixed:
    """Fix until stable. A round whose result does not parse (a bug in a fix) is dropped, with a
    warning, and the last good text is kept."""
    result = first if first is not None else check_source(source, filename, rules)
    done = Fixed(source, result)
    for _ in range(MAX_ROUNDS):
        if done.result.error is not None:
            break
        chosen = _select(done.result.diagnostics, unsafe)
        if not chosen:
            break
        text = apply_edits(done.source, [d.fix for d in chosen if d.fix is not None])
        if text == done.source:
            break
        again = check_source(text, filename, rules)
        if again.error is not None:
            codes = ", ".join(sorted({d.code for d in chosen}))
            done.result.warnings.append(FileWarning(
                filename, f"a fix for {codes} produced invalid code and was not applied; please report it"))
            break
        done = Fixed(text, again, done.fixed + len(chosen), done.codes + [d.code for d in chosen])
    return done


def unified_diff(before: str, after: str, filename: str) -> str:
    lines = difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                 f"a/{filename}", f"b/{filename}")
    out = []
    for line in lines:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def _encoding(data: bytes) -> str:
    """How the file was decoded (gradlint.checker.decode), to write it back the same way."""
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        return tokenize.detect_encoding(io.BytesIO(data).readline)[0]


def write_atomic(path: str, before: str, after: str) -> FileError | None:
    """Replace the file's text through a temporary file in the same folder, renamed over it: the
    file is either untouched or whole. A read-only file, or one changed since it was read, is an
    error (never written)."""
    real = os.path.realpath(path)
    try:
        with open(real, "rb") as handle:
            data = handle.read()
        encoding = _encoding(data)
        if data.decode(encoding) != before:
            return FileError(path, "changed while being fixed; not written")
        # No write bit at all is a read-only file, even for a user (root) who could write it anyway.
        if not os.access(real, os.W_OK) or not os.stat(real).st_mode & 0o222:
            return FileError(path, "cannot write fixes: permission denied (read-only file)")
        encoded = after.encode(encoding)
        mode = os.stat(real).st_mode & 0o7777
        fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(real)}.", suffix=".gradlint",
                                         dir=os.path.dirname(real))
    except (OSError, UnicodeError, SyntaxError) as exc:
        return FileError(path, f"cannot write fixes: {getattr(exc, 'strerror', None) or exc}")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(encoded)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, real)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        return FileError(path, f"cannot write fixes: {exc.strerror or exc}")
    return None


@dataclass
class Outcome:
    """What `--fix` / `--diff` did over all files."""

    fixed: int = 0
    diff: str = ""
    stdin_text: str | None = None  # `-` with --fix: the fixed source, for standard output


def fix_results(results: list[FileResult], rules_for, unsafe: bool, write: bool) -> Outcome:
    """Fix each file with an applicable fix, in place in `results` (its diagnostics become what
    remains). `write`: save the files (else only collect the diff). Notebooks are not fixed."""
    outcome = Outcome()
    done_paths: dict[str, str] = {}  # real path -> its fixed text: a file named twice is fixed once
    for index, result in enumerate(results):
        if result.stdin and write:
            outcome.stdin_text = result.source
        if result.error is not None or result.notebook is not None or result.source is None:
            continue
        real = os.path.realpath(result.filename) if not result.stdin else None
        if real is not None and real in done_paths:
            again = check_source(done_paths[real], result.filename, rules_for(result.filename))
            again.source = done_paths[real]
            results[index] = again
            continue
        if not any(applicable(d, unsafe) for d in result.diagnostics):
            continue
        before = result.source
        # Checked again, as a whole file: fixes are built and applied round by round on its text.
        done = fix_source(before, result.filename, rules_for(result.filename), unsafe)
        if done.source == before:
            continue
        if not write:
            outcome.diff += unified_diff(before, done.source, result.filename)
        elif result.stdin:
            outcome.stdin_text = done.source
        else:
            error = write_atomic(result.filename, before, done.source)
            if error is not None:
                result.error = error
                continue
        if real is not None:
            done_paths[real] = done.source
        fresh = done.result
        fresh.stdin = result.stdin
        fresh.warnings = result.warnings + [w for w in fresh.warnings if w not in result.warnings]
        fresh.source = done.source
        results[index] = fresh
        outcome.fixed += done.fixed
    return outcome
