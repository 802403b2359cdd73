"""The fast read-only visit meets every significant node in the order LibCST's own visit does."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import libcst as cst
import pytest

from gradlint.model import traversal

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


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_same_order_as_libcst(path: Path) -> None:
    module = cst.parse_module(path.read_text(encoding="utf-8"))
    theirs, ours = _Log(), _Log()
    module.visit(theirs)
    traversal.visit(module, ours)
    assert len(ours.seen) > 10
    assert ours.seen == theirs.seen


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


def test_scope_collector_dispatches_every_hook_it_defines() -> None:
    """`_ScopeCollector.on_visit` calls its `visit_*` hooks from a table: a hook added to the class
    but not to the table would silently never run."""
    from gradlint.model import scopes

    defined = {name for name in vars(scopes._ScopeCollector) if name.startswith(("visit_", "leave_"))}
    assert defined == {f"visit_{kind.__name__}" for kind in scopes._HOOKS}
    for kind, hook in scopes._HOOKS.items():
        assert hook is getattr(scopes._ScopeCollector, f"visit_{kind.__name__}")
