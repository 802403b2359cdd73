"""Where a few nodes of a LibCST module are, without LibCST's position metadata for every node.

`PositionProvider` regenerates the whole module's code and, for every token, splits it on line
ends to keep a running line and column, and stores a `CodeRange` for every node: 0.16 s on a
70 kB training script whose plain code generation takes 0.025 s. A file with findings needs the
positions of a handful of nodes (the reported ones and those its fixes edit). The state below
generates the code once, notes the token index where each wanted node starts and ends, and turns
those indices into lines and columns at the end. The ranges are the same as `PositionProvider`'s
(its *syntactic* ranges, hoisted from the same child nodes): tests/test_positions.py compares the
two over every node of every fixture.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import libcst as cst
from libcst._nodes.internal import CodegenState  # the hook PositionProvider itself builds on
from libcst.metadata import CodePosition, CodeRange

from gradlint.lines import line_starts
from gradlint.model import traversal

# The line ends LibCST's position state counts (its `NEWLINE_RE`): a lone `\r` ends a line too.
_NOTHING = nullcontext()


def positions_of(module: cst.Module, nodes: Iterable[cst.CSTNode], source: str | None = None,
                 roots: frozenset[int] | None = None,
                 parents: dict[int, cst.CSTNode] | None = None) -> dict[cst.CSTNode, CodeRange]:
    """The syntactic range of each of `nodes` (nodes of `module`), as `PositionProvider` gives it.
    With the module's `source`, a node is placed from the code of the statement that holds it
    (`_by_statement`); what cannot be placed that way comes from the code of the whole module.
    With `roots` (a partly parsed tree, gradlint/partial_parse.py), only the code of those
    statements and of statements inside them is the file's: a node they do not place is left out.
    `parents`: the module's `traversal.parents`, when the caller has them."""
    wanted = {id(node): node for node in nodes}
    if not wanted:
        return {}
    found = _by_statement(module, wanted, source, roots, parents) if source is not None else {}
    rest = {key: node for key, node in wanted.items() if key not in found}
    if rest and roots is None:
        found.update(_by_module(module, rest))
    return {wanted[key]: where for key, where in found.items()}


def _by_module(module: cst.Module, wanted: dict[int, Any]) -> dict[int, CodeRange]:
    state = _State(module.default_indent, module.default_newline, wanted)
    module._codegen(state)  # as LibCST's own position providers generate code
    return _ranges(state, wanted, 0, line_starts("".join(state.tokens)))


def _ranges(state: _State, keys: Iterable[int], base: int, starts: list[int]) -> dict[int, CodeRange]:
    """Lines and columns of the recorded token indices, for code generated at offset `base` of a
    text whose lines start at `starts`."""
    offsets = list(itertools.accumulate(map(len, state.tokens), initial=base))

    def position(index: int) -> CodePosition:
        offset = offsets[index]
        line = bisect.bisect_right(starts, offset)
        return CodePosition(line, offset - starts[line - 1])

    return {key: CodeRange(position(state.found[key][0]), position(state.found[key][1]))
            for key in keys if key in state.found}


# Where a statement's code starts a new line of indentation: what it is generated inside of.
_BODIES = (cst.IndentedBlock, cst.Module)


