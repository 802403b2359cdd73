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
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import libcst as cst
from libcst._nodes.internal import CodegenState  # the hook PositionProvider itself builds on
from libcst.metadata import CodePosition, CodeRange

# The line ends LibCST's position state counts (its `NEWLINE_RE`): a lone `\r` ends a line too.
_NEWLINE = re.compile(r"\r\n?|\n")
_NOTHING = nullcontext()


def positions_of(module: cst.Module, nodes: Iterable[cst.CSTNode]) -> dict[cst.CSTNode, CodeRange]:
    """The syntactic range of each of `nodes` (nodes of `module`), as `PositionProvider` gives it."""
    wanted = {id(node): node for node in nodes}
    if not wanted:
        return {}
    state = _State(module.default_indent, module.default_newline, wanted)
    module._codegen(state)  # as LibCST's own position providers generate code
    offsets = list(itertools.accumulate(map(len, state.tokens), initial=0))
    code = "".join(state.tokens)
    starts = [0, *(match.end() for match in _NEWLINE.finditer(code))]

    def position(index: int) -> CodePosition:
        offset = offsets[index]
        line = bisect.bisect_right(starts, offset)
        return CodePosition(line, offset - starts[line - 1])

    return {node: CodeRange(position(state.found[key][0]), position(state.found[key][1]))
            for key, node in wanted.items() if key in state.found}


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
