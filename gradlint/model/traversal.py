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
from collections.abc import Callable

import libcst as cst

# Nodes no reader of the model looks at (tree_from_ast shares one instance of each per field).
TRIVIA: tuple[type, ...] = (
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


def children(node: cst.CSTNode) -> list[cst.CSTNode]:
    """The node's non-trivia children, in source order. A list, built in one go: a generator per
    node (suspended and resumed once per child) was the visit's main cost."""
    found: list[cst.CSTNode] = []
    significance = _significance
    for name in _field_names(type(node)):
        value = getattr(node, name)
        kind = type(value)
        if kind is tuple or kind is list:
            for item in value:
                known = significance.get(type(item))
                if known or (known is None and _significant(type(item))):
                    found.append(item)
        else:
            known = significance.get(kind)
            if known or (known is None and _significant(kind)):
                found.append(value)
    return found


_significance: dict[type, bool] = {}


def _significant(cls: type) -> bool:
    """A CST node that is not trivia. Cached per class: `isinstance` against LibCST's abstract
    bases goes through `ABCMeta.__instancecheck__`, which would be the visit's main cost."""
    known = _significance.get(cls)
    if known is None:
        known = _significance[cls] = issubclass(cls, cst.CSTNode) and not issubclass(cls, TRIVIA)
    return known


def visit(node: cst.CSTNode, visitor: cst.CSTVisitor) -> None:
    """Like `node.visit(visitor)` for a visitor that only reads (no attribute hooks, no trivia)."""
    cls = type(visitor)
    if cls.on_visit is not cst.CSTVisitor.on_visit or cls.on_leave is not cst.CSTVisitor.on_leave:
        _visit(node, visitor.on_visit, visitor.on_leave)
        return
    # The usual visitor: its `visit_Call` / `leave_Call` looked up once per node type, not by an
    # f-string and getattr per node (as `CSTVisitor.on_visit` does), and LibCST's empty stubs skipped.
    table = _hooks.setdefault(cls, {})

    def enter(child: cst.CSTNode) -> bool:
        hooks = table.get(type(child)) or _lookup(table, cls, type(child))
        return hooks[0] is None or hooks[0](visitor, child) is not False

    def leave(child: cst.CSTNode) -> None:
        hooks = table.get(type(child)) or _lookup(table, cls, type(child))
        if hooks[1] is not None:
            hooks[1](visitor, child)

    _visit(node, enter, leave)


_Hook = Callable[[cst.CSTVisitor, cst.CSTNode], object] | None
_hooks: dict[type, dict[type, tuple[_Hook, _Hook]]] = {}


def _lookup(table: dict[type, tuple[_Hook, _Hook]], cls: type, kind: type) -> tuple[_Hook, _Hook]:
    found = []
    for prefix in ("visit_", "leave_"):
        name = prefix + kind.__name__
        hook = getattr(cls, name, None)
        found.append(None if hook is getattr(cst.CSTVisitor, name, None) else hook)
    table[kind] = hooks = (found[0], found[1])
    return hooks


def _visit(node: cst.CSTNode, enter: Callable[[cst.CSTNode], bool], leave: Callable[[cst.CSTNode], None]) -> None:
    # An explicit stack (deeply nested code must not hit the recursion limit here) of nodes to
    # enter and, wrapped in a 1-tuple, nodes whose children are all done and which are left next.
    stack: list[cst.CSTNode | tuple[cst.CSTNode]] = [node]
    while stack:
        item = stack.pop()
        if type(item) is tuple:
            leave(item[0])
        elif enter(item) is False:
            leave(item)
        else:
            stack.append((item,))
            stack.extend(reversed(children(item)))