def _by_statement(module: cst.Module, wanted: dict[int, Any], source: str, roots: frozenset[int] | None = None,
                  parents: dict[int, cst.CSTNode] | None = None) -> dict[int, CodeRange]:
    """Ranges from the code of the innermost statement of a block that holds each wanted node,
    generated as the module's code generation would (inside the indentation of its enclosing
    blocks): a training script's findings are a few lines of a file whose whole code costs as much
    as the model. That code is part of the module's code, which is `source` (LibCST's parse gives
    back its text exactly); where it occurs once in `source`, that occurrence is the statement. A
    statement whose code occurs more than once (`optimizer.zero_grad()` in the training and the
    evaluation loop) is tried again as the statement around it; a node outside every such
    statement (trivia, a module-level statement repeated) is left to the whole module's code."""
    parents = parents if parents is not None else traversal.parents(module)
    groups: dict[int, tuple[cst.CSTNode, list[int]]] = {}
    for key, node in wanted.items():
        statement = _statement_of(node, parents)
        if statement is not None:
            groups.setdefault(id(statement), (statement, []))[1].append(key)
    found: dict[int, CodeRange] = {}
    starts = line_starts(source) if groups else []
    for statement, keys in groups.values():
        current: cst.CSTNode | None = statement
        while current is not None:
            placed = _place(module, current, keys, parents, source, starts)
            if placed is not None:
                found.update(placed)
                break
            if roots is not None and id(current) in roots:
                break  # the statements around it were built, not parsed: their code is not the file's
            block = parents.get(id(current))
            current = _statement_of(parents[id(block)], parents) if type(block) is cst.IndentedBlock else None
    return found


def _statement_of(node: cst.CSTNode, parents: dict[int, cst.CSTNode]) -> cst.CSTNode | None:
    """The node, or its nearest ancestor, that is a statement of an indented block or the module."""
    current: cst.CSTNode | None = node
    while current is not None:
        parent = parents.get(id(current))
        if parent is not None and type(parent) in _BODIES:
            return current
        current = parent
    return None


def _place(module: cst.Module, statement: cst.CSTNode, keys: list[int], parents: dict[int, cst.CSTNode],
           source: str, starts: list[int]) -> dict[int, CodeRange] | None:
    indents: list[str] = []
    ancestor = parents.get(id(statement))
    while ancestor is not None:
        if type(ancestor) is cst.IndentedBlock:  # the one node that indents (IndentedBlock._codegen_impl)
            indents.append(module.default_indent if ancestor.indent is None else ancestor.indent)
        ancestor = parents.get(id(ancestor))
    state = _State(module.default_indent, module.default_newline, dict.fromkeys(keys))
    state.indent_tokens = indents[::-1]
    statement._codegen(state)
    code = "".join(state.tokens)
    at = source.find(code)
    if at < 0 or source.find(code, at + 1) >= 0:
        return None
    return _ranges(state, keys, at, starts)


class _State(CodegenState):
    """Code generation that records token indices for the wanted nodes only. Which other nodes are
    needed is learnt on the way: a node's syntactic range may start or end where a child's does
    (`start_node`/`end_node`), and the child is always generated inside the parent's range."""

    def __init__(self, default_indent: str, default_newline: str, wanted: dict[int, Any]) -> None:
        super().__init__(default_indent=default_indent, default_newline=default_newline)
        self.needed = set(wanted)
        self.found: dict[int, tuple[int, int]] = {}
        self.open: list[int] = []

    def pop_trailing_newline(self) -> None:
        pass  # the code is not kept: a position recorded before the last token must stay in range

    def before_codegen(self, node: cst.CSTNode) -> None:
        if id(node) in self.needed:
            self.open.append(len(self.tokens))

    def after_codegen(self, node: cst.CSTNode) -> None:
        if id(node) in self.needed:
            start = self.open.pop()
            # A syntactic range recorded while the node was generated wins, as in PositionProvider.
            self.found.setdefault(id(node), (start, len(self.tokens)))

    def record_syntactic_position(self, node: cst.CSTNode, *, start_node: cst.CSTNode | None = None,
                                  end_node: cst.CSTNode | None = None) -> Any:
        if id(node) not in self.needed:
            return _NOTHING
        for child in (start_node, end_node):
            if child is not None:
                self.needed.add(id(child))
        return self._syntactic(node, start_node, end_node)

    @contextmanager
    def _syntactic(self, node: cst.CSTNode, start_node: cst.CSTNode | None,
                   end_node: cst.CSTNode | None) -> Iterator[None]:
        start = len(self.tokens)
        try:
            yield
        finally:
            end = len(self.tokens)
            if start_node is not None:
                start = self.found[id(start_node)][0]
            if end_node is not None:
                end = self.found[id(end_node)][1]
            self.found[id(node)] = (start, end)
