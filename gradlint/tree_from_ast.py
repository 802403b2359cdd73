"""LibCST's tree of a file, built from CPython's `ast` instead of LibCST's parser.

LibCST's parse is half of gradlint's time on a tree of training scripts (9 s of 16 s over the 491
candidate files of a 29-repository corpus), and most files it parses have no finding. CPython has
already parsed every candidate (`pipeline.cpython_tree`), and its tree holds everything the model
reads: which statements, calls, names, operators and literals, in which blocks. This module builds
the same LibCST nodes from it, with default whitespace: the model runs on them unchanged. What the
tree lacks is what only a finding needs (comments, exact whitespace and brackets for positions,
fixes and quoted code), so `checker` builds the model from this tree first and, when a rule finds
anything, checks the file again with LibCST's own parse of the statements the findings need put in
place of the built ones (gradlint/partial_parse.py; the whole file's parse where that cannot be
done): every reported position, quoted code and fix comes from LibCST's nodes, as before. The
builder also lists the nodes as it makes them, in the order `traversal.index` would list them
(0.9 s of a corpus's ~7 s, for ~0.4 s more building): `Built.listed`.

The nodes are those LibCST's parser gives, field for field, except trivia: whitespace, comments,
commas, brackets (`lpar`/`rpar` are set only where precedence needs them, so that `syntax.code`
still reads right) and `Module` header/footer. `first_difference` compares the two trees;
`tests/test_tree_from_ast.py` runs it on every fixture and on standard-library files, and
`benchmarks/tree_fidelity.py` on any tree. Literals keep their source text (`0x10`, `r"\\d"`);
what CPython merges or cannot place (implicitly concatenated strings, f-strings) is parsed from
its source text by LibCST, and a statement kind not built here (`match`, PEP 695 syntax) makes the
whole file go to LibCST's parser (`Unsupported`).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import re
import types
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, TypeVar

import libcst as cst
from libcst import MaybeSentinel

from gradlint.lines import source_lines
from gradlint.model import traversal
from gradlint.model.traversal import TRIVIA
from gradlint.trusted_parse import validation_off

_N = TypeVar("_N", bound=cst.CSTNode)


class Unsupported(Exception):
    """A construct this module does not build: parse the file with LibCST."""


# Precedence, as ast.unparse ranks it: a child ranked below what its parent needs gets parentheses.
_NAMED, _TUPLE, _YIELD, _TEST, _OR, _AND, _NOT, _CMP, _EXPR = range(1, 10)
_BOR, _BXOR, _BAND, _SHIFT, _ARITH, _TERM, _FACTOR, _POWER, _AWAIT, _ATOM = range(10, 20)

_BINARY: dict[type, tuple[type[cst.BaseBinaryOp], int]] = {
    ast.Add: (cst.Add, _ARITH), ast.Sub: (cst.Subtract, _ARITH), ast.Mult: (cst.Multiply, _TERM),
    ast.Div: (cst.Divide, _TERM), ast.FloorDiv: (cst.FloorDivide, _TERM), ast.Mod: (cst.Modulo, _TERM),
    ast.MatMult: (cst.MatrixMultiply, _TERM), ast.Pow: (cst.Power, _POWER), ast.LShift: (cst.LeftShift, _SHIFT),
    ast.RShift: (cst.RightShift, _SHIFT), ast.BitOr: (cst.BitOr, _BOR), ast.BitXor: (cst.BitXor, _BXOR),
    ast.BitAnd: (cst.BitAnd, _BAND),
}
_AUGMENTED: dict[type, type[cst.BaseAugOp]] = {
    ast.Add: cst.AddAssign, ast.Sub: cst.SubtractAssign, ast.Mult: cst.MultiplyAssign, ast.Div: cst.DivideAssign,
    ast.FloorDiv: cst.FloorDivideAssign, ast.Mod: cst.ModuloAssign, ast.MatMult: cst.MatrixMultiplyAssign,
    ast.Pow: cst.PowerAssign, ast.LShift: cst.LeftShiftAssign, ast.RShift: cst.RightShiftAssign,
    ast.BitOr: cst.BitOrAssign, ast.BitXor: cst.BitXorAssign, ast.BitAnd: cst.BitAndAssign,
}
_UNARY: dict[type, tuple[type[cst.BaseUnaryOp], int]] = {
    ast.UAdd: (cst.Plus, _FACTOR), ast.USub: (cst.Minus, _FACTOR), ast.Invert: (cst.BitInvert, _FACTOR),
    ast.Not: (cst.Not, _NOT),
}
_COMPARE: dict[type, type[cst.BaseCompOp]] = {
    ast.Eq: cst.Equal, ast.NotEq: cst.NotEqual, ast.Lt: cst.LessThan, ast.LtE: cst.LessThanEqual,
    ast.Gt: cst.GreaterThan, ast.GtE: cst.GreaterThanEqual, ast.Is: cst.Is, ast.IsNot: cst.IsNot, ast.In: cst.In,
    ast.NotIn: cst.NotIn,
}
_COMPOUND = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.If, ast.For, ast.AsyncFor, ast.While,
             ast.With, ast.AsyncWith, ast.Try, getattr(ast, "TryStar", ast.Try), getattr(ast, "Match", ast.Try))


class _Makers:
    """`_make.Call(...)` builds a `cst.Call` whose trivia fields (whitespace, `.`, brackets) hold one
    shared instance each instead of new ones from their default factories: a third of the objects
    a tree would otherwise hold. Nothing reads trivia identity: the model's visit skips it, and no
    positions are computed on this tree."""

    def __getattr__(self, name: str) -> Callable[..., cst.CSTNode]:
        maker = _constructor(getattr(cst, name))
        setattr(self, name, maker)
        return maker


_FROM_FACTORY = object()


def _constructor(kind: type[cst.CSTNode]) -> Callable[..., cst.CSTNode]:
    """A function taking `kind`'s own arguments that fills a new node's slots directly. The
    dataclass `__init__` sets each field through `object.__setattr__` and then calls
    `__post_init__`, which only validates (and validation is off while a tree is built): a Call
    costs 1.0 µs that way and 0.4 µs this way, and a candidate file builds hundreds of thousands."""
    namespace: dict[str, object] = {"_new": object.__new__, "_kind": kind, "_FROM_FACTORY": _FROM_FACTORY}
    params, body = [], ["    node = _new(_kind)"]
    for index, f in enumerate(dataclasses.fields(kind)):
        slot = getattr(kind, f.name, None)
        if type(slot) is not types.MemberDescriptorType:  # not a plain slot: let the dataclass do it
            return _through_init(kind)
        namespace[f"_set{index}"] = slot.__set__
        if f.default is not dataclasses.MISSING:
            namespace[f"_default{index}"] = f.default
            params.append(f"{f.name}=_default{index}")
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            if _is_trivia(value):  # one instance for every node
                namespace[f"_default{index}"] = value
                params.append(f"{f.name}=_default{index}")
            else:  # a fresh one each time, as the dataclass makes it
                namespace[f"_factory{index}"] = f.default_factory
                params.append(f"{f.name}=_FROM_FACTORY")
                body.append(f"    if {f.name} is _FROM_FACTORY: {f.name} = _factory{index}()")
        else:
            params.append(f.name)
        body.append(f"    _set{index}(node, {f.name})")
    source = f"def make_{kind.__name__}({', '.join(params)}):\n" + "\n".join(body) + "\n    return node\n"
    exec(source, namespace)  # as dataclasses writes `__init__`: a signature known only at run time
    return namespace[f"make_{kind.__name__}"]  # type: ignore[return-value]


def _through_init(kind: type[cst.CSTNode]) -> Callable[..., cst.CSTNode]:
    shared = {f.name: f.default_factory() for f in dataclasses.fields(kind)
              if f.default_factory is not dataclasses.MISSING and _is_trivia(f.default_factory())}
    return functools.partial(kind, **shared) if shared else kind


def _is_trivia(value: object) -> bool:
    """A default that nodes may share: trivia, or a tuple of it (a list is mutable: never shared)."""
    if isinstance(value, tuple):
        return all(_is_trivia(v) for v in value)
    return isinstance(value, TRIVIA)


_make = _Makers()
_shared = functools.cache(lambda kind: kind())  # one instance per operator class
_PAREN = ((cst.LeftParen(),), (cst.RightParen(),))
_NONE: tuple[()] = ()


def module_from_ast(source: str, tree: ast.Module) -> cst.Module:
    """The LibCST module of `source` (CPython's `tree` of it). Raises Unsupported, or RecursionError."""
    return built_module(source, tree).module


Origins = dict[int, tuple[ast.stmt, ast.stmt]]


class Built(NamedTuple):
    module: cst.Module
    # For each statement of a block (by `id`), the first and last of CPython's statements it was
    # built from (`a = 1; b = 2` is one LibCST statement).
    origins: Origins
    listed: traversal.Preorder  # what `traversal.index(module)` would list, made while building


def built_module(source: str, tree: ast.Module) -> Built:
    """`module_from_ast`, with where its statements come from and its nodes listed."""
    _check_identifiers(source)
    lines = source_lines(source)
    # Rows whose line above ends in a backslash: the only ones where a statement on a later row
    # than the one before it may still share its logical line (`a = 1 \\` then `; b = 2`).
    continued = (frozenset(row for row, line in enumerate(lines, 2) if line.rstrip("\r\n").endswith("\\"))
                 if "\\\n" in source or "\\\r" in source else frozenset())
    builder = _Builder(lines, continued)
    try:
        with validation_off():
            module = builder.module(tree)
        return Built(module, builder.origins, builder.listed())
    finally:
        # Its tables of bound methods make a reference cycle: left alone, the builder (and with
        # it CPython's tree, which `origins` holds) waits for the cycle collector, which then runs
        # far more often over far more objects: 0.9 -> 1.4 s of building on 250 candidates.
        builder.expr_builders.clear()
        builder.statement_builders.clear()




def indentation(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t\f"))]


def starts_line(statement: ast.stmt, lines: list[str]) -> bool:
    """Whether the statement begins a logical line: only indentation before it on its first line,
    and no backslash at the end of the line above joining the two (`class A:\\` then ` pass` is
    `class A: pass` to the parser)."""
    if len(indentation(lines[statement.lineno - 1])) != statement.col_offset:
        return False
    return statement.lineno < 2 or not continues(lines[statement.lineno - 2])


def continues(line: str) -> bool:
    """Whether a backslash at the end of `line` joins the next line to it. A comment may end in
    one too, and only a tokenizer tells a comment's `#` from a string's: such a line is left to
    LibCST's parser."""
    if not line.rstrip("\r\n").endswith("\\"):
        return False
    if "#" in line:
        raise Unsupported("a backslash at the end of a line that holds a '#'")
    return True


class _Builder:
    def __init__(self, lines: list[str], continued: frozenset[int]) -> None:
        self.lines, self.continued = lines, continued
        self.parsed_texts: set[str] = set()
        self.origins: Origins = {}
        # The tree's significant nodes in `traversal`'s order, as `traversal.index` would list them.
        self.nodes: list[cst.CSTNode | None] = []
        self.ends: list[int] = []
        # Names are built in `expr` itself (a third of all expressions).
        self.expr_builders: dict[type, Callable[[ast.expr], cst.BaseExpression]] = {
            ast.Attribute: self.attribute, ast.Call: self.call, ast.Constant: self.constant,
            ast.BinOp: self.binary, ast.UnaryOp: self.unary, ast.BoolOp: self.boolean, ast.Compare: self.compare,
            ast.Subscript: self.subscript, ast.Tuple: self.tuple, ast.List: self.list, ast.Set: self.set,
            ast.Dict: self.dict, ast.ListComp: self.list_comp, ast.SetComp: self.set_comp,
            ast.DictComp: self.dict_comp, ast.GeneratorExp: self.generator, ast.Lambda: self.lambda_,
            ast.IfExp: self.if_exp, ast.NamedExpr: self.named, ast.Await: self.await_, ast.Yield: self.yield_,
            ast.YieldFrom: self.yield_from, ast.Starred: self.starred, ast.JoinedStr: self.from_text,
            ast.Slice: self.unsupported,
        }
        self.statement_builders: dict[type, Callable[[ast.stmt], cst.CSTNode]] = {
            ast.Expr: self.expr_statement, ast.Assign: self.assign, ast.AugAssign: self.aug_assign,
            ast.AnnAssign: self.ann_assign, ast.Return: self.return_, ast.Pass: self.simple(cst.Pass),
            ast.Break: self.simple(cst.Break), ast.Continue: self.simple(cst.Continue), ast.Import: self.import_,
            ast.ImportFrom: self.import_from, ast.Raise: self.raise_, ast.Assert: self.assert_,
            ast.Delete: self.delete, ast.Global: self.global_, ast.Nonlocal: self.nonlocal_,
            ast.If: self.if_, ast.For: self.for_, ast.AsyncFor: self.for_, ast.While: self.while_,
            ast.With: self.with_, ast.AsyncWith: self.with_, ast.Try: self.try_, ast.FunctionDef: self.function,
            ast.AsyncFunctionDef: self.function, ast.ClassDef: self.class_,
        }
        if hasattr(ast, "TryStar"):
            self.statement_builders[ast.TryStar] = self.try_

    # --- source text ---------------------------------------------------------------------------

    def text(self, node: ast.expr) -> str:
        """The source text of `node` (its columns are UTF-8 byte offsets)."""
        first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        end_col = node.end_col_offset if node.end_col_offset is not None else 0
        if first == last:
            return _cut(self.lines[first], node.col_offset, end_col)
        return (_cut(self.lines[first], node.col_offset, None) + "".join(self.lines[first + 1 : last])
                + _cut(self.lines[last], 0, end_col))

    # --- the preorder ----------------------------------------------------------------------------
    # Each node takes its place in `nodes` before its children are built (`reserve`), and is put
    # there once it is made (`done`), with where its subtree ends: the children must be built in
    # the order `traversal` lists them (source order), which the test of this module checks.

    def reserve(self) -> int:
        ends = self.ends
        ends.append(0)
        self.nodes.append(None)
        return len(ends) - 1

    def done(self, position: int, node: _N) -> _N:
        self.nodes[position] = node
        self.ends[position] = len(self.ends)
        return node

    def leaf(self, node: _N) -> _N:
        ends = self.ends
        ends.append(len(ends) + 1)
        self.nodes.append(node)
        return node

    def graft(self, tree: cst.BaseExpression) -> cst.BaseExpression:
        """An expression LibCST parsed: its own preorder, its root in the place `expr` kept."""
        listed = traversal.preorder(tree)
        self.nodes.pop()
        self.ends.pop()
        offset = len(self.ends)
        self.nodes.extend(listed.nodes)
        self.ends.extend(end + offset for end in listed.ends)
        return tree

    def listed(self) -> traversal.Preorder:
        nodes = self.nodes
        return traversal.Preorder.of(nodes, self.ends, dict(zip(map(id, nodes), range(len(nodes)), strict=True)))

    # --- statements ----------------------------------------------------------------------------

    def module(self, tree: ast.Module) -> cst.Module:
        position = self.reserve()
        return self.done(position, _make.Module(body=self.statements(tree.body)))

    def statements(self, body: list[ast.stmt]) -> list[cst.BaseStatement]:
        out: list[cst.BaseStatement] = []
        index, count = 0, len(body)
        while index < count:
            node = body[index]
            if isinstance(node, _COMPOUND):
                built = self.statement(node)
                self.origins[id(built)] = (node, node)
                out.append(built)  # type: ignore[arg-type]
                index += 1
                continue
            # Simple statements on one line (`a = 1; b = 2`) share a SimpleStatementLine.
            position = self.reserve()
            small = [self.statement(node)]
            index += 1
            while index < count and not isinstance(body[index], _COMPOUND) and self.same_line(body[index - 1],
                                                                                          body[index]):
                small.append(self.statement(body[index]))
                index += 1
            line = self.done(position, _make.SimpleStatementLine(body=small))
            self.origins[id(line)] = (node, body[index - 1])
            out.append(line)  # type: ignore[arg-type]
        return out

    def statement(self, node: ast.stmt) -> cst.CSTNode:
        builder = self.statement_builders.get(type(node))
        if builder is None:
            raise Unsupported(type(node).__name__)
        return builder(node)

    def same_line(self, before: ast.stmt, statement: ast.stmt) -> bool:
        """Whether `statement` shares the logical line `before` ends on (`a = 1; b = 2`)."""
        if statement.lineno == before.end_lineno:
            return True
        return statement.lineno in self.continued and not starts_line(statement, self.lines)

    def block(self, body: list[ast.stmt]) -> cst.BaseSuite:
        position = self.reserve()
        if body and not starts_line(body[0], self.lines):  # `if x: y` on the header's line
            return self.done(position, _make.SimpleStatementSuite(body=[self.statement(s) for s in body]))  # type: ignore[misc]
        return self.done(position, _make.IndentedBlock(body=self.statements(body)))

    def expr_statement(self, node: ast.Expr) -> cst.Expr:
        position = self.reserve()
        return self.done(position, _make.Expr(value=self.expr(node.value)))

    def assign(self, node: ast.Assign) -> cst.Assign:
        position = self.reserve()
        targets = [self.assign_target(t) for t in node.targets]
        return self.done(position, _make.Assign(targets=targets, value=self.expr(node.value)))

    def assign_target(self, node: ast.expr) -> cst.AssignTarget:
        position = self.reserve()
        return self.done(position, _make.AssignTarget(target=self.expr(node)))

    def aug_assign(self, node: ast.AugAssign) -> cst.AugAssign:
        position = self.reserve()
        target = self.expr(node.target)
        return self.done(position, _make.AugAssign(target=target, operator=_shared(_AUGMENTED[type(node.op)]),
                                                   value=self.expr(node.value)))

    def annotation(self, node: ast.expr) -> cst.Annotation:
        position = self.reserve()
        return self.done(position, _make.Annotation(self.expr(node)))

    def ann_assign(self, node: ast.AnnAssign) -> cst.AnnAssign:
        position = self.reserve()
        target = self.expr(node.target)
        annotation = self.annotation(node.annotation)
        return self.done(position, _make.AnnAssign(target=target, annotation=annotation, value=self.maybe(node.value)))

    def return_(self, node: ast.Return) -> cst.Return:
        position = self.reserve()
        return self.done(position, _make.Return(value=self.maybe(node.value)))

    def import_(self, node: ast.Import) -> cst.Import:
        position = self.reserve()
        return self.done(position, _make.Import(names=[self.alias(a) for a in node.names]))

    def import_from(self, node: ast.ImportFrom) -> cst.ImportFrom:
        position = self.reserve()
        module = self.dotted(node.module) if node.module else None
        names: Sequence[cst.ImportAlias] | cst.ImportStar
        names = self.leaf(_make.ImportStar()) if node.names[0].name == "*" else [self.alias(a) for a in node.names]
        return self.done(position, _make.ImportFrom(module=module, names=names,
                                                    relative=[_make.Dot() for _ in range(node.level or 0)]))

    def alias(self, node: ast.alias) -> cst.ImportAlias:
        position = self.reserve()
        name = self.dotted(node.name)
        return self.done(position, _make.ImportAlias(name=name, asname=self.as_name(node.asname)))

    def as_name(self, name: str | None) -> cst.AsName | None:
        if not name:
            return None
        position = self.reserve()
        return self.done(position, _make.AsName(name=self.leaf(_make.Name(name))))

    def dotted(self, text: str) -> cst.Name | cst.Attribute:
        """`a.b.c`: Attribute(Attribute(a, b), c), the outer one first in the preorder."""
        parts = text.split(".")
        positions = [self.reserve() for _ in parts[1:]]
        built: cst.Name | cst.Attribute = self.leaf(_make.Name(parts[0]))
        for part, position in zip(parts[1:], reversed(positions), strict=True):
            built = self.done(position, _make.Attribute(value=built, attr=self.leaf(_make.Name(part))))
        return built

    def raise_(self, node: ast.Raise) -> cst.Raise:
        position = self.reserve()
        exc = self.maybe(node.exc)
        cause = None
        if node.cause is not None:
            cause_position = self.reserve()
            cause = self.done(cause_position, _make.From(item=self.expr(node.cause)))
        return self.done(position, _make.Raise(exc=exc, cause=cause))

    def assert_(self, node: ast.Assert) -> cst.Assert:
        position = self.reserve()
        test = self.expr(node.test)
        return self.done(position, _make.Assert(test=test, msg=self.maybe(node.msg)))

    def delete(self, node: ast.Delete) -> cst.Del:
        position = self.reserve()
        if len(node.targets) == 1:
            return self.done(position, _make.Del(target=self.expr(node.targets[0])))
        tuple_position = self.reserve()
        target = self.done(tuple_position, _make.Tuple(elements=[self.element(t, 0) for t in node.targets],
                                                       lpar=_NONE, rpar=_NONE))
        return self.done(position, _make.Del(target=target))

    def name_items(self, names: list[str]) -> list[cst.NameItem]:
        items = []
        for name in names:
            position = self.reserve()
            items.append(self.done(position, _make.NameItem(self.leaf(_make.Name(name)))))
        return items

    def global_(self, node: ast.Global) -> cst.Global:
        position = self.reserve()
        return self.done(position, _make.Global(names=self.name_items(node.names)))

    def nonlocal_(self, node: ast.Nonlocal) -> cst.Nonlocal:
        position = self.reserve()
        return self.done(position, _make.Nonlocal(names=self.name_items(node.names)))

    def simple(self, kind: type[_N]) -> Callable[[ast.stmt], _N]:
        return lambda _node: self.leaf(getattr(_make, kind.__name__)())

    def if_(self, node: ast.If) -> cst.If:
        position = self.reserve()
        test = self.expr(node.test)
        body = self.block(node.body)
        return self.done(position, _make.If(test=test, body=body, orelse=self.if_else(node.orelse)))

    def if_else(self, orelse: list[ast.stmt]) -> cst.If | cst.Else | None:
        if not orelse:
            return None
        first = orelse[0]
        if (len(orelse) == 1 and isinstance(first, ast.If)
                and self.lines[first.lineno - 1].startswith("elif", first.col_offset)):
            return self.if_(first)
        return self.orelse(orelse)

    def orelse(self, orelse: list[ast.stmt]) -> cst.Else | None:
        if not orelse:
            return None
        position = self.reserve()
        return self.done(position, _make.Else(body=self.block(orelse)))

    def for_(self, node: ast.For | ast.AsyncFor) -> cst.For:
        position = self.reserve()
        target = self.expr(node.target)
        iterable = self.expr(node.iter)
        body = self.block(node.body)
        return self.done(position, _make.For(target=target, iter=iterable, body=body, orelse=self.orelse(node.orelse),
                                             asynchronous=_make.Asynchronous() if isinstance(node, ast.AsyncFor)
                                             else None))

    def while_(self, node: ast.While) -> cst.While:
        position = self.reserve()
        test = self.expr(node.test)
        body = self.block(node.body)
        return self.done(position, _make.While(test=test, body=body, orelse=self.orelse(node.orelse)))

    def with_item(self, node: ast.withitem) -> cst.WithItem:
        position = self.reserve()
        item = self.expr(node.context_expr)
        asname = None
        if node.optional_vars:
            as_position = self.reserve()
            asname = self.done(as_position, _make.AsName(name=self.expr(node.optional_vars)))
        return self.done(position, _make.WithItem(item=item, asname=asname))

    def with_(self, node: ast.With | ast.AsyncWith) -> cst.With:
        position = self.reserve()
        items = [self.with_item(i) for i in node.items]
        return self.done(position, _make.With(items=items, body=self.block(node.body),
                                              asynchronous=_make.Asynchronous() if isinstance(node, ast.AsyncWith)
                                              else None))

    def try_(self, node: ast.Try) -> cst.Try | cst.TryStar:
        star = type(node).__name__ == "TryStar"
        handler = _make.ExceptStarHandler if star else _make.ExceptHandler
        position = self.reserve()
        body = self.block(node.body)
        handlers = []
        for h in node.handlers:
            handler_position = self.reserve()
            kind = self.maybe(h.type)
            name = self.as_name(h.name)
            handlers.append(self.done(handler_position, handler(body=self.block(h.body), type=kind,  # type: ignore[arg-type]
                                                                name=name)))
        orelse = self.orelse(node.orelse)
        finalbody = None
        if node.finalbody:
            final_position = self.reserve()
            finalbody = self.done(final_position, _make.Finally(body=self.block(node.finalbody)))
        kind = _make.TryStar if star else _make.Try
        return self.done(position, kind(body=body, handlers=handlers, orelse=orelse,  # type: ignore[arg-type]
                                        finalbody=finalbody))

    def decorators(self, nodes: list[ast.expr]) -> list[cst.Decorator]:
        out = []
        for d in nodes:
            position = self.reserve()
            out.append(self.done(position, _make.Decorator(decorator=self.expr(d))))
        return out

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> cst.FunctionDef:
        if getattr(node, "type_params", None):
            raise Unsupported("type parameters")
        position = self.reserve()
        decorators = self.decorators(node.decorator_list)
        name = self.leaf(_make.Name(node.name))
        params = self.parameters(node.args)
        returns = self.annotation(node.returns) if node.returns is not None else None
        return self.done(position, _make.FunctionDef(
            name=name, params=params, body=self.block(node.body), decorators=decorators, returns=returns,
            asynchronous=_make.Asynchronous() if isinstance(node, ast.AsyncFunctionDef) else None,
        ))

    def class_(self, node: ast.ClassDef) -> cst.ClassDef:
        if getattr(node, "type_params", None):
            raise Unsupported("type parameters")
        position = self.reserve()
        decorators = self.decorators(node.decorator_list)
        name = self.leaf(_make.Name(node.name))
        bases = [self.argument(b) for b in node.bases]
        keywords = [self.keyword(k) for k in node.keywords]
        return self.done(position, _make.ClassDef(name=name, body=self.block(node.body), bases=bases,
                                                  keywords=keywords, decorators=decorators))

    def parameters(self, node: ast.arguments, annotated: bool = True) -> cst.Parameters:
        position = self.reserve()
        positional = [*node.posonlyargs, *node.args]
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(node.defaults)) + list(node.defaults)
        split = len(node.posonlyargs)
        posonly = [self.param(a, d, "", annotated) for a, d in zip(positional[:split], defaults[:split], strict=True)]
        slash = self.leaf(_make.ParamSlash()) if split else MaybeSentinel.DEFAULT
        params = [self.param(a, d, "", annotated) for a, d in zip(positional[split:], defaults[split:], strict=True)]
        star_arg: cst.Param | cst.ParamStar | MaybeSentinel = MaybeSentinel.DEFAULT
        if node.vararg is not None:
            star_arg = self.param(node.vararg, None, "*", annotated)
        elif node.kwonlyargs:
            star_arg = self.leaf(_make.ParamStar())
        kwonly = [self.param(a, d, "", annotated) for a, d in zip(node.kwonlyargs, node.kw_defaults, strict=True)]
        star_kwarg = self.param(node.kwarg, None, "**", annotated) if node.kwarg is not None else None
        return self.done(position, _make.Parameters(params=params, posonly_params=posonly, posonly_ind=slash,
                                                    star_arg=star_arg, kwonly_params=kwonly, star_kwarg=star_kwarg))

    def param(self, node: ast.arg, default: ast.expr | None, star: str, annotated: bool) -> cst.Param:
        position = self.reserve()
        name = self.leaf(_make.Name(node.arg))
        annotation = self.annotation(node.annotation) if annotated and node.annotation else None
        return self.done(position, _make.Param(name=name, annotation=annotation, default=self.maybe(default),
                                               star=star))  # type: ignore[arg-type]

    # --- expressions ---------------------------------------------------------------------------
    # `expr` lists each expression node itself (the place it keeps before building is the node's);
    # the builders below list only the nodes they make inside it (arguments, targets, names).

    def expr(self, node: ast.expr, needs: int = 0) -> cst.BaseExpression:
        kind = type(node)
        nodes, ends = self.nodes, self.ends
        if kind is ast.Name:  # a third of all expressions: a leaf, never bracketed
            built: cst.BaseExpression = _make.Name(node.id)  # type: ignore[attr-defined]
            nodes.append(built)
            ends.append(len(ends) + 1)
            return built
        builder = self.expr_builders.get(kind)
        if builder is None:  # a kind newer than this module (3.14's template strings), or out of place
            raise Unsupported(kind.__name__)
        position = len(ends)
        ends.append(0)
        nodes.append(None)
        built = builder(node)
        if needs and kind not in _ATOMS and _rank(node) < needs and not built.lpar:
            built = built.with_changes(lpar=_PAREN[0], rpar=_PAREN[1])
        nodes[position] = built
        ends[position] = len(ends)
        return built

    def maybe(self, node: ast.expr | None) -> cst.BaseExpression | None:
        return self.expr(node) if node is not None else None

    def unsupported(self, node: ast.AST) -> cst.BaseExpression:
        raise Unsupported(type(node).__name__)

    def attribute(self, node: ast.Attribute) -> cst.Attribute:
        value = node.value
        if type(value) is ast.Constant and isinstance(value.value, int | float | complex):
            raise Unsupported("attribute of a number")  # `1 .real`: LibCST keeps the space in the literal
        built = self.expr(value, _ATOM)
        return _make.Attribute(value=built, attr=self.leaf(_make.Name(node.attr)))

    def call(self, node: ast.Call) -> cst.Call:
        func = self.expr(node.func, _ATOM)
        if node.keywords and node.args and _position(node.keywords[0]) < _position(node.args[-1]):
            # `f(a, k=1, *rest)`: LibCST keeps the source order, CPython separates the two kinds.
            items = sorted([*node.args, *node.keywords], key=_position)
            args = [self.keyword(a) if type(a) is ast.keyword else self.argument(a) for a in items]  # type: ignore[arg-type]
        else:
            args = [self.argument(a) for a in node.args]
            args.extend(self.keyword(k) for k in node.keywords)
        return _make.Call(func=func, args=args)

    def argument(self, node: ast.expr) -> cst.Arg:
        position = self.reserve()
        if type(node) is ast.Starred:
            return self.done(position, _make.Arg(value=self.expr(node.value), star="*"))
        return self.done(position, _make.Arg(value=self.expr(node)))

    def keyword(self, node: ast.keyword) -> cst.Arg:
        position = self.reserve()
        if node.arg is None:
            return self.done(position, _make.Arg(value=self.expr(node.value), star="**"))
        keyword = self.leaf(_make.Name(node.arg))
        return self.done(position, _make.Arg(value=self.expr(node.value), keyword=keyword))

    def constant(self, node: ast.Constant) -> cst.BaseExpression:
        value = node.value
        if value is None or value is True or value is False:
            return _make.Name(str(value))
        if value is ...:
            return _make.Ellipsis()
        text = self.text(node)
        if isinstance(value, str | bytes):
            if _one_string(text):
                return _make.SimpleString(text)
            return self.from_text(node)  # "a" "b": one constant to CPython, a ConcatenatedString to LibCST
        if isinstance(value, bool | int):
            return _make.Integer(text)
        if isinstance(value, float):
            return _make.Float(text)
        return _make.Imaginary(text)

    def from_text(self, node: ast.expr) -> cst.BaseExpression:
        """LibCST's own parse of the expression's text: f-strings, implicit concatenations."""
        text = self.text(node)
        if text in self.parsed_texts:
            return self.graft(_parse_text(text))  # a second one in this module: its own nodes (the model keys on ids)
        self.parsed_texts.add(text)
        return self.graft(_parse_shared(text))

    def binary(self, node: ast.BinOp) -> cst.BinaryOperation:
        operator, rank = _BINARY[type(node.op)]
        # `**` groups to the right, and its right operand may be a unary one (`a ** -b`).
        left, right = (rank + 1, _FACTOR) if operator is cst.Power else (rank, rank + 1)
        built = self.expr(node.left, left)
        return _make.BinaryOperation(left=built, operator=_shared(operator), right=self.expr(node.right, right))

    def unary(self, node: ast.UnaryOp) -> cst.UnaryOperation:
        operator, rank = _UNARY[type(node.op)]
        return _make.UnaryOperation(operator=_shared(operator), expression=self.expr(node.operand, rank))

    def boolean(self, node: ast.BoolOp) -> cst.BooleanOperation:
        operator, rank = (cst.And, _AND) if type(node.op) is ast.And else (cst.Or, _OR)
        # `a and b and c` nests to the left, as LibCST parses it: the outer operation (`expr`'s)
        # first, then the inner ones.
        inner = [self.reserve() for _ in node.values[2:]]
        built: cst.BaseExpression = self.expr(node.values[0], rank + 1)
        for value, position in zip(node.values[1:-1], reversed(inner), strict=True):
            built = self.done(position, _make.BooleanOperation(left=built, operator=_shared(operator),
                                                               right=self.expr(value, rank + 1)))
        last = self.expr(node.values[-1], rank + 1)
        return _make.BooleanOperation(left=built, operator=_shared(operator), right=last)

    def compare(self, node: ast.Compare) -> cst.Comparison:
        left = self.expr(node.left, _CMP + 1)
        targets = []
        for op, c in zip(node.ops, node.comparators, strict=True):
            position = self.reserve()
            targets.append(self.done(position, _make.ComparisonTarget(
                operator=_shared(_COMPARE[type(op)]), comparator=self.expr(c, _CMP + 1))))
        return _make.Comparison(left=left, comparisons=targets)

    def subscript(self, node: ast.Subscript) -> cst.Subscript:
        value = self.expr(node.value, _ATOM)
        index = node.slice
        if type(index) is ast.Tuple and not self.parenthesized(index):
            items = [self.subscript_element(e) for e in index.elts]
        else:
            items = [self.subscript_element(index)]
        return _make.Subscript(value=value, slice=items)

    def subscript_element(self, node: ast.expr) -> cst.SubscriptElement:
        if type(node) is ast.Starred:
            raise Unsupported("starred subscript")
        position = self.reserve()
        inner = self.reserve()
        if type(node) is ast.Slice:
            lower, upper = self.maybe(node.lower), self.maybe(node.upper)
            index: cst.BaseSlice = self.done(inner, _make.Slice(lower=lower, upper=upper, step=self.maybe(node.step)))
        else:
            index = self.done(inner, _make.Index(self.expr(node)))
        return self.done(position, _make.SubscriptElement(index))

    def parenthesized(self, node: ast.Tuple) -> bool:
        """Whether a tuple's own brackets are in the source: CPython's span then starts at `(`,
        before its first element (`(a), b` is taken for bracketed; only quoted code can tell)."""
        line = self.lines[node.lineno - 1]
        if not line.startswith("(", _char_column(line, node.col_offset)):
            return False
        return not node.elts or _position(node.elts[0]) > _position(node)

    def element(self, node: ast.expr, needs: int) -> cst.BaseElement:
        position = self.reserve()
        if type(node) is ast.Starred:
            return self.done(position, _make.StarredElement(self.expr(node.value, _EXPR)))
        return self.done(position, _make.Element(self.expr(node, needs)))

    def elements(self, nodes: list[ast.expr]) -> list[cst.BaseElement]:
        return [self.element(n, _TEST) for n in nodes]

    def tuple(self, node: ast.Tuple) -> cst.Tuple:
        parens = _PAREN if not node.elts or self.parenthesized(node) else (_NONE, _NONE)
        return _make.Tuple(elements=self.elements(node.elts), lpar=parens[0], rpar=parens[1])

    def list(self, node: ast.List) -> cst.List:
        return _make.List(elements=self.elements(node.elts))

    def set(self, node: ast.Set) -> cst.Set:
        return _make.Set(elements=self.elements(node.elts))

    def dict(self, node: ast.Dict) -> cst.Dict:
        elements = []
        for k, v in zip(node.keys, node.values, strict=True):
            position = self.reserve()
            if k is None:
                elements.append(self.done(position, _make.StarredDictElement(self.expr(v, _BOR))))
            else:
                key = self.expr(k)
                elements.append(self.done(position, _make.DictElement(key, self.expr(v))))
        return _make.Dict(elements=elements)

    def comprehension(self, generators: list[ast.comprehension]) -> cst.CompFor:
        """`for a in b if c for d in e`: each `for` holds the next one (`inner_for_in`)."""
        g = generators[0]
        position = self.reserve()
        target = self.expr(g.target)
        iterable = self.expr(g.iter, _OR)
        ifs = []
        for test in g.ifs:
            if_position = self.reserve()
            ifs.append(self.done(if_position, _make.CompIf(self.expr(test, _OR))))
        inner = self.comprehension(generators[1:]) if len(generators) > 1 else None
        return self.done(position, _make.CompFor(target=target, iter=iterable, ifs=ifs, inner_for_in=inner,
                                                 asynchronous=_make.Asynchronous() if g.is_async else None))

    def list_comp(self, node: ast.ListComp) -> cst.ListComp:
        elt = self.expr(node.elt)
        return _make.ListComp(elt=elt, for_in=self.comprehension(node.generators))

    def set_comp(self, node: ast.SetComp) -> cst.SetComp:
        elt = self.expr(node.elt)
        return _make.SetComp(elt=elt, for_in=self.comprehension(node.generators))

    def generator(self, node: ast.GeneratorExp) -> cst.GeneratorExp:
        elt = self.expr(node.elt)
        return _make.GeneratorExp(elt=elt, for_in=self.comprehension(node.generators))

    def dict_comp(self, node: ast.DictComp) -> cst.DictComp:
        key = self.expr(node.key)
        value = self.expr(node.value)
        return _make.DictComp(key=key, value=value, for_in=self.comprehension(node.generators))

    def lambda_(self, node: ast.Lambda) -> cst.Lambda:
        params = self.parameters(node.args, annotated=False)
        return _make.Lambda(params=params, body=self.expr(node.body, _TEST))

    def if_exp(self, node: ast.IfExp) -> cst.IfExp:
        body = self.expr(node.body, _OR)
        test = self.expr(node.test, _OR)
        return _make.IfExp(test=test, body=body, orelse=self.expr(node.orelse, _TEST))

    def named(self, node: ast.NamedExpr) -> cst.NamedExpr:
        target = self.expr(node.target)
        return _make.NamedExpr(target=target, value=self.expr(node.value, _TUPLE))

    def await_(self, node: ast.Await) -> cst.Await:
        return _make.Await(expression=self.expr(node.value, _ATOM))

    def yield_(self, node: ast.Yield) -> cst.Yield:
        return _make.Yield(value=self.maybe(node.value))

    def yield_from(self, node: ast.YieldFrom) -> cst.Yield:
        position = self.reserve()
        return _make.Yield(value=self.done(position, _make.From(item=self.expr(node.value))))

    def starred(self, node: ast.Starred) -> cst.BaseExpression:
        raise Unsupported("starred expression outside a list, tuple, set or call")


def _rank(node: ast.expr) -> int:
    kind = type(node)
    if kind is ast.BinOp:
        return _BINARY[type(node.op)][1]  # type: ignore[attr-defined]
    if kind is ast.UnaryOp:
        return _UNARY[type(node.op)][1]  # type: ignore[attr-defined]
    if kind is ast.BoolOp:
        return _AND if type(node.op) is ast.And else _OR  # type: ignore[attr-defined]
    return _RANKS.get(kind, _ATOM)


# Kinds `_rank` puts at the top: they never need brackets.
_ATOMS = frozenset({ast.Attribute, ast.Call, ast.Constant, ast.Subscript, ast.List, ast.Dict, ast.Set,
                    ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.JoinedStr})
_RANKS: dict[type, int] = {ast.Compare: _CMP, ast.IfExp: _TEST, ast.Lambda: _TEST, ast.NamedExpr: _NAMED,
                           ast.Await: _AWAIT, ast.Yield: _YIELD, ast.YieldFrom: _YIELD, ast.Tuple: _TUPLE,
                           ast.Starred: _EXPR}


def _check_identifiers(source: str) -> None:
    """CPython NFKC-normalises identifiers (fullwidth letters become ASCII ones, `e` and a combining
    accent one letter), LibCST keeps what the source says: a file holding a character that may be in
    an identifier and that NFKC changes or may combine (in code, a string or a comment: no matter)
    goes to LibCST."""
    if source.isascii():
        return
    for char in set(source):
        if (char > "\x7f" and ("a" + char).isidentifier()
                and (unicodedata.combining(char) or unicodedata.normalize("NFKC", char) != char)):
            raise Unsupported(f"{char!r} may be an identifier character NFKC changes")


def _position(node: ast.expr | ast.keyword | ast.stmt) -> tuple[int, int]:
    return node.lineno, node.col_offset


def _char_column(line: str, byte_offset: int) -> int:
    return byte_offset if line.isascii() else len(line.encode("utf-8")[:byte_offset].decode("utf-8", "replace"))


def _cut(line: str, start: int, end: int | None) -> str:
    """`line[start:end]` in UTF-8 byte offsets, as CPython counts columns."""
    if line.isascii():
        return line[start:end]
    return line.encode("utf-8")[start:end].decode("utf-8")


def _parse_text(text: str) -> cst.BaseExpression:
    try:
        built = cst.parse_expression("(" + text + ")")
    except cst.ParserSyntaxError as exc:
        raise Unsupported(str(exc)) from None
    return built.with_changes(lpar=_NONE, rpar=_NONE)


# Copied scripts repeat their f-strings (of the 5,135 in a corpus's candidate files, 1,789 differ):
# a tree is never changed, so another module's nodes can be reused, not parsed again.
_parse_shared = functools.lru_cache(maxsize=4096)(_parse_text)


# One string literal, whole: a prefix, then a body that never holds its unescaped closing quote
# (each body "unrolled": runs of plain characters between escapes, which the engine takes at once).
_ONE_STRING = re.compile(r"""[A-Za-z]*(?:
      \"\"\"[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*\"\"\"
    | '''[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*'''
    | "[^"\\]*(?:\\.[^"\\]*)*"
    | '[^'\\]*(?:\\.[^'\\]*)*'
)""", re.VERBOSE | re.DOTALL)


def _one_string(text: str) -> bool:
    """Whether `text` is a single string literal (not `"a" "b"`, which CPython merges into one)."""
    return _ONE_STRING.fullmatch(text) is not None


# --- checking a built tree against LibCST's own -------------------------------------------------

_TRIVIA_FIELDS = frozenset({
    "lpar", "rpar", "comma", "semicolon", "header", "footer", "leading_lines", "lines_after_decorators",
    "trailing_whitespace", "newline", "indent", "encoding", "default_indent", "default_newline",
    "has_trailing_newline", "first_colon", "second_colon", "colon", "equal", "dot", "lbracket", "rbracket",
    "lbrace", "rbrace",
})  # and every field named whitespace_*
_TRIVIA_TYPES: tuple[type, ...] = (
    cst.BaseParenthesizableWhitespace, cst.TrailingWhitespace, cst.EmptyLine, cst.Newline, cst.Comment,
    cst.LeftParen, cst.RightParen, cst.LeftSquareBracket, cst.RightSquareBracket, cst.LeftCurlyBrace,
    cst.RightCurlyBrace, cst.Comma, cst.Semicolon, cst.Colon, cst.AssignEqual, MaybeSentinel,
)


def first_difference(expected: cst.CSTNode, built: cst.CSTNode, where: str = "module") -> str | None:
    """Where `built` differs from `expected` (LibCST's parse) other than in trivia, or None."""
    for path, a, b in _pairs(expected, built, where):
        if isinstance(a, list | tuple):  # sequences of different lengths
            return f"{path}: {len(a)} items != {len(b)}"  # type: ignore[arg-type]
        if type(a) is not type(b):
            return f"{path}: {type(a).__name__} != {type(b).__name__}"
        if not isinstance(a, cst.CSTNode) and a != b:
            return f"{path}: {a!r} != {b!r}"
    return None


def _pairs(a: object, b: object, path: str) -> Iterator[tuple[str, object, object]]:
    stack = [(path, a, b)]
    while stack:
        path, a, b = stack.pop()
        if isinstance(a, _TRIVIA_TYPES) and (isinstance(b, _TRIVIA_TYPES) or b is None):
            continue
        if isinstance(a, list | tuple) and isinstance(b, list | tuple):
            if len(a) != len(b):
                yield path, a, b
                continue
            stack.extend((f"{path}[{i}]", x, y) for i, (x, y) in enumerate(zip(a, b, strict=True)))
            continue
        yield path, a, b
        if isinstance(a, cst.CSTNode) and type(a) is type(b):
            for field in dataclasses.fields(a):
                if field.name not in _TRIVIA_FIELDS and not field.name.startswith("whitespace"):
                    stack.append((f"{path}.{field.name}", getattr(a, field.name), getattr(b, field.name)))
