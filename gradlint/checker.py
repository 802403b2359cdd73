"""One file through the pipeline: read -> cheap text test -> parse -> model -> rules -> diagnostics."""

from __future__ import annotations

import ast
import io
import re
import stat
import tokenize
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from gradlint.diagnostics import Diagnostic, FileError, FileWarning
from gradlint.fixes.edits import Lines, to_text
from gradlint.model import build_model
from gradlint.prefilter import may_have_training_loop
from gradlint.relevance import relevant_source
from gradlint.rules import Finding, Rule
from gradlint.suppression import may_warn
from gradlint.suppression import scan as scan_suppressions
from gradlint.trusted_parse import parse_accepted_module

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


def read(path: str, explicit: bool = True) -> tuple[str | None, FileError | None]:
    p = Path(path)
    try:
        if not p.exists():
            return None, FileError(path, "no such file or directory")
        if p.is_dir():
            return None, FileError(path, "is a directory")
        st = p.stat()
        if not explicit and not stat.S_ISREG(st.st_mode):
            # A FIFO named `x.py` in a tree would block the read forever; one named on the command
            # line (`gradlint <(cat train.py)`) is read, as the user asked.
            return None, FileError(path, "not a regular file (a FIFO, socket or device)")
        size = st.st_size
        if size > MAX_BYTES:
            return None, FileError(path, f"too large to check ({size / 2**20:.1f} MiB; the limit is "
                                         f"{MAX_BYTES // 2**20} MiB)")
        data = p.read_bytes()
    except OSError as exc:
        return None, FileError(path, f"cannot read: {exc.strerror or exc}")
    if b"\x00" in data:
        return None, FileError(path, "not a text file (contains NUL bytes)")
    return decode(data, path)


def check_source(source: str, filename: str, rules: Sequence[Rule], verbose: bool = False,
                 prefilter: bool = False, stages: bool = False) -> FileResult:
    """`stages`: once CPython has accepted the syntax, skip LibCST for a file the text test says
    cannot hold a training loop, and parse only the definitions the model can reach
    (`relevance.py`): for files named on the command line (pre-commit passes each changed file),
    whose syntax is always checked. `prefilter` (discovered files): the same, and a file the text
    test rejects is not even compiled. Neither, as `--fix` rounds and tests do: the whole file."""
    result = FileResult(filename)
    if prefilter and not may_have_training_loop(source):
        return _text_only(result, source)
    try:
        tree = _cpython_tree(source, filename)
    except (RecursionError, MemoryError):
        result.error = FileError(filename, TOO_DEEP)
        return result
    staged = (prefilter or stages) and tree is not None
    if staged and not prefilter and not may_have_training_loop(source):
        return _text_only(result, source)
    try:
        if tree is None:  # CPython rejects it; LibCST may know newer syntax, or says what is wrong
            module = cst.parse_module(source)
        else:
            module = parse_accepted_module(relevant_source(source, tree) if staged else source)
    except (cst.ParserSyntaxError, cst.CSTValidationError) as exc:
        # LibCST's tokenizer admits some characters its node validation then rejects (a Name that
        # is not `str.isidentifier()`): that is invalid source too, not an internal error.
        result.error = _syntax_error(source, filename, exc)
        return result
    except (RecursionError, MemoryError):
        result.error = FileError(filename, TOO_DEEP)
        return result
    try:
        model = build_model(module)
        findings: list[Finding] = []
        seen: set[tuple[str, int]] = set()
        for rule in rules:
            for finding in rule.check(model):
                key = (finding.code, id(finding.node))
                if key not in seen:
                    seen.add(key)
                    findings.append(finding)
        result.diagnostics = _locate(module, findings, filename, source)
        _suppress(result, source)
    except RecursionError:
        result.error = FileError(filename, "too deeply nested to analyse")
    except Exception as exc:  # one file's bug must not stop the others
        result.error = internal_error(filename, exc)
    return result


def _text_only(result: FileResult, source: str) -> FileResult:
    """A file with no training loop: nothing to report but suppressions naming unknown codes."""
    if _may_name_our_codes(source):
        _suppress(result, source)
    return result


def internal_error(filename: str, exc: BaseException) -> FileError:
    return FileError(
        filename,
        f"internal error while checking ({type(exc).__name__}: {exc}); this is a bug in gradlint: please report "
        f"it at {ISSUE_TRACKER} with this file, and run with --verbose for the traceback",
        traceback=traceback.format_exc(),
    )


def _cpython_tree(source: str, filename: str) -> ast.Module | None:
    """CPython's own tree of the file, or None when CPython rejects the syntax (LibCST may accept
    syntax newer than this interpreter, so that decides nothing yet). RecursionError and MemoryError
    go up: LibCST's native parser crashes the process (SIGSEGV) on nesting a few thousand levels deep
    (a 10,000-term `a + a + ...`) and slows down quadratically before that, and CPython refuses such
    code (it cannot be run either)."""
    try:
        return compile(source, filename, "exec", dont_inherit=True, flags=ast.PyCF_ONLY_AST)
    except (SyntaxError, ValueError):
        return None


