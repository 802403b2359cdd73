"""`partial_parse`: LibCST's parse of one statement alone is its part of the whole file's parse, and
the checker's diagnostics from a tree with only the needed statements parsed are the whole parse's."""

from __future__ import annotations

import ast
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path

import libcst as cst
import pytest

import gradlint.checker as checker
from gradlint import partial_parse
from gradlint.checker import check_source
from gradlint.lines import source_lines
from gradlint.model import traversal
from gradlint.rules import ALL_RULES
from gradlint.tree_from_ast import Unsupported, built_module

from .conftest import FIXTURES

RULES = [rule() for rule in ALL_RULES]
SCRIPTS = sorted(FIXTURES.rglob("*.py"))
STDLIB = Path(sysconfig.get_paths()["stdlib"])
# Layouts of many kinds: decorators, nested classes, comments between and after blocks, tabs
# (tabnanny's tests write them), long continuation lines, docstrings everywhere.
STDLIB_FILES = ["argparse.py", "ast.py", "asyncio/tasks.py", "dataclasses.py", "enum.py", "inspect.py",
                "typing.py", "tarfile.py", "unittest/case.py", "email/_header_value_parser.py",
                "test/test_grammar.py", "test/test_tabnanny.py", "test/test_with.py", "test/test_decorators.py",
                "idlelib/editor.py", "pydoc.py"]


def _pairs(built: cst.CSTNode, parsed: cst.CSTNode) -> Iterator[tuple[cst.CSTNode, cst.CSTNode]]:
    """Each built node with LibCST's node at the same place (the two trees differ only in trivia)."""
    stack = [(built, parsed)]
    while stack:
        a, b = stack.pop()
        yield a, b
        stack.extend(zip(traversal.children(a), traversal.children(b), strict=True))


def _sources() -> Iterator[tuple[str, str]]:
    for path in SCRIPTS:
        yield str(path.relative_to(FIXTURES)), path.read_text(encoding="utf-8")
    for name in STDLIB_FILES:
        path = STDLIB / name
        if path.exists():
            yield name, path.read_text(encoding="utf-8")


def _statement_check(source: str) -> tuple[int, int]:
    """(statements parsed alone and equal to the whole parse's, statements refused); fails on a
    statement parsed alone that differs."""
    tree = ast.parse(source)
    try:
        whole = cst.parse_module(source)
        built, origins, _listed = built_module(source, tree)
    except (cst.ParserSyntaxError, Unsupported):
        return 0, 0
    assert partial_parse.layout(source, tree, source_lines(source)) == (whole.default_indent, whole.default_newline)
    splicer = partial_parse._Splicer(source, tree, built, origins, traversal.parents(built), source_lines(source))
    same = refused = 0
    for node, theirs in _pairs(built, whole):
        if id(node) not in origins:
            continue
        try:
            with partial_parse.validation_off():
                ours = splicer._parse(node)
        except partial_parse._Refused:
            refused += 1
            continue
        assert ours.deep_equals(theirs), f"line {origins[id(node)][0].lineno}"
        same += 1
    return same, refused


def test_each_statement_parsed_alone_is_its_part_of_the_whole_parse() -> None:
    """Every statement of a block of every fixture and of varied standard-library modules."""
    same = refused = 0
    for _name, source in _sources():
        s, r = _statement_check(source)
        same, refused = same + s, refused + r
    assert same > 20_000 and refused < same / 500


@pytest.mark.parametrize("source", [
    "x = 1\n",
    "",
    "if a: b\nelse:\n  c\n",  # the one-line suite starts no indented line; the `else:` block does
    "x = (1,\n        2)\nif a:\n   b\n",  # a continuation line is not an indentation
    "class A:\n\tdef f(self):\n\t\tpass\n",
    "def f():\r\n    return 1\r\n",
    "try:\n  a\nexcept E:\n    b\n",
    "@d\ndef f():\n      pass\n",
    "x = 1",  # no line end at all
])
def test_layout_is_the_one_libcst_detects(source: str) -> None:
    module = cst.parse_module(source)
    tree = ast.parse(source)
    assert partial_parse.layout(source, tree, source_lines(source)) == (module.default_indent, module.default_newline)


def _staged_and_whole(source: str) -> tuple[checker.FileResult, checker.FileResult]:
    return check_source(source, "train.py", RULES, prefilter=True), check_source(source, "train.py", RULES)


def _assert_same(staged: checker.FileResult, whole: checker.FileResult) -> None:
    assert staged.diagnostics == whole.diagnostics and staged.error == whole.error
    assert [d.fix for d in staged.diagnostics] == [d.fix for d in whole.diagnostics]  # Diagnostic ignores fix


