"""A read-only visit of a LibCST tree, several times faster than `CSTNode.visit`.

`CSTNode.visit` rebuilds every node it passes (it is shared with transformers) and calls four
hooks per attribute; on a big module that is most of gradlint's time. The model's collectors only
read, and never look at whitespace, brackets, commas or operators, so this visit reads each node's
fields directly, skips that trivia, and calls the same `on_visit` / `on_leave` hooks (and so the
same `visit_Call` / `leave_Call` methods) of an ordinary `cst.CSTVisitor`, in the same order:
source order, which `tests/test_traversal.py` checks against LibCST's own visit.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator

import libcst as cst

_TRIVIA: tuple[type, ...] = (
    cst.BaseParenthesizableWhitespace, cst.TrailingWhitespace, cst.EmptyLine, cst.Newline, cst.Comment,
    cst.LeftParen, cst.RightParen, cst.LeftSquareBracket, cst.RightSquareBracket, cst.LeftCurlyBrace,
    cst.RightCurlyBrace, cst.Comma, cst.Semicolon, cst.Colon, cst.Dot, cst.AssignEqual,
    cst.BaseBinaryOp, cst.BaseBooleanOp, cst.BaseCompOp, cst.BaseUnaryOp, cst.BaseAugOp, cst.Asynchronous,
)
# Where a class's fields are declared in another order than its source text.
_SOURCE_ORDER = {
    cst.FunctionDef: ("decorators", "name", "type_parameters", "params", "returns"),
    cst.ClassDef: ("decorators", "name", "type_parameters", "bases", "keywords"),
    cst.IfExp: ("body", "test", "orelse"),
    cst.ExceptHandler: ("type", "name"),
    cst.ExceptStarHandler: ("type", "name"),
    cst.Arg: ("keyword",),
    cst.MatchCase: ("pattern", "guard"),
    cst.Parameters: ("posonly_params", "posonly_ind", "params", "star_arg", "kwonly_params", "star_kwarg"),
}
_fields: dict[type, tuple[str, ...]] = {}
_PLAIN_MODULES = ("builtins", "libcst._maybe_sentinel", "typing")


def _field_names(cls: type) -> tuple[str, ...]:
    """The fields of `cls` that can hold a non-trivia node, in source order."""
    names = _fields.get(cls)
    if names is None:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # an annotation this Python cannot resolve: read every field
            hints = {}
        declared = [f.name for f in dataclasses.fields(cls) if f.name not in hints or _may_hold_node(hints[f.name])]
        first = tuple(n for n in _SOURCE_ORDER.get(cls, ()) if n in declared)  # LibCST versions differ
        names = tuple([*first, *(n for n in declared if n not in first)])
        _fields[cls] = names
    return names


def _may_hold_node(hint: object) -> bool:
    """False only for a field whose annotation admits nothing but trivia and plain values
    (`whitespace_after_func`, `lpar`, `comma`): most of a node's fields, never worth reading."""
    if typing.get_origin(hint) is typing.Literal:
        return False  # `star: Literal["", "*", "**"]`
    args = typing.get_args(hint)
    if args:
        return any(_may_hold_node(a) for a in args)
    if isinstance(hint, type):
        return _significant(hint) or not (issubclass(hint, cst.CSTNode) or hint.__module__ in _PLAIN_MODULES)
    return True  # a forward reference or type variable: unknown, so read it


def children(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """The node's non-trivia children, in source order."""
    for name in _field_names(type(node)):
        value = getattr(node, name)
        if isinstance(value, tuple | list):
            for item in value:
                if _significant(type(item)):
                    yield item
        elif _significant(type(value)):
            yield value


_significance: dict[type, bool] = {}


def _significant(cls: type) -> bool:
    """A CST node that is not trivia. Cached per class: `isinstance` against LibCST's abstract
    bases goes through `ABCMeta.__instancecheck__`, which would be the visit's main cost."""
    known = _significance.get(cls)
    if known is None:
        known = _significance[cls] = issubclass(cls, cst.CSTNode) and not issubclass(cls, _TRIVIA)
    return known


def visit(node: cst.CSTNode, visitor: cst.CSTVisitor) -> None:
    """Like `node.visit(visitor)` for a visitor that only reads (no attribute hooks, no trivia)."""
    if visitor.on_visit(node) is False:
        visitor.on_leave(node)
        return
    stack: list[tuple[cst.CSTNode, Iterator[cst.CSTNode]]] = [(node, children(node))]
    while stack:  # explicit stack: deeply nested code must not hit the recursion limit here
        parent, pending = stack[-1]
        child = next(pending, None)
        if child is None:
            stack.pop()
            visitor.on_leave(parent)
        elif visitor.on_visit(child) is False:
            visitor.on_leave(child)
        else:
            stack.append((child, children(child)))
