"""A read-only visit of a LibCST tree, several times faster than `CSTNode.visit`.

`CSTNode.visit` rebuilds every node it passes (it is shared with transformers) and calls four
hooks per attribute; on a big module that is most of gradlint's time. The model's collectors only
read, and never look at whitespace, brackets, commas or operators, so this visit reads each node's
fields directly, skips that trivia, and calls the same `on_visit` / `on_leave` hooks (and so the
same `visit_Call` / `leave_Call` methods) of an ordinary `cst.CSTVisitor`, in the same order:
source order, which `tests/test_traversal.py` checks against LibCST's own visit.

The model visits the same nodes several times (the module for its facts, each function for its
scope, each statement for its calls, and rules and fixes again), so `index(module)` lists the
tree's nodes once, in that order, with where each subtree ends; a visit of the module or of any of
its nodes then runs along that list, and calls nothing for a node its visitor has no hook for.
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
    """The node's non-trivia children, in source order."""
    found: list[cst.CSTNode] = []
    _push_children(node, found.append)
    found.reverse()
    return found


def _push_children(node: cst.CSTNode, push: Callable[[cst.CSTNode], object]) -> None:
    """Push the node's non-trivia children last to first: onto a stack, the first is popped first."""
    kind = type(node)
    names = _fields_backwards.get(kind)
    if names is None:
        names = _fields_backwards[kind] = _field_names(kind)[::-1]
    significance = _significance
    for name in names:
        value = getattr(node, name)
        value_kind = type(value)
        if value_kind is tuple or value_kind is list:
            for item in reversed(value):
                known = significance.get(type(item))
                if known or (known is None and _significant(type(item))):
                    push(item)
        else:
            known = significance.get(value_kind)
            if known or (known is None and _significant(value_kind)):
                push(value)


_fields_backwards: dict[type, tuple[str, ...]] = {}
_significance: dict[type, bool] = {}


def _significant(cls: type) -> bool:
    """A CST node that is not trivia. Cached per class: `isinstance` against LibCST's abstract
    bases goes through `ABCMeta.__instancecheck__`, which would be the visit's main cost."""
    known = _significance.get(cls)
    if known is None:
        known = _significance[cls] = issubclass(cls, cst.CSTNode) and not issubclass(cls, TRIVIA)
    return known


class Preorder:
    """A tree's significant nodes in source order (the order of a visit's entries), with where
    each one's subtree ends and, for an indexed tree, where each node is."""

    __slots__ = ("at", "ends", "nodes")

    @classmethod
    def of(cls, nodes: list[typing.Any], ends: list[int], at: dict[int, int]) -> Preorder:
        """One listed by its tree's builder (gradlint/tree_from_ast.py)."""
        made = cls.__new__(cls)
        made.nodes, made.ends, made.at = nodes, ends, at
        return made

    def __init__(self, root: cst.CSTNode, locate: bool) -> None:
        nodes: list[cst.CSTNode] = []
        ends: list[int] = []
        at: dict[int, int] = {}
        # An explicit stack (deeply nested code must not hit the recursion limit here) of nodes to
        # enter and, as ints, the positions of nodes whose subtrees are complete.
        stack: list[cst.CSTNode | int] = [root]
        push = stack.append
        while stack:
            item = stack.pop()
            if type(item) is int:
                ends[item] = len(nodes)
                continue
            position = len(nodes)
            if locate:
                at[id(item)] = position
            push(position)
            nodes.append(item)  # type: ignore[arg-type]
            ends.append(0)
            _push_children(item, push)  # type: ignore[arg-type]
        self.nodes = nodes
        self.ends = ends
        self.at = at


# The tree the model was last built on: its visits (a module's facts, every function's scope, every
# statement's calls) read one shared preorder instead of each finding its children again.
_indexed: Preorder | None = None


def index(module: cst.Module, listed: Preorder | None = None) -> None:
    """Make later visits of `module` and its subtrees read one preorder of it (until the next
    call): `listed`, when its builder made one, else one listed here."""
    global _indexed
    _indexed = None  # the previous tree's nodes are not kept alive while the new index is built
    _indexed = listed if listed is not None else Preorder(module, locate=True)


def preorder(node: cst.CSTNode) -> Preorder:
    """The significant nodes of the subtree, listed (without where each one is)."""
    return Preorder(node, locate=False)


def _preorder_of(node: cst.CSTNode) -> tuple[Preorder, int]:
    found = _indexed
    if found is not None:
        position = found.at.get(id(node))
        # An id is unique among live objects, and the index keeps its nodes alive.
        if position is not None:
            return found, position
    return Preorder(node, locate=False), 0