def _spliced_runs(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records, for each file with findings, whether its diagnostics came from the partial parse."""
    runs: list[bool] = []
    real = checker._on_parsed_statements

    def spy(*args: object) -> object:
        located = real(*args)  # type: ignore[arg-type]
        runs.append(located is not None)
        return located

    monkeypatch.setattr(checker, "_on_parsed_statements", spy)
    return runs


@pytest.mark.parametrize("path", [p for p in SCRIPTS if "clean" not in p.parts],
                         ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixture_diagnostics_are_the_whole_parses(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _spliced_runs(monkeypatch)
    staged, whole = _staged_and_whole(path.read_text(encoding="utf-8"))
    _assert_same(staged, whole)
    if whole.diagnostics:
        assert runs == [True]  # every fixture with findings is placed from the partial parse


def test_spliced_statements_and_blocks_are_the_whole_parses() -> None:
    """The parsed statements in place, and each built block around them indented as written."""
    source = textwrap.dedent("""\
        class Trainer:
          def fit(self):
                for i, (x, y) in enumerate(self.loader):
                    self.optimizer.zero_grad()   # cleared every micro-batch
                    loss = criterion(model(x), y)
                    loss.backward()

                    if (i + 1) % self.accumulation_steps == 0:
                        self.optimizer.step()
    """)
    tree = ast.parse(source)
    first = checker._first_pass(source, tree, RULES)
    assert first is not None and first.findings
    spliced = partial_parse.splice(source, tree, first.model.module, first.origins, first.model.parents,
                                   checker._needed(first.findings, first.layout_read))
    assert spliced is not None and spliced.roots
    whole = cst.parse_module(source)
    assert (spliced.module.default_indent, spliced.module.default_newline) == ("  ", "\n")
    checked = 0
    for ours, theirs in _pairs(spliced.module, whole):
        if id(ours) in spliced.roots:
            assert ours.deep_equals(theirs)
            checked += 1
        elif isinstance(ours, cst.IndentedBlock) and any(id(n) in spliced.roots for n, _ in _pairs(ours, theirs)):
            assert ours.indent == theirs.indent  # "      " relative to the method's two spaces
            checked += 1
    assert checked >= 3


def test_a_quoted_expression_keeps_its_spacing_and_comments(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _spliced_runs(monkeypatch)
    source = textwrap.dedent("""\
        for step, batch in enumerate(loader):
            loss = model(batch)/ accum_steps
            loss = (loss /
                    accum_steps)  # twice
            loss.backward()
            if (step+1)%accum_steps == 0:
                optimizer.step()
                optimizer.zero_grad()
    """)
    staged, whole = _staged_and_whole(source)
    _assert_same(staged, whole)
    assert runs == [True] and any("(step+1)%accum_steps" in d.message for d in staged.diagnostics)


@pytest.mark.parametrize("newline, indent", [("\r\n", "    "), ("\n", "\t"), ("\n", "  ")])
def test_line_ends_and_indentation_of_the_file(newline: str, indent: str, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _spliced_runs(monkeypatch)
    lines = ["def train(loader, model, optimizer, accumulation_steps):",
             "@for i, batch in enumerate(loader):",
             "@@optimizer.zero_grad()",
             "@@loss = model(batch)",
             "@@loss.backward()",
             "@@if (i + 1) % accumulation_steps == 0:",
             "@@@# step once per window",
             "@@@optimizer.step()"]
    source = newline.join(line.replace("@", indent) for line in lines) + newline
    staged, whole = _staged_and_whole(source)
    _assert_same(staged, whole)
    assert runs == [True] and any(d.fix is not None for d in staged.diagnostics)


def test_a_statement_repeated_at_the_module_level_is_parsed_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its code occurs twice in the file, so its position cannot be found from it alone."""
    runs = _spliced_runs(monkeypatch)
    loop = textwrap.dedent("""\
        for i, batch in enumerate(loader):
            optimizer.zero_grad()
            loss = model(batch)
            loss.backward()
            if (i + 1) % accumulation_steps == 0:
                optimizer.step()
    """)
    staged, whole = _staged_and_whole(loop + "\n" + loop)
    _assert_same(staged, whole)
    assert whole.diagnostics and runs == [False]


def test_a_deeper_blank_line_above_is_parsed_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """LibCST gives a whitespace line indented deeper than the next statement to the block
    before it: that statement's lines alone would make it the statement's own."""
    runs = _spliced_runs(monkeypatch)
    source = ("def log(i):\n    print(i)\n        \nfor i, batch in enumerate(loader):\n    optimizer.zero_grad()\n"
              "    model(batch).backward()\n    if (i + 1) % accumulation_steps == 0:\n        optimizer.step()\n")
    staged, whole = _staged_and_whole(source)
    _assert_same(staged, whole)
    assert whole.diagnostics and runs == [False]


def test_a_node_read_outside_the_parsed_statements_means_the_whole_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    source = (FIXTURES / "GA001" / "nanogpt_zero_grad_in_micro_step_loop.py").read_text(encoding="utf-8")
    monkeypatch.setattr(partial_parse.Spliced, "covers", lambda self, nodes, parents: False)
    parsed: list[str] = []
    real = checker.parse_accepted_module
    monkeypatch.setattr(checker, "parse_accepted_module", lambda text: parsed.append(text) or real(text))
    staged = check_source(source, "train.py", RULES, prefilter=True)
    assert len(parsed) == 1 and staged.diagnostics  # the whole file parsed, and the findings kept


def test_an_error_while_splicing_means_the_whole_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    source = (FIXTURES / "GA001" / "nanogpt_zero_grad_in_micro_step_loop.py").read_text(encoding="utf-8")
    whole = check_source(source, "train.py", RULES)

    def broken(*args: object) -> object:
        raise ValueError("a bug in the splicer")

    monkeypatch.setattr(partial_parse._Splicer, "run", broken)
    _assert_same(check_source(source, "train.py", RULES, prefilter=True), whole)
