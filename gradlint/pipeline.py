"""One file up to its analysis: read, decode, the cache, the text test. Files are named by path and
their rules by code; LibCST, the model and the rule classes (gradlint.checker) are imported only when
a file needs analysis, so a warm run, or one over files without a training loop, never loads them."""

from __future__ import annotations

import ast
import errno
import io
import os
import re
import stat
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gradlint.diagnostics import Diagnostic, FileError, FileWarning
from gradlint.prefilter import may_have_training_loop
from gradlint.quiet_parse import parse_quietly
from gradlint.suppression import may_warn
from gradlint.suppression import scan as scan_suppressions

if TYPE_CHECKING:
    from gradlint.cache import Cache
    from gradlint.notebooks import Notebook

MAX_BYTES = 10 * 1024 * 1024
# A file the prefilter skips is never parsed, but a suppression in it that names a GA code (or the
# file-level form) is still read, so that a typo in it is reported. Cheap: a regex over the lowered
# text of files that mention noqa at all (an IGNORECASE search has no literal to skip ahead with).
_MAY_NAME_OUR_CODES = re.compile(r"noqa[^\n]*ga[0-9]|gradlint\s*:\s*noqa")
ISSUE_TRACKER = "https://github.com/gradlint/gradlint/issues"
TOO_DEEP = "too deeply nested to check (maximum recursion depth exceeded while parsing)"


def _may_name_our_codes(source: str) -> bool:
    lowered = source.lower()
    return "noqa" in lowered and _MAY_NAME_OUR_CODES.search(lowered) is not None


@dataclass
class FileResult:
    filename: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    error: FileError | None = None
    warnings: list[FileWarning] = field(default_factory=list)
    source: str | None = None  # kept only for files with diagnostics, for source excerpts
    notebook: Notebook | None = None
    stdin: bool = False  # read from `-` (`--fix` then prints the fixed source)


def decode(data: bytes, filename: str) -> tuple[str | None, FileError | None]:
    """UTF-8 (with or without BOM), or the encoding a PEP 263 cookie declares."""
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        utf8_error = exc
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:
        encoding = "utf-8"
    if encoding not in ("utf-8", "utf-8-sig"):
        try:
            return data.decode(encoding), None
        except (UnicodeDecodeError, LookupError):
            pass
    line = data.count(b"\n", 0, utf8_error.start) + 1
    return None, FileError(
        filename,
        f"not valid UTF-8 (byte 0x{data[utf8_error.start]:02x} at line {line}); "
        "save it as UTF-8 or declare its encoding",
        row=line,
    )


# What `Path.exists()` takes for "not there": a dangling or looping symlink, a file under a file.
_MISSING = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EBADF})


def read(path: str, explicit: bool = True) -> tuple[str | None, FileError | None]:
    try:
        st = os.stat(path)  # one stat: every file of a tree is read through here
    except OSError as exc:
        if exc.errno in _MISSING:
            return None, FileError(path, "no such file or directory")
        return None, FileError(path, f"cannot read: {exc.strerror or exc}")
    if stat.S_ISDIR(st.st_mode):
        return None, FileError(path, "is a directory")
    if not explicit and not stat.S_ISREG(st.st_mode):
        # A FIFO named `x.py` in a tree would block the read forever; one named on the command
        # line (`gradlint <(cat train.py)`) is read, as the user asked.
        return None, FileError(path, "not a regular file (a FIFO, socket or device)")
    size = st.st_size
    if size > MAX_BYTES:
        return None, FileError(path, f"too large to check ({size / 2**20:.1f} MiB; the limit is "
                                     f"{MAX_BYTES // 2**20} MiB)")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return None, FileError(path, f"cannot read: {exc.strerror or exc}")
    if b"\x00" in data:
        return None, FileError(path, "not a text file (contains NUL bytes)")
    return decode(data, path)


def internal_error(filename: str, exc: BaseException) -> FileError:
    import traceback  # only on a bug

    return FileError(
        filename,
        f"internal error while checking ({type(exc).__name__}: {exc}); this is a bug in gradlint: please report "
        f"it at {ISSUE_TRACKER} with this file, and run with --verbose for the traceback",
        traceback=traceback.format_exc(),
    )


def cpython_tree(source: str, filename: str) -> ast.Module | None:
    """CPython's own tree of the file, or None when CPython rejects the syntax (LibCST may accept
    syntax newer than this interpreter, so that decides nothing yet). RecursionError and MemoryError
    go up: LibCST's native parser crashes the process (SIGSEGV) on nesting a few thousand levels deep
    (a 10,000-term `a + a + ...`) and slows down quadratically before that, and CPython refuses such
    code (it cannot be run either)."""
    try:
        return parse_quietly(source, filename)
    except (SyntaxError, ValueError):
        return None


def settle(source: str, filename: str, prefilter: bool = False, stages: bool = False) -> FileResult | None:
    """What `checker.check_source` gives a file the text test settles (no training loop), without
    LibCST; None when the file needs the analysis. A named file (`stages` without `prefilter`) has
    its syntax checked by CPython first; one CPython rejects goes to the analysis, which reports it."""
    if not (prefilter or stages) or may_have_training_loop(source):
        return None
    if not prefilter:
        try:
            if cpython_tree(source, filename) is None:
                return None
        except (RecursionError, MemoryError):
            return FileResult(filename, error=FileError(filename, TOO_DEEP))
    return text_only(FileResult(filename), source)


