"""The fast read-only visit meets every significant node in the order LibCST's own visit does."""

from __future__ import annotations

import dataclasses
import sysconfig
from pathlib import Path

import libcst as cst
import pytest

from gradlint.model import traversal

from .conftest import every_node

ROOT = Path(__file__).resolve().parent.parent
STDLIB = Path(sysconfig.get_paths()["stdlib"])
# Fixtures for training-loop styles; stdlib files for the grammar's corners (async, match, decorators,
# parameters of every kind, except*, conditional expressions).
SAMPLES = sorted((ROOT / "fixtures").rglob("*.py")) + [
    p for p in (STDLIB / "test" / name for name in ("test_patma.py", "test_coroutines.py",
                                                      "test_except_star.py", "test_positional_only_arg.py"))
    if p.exists()
] + [STDLIB / "asyncio" / "tasks.py", STDLIB / "dataclasses.py"]


class _Log(cst.CSTVisitor):
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        if traversal._significant(type(node)):
            self.seen.append(("enter", id(node)))
        return True

    def on_leave(self, original_node: cst.CSTNode) -> None:
        if traversal._significant(type(original_node)):
            self.seen.append(("leave", id(original_node)))


class _Hooked(cst.CSTVisitor):
    """A visitor of the usual kind (hooks by name), which the fast visit dispatches by type."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def visit_Call(self, node: cst.Call) -> None:
        self.seen.append(("enter", id(node)))

    def leave_Call(self, original_node: cst.Call) -> None:
        self.seen.append(("leave", id(original_node)))

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.seen.append(("enter", id(node)))

    def leave_IndentedBlock(self, original_node: cst.IndentedBlock) -> None:
        self.seen.append(("leave", id(original_node)))

    def visit_Name(self, node: cst.Name) -> None:
        self.seen.append(("enter", id(node)))


@pytest.mark.parametrize("indexed", [False, True], ids=["unindexed", "indexed"])
@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_same_order_as_libcst(path: Path, indexed: bool) -> None:
    module = cst.parse_module(path.read_text(encoding="utf-8"))
    if indexed:
        traversal.index(module)
    for theirs, ours in ((_Log(), _Log()), (_Hooked(), _Hooked())):
        module.visit(theirs)
        traversal.visit(module, ours)
        assert len(ours.seen) > 10
        assert ours.seen == theirs.seen


@pytest.mark.parametrize("indexed", [False, True], ids=["unindexed", "indexed"])
@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_parents_are_those_of_the_dataclass_fields(path: Path, indexed: bool) -> None:
    """Every significant node's parent as its fields hold it (trivia is never a parent: nothing
    significant hangs under a comma or a bracket); no entry for the root or for trivia."""
    module = cst.parse_module(path.read_text(encoding="utf-8"))
    if indexed:
        traversal.index(module)
    expected = {id(child): node for node in every_node(module) for child in _children(node)
                if traversal._significant(type(child))}
    found = traversal.parents(module)
    assert len(found) > 20
    assert {k: id(v) for k, v in found.items()} == {k: id(v) for k, v in expected.items()}


def _children(node: cst.CSTNode) -> list[cst.CSTNode]:
    return [c for f in dataclasses.fields(node) for v in [getattr(node, f.name)]
            for c in (v if isinstance(v, list | tuple) else (v,)) if isinstance(c, cst.CSTNode)]


@pytest.mark.parametrize("path", SAMPLES[:12], ids=lambda p: p.name)
def test_subtrees_of_an_indexed_module_visit_as_alone(path: Path) -> None:
    """A visit of any node of the indexed module (a function, a statement, an expression) meets
    what LibCST's visit of that node alone meets, in the same order."""
    module = cst.parse_module(path.read_text(encoding="utf-8"))
    traversal.index(module)
    subtrees = [n for n in every_node(module) if isinstance(n, cst.FunctionDef | cst.BaseStatement | cst.Call)]
    assert len(subtrees) > 5
    for node in subtrees:
        theirs, ours = _Hooked(), _Hooked()
        node.visit(theirs)
        traversal.visit(node, ours)
        assert ours.seen == theirs.seen


def test_a_tree_that_is_not_indexed_is_still_visited_whole() -> None:
    """Visits of another tree (a fix's new nodes, an earlier file's) while a module is indexed, and
    after the index moved on to the next module."""
    first = cst.parse_module("def f():\n    g(h())\n")
    second = cst.parse_module("x = k(m())\n")
    traversal.index(first)
    for module in (second, first):  # `first` after `second` was indexed: no longer the index
        theirs, ours = _Hooked(), _Hooked()
        module.visit(theirs)
        traversal.visit(module, ours)
        assert ours.seen == theirs.seen and len(ours.seen) >= 6
        traversal.index(second)


def test_pruning_skips_children_but_still_leaves() -> None:
    module = cst.parse_module("def f():\n    g(h())\nx = k()\n")
    calls: list[str] = []

    class NoFunctions(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return False

        def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
            calls.append("left f")

        def visit_Call(self, node: cst.Call) -> None:
            calls.append(cst.Module([]).code_for_node(node.func))

    traversal.visit(module, NoFunctions())
    assert calls == ["left f", "k"]


def test_deep_nesting_does_not_recurse() -> None:
    module = cst.parse_module("x = " + "(" * 400 + "1" + ")" * 400 + "\n")
    log = _Log()
    traversal.visit(module, log)
    assert log.seen[0] == ("enter", id(module))


def test_pruned_and_hookless_nodes_keep_leaves_in_order() -> None:
    """Leaves are due when the visit reaches a node with a hook past the subtree's end, also when
    the nodes in between have no hook and a pruned subtree is jumped over."""
    module = cst.parse_module("def f():\n    g(a, b)\n    def inner():\n        skipped()\n    h()\nk(c)\n")
    log: list[str] = []

    class Visitor(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            log.append(f"def {node.name.value}")
            return node.name.value != "inner"

        def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
            log.append(f"end {original_node.name.value}")

        def leave_Call(self, original_node: cst.Call) -> None:
            log.append(cst.Module([]).code_for_node(original_node.func))

    expected = ["def f", "g", "def inner", "end inner", "h", "end f", "k"]
    module.visit(Visitor())
    assert log == expected
    for indexed in (False, True):
        if indexed:
            traversal.index(module)
        log.clear()
        traversal.visit(module, Visitor())
        assert log == expected


@pytest.mark.parametrize("path", SAMPLES[:12], ids=lambda p: p.name)
def test_scope_orders_follow_source_order(path: Path) -> None:
    """A scope's `order` counts only the nodes its collector has a hook for; the calls it records
    must still be numbered in LibCST's visiting order, nested functions' calls left out."""
    from gradlint.model.scopes import build_scope

    module = cst.parse_module(path.read_text(encoding="utf-8"))
    traversal.index(module)
    checked = 0
    for function in [n for n in every_node(module) if isinstance(n, cst.FunctionDef)] + [module]:
        scope = build_scope(function)
        in_order = _own_calls(function)
        assert sorted(in_order, key=lambda call: scope.call_order[id(call)]) == in_order
        assert set(scope.call_order) == {id(c) for c in in_order}
        checked += len(in_order)
    assert checked > 3


def _own_calls(root: cst.CSTNode) -> list[cst.Call]:
    """The calls of `root` in LibCST's visiting order, not inside nested functions, classes, lambdas."""
    found: list[cst.Call] = []

    class Calls(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            if node is not root and isinstance(node, cst.FunctionDef | cst.ClassDef | cst.Lambda):
                return False
            if isinstance(node, cst.Call):
                found.append(node)
            return True

    root.visit(Calls())
    return found
