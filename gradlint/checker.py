"""The analysis of one file: parse -> model -> rules -> diagnostics. Reading, the cache and the text
test come first, in gradlint/pipeline.py, which imports this module only for a file that needs it."""

from __future__ import annotations

import ast
import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import libcst as cst

from gradlint.diagnostics import Diagnostic, FileError
from gradlint.fixes.edits import Lines, to_text
from gradlint.model import build_model
from gradlint.pipeline import (
    ISSUE_TRACKER,
    MAX_BYTES,
    TOO_DEEP,
    FileResult,
    check_notebook,
    check_path,
    cpython_tree,
    decode,
    internal_error,
    read,
    screen_path,
    settle,
    suppress,
)
from gradlint.positions import positions_of
from gradlint.rules import RULES_BY_CODE, Finding, Rule
from gradlint.tree_from_ast import module_from_ast
from gradlint.trusted_parse import parse_accepted_module

_RULES: dict[tuple[str, ...], list[Rule]] = {}


def make_rules(codes: Sequence[str]) -> list[Rule]:
    """Instances of the rules `codes` names, made once per set of codes (a rule keeps nothing between files)."""
    key = tuple(codes)
    rules = _RULES.get(key)
    if rules is None:
        rules = _RULES[key] = [RULES_BY_CODE[code]() for code in key]
    return rules


def check_source(source: str, filename: str, rules: Sequence[Rule], verbose: bool = False,
                 prefilter: bool = False, stages: bool = False) -> FileResult:
    """`stages`: once CPython has accepted the syntax, skip LibCST for a file the text test says
    cannot hold a training loop, and clear a file on the tree built from CPython's
    (`_nothing_found_on`): for files named on the command line (pre-commit passes each changed
    file), whose syntax is always checked. `prefilter` (discovered files): the same, and a file
    the text test rejects is not even compiled. Neither, as `--fix` rounds and tests do: LibCST's
    parse of the whole file."""
    settled = settle(source, filename, prefilter, stages)
    if settled is not None:
        return settled
    with _fewer_collections():
        return _analyse(source, filename, rules, prefilter or stages)


def _analyse(source: str, filename: str, rules: Sequence[Rule], may_stage: bool) -> FileResult:
    result = FileResult(filename)
    try:
        tree = cpython_tree(source, filename)
    except (RecursionError, MemoryError):
        result.error = FileError(filename, TOO_DEEP)
        return result
    if may_stage and tree is not None and _nothing_found_on(source, tree, rules):
        suppress(result, source)
        return result
    try:
        # When CPython rejects the file, LibCST may know newer syntax, or says what is wrong.
        module = cst.parse_module(source) if tree is None else parse_accepted_module(source)
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
        suppress(result, source)
    except RecursionError:
        result.error = FileError(filename, "too deeply nested to analyse")
    except Exception as exc:  # one file's bug must not stop the others
        result.error = internal_error(filename, exc)
    return result


# LibCST's parse and the model allocate millions of small objects that refcounting frees (the trees
# hold no parent links); at the default threshold (700) the collector runs thousands of times per
# file for nothing: 8-9% of the CPU time over the 491 candidate files of a 29-repository corpus.
_YOUNG_THRESHOLD = 100_000


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Collect the young generation less often while one file is analysed; restored after."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], _YOUNG_THRESHOLD), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _nothing_found_on(source: str, tree: ast.Module, rules: Sequence[Rule]) -> bool:
    """Whether the rules find nothing in the LibCST tree built from CPython's (`tree_from_ast.py`),
    which costs a fifth of LibCST's parse. False when it cannot be built or anything is found: the
    file is then checked on LibCST's own parse, which every reported finding, position and fix
    comes from (and an error in the model is reported from there too)."""
    try:
        model = build_model(module_from_ast(source, tree))
        return not any(True for rule in rules for _ in rule.check(model))
    except Exception:  # Unsupported, RecursionError, or the model's own error: LibCST's path decides
        return False


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
    # Positions only for files with findings, and only of the nodes reported or edited.
    positions = positions_of(module, [f.node for f in findings]
                             + [edit.node for f in findings if f.fix is not None for edit in f.fix.edits], source)
    lines = Lines(source)
    out = []
    for f in findings:
        where = positions[f.node]
        fix = (to_text(f.fix, positions, source, module.default_indent, module.default_newline, lines)
               if f.fix is not None else None)
        out.append(Diagnostic(filename, where.start.line, where.start.column + 1, f.code, f.message,
                              where.end.line, where.end.column + 1, fix=fix))
    return sorted(out)


# What callers have imported from here since before gradlint/pipeline.py existed, as well.
__all__ = ["ISSUE_TRACKER", "MAX_BYTES", "TOO_DEEP", "FileResult", "check_notebook", "check_path", "check_source",
           "decode", "internal_error", "make_rules", "read", "screen_path"]
