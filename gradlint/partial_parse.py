"""LibCST's parse of only the statements a file's findings need, inside the tree built from CPython's.

A file with findings needs LibCST's own nodes where the findings are: their positions, the code
their messages quote and the comments their fixes move come from LibCST's tree (the tree built by
gradlint/tree_from_ast.py has default whitespace and no comments). LibCST's parse of the whole
file cost 1.0-1.15 s of the ~9 s a 29-repository corpus takes, for its ~45 files with findings;
the statements those findings read are ~5% of their text.

So the first pass on the built tree notes every node whose layout was read (`syntax.
recording_layout`: each node quoted in a message, written into a fix, or whose comments or
brackets a fix looked at), together with the findings' nodes and those their fixes edit. Here
each of those is taken up to the statement of a block that holds it, and that statement's lines
are parsed by LibCST alone and put in place of the built one. The model and the rules then run
again on that tree, where every node they read the layout of must lie in a statement parsed here
(`Spliced.covers`), and the positions come from those statements' code. When anything is not so
(a statement whose text is not unique in the file, lines LibCST could give to a neighbour),
`checker` parses the whole file, as before.

What makes one statement's parse equal to its part of the whole file's (checked on every
statement of ~1,500 real files and every fixture by tests/test_partial_parse.py):
- the lines parsed are the statement's own, the comment and blank lines right above it (LibCST
  makes them its `leading_lines`) and those right below it (the footers of its blocks take some);
  none above may be indented deeper than the statement (they would be a footer of the statement
  before it), and above the module's first statement they are the module's header, not its own;
- the module's indentation unit and line end, which LibCST detects from the file's first
  indented line and its first line end, are set by a two-line prefix; an indented statement is
  parsed inside an `if 1:` at its own indentation;
- the built blocks around it get their indentation as written (`IndentedBlock.indent` is
  relative to the block outside, and `None` for the module's unit), which positions read.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import libcst as cst

from gradlint.lines import LINE_END, source_lines
from gradlint.model import traversal
from gradlint.tree_from_ast import Origins, Unsupported, indentation, starts_line
from gradlint.trusted_parse import validation_off

_BODIES = (cst.IndentedBlock, cst.Module)
_BLANK_OR_COMMENT = re.compile(r"[ \t\f]*(?:#[^\r\n]*)?(?:\r\n|\r|\n)?\Z")


@dataclass(frozen=True)
class Spliced:
    module: cst.Module
    roots: frozenset[int]  # id() of each statement parsed by LibCST

    def covers(self, nodes: Iterable[cst.CSTNode], parents: dict[int, cst.CSTNode]) -> bool:
        """Whether every node lies in a statement LibCST parsed (its layout is the file's);
        `parents`: the module's `traversal.parents`."""
        for node in in_tree(nodes, parents):
            if node is self.module:
                return False
            current: cst.CSTNode | None = node
            while current is not None and id(current) not in self.roots:
                current = parents.get(id(current))
            if current is None:
                return False
        return True


def in_tree(nodes: Iterable[cst.CSTNode], parents: dict[int, cst.CSTNode]) -> Iterable[cst.CSTNode]:
    """The nodes, each one that is not the tree's (a copy a fix made with a field changed, a node it
    built) replaced by its own nodes that are: the parts of the tree a fix's text comes from."""
    for node in nodes:
        if id(node) in parents or type(node) is cst.Module:
            yield node
        else:
            yield from in_tree(traversal.children(node), parents)


class _Refused(Exception):
    """This statement cannot be parsed apart: the whole file is parsed."""


def layout(source: str, tree: ast.Module, lines: list[str]) -> tuple[str, str]:
    """The module's indentation unit and line end as LibCST detects them: the indentation of the
    first line that starts an indented statement (the first INDENT token), else four spaces; the
    first line end, else a newline."""
    first_end = LINE_END.search(source)
    first = _first_indented(tree.body, lines)
    return (indentation(lines[first.lineno - 1]) if first is not None else "    ",
            first_end.group() if first_end else "\n")


def _first_indented(body: list[ast.stmt], lines: list[str]) -> ast.stmt | None:
    """The first statement in source order that starts an indented line (`if x: y` does not)."""
    for statement in body:
        if statement.col_offset > 0 and starts_line(statement, lines):
            return statement
        for block in _blocks(statement):
            found = _first_indented(block, lines)
            if found is not None:
                return found
    return None


def _blocks(statement: ast.stmt) -> Iterator[list[ast.stmt]]:
    """The statement's blocks in source order (`else:` after the handlers, `finally:` last)."""
    for name in ("body", "handlers", "orelse", "finalbody", "cases"):
        value = getattr(statement, name, None)
        if not value:
            continue
        if name in ("handlers", "cases"):
            for clause in value:
                yield clause.body
        else:
            yield value


def splice(source: str, tree: ast.Module, built: cst.Module, origins: Origins, parents: dict[int, cst.CSTNode],
           needed: Iterable[cst.CSTNode]) -> Spliced | None:
    """`built` (whose `traversal.parents` are `parents`) with LibCST's parse of each statement of
    a block that holds a `needed` node in place of the built one, or None when one of them cannot
    be parsed apart."""
    lines = source_lines(source)
    try:
        with validation_off():  # CPython accepted the file; the nodes below are LibCST's or copies
            return _Splicer(source, tree, built, origins, parents, lines).run(needed)
    except (_Refused, Unsupported, cst.ParserSyntaxError, RecursionError):
        return None


class _Splicer:
    def __init__(self, source: str, tree: ast.Module, built: cst.Module, origins: Origins,
                 parents: dict[int, cst.CSTNode], lines: list[str]) -> None:
        self.source, self.built, self.origins, self.parents, self.lines = source, built, origins, parents, lines
        self.indent, self.newline = layout(source, tree, lines)

    def run(self, needed: Iterable[cst.CSTNode]) -> Spliced:
        statements: dict[int, cst.CSTNode] = {}
        for node in in_tree(needed, self.parents):
            statement = self._unique(self._statement_of(node))
            statements[id(statement)] = statement
        # Only the outermost: a statement inside another one taken is parsed with it.
        roots = [s for s in statements.values() if not any(id(a) in statements for a in self._ancestors(s))]
        parsed = {id(s): self._parse(s) for s in roots}
        on_path = {id(a) for s in roots for a in self._ancestors(s)}
        module = self._rebuild(self.built, parsed, on_path, "")
        module = module.with_changes(default_indent=self.indent, default_newline=self.newline,
                                     has_trailing_newline=self.source.endswith(("\n", "\r")))
        return Spliced(module, frozenset(id(s) for s in parsed.values()))

    def _ancestors(self, node: cst.CSTNode) -> Iterable[cst.CSTNode]:
        current = self.parents.get(id(node))
        while current is not None:
            yield current
            current = self.parents.get(id(current))

    def _statement_of(self, node: cst.CSTNode) -> cst.CSTNode:
        current = node
        while True:
            parent = self.parents.get(id(current))
            if parent is None:
                raise _Refused("not in a statement of a block")  # the module itself, or trivia
            if type(parent) in _BODIES:
                return current
            current = parent

    def _unique(self, statement: cst.CSTNode) -> cst.CSTNode:
        """The statement, or the nearest one around it whose lines occur once in the file: positions
        place a node by finding its statement's code in the source (gradlint/positions.py)."""
        current = statement
        while True:
            first, last = self.origins[id(current)]
            text = "".join(self.lines[_first_line(first) - 1 : last.end_lineno])
            at = self.source.find(text)
            if self.source.find(text, at + 1) < 0:
                return current
            block = self.parents.get(id(current))
            if type(block) is not cst.IndentedBlock:
                raise _Refused("code repeated at the module level")
            current = self._statement_of(block)

    def _parse(self, statement: cst.CSTNode) -> cst.CSTNode:
        first, last = self.origins[id(statement)]
        top = _first_line(first) - 1
        own = indentation(self.lines[top])
        start = top
        while start > 0 and _BLANK_OR_COMMENT.match(self.lines[start - 1]):
            if len(indentation(self.lines[start - 1])) > len(own):
                raise _Refused("a line above may close the block before it")
            start -= 1
        if start == 0:
            start = top  # above the module's first statement: the module's header
        end = last.end_lineno or first.lineno
        while end < len(self.lines) and self.lines[end] and _BLANK_OR_COMMENT.match(self.lines[end]):
            end += 1
        text = "".join(self.lines[start:end])
        if not text.endswith(("\n", "\r")):
            text += self.newline
        nl = self.newline
        # Sets LibCST's detected indentation unit and line end; a plain statement last, so that the
        # lines above ours are read as they are after any statement.
        prefix = f"if 1:{nl}{self.indent}pass{nl}pass{nl}"
        if own:
            body = cst.parse_module(f"{prefix}if 1:{nl}{text}").body
            inner = body[2].body.body if len(body) == 3 and isinstance(body[2], cst.If) else ()
        else:
            inner = cst.parse_module(prefix + text).body[2:]
        if len(inner) != 1 or type(inner[0]) is not type(statement):
            raise _Refused("not one statement")
        return inner[0]

    def _rebuild(self, node: cst.CSTNode, parsed: dict[int, cst.CSTNode], on_path: set[int], outer: str) -> cst.CSTNode:
        """`node` with the parsed statements in place, each block on the way indented as written
        (`outer`: the indentation of the block around `node`)."""
        changes: dict[str, object] = {}
        inner = outer
        if type(node) is cst.IndentedBlock:
            first = node.body[0]
            written = indentation(self.lines[_first_line(self.origins[id(first)][0]) - 1])
            if not written.startswith(outer) or written == outer:
                raise _Refused("inconsistent indentation")
            relative = written[len(outer):]
            changes["indent"] = None if relative == self.indent else relative
            inner = written
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if isinstance(value, cst.CSTNode):
                if id(value) in parsed or id(value) in on_path:
                    changes[f.name] = self._child(value, parsed, on_path, inner)
            elif isinstance(value, tuple | list) and any(
                    isinstance(v, cst.CSTNode) and (id(v) in parsed or id(v) in on_path) for v in value):
                changes[f.name] = [self._child(v, parsed, on_path, inner) if isinstance(v, cst.CSTNode) else v
                                   for v in value]
        return node.with_changes(**changes)

    def _child(self, node: cst.CSTNode, parsed: dict[int, cst.CSTNode], on_path: set[int], outer: str) -> cst.CSTNode:
        if id(node) in parsed:
            return parsed[id(node)]
        if id(node) in on_path:
            return self._rebuild(node, parsed, on_path, outer)
        return node


def _first_line(statement: ast.stmt) -> int:
    decorators = getattr(statement, "decorator_list", None)
    return min(statement.lineno, *(d.lineno for d in decorators)) if decorators else statement.lineno
