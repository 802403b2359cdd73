"""`tree_from_ast`: LibCST's tree built from CPython's is LibCST's own parse, trivia aside, and the
checker clears files on it (findings come from LibCST's parse of their statements, test_partial_parse.py);
the builder lists the tree's nodes as `traversal.index` would."""

from __future__ import annotations

import ast
import dataclasses
import sysconfig
import textwrap
from pathlib import Path

import libcst as cst
import pytest

import gradlint.checker as checker
from gradlint.checker import check_source
from gradlint.model import traversal
from gradlint.model.syntax import code
from gradlint.rules import ALL_RULES
from gradlint.tree_from_ast import Unsupported, _constructor, _make, built_module, first_difference, module_from_ast

from .conftest import FIXTURES

RULES = [rule() for rule in ALL_RULES]
SCRIPTS = sorted(FIXTURES.rglob("*.py"))
STDLIB = Path(sysconfig.get_paths()["stdlib"])
# Standard-library files that between them use every statement and expression Python 3.11 has.
GRAMMAR_FILES = ["test/test_grammar.py", "test/test_coroutines.py", "test/test_fstring.py",
                 "test/test_string_literals.py",
                 "test/test_exceptions.py", "test/test_decorators.py", "test/test_keywordonlyarg.py",
                 "test/test_positional_only_arg.py", "test/test_unpack_ex.py", "test/test_named_expressions.py",
                 "test/test_asyncgen.py", "test/test_with.py", "test/test_generators.py", "dataclasses.py", "typing.py",
                 "ast.py", "argparse.py", "asyncio/tasks.py", "enum.py", "inspect.py"]


def built(source: str) -> cst.Module:
    return module_from_ast(source, ast.parse(source))


def assert_listed(source: str) -> cst.Module:
    """The builder's own listing of the tree is the one `traversal.index` makes: the same nodes in
    the same order, with the same subtree ends and places."""
    made = built_module(source, ast.parse(source))
    expected = traversal.Preorder(made.module, locate=True)
    assert len(made.listed.nodes) == len(expected.nodes)
    assert all(a is b for a, b in zip(made.listed.nodes, expected.nodes, strict=True))
    assert made.listed.ends == expected.ends and made.listed.at == expected.at
    return made.module