def holds(root: cst.CSTNode, node: cst.CSTNode) -> bool:
    """Whether `node` is `root` or inside it: two lookups in the indexed tree's preorder (a node's
    subtree is the run of positions up to its end), else a search of `root`'s subtree."""
    found = _indexed
    if found is not None:
        outer, inner = found.at.get(id(root)), found.at.get(id(node))
        if outer is not None and inner is not None:
            return outer <= inner < found.ends[outer]
    if root is node:
        return True
    listed = Preorder(root, locate=False)
    return any(n is node for n in listed.nodes)


def parents(root: cst.CSTNode) -> dict[int, cst.CSTNode]:
    """id(node) -> its parent, for every significant node under `root` (trivia has none listed):
    read off the preorder, where a node's parent is the nearest earlier node whose subtree holds it."""
    preorder, start = _preorder_of(root)
    nodes, ends = preorder.nodes, preorder.ends
    found: dict[int, cst.CSTNode] = {}
    open_ancestors = [start]
    for position in range(start + 1, ends[start]):
        while ends[open_ancestors[-1]] <= position:
            open_ancestors.pop()
        found[id(nodes[position])] = nodes[open_ancestors[-1]]
        open_ancestors.append(position)
    return found


def visit(node: cst.CSTNode, visitor: cst.CSTVisitor) -> None:
    """Like `node.visit(visitor)` for a visitor that only reads (no attribute hooks, no trivia)."""
    preorder, start = _preorder_of(node)
    _visit_hooked(preorder, start, visitor, _hooks.setdefault(type(visitor), {}))


def _visit_hooked(preorder: Preorder, start: int, visitor: cst.CSTVisitor,
                  table: dict[type, tuple[_Hook, _Hook]]) -> None:
    """The hooks of each node type looked up once per visitor class (`_lookup`), and a node with
    none (most are Names, Attributes, Args) passed over without a call."""
    nodes, ends = preorder.nodes, preorder.ends
    cls = type(visitor)
    pending: list[tuple[int, cst.CSTNode, _Hook]] = []
    position, stop = start, ends[start]
    while position < stop:
        node = nodes[position]
        hooks = table.get(type(node)) or _lookup(table, cls, type(node))
        if hooks is _NO_HOOKS:
            position += 1
            continue
        while pending and pending[-1][0] <= position:  # leaves are due before the next hook runs
            _, done, leave = pending.pop()
            leave(visitor, done)  # type: ignore[misc]
        enter, leave = hooks
        if enter is not None and enter(visitor, node) is False:
            if leave is not None:
                leave(visitor, node)
            position = ends[position]
            continue
        if leave is not None:
            pending.append((ends[position], node, leave))
        position += 1
    while pending:
        _, done, leave = pending.pop()
        leave(visitor, done)  # type: ignore[misc]


_Hook = Callable[[cst.CSTVisitor, cst.CSTNode], object] | None
_NO_HOOKS: tuple[_Hook, _Hook] = (None, None)
_hooks: dict[type, dict[type, tuple[_Hook, _Hook]]] = {}


def _lookup(table: dict[type, tuple[_Hook, _Hook]], cls: type, kind: type) -> tuple[_Hook, _Hook]:
    """A visitor's own `on_visit` / `on_leave` see every node. The usual visitor: its `visit_Call` /
    `leave_Call`, found once per node type instead of by an f-string and getattr per node (as
    `CSTVisitor.on_visit` does), LibCST's empty stubs left out."""
    if cls.on_visit is not cst.CSTVisitor.on_visit or cls.on_leave is not cst.CSTVisitor.on_leave:
        table[kind] = hooks = (cls.on_visit, cls.on_leave)  # type: ignore[attr-defined]
        return hooks
    found = []
    for prefix in ("visit_", "leave_"):
        name = prefix + kind.__name__
        hook = getattr(cls, name, None)
        found.append(None if hook is getattr(cst.CSTVisitor, name, None) else hook)
    table[kind] = hooks = (found[0], found[1]) if found != [None, None] else _NO_HOOKS
    return hooks


def names_in(node: cst.CSTNode) -> set[str]:
    """Every plain name under `node`, the parts of attributes included (`self.x` gives `self`, `x`)."""
    found: set[str] = set()

    class Names(cst.CSTVisitor):
        def visit_Name(self, name: cst.Name) -> None:
            found.add(name.value)

    visit(node, Names())
    return found
