"""Small, allocation-light helpers over LibCST expression nodes."""

from __future__ import annotations

import ast
import functools
import io
import tokenize
from collections.abc import Iterator
from contextlib import contextmanager

import libcst as cst

from gradlint.quiet_parse import parse_quietly

_EMPTY = cst.Module(body=[])
# While recording (`recording_layout`): the nodes whose layout something read, their code as
# written, comments or brackets. A tree built from CPython's has none of that; see
# gradlint/partial_parse.py.
_layout_read: list[cst.CSTNode] | None = None


@contextmanager
def recording_layout() -> Iterator[list[cst.CSTNode]]:
    """Collects, into the list it yields, every node given to `code` or `reads_layout`."""
    global _layout_read
    before, _layout_read = _layout_read, []
    try:
        yield _layout_read
    finally:
        _layout_read = before


def reads_layout(node: cst.CSTNode) -> None:
    """Say that what follows reads the node's comments, whitespace or brackets."""
    if _layout_read is not None:
        _layout_read.append(node)


def written(node: cst.CSTNode) -> str:
    """A node's code exactly as LibCST generates it (for fix texts). The caller says what it
    read with `reads_layout`: `node` may be a copy of a tree's node with some fields changed."""
    return _EMPTY.code_for_node(node)


def code(node: cst.CSTNode) -> str:
    """Source text of a node, whitespace-normalised to one line, without comments (for messages)."""
    reads_layout(node)
    text = _EMPTY.code_for_node(node)
    return " ".join((_without_comments(text) if "#" in text else text).split())


def _without_comments(text: str) -> str:
    """`text` with each comment cut to its line's end (a `#` inside a string stays)."""
    lines = text.split("\n")
    try:
        comments = [t.start for t in tokenize.generate_tokens(io.StringIO(f"(\n{text}\n)").readline)
                    if t.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError):
        return text
    for row, col in comments:  # rows count from 1, and the first line is the opening bracket
        lines[row - 2] = lines[row - 2][:col].rstrip()
    return "\n".join(lines)


def canonical(node: cst.CSTNode) -> str:
    """The node's code as CPython reads it, for comparing two expressions: `(step+1) % k` and
    `( step + 1 ) % k`, a call split over lines with a comment, `"a"` and `'a'` are one text. How a
    file is laid out must not change a finding, and the tree built from CPython's (which has no
    comments and its own whitespace) must compare as LibCST's parse of the file does."""
    return _canonical_text(_EMPTY.code_for_node(node))


@functools.lru_cache(maxsize=8192)
def _canonical_text(text: str) -> str:
    try:
        return ast.unparse(parse_quietly(f"(\n{text}\n)", mode="eval").body)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # not an expression on its own
        return " ".join(text.split())


def same_code(a: cst.CSTNode, b: cst.CSTNode) -> bool:
    return canonical(a) == canonical(b)


def dotted(node: cst.CSTNode | None) -> str | None:
    """`a.b.c` for a Name/Attribute chain (also through `self`), else None."""
    # Exact types: LibCST's node classes are final, and `isinstance` against them goes through
    # ABCMeta.__instancecheck__ (this runs hundreds of thousands of times on a big script).
    parts: list[str] = []
    while type(node) is cst.Attribute:
        parts.append(node.attr.value)  # type: ignore[union-attr]
        node = node.value  # type: ignore[union-attr]
    if type(node) is cst.Name:
        if not parts:
            return node.value  # type: ignore[union-attr]
        parts.append(node.value)  # type: ignore[union-attr]
        return ".".join(reversed(parts))
    return None


def last_part(text: str | None) -> str:
    return (text or "").rsplit(".", 1)[-1]


def callee(call: cst.Call) -> str | None:
    """Dotted name of what is called: `torch.nn.utils.clip_grad_norm_`, `opt.step`."""
    return dotted(call.func)


def called_name(call: cst.Call) -> str:
    """The last name of what is called: `step` in `opt.step()`, `f` in `f()`; "" for `f()()`."""
    func = call.func
    kind = type(func)
    return func.attr.value if kind is cst.Attribute else func.value if kind is cst.Name else ""  # type: ignore[attr-defined]


def method_name(call: cst.Call) -> str | None:
    return call.func.attr.value if isinstance(call.func, cst.Attribute) else None


def receiver(call: cst.Call) -> cst.BaseExpression | None:
    return call.func.value if isinstance(call.func, cst.Attribute) else None


def positional(call: cst.Call) -> list[cst.BaseExpression]:
    return [a.value for a in call.args if a.keyword is None and not a.star]


def keyword(call: cst.Call, name: str) -> cst.BaseExpression | None:
    for a in call.args:
        if a.keyword is not None and a.keyword.value == name:
            return a.value
    return None


def arg(call: cst.Call, index: int, name: str) -> cst.BaseExpression | None:
    """Argument by keyword, else by position."""
    found = keyword(call, name)
    if found is not None:
        return found
    pos = positional(call)
    return pos[index] if index < len(pos) else None


def conjuncts(node: cst.BaseExpression) -> list[cst.BaseExpression]:
    """`a`, `b` and `c` of `a and b and c` (in any grouping); `[node]` for anything else."""
    if isinstance(node, cst.BooleanOperation) and isinstance(node.operator, cst.And):
        return conjuncts(node.left) + conjuncts(node.right)
    return [node]


def number(node: cst.CSTNode | None) -> float | None:
    if isinstance(node, cst.Integer | cst.Float):
        try:
            return float(node.evaluated_value)
        except (ValueError, OverflowError):
            return None
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        inner = number(node.expression)
        return -inner if inner is not None else None
    return None


def string(node: cst.CSTNode | None) -> str | None:
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    return None


def terminates(block: cst.BaseSuite) -> bool:
    """True when the block always leaves the current iteration (continue/return/raise/break)."""
    body = block.body
    if not body:
        return False
    last = body[-1]
    if isinstance(last, cst.SimpleStatementLine):
        return any(isinstance(s, cst.Continue | cst.Return | cst.Raise | cst.Break) for s in last.body)
    if isinstance(last, cst.If) and last.orelse is not None:
        other = last.orelse
        other_block = other.body if isinstance(other, cst.Else) else None
        if other_block is not None:
            return terminates(last.body) and terminates(other_block)
    return False