def text_only(result: FileResult, source: str) -> FileResult:
    """A file with no training loop: nothing to report but suppressions naming unknown codes."""
    if _may_name_our_codes(source):
        suppress(result, source)
    return result


def suppress(result: FileResult, source: str) -> None:
    """Drop what `# noqa` comments suppress; warn about suppressions naming unknown codes."""
    if not result.diagnostics and not may_warn(source):
        return  # nothing to drop and nothing to warn about: skip tokenizing
    suppressions = scan_suppressions(source)
    result.diagnostics = [d for d in result.diagnostics if not suppressions.suppresses(d)]
    result.warnings.extend(FileWarning(result.filename, w.message, w.row) for w in suppressions.warnings)
    if result.diagnostics:
        result.source = source


def check_path(path: str, explicit: bool, codes: Sequence[str], verbose: bool = False,
               cache: Cache | None = None) -> FileResult:
    """One file with the rules `codes` names (as `Resolver.enabled_codes` gives them)."""
    try:
        return _check_path(path, explicit, tuple(codes), verbose, cache)
    except Exception as exc:  # outside the analysis proper (reading, notebooks): still this file's failure only
        return FileResult(path, error=internal_error(path, exc))


def _check_path(path: str, explicit: bool, codes: tuple[str, ...], verbose: bool, cache: Cache | None,
                analyse: bool = True) -> FileResult:
    source, error = read(path, explicit)
    if error is not None or source is None:
        return FileResult(path, error=error)
    if path.endswith(".ipynb"):
        return check_notebook(source, path, explicit, codes, verbose, cache, analyse)
    if not source.strip():
        warnings = [FileWarning(path, "empty file, nothing to check")] if explicit else []
        return FileResult(path, warnings=warnings)
    return _check_cached(source, path, codes, verbose, not explicit, cache, analyse)


class NeedsAnalysis(Exception):
    """`answer_without_analysis`: this file's result needs LibCST and the model."""


def answer_without_analysis(path: str, explicit: bool, codes: Sequence[str], cache: Cache | None) -> FileResult | None:
    """`check_path`'s result when it needs no analysis (a cache hit, a file the text test settles, an
    unreadable or empty file), else None: what a parent process answers before starting workers."""
    try:
        return _check_path(path, explicit, tuple(codes), False, cache, analyse=False)
    except NeedsAnalysis:
        return None
    except Exception:  # the full check will report it, as that file's error
        return None


def screen_path(path: str) -> FileResult | None:
    """The result of a discovered `.py` file when the text test settles it without parsing (as
    `check_path` would give it); None when the file needs the full check."""
    source, error = read(path, explicit=False)
    if error is not None or source is None:
        return FileResult(path, error=error)
    if not source.strip():
        return FileResult(path)
    return settle(source, path, prefilter=True)


def _check_cached(source: str, filename: str, codes: tuple[str, ...], verbose: bool, prefilter: bool,
                  cache: Cache | None, analyse: bool = True) -> FileResult:
    """`checker.check_source` through the cache, for the files worth it (see gradlint/cache.py)."""
    if cache is None or (prefilter and not may_have_training_loop(source)):
        return _check_source(source, filename, codes, verbose, prefilter, analyse)
    key = cache.key(source, codes, prefilter)
    hit = cache.load(key, filename)
    if hit is not None:
        diagnostics, warnings = hit
        return FileResult(filename, diagnostics, warnings=warnings, source=source if diagnostics else None)
    result = _check_source(source, filename, codes, verbose, prefilter, analyse)
    if result.error is None:
        cache.store(key, result.diagnostics, result.warnings)
    return result


def _check_source(source: str, filename: str, codes: tuple[str, ...], verbose: bool, prefilter: bool,
                  analyse: bool = True) -> FileResult:
    settled = settle(source, filename, prefilter, stages=True)
    if settled is not None:
        return settled
    if not analyse:
        raise NeedsAnalysis(filename)
    from gradlint import checker  # LibCST, the model and the rules: this file is analysed

    return checker.check_source(source, filename, checker.make_rules(codes), verbose, prefilter=prefilter,
                                stages=True)


def check_notebook(text: str, path: str, explicit: bool, codes: Sequence[str], verbose: bool = False,
                   cache: Cache | None = None, analyse: bool = True) -> FileResult:
    """A notebook's code cells as one program; locations mapped back to cells."""
    from gradlint import notebooks

    try:
        notebook = notebooks.parse(text)
    except notebooks.NotebookError as exc:
        return FileResult(path, error=FileError(path, str(exc)))
    lang = notebooks.language(text)
    if lang is not None and lang != "python":
        warnings = [FileWarning(path, f"a {lang} notebook, not Python: skipped")] if explicit else []
        return FileResult(path, warnings=warnings)
    result = _check_cached(notebook.source, path, tuple(codes), verbose, not explicit, cache, analyse)
    result.diagnostics = sorted((notebooks.relocate(d, notebook) for d in result.diagnostics),
                                key=lambda d: (d.cell or 0, d.row, d.column, d.code))
    result.warnings = [FileWarning(f"{w.filename}:cell {notebook.locate(w.row)[0]}", w.reason,
                                   notebook.locate(w.row)[1]) if w.row is not None else w for w in result.warnings]
    if result.error is not None:
        result.error = notebooks.relocate_error(result.error, notebook)
    if result.diagnostics:
        result.source, result.notebook = None, notebook
    return result
