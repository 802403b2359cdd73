"""The analysis of one file: parse -> model -> rules -> diagnostics. Reading, the cache and the text
test come first, in gradlint/pipeline.py, which imports this module only for a file that needs it."""

from __future__ import annotations

import ast
import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import libcst as cst

from gradlint.diagnostics import Diagnostic, FileError
from gradlint.fixes.edits import Lines, to_text
from gradlint.model import ModuleModel, build_model
from gradlint.model.syntax import recording_layout
from gradlint.partial_parse import splice
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
from gradlint.quiet_parse import parse_quietly
from gradlint.rules import RULES_BY_CODE, Finding, Rule
from gradlint.tree_from_ast import Origins, built_module
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
    cannot hold a training loop, check a file on the tree built from CPython's (`_first_pass`) and
    place its findings from LibCST's parse of only the statements they need
    (`_on_parsed_statements`): for files named on the command line (pre-commit passes each changed
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
    if may_stage and tree is not None:
        first = _first_pass(source, tree, rules)
        if first is not None and not first.findings:
            suppress(result, source)
            return result
        located = _on_parsed_statements(source, filename, tree, rules, first) if first is not None else None
        if located is not None:
            result.diagnostics = located
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
        model = build_model(module, source)
        findings = _findings(model, rules)
        result.diagnostics = _locate(module, findings, filename, source,
                                     parents=model.parents if findings else None) or []
        suppress(result, source)
    except RecursionError:
        result.error = FileError(filename, "too deeply nested to analyse")
    except Exception as exc:  # one file's bug must not stop the others
        result.error = internal_error(filename, exc)
    return result


def _findings(model: ModuleModel, rules: Sequence[Rule]) -> list[Finding]:
    findings: list[Finding] = []
    seen: set[tuple[str, int]] = set()
    for rule in rules:
        for finding in rule.check(model):
            key = (finding.code, id(finding.node))
            if key not in seen:
                seen.add(key)
                findings.append(finding)
    return findings


def _needed(findings: list[Finding], layout_read: list[cst.CSTNode]) -> list[cst.CSTNode]:
    """The nodes whose LibCST parse the findings need: each one reported, each one a fix edits,
    and each one whose layout (code, comments, brackets) the model or a rule read."""
    return [*layout_read, *reported_nodes(findings)]


def reported_nodes(findings: list[Finding]) -> list[cst.CSTNode]:
    """Each finding's node and each node its fix edits: the nodes whose positions are reported."""
    return [f.node for f in findings] + [edit.node for f in findings if f.fix is not None for edit in f.fix.edits]


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


@dataclass
class _FirstPass:
    model: ModuleModel
    origins: Origins
    findings: list[Finding]
    layout_read: list[cst.CSTNode]


def _first_pass(source: str, tree: ast.Module, rules: Sequence[Rule]) -> _FirstPass | None:
    """The rules' findings on the LibCST tree built from CPython's (`tree_from_ast.py`), which
    costs a fifth of LibCST's parse; most files end here, with none. None when it cannot be built
    or the model fails on it: the file is then checked on LibCST's own parse (and an error in the
    model is reported from there)."""
    try:
        module, origins, listed = built_module(source, tree)
        with recording_layout() as layout_read:
            model = build_model(module, source, listed)
            findings = _findings(model, rules)
        return _FirstPass(model, origins, findings, layout_read)
    except Exception:  # Unsupported, RecursionError, or the model's own error: LibCST's path decides
        return None


def _on_parsed_statements(source: str, filename: str, tree: ast.Module, rules: Sequence[Rule],
                          first: _FirstPass) -> list[Diagnostic] | None:
    """The diagnostics from the built tree with LibCST's parse of the statements the findings
    need (gradlint/partial_parse.py): the same as from LibCST's parse of the whole file, or None
    when that cannot be shown (a node read lies outside those statements, a position is not
    placed by its statement), and the whole file is parsed."""
    try:
        spliced = splice(source, tree, first.model.module, first.origins, first.model.parents,
                         _needed(first.findings, first.layout_read))
        if spliced is None:
            return None
        with recording_layout() as layout_read:
            model = build_model(spliced.module, source)
            findings = _findings(model, rules)
        if not spliced.covers(_needed(findings, layout_read), model.parents):
            return None
        return _locate(spliced.module, findings, filename, source, spliced.roots, model.parents)
    except Exception:  # anything unforeseen here: the whole file's parse decides
        return None


def _syntax_error(source: str, filename: str, exc: cst.ParserSyntaxError | cst.CSTValidationError) -> FileError:
    """CPython's own message and location when it agrees the file is invalid (the one users
    know); LibCST's when only LibCST rejects it (syntax newer than the installed LibCST)."""
    try:
        parse_quietly(source, filename)
    except SyntaxError as py_exc:
        # Columns are 1-based; CPython gives 0 for some errors (a missing indented block).
        column = max(1, py_exc.offset) if py_exc.offset is not None else None
        return FileError(filename, f"syntax error: {py_exc.msg}", py_exc.lineno, column)
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


def _locate(module: cst.Module, findings: list[Finding], filename: str, source: str,
            roots: frozenset[int] | None = None,
            parents: dict[int, cst.CSTNode] | None = None) -> list[Diagnostic] | None:
    """The findings with positions and text fixes. With `roots` (the statements of a partly
    parsed tree, `partial_parse.Spliced`): None unless each position comes from one of them."""
    if not findings:
        return []
    # Positions only for files with findings, and only of the nodes reported or edited.
    wanted = reported_nodes(findings)
    positions = positions_of(module, wanted, source, roots, parents)
    if roots is not None and any(node not in positions for node in wanted):
        return None
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