def assert_same(source: str) -> None:
    difference = first_difference(cst.parse_module(source), assert_listed(source))
    assert difference is None, difference


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixture_tree_is_libcsts(path: Path) -> None:
    assert_same(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", GRAMMAR_FILES)
def test_standard_library_tree_is_libcsts(name: str) -> None:
    path = STDLIB / name
    if not path.exists():
        pytest.skip(f"{name} is not in this Python's standard library")
    source = path.read_text(encoding="utf-8")
    try:
        expected = cst.parse_module(source)
    except cst.ParserSyntaxError:
        pytest.skip(f"LibCST cannot parse {name}")
    try:
        assert first_difference(expected, assert_listed(source)) is None
    except Unsupported:
        pytest.skip(f"{name} uses syntax built by LibCST only")


SNIPPETS = {
    "elif and else-if": "if a:\n    x\nelif b:\n    y\nelse:\n    if c:\n        z\n    else:\n        w\n",
    "one-line suites": "if a: x; y\nfor i in r: pass\nwhile t: break\nclass A: pass\ndef f(): return 1\n",
    "semicolons": "a = 1; b = 2\nc = 3;\nif a:\n    d = 4; e = 5\n",
    "strings": "s = 'a'\nt = r'\\d' \"b\"\nu = b'x' b'y'\nv = '''m\nn'''\nw = ('p'\n     'q')\nx = 'it\\'s'\n",
    "f-strings": "f'{a!r:>{w}}'\nf'{x}' 'y'\nF'''{\n  y\n}'''\nrf'\\{z}'\n",
    "numbers": "n = 0x1F + 1_000 + 0o7 + 0b1 + 1e-3 + 2.5j + 1. + .5\n",
    "names": "x = True, False, None, ...\n",
    "calls": "f(a, *b, c=1, **d)\nf(a, k=1, *rest)\nf(x for x in y)\nf(*a, k=1, *b, **c)\n",
    "subscripts": "a[1]\na[1, 2]\na[(1, 2)]\na[:]\na[1:2:3]\na[::2, None]\na[()]\na[b][c]\n",
    "tuples": "x = 1, 2\ny = (1, 2)\nz = ()\nw = (1,)\nfor a, b in c: pass\nfor (a, b) in c: pass\n",
    "unpacking": "a, *b = c\n[*a, b] = c\nd = {**e, 'f': 1}\ng = {*h}\n",
    "comprehensions": "[x for x in y if x if z for w in x]\n{k: v for k, v in d}\n{s for s in t}\n"
                      "async def f():\n    return [x async for x in y]\n",
    "lambdas": "f = lambda: 0\ng = lambda a, b=1, *c, d, e=2, **f: a\nh = lambda *, k: k\ni = lambda a, /, b: a\n",
    "definitions": "@d\n@e.f(1)\nasync def f(a, /, b: int = 1, *args: str, c, d=2, **kw) -> None:\n"
                   "    await g()\n    async for x in y: pass\n    async with z as w, v: pass\n"
                   "class C(B, metaclass=M, **kw):\n    x: int\n    y: int = 1\n",
    "operators": "x = -a ** -b + ~c * (d - e) / f // g % h @ i << j >> k | l ^ m & n\n"
                 "y = not a and b or c and not d\nz = a < b <= c != d is not e not in f\nw = a if b else c\n"
                 "x += 1; x -= 1; x *= 2; x /= 2; x //= 2; x %= 2; x **= 2; x <<= 1; x >>= 1; x |= 1; x &= 1\n"
                 "x ^= 1; x @= m\n",
    "statements": "import a.b.c as d, e\nfrom . import f\nfrom ..g.h import (i, j as k)\nfrom m import *\n"
                  "global q\ndel a, b[0]\ndel c\nassert x, 'm'\nraise E from e\nraise\n"
                  "def f():\n    nonlocal_ = 1\n    def g():\n        nonlocal nonlocal_\n    return\n"
                  "def gen():\n    yield\n    yield 1\n    yield from x\n    x = yield\n",
    "try": "try:\n    a\nexcept (A, B) as e:\n    b\nexcept C:\n    c\nexcept:\n    d\nelse:\n    e\nfinally:\n    f\n"
           "try:\n    a\nexcept* E:\n    b\n",
    "loops with else": "for a in b:\n    pass\nelse:\n    c\nwhile d:\n    pass\nelse:\n    e\n",
    "walrus": "if (n := len(a)) > 10: pass\nwhile (x := f()):\n    pass\n",
    "with": "with a as b, c as (d, e):\n    pass\nwith (f as g, h):\n    pass\n",
    "comments and blank lines": "# c\n\nx = 1  # d\n\n\ndef f():\n    # e\n\n    return x  # f\n",
    "crlf": "if a:\r\n    b = 1\r\n    c = 2\r\n",
    "tabs": "if a:\n\tb = 1\n\tif c:\n\t\td = 'é'\n",
    "non-ascii text": "x = 'héllo'; y = f('ü', z='€')\nw = 'a' 'é' 'b'\n",
    "line continuation": "x = 1 + \\\n    2\nif a and \\\n   b: pass\n",
    # a backslash joins lines into one logical line: the statements after it share the line above
    # (hypothesmith's programs found both)
    "body joined to its header": "class A:\\\n pass\nfor i in r:\\\n    x = 1; \\\n    y = 2\nelse:\\\n  pass\n",
    "statements joined by a backslash": "a = 1 \\\n; b = 2\nc = '#' \\\n;\td = 3\ne = 4\n",
    "docstrings": '"""Module."""\ndef f():\n    """Doc."""\n    return 1\n',
    # where one literal ends: escaped quotes, quotes inside triple quotes, empty literals, prefixes
    "string ends": 'a = "x\\"y"\nb = """q "" r " s\\""""\nc = ""\nd = """"""\ne = \'\'""\nf = """a""" "b"\n'
                   'g = rb"\\\\" B"x"\nh = \'\'\'it\'s\'\'\'\ni = "a\\\nb"\nj = U"u"\n',
    "empty": "",
    "no final newline": "x = 1",
}


@pytest.mark.parametrize("source", SNIPPETS.values(), ids=SNIPPETS.keys())
def test_snippet_tree_is_libcsts(source: str) -> None:
    assert_same(source)


@pytest.mark.parametrize("source", [
    "match x:\n    case 1:\n        pass\n",   # not built here
    "y = 1 .real\n",                           # LibCST keeps the space in the number
    "ｔｈ = 1\n",                               # CPython normalises the identifier (NFKC) # noqa: RUF001
    "cafe\u0301 = 1\n",                        # ... and composes `e` and a combining accent
    "a[*b]\n",
    "x = 1  # a comment's backslash \\\ny = 2\n",  # only a tokenizer tells a comment from a string
])
def test_unsupported_syntax_is_left_to_libcst(source: str) -> None:
    with pytest.raises(Unsupported):
        built(source)


def test_an_expression_kind_not_built_here_is_left_to_libcst() -> None:
    # A node kind this module has no builder for (as a newer Python's would be): FormattedValue outside an f-string.
    value = ast.FormattedValue(value=ast.Name("x", ast.Load(), lineno=1, col_offset=0, end_lineno=1, end_col_offset=1),
                               conversion=-1, format_spec=None, lineno=1, col_offset=0, end_lineno=1, end_col_offset=1)
    tree = ast.Module(body=[ast.Expr(value, lineno=1, col_offset=0, end_lineno=1, end_col_offset=1)], type_ignores=[])
    with pytest.raises(Unsupported, match="FormattedValue"):
        module_from_ast("x\n", tree)


def test_an_f_string_is_parsed_once_per_text_and_never_shared_within_a_module() -> None:
    """Another module's nodes for the same f-string are reused; a module that repeats one gets
    nodes of its own for each (the model keys what it records on node ids)."""
    def strings(module: cst.Module) -> list[cst.CSTNode]:
        return [line.body[0].value for line in module.body]  # type: ignore[attr-defined]

    first = strings(built("f'{loss.item():.3f} at {step}'\n"))
    second = strings(built("f'{loss.item():.3f} at {step}'\nf'{loss.item():.3f} at {step}'\n"))
    assert second[0] is first[0]
    assert second[1] is not second[0]
    assert first_difference(second[0], second[1]) is None


def test_a_difference_is_reported_with_its_path() -> None:
    assert first_difference(cst.parse_module("f(a / b)\n"), built("f(a * b)\n")) == (
        "module.body[0].body[0].value.args[0].value.operator: Divide != Multiply")
    assert first_difference(cst.parse_module("f(a, b)\n"), built("f(a)\n")) == (
        "module.body[0].body[0].value.args: 2 items != 1")
    assert first_difference(cst.parse_module("x = 'a'\n"), built("x = \"a\"\n")) == (
        "module.body[0].body[0].value.value: \"'a'\" != '\"a\"'")


@pytest.mark.parametrize("expression", [
    "(a + b) / k", "a + b / k", "-a ** 2", "(-a) ** 2", "a ** -b", "(a or b) and c", "not (a and b)",
    "(a if b else c).d", "f(x)[0].y", "(a, b)", "(a := 1) + 2", "a - (b - c)", "a - b - c", "2 ** 3 ** 4",
    "(2 ** 3) ** 4", "lambda x: (yield)", "-x.y", "await z", "[*a, *b]",
])
def test_quoted_code_reads_as_the_source(expression: str) -> None:
    """`syntax.code` (messages and same-expression tests) reads a built expression as the source writes it,
    brackets where precedence needs them included."""
    statement = f"async def f():\n    return {expression}\n" if "await" in expression or "yield" in expression else (
        f"x = {expression}\n")
    node = built(statement).body[0]
    value = node.body.body[0].body[0].value if isinstance(node, cst.FunctionDef) else node.body[0].value
    assert code(value) == expression


def test_a_clean_candidate_is_cleared_without_libcsts_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    source = (FIXTURES / "clean" / "nanogpt_zero_grad_after_step.py").read_text(encoding="utf-8")
    parsed: list[str] = []
    real = checker.parse_accepted_module
    monkeypatch.setattr(checker, "parse_accepted_module", lambda text: parsed.append(text) or real(text))
    result = check_source(source, "train.py", RULES, prefilter=True)
    assert (result.diagnostics, result.error, parsed) == ([], None, [])
    # The whole-file path (`--fix` rounds) still parses with LibCST.
    assert check_source(source, "train.py", RULES).diagnostics == [] and len(parsed) == 1


def test_findings_come_from_libcsts_parse_of_their_statements(monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is not parsed whole by LibCST: only the statements the findings need are
    (gradlint/partial_parse.py), and the diagnostics are those of the whole file's parse."""
    source = textwrap.dedent("""\
        for i, (x, y) in enumerate(loader):
            optimizer.zero_grad()
            loss = criterion(model(x), y)  # a comment LibCST keeps
            loss.backward()
            if (i + 1) % accumulation_steps == 0:
                optimizer.step()
    """)
    parsed: list[str] = []
    real = checker.parse_accepted_module
    monkeypatch.setattr(checker, "parse_accepted_module", lambda text: parsed.append(text) or real(text))
    staged = check_source(source, "train.py", RULES, prefilter=True)
    assert parsed == []
    whole = check_source(source, "train.py", RULES)
    assert len(parsed) == 1 and staged.diagnostics == whole.diagnostics
    assert [d.fix for d in staged.diagnostics] == [d.fix for d in whole.diagnostics]
    assert (staged.diagnostics[0].code, staged.diagnostics[0].row, staged.diagnostics[0].column) == ("GA001", 2, 5)


def test_syntax_the_builder_leaves_to_libcst_is_still_checked() -> None:
    source = textwrap.dedent("""\
        for i, (x, y) in enumerate(loader):
            match mode:
                case "train":
                    optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            if (i + 1) % accumulation_steps == 0:
                optimizer.step()
    """)
    staged = check_source(source, "train.py", RULES, prefilter=True)
    assert [d.code for d in staged.diagnostics] == [d.code for d in check_source(source, "train.py", RULES).diagnostics]
    assert "GA001" in [d.code for d in staged.diagnostics]


def test_an_error_in_the_built_tree_falls_back_to_libcst(monkeypatch: pytest.MonkeyPatch) -> None:
    source = (FIXTURES / "clean" / "nanogpt_zero_grad_after_step.py").read_text(encoding="utf-8")

    def broken(*args: object) -> cst.Module:
        raise ValueError("a bug in the builder")

    monkeypatch.setattr(checker, "built_module", broken)
    result = check_source(source, "train.py", RULES, prefilter=True)
    assert (result.diagnostics, result.error) == ([], None)


@pytest.mark.parametrize("kind", [cst.Name, cst.Call, cst.Arg, cst.Attribute, cst.SimpleStatementLine,
                                  cst.IndentedBlock, cst.FunctionDef, cst.Module, cst.Subscript])
def test_a_node_made_without_init_is_the_dataclasss(kind: type[cst.CSTNode]) -> None:
    """`_make.X(...)` fills the slots directly: the same node as `cst.X(...)`, with every field set,
    arguments taken by position or by name as `__init__` takes them."""
    name = cst.Name("x")
    block = cst.IndentedBlock(body=[cst.SimpleStatementLine(body=[cst.Pass()])])
    required = {cst.Name: ("x",), cst.Call: (name,), cst.Arg: (name,), cst.Attribute: (name, cst.Name("y")),
                cst.SimpleStatementLine: ([cst.Pass()],), cst.IndentedBlock: ([cst.SimpleStatementLine([cst.Pass()])],),
                cst.FunctionDef: (cst.Name("f"), cst.Parameters(), block), cst.Module: ([],),
                cst.Subscript: (name, [cst.SubscriptElement(cst.Index(cst.Integer("0")))])}[kind]
    made = getattr(_make, kind.__name__)(*required)
    expected = kind(*required)
    assert type(made) is kind and made.deep_equals(expected)
    assert all(getattr(made, f.name) is not None or getattr(expected, f.name) is None
               for f in dataclasses.fields(kind))
    empty = cst.Module(body=[])
    assert empty.code_for_node(made) == empty.code_for_node(expected)


def test_a_default_factory_that_is_not_trivia_makes_a_fresh_value_each_time() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Toy:
        value: str
        items: list[str] = dataclasses.field(default_factory=list)
        flag: bool = False

    make = _constructor(Toy)  # type: ignore[arg-type]
    first, second = make("a"), make(value="b", flag=True)
    assert (first.value, first.items, first.flag) == ("a", [], False)
    assert (second.value, second.flag) == ("b", True) and first.items is not second.items