def _suppress(result: FileResult, source: str) -> None:
    """Drop what `# noqa` comments suppress; warn about suppressions naming unknown codes."""
    if not result.diagnostics and not may_warn(source):
        return  # nothing to drop and nothing to warn about: skip tokenizing
    suppressions = scan_suppressions(source)
    result.diagnostics = [d for d in result.diagnostics if not suppressions.suppresses(d)]
    result.warnings.extend(FileWarning(result.filename, w.message, w.row) for w in suppressions.warnings)
    if result.diagnostics:
        result.source = source


def _syntax_error(source: str, filename: str, exc: cst.ParserSyntaxError | cst.CSTValidationError) -> FileError:
    """CPython's own message and location when it agrees the file is invalid (the one users
    know); LibCST's when only LibCST rejects it (syntax newer than the installed LibCST)."""
    try:
        compile(source, filename, "exec", dont_inherit=True, flags=ast.PyCF_ONLY_AST)
    except SyntaxError as py_exc:
        return FileError(filename, f"syntax error: {py_exc.msg}", py_exc.lineno, py_exc.offset)
    except (ValueError, RecursionError, MemoryError):
        pass
    if isinstance(exc, cst.CSTValidationError):
        return FileError(filename, f"cannot parse (LibCST {cst_version()}): {exc}")
    message = str(exc.message).strip().splitlines()[0] if exc.message else "invalid syntax"
    return FileError(filename, f"cannot parse (LibCST {cst_version()}): {message}", exc.raw_line,
                     exc.raw_column + 1)


def cst_version() -> str:
    try:
        from importlib.metadata import version

        return version("libcst")
    except Exception:  # metadata missing in odd installs; the message is still useful
        return "?"


def _locate(module: cst.Module, findings: list[Finding], filename: str, source: str) -> list[Diagnostic]:
    if not findings:
        return []
    # Positions only for files with findings: the metadata pass costs more than the parse.
    positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    lines = Lines(source)
    out = []
    for f in findings:
        where = positions[f.node]
        fix = (to_text(f.fix, positions, source, module.default_indent, module.default_newline, lines)
               if f.fix is not None else None)
        out.append(Diagnostic(filename, where.start.line, where.start.column + 1, f.code, f.message,
                              where.end.line, where.end.column + 1, fix=fix))
    return sorted(out)


def check_path(path: str, explicit: bool, rules: Sequence[Rule], verbose: bool = False,
               cache: Cache | None = None) -> FileResult:
    try:
        return _check_path(path, explicit, rules, verbose, cache)
    except Exception as exc:  # outside the analysis proper (reading, notebooks): still this file's failure only
        return FileResult(path, error=internal_error(path, exc))


def _check_path(path: str, explicit: bool, rules: Sequence[Rule], verbose: bool, cache: Cache | None) -> FileResult:
    source, error = read(path, explicit)
    if error is not None or source is None:
        return FileResult(path, error=error)
    if path.endswith(".ipynb"):
        return check_notebook(source, path, explicit, rules, verbose, cache)
    if not source.strip():
        warnings = [FileWarning(path, "empty file, nothing to check")] if explicit else []
        return FileResult(path, warnings=warnings)
    return _check_cached(source, path, rules, verbose, not explicit, cache)


def screen_path(path: str, rules: Sequence[Rule]) -> FileResult | None:
    """The result of a discovered `.py` file when the text test settles it without parsing (as
    `check_path` would give it); None when the file needs the full check."""
    source, error = read(path, explicit=False)
    if error is not None or source is None:
        return FileResult(path, error=error)
    if not source.strip():
        return FileResult(path)
    if may_have_training_loop(source):
        return None
    return check_source(source, path, rules, prefilter=True)


def _check_cached(source: str, filename: str, rules: Sequence[Rule], verbose: bool, prefilter: bool,
                  cache: Cache | None) -> FileResult:
    """`check_source` through the cache, for the files worth it (see gradlint/cache.py)."""
    if cache is None or (prefilter and not may_have_training_loop(source)):
        return check_source(source, filename, rules, verbose, prefilter=prefilter, stages=True)
    key = cache.key(source, (rule.code for rule in rules), prefilter)
    hit = cache.load(key, filename)
    if hit is not None:
        diagnostics, warnings = hit
        return FileResult(filename, diagnostics, warnings=warnings, source=source if diagnostics else None)
    result = check_source(source, filename, rules, verbose, prefilter=prefilter, stages=True)
    if result.error is None:
        cache.store(key, result.diagnostics, result.warnings)
    return result


def check_notebook(text: str, path: str, explicit: bool, rules: Sequence[Rule], verbose: bool = False,
                   cache: Cache | None = None) -> FileResult:
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
    result = _check_cached(notebook.source, path, rules, verbose, not explicit, cache)
    result.diagnostics = sorted((notebooks.relocate(d, notebook) for d in result.diagnostics),
                                key=lambda d: (d.cell or 0, d.row, d.column, d.code))
    result.warnings = [FileWarning(f"{w.filename}:cell {notebook.locate(w.row)[0]}", w.reason,
                                   notebook.locate(w.row)[1]) if w.row is not None else w for w in result.warnings]
    if result.error is not None:
        result.error = notebooks.relocate_error(result.error, notebook)
    if result.diagnostics:
        result.source, result.notebook = None, notebook
    return result
