"""Whether a training loop writes `.grad` by hand (PCGrad-style gradient surgery, GradCache).

Clearing before each backward and then writing the gradients is the recipe of such loops, not an
accumulation bug: GA001/GA002 (for inner loops) and GA006 stay silent on them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import libcst as cst

from gradlint.model import traversal
from gradlint.model.loops import LoopKind, TrainingLoop
from gradlint.model.syntax import dotted

if TYPE_CHECKING:
    from gradlint.model import ModuleModel


# Calls that write `.grad` in place, and helper names that set gradients by hand.
_GRAD_WRITERS = {"copy_", "add_", "set_", "index_add_", "addcmul_", "lerp_"}
_SETS_GRADIENTS = re.compile(r"(?i).*(set|assign|write|project|combine|apply)_?grad.*|.*pc_backward.*")


def writes_gradients(model: ModuleModel, loop: TrainingLoop) -> bool:
    """Whether the loop (or a same-module helper it calls) writes `.grad` by hand: `p.grad = g`,
    `p.grad.copy_(g)`, `set_grads(...)`. Clearing first is then part of the recipe."""
    scan = _GradWrites(model)
    if loop.window is not None:
        root = loop.window.node
    else:  # an inner micro-step loop in a function: the window is the function's body
        root = loop.loop.frame.scope.node if loop.kind is LoopKind.INNER else loop.loop.node
    pending: list[cst.CSTNode] = [root]
    while pending and not scan.found:
        node = pending.pop()
        if id(node) in scan.seen:
            continue
        scan.seen.add(id(node))
        traversal.visit(node, scan)
        pending.extend(scan.helpers)
        scan.helpers = []
    return scan.found


class _GradWrites(cst.CSTVisitor):
    def __init__(self, model: ModuleModel) -> None:
        self.facts = model.facts
        self.found = False
        self.seen: set[int] = set()
        self.helpers: list[cst.FunctionDef] = []

    def visit_Assign(self, node: cst.Assign) -> None:
        if isinstance(node.value, cst.Name) and node.value.value == "None":
            return  # a clear, not a write
        if any((dotted(t.target) or "").endswith((".grad", ".grad.data")) for t in node.targets):
            self.found = True

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        if (dotted(node.target) or "").endswith((".grad", ".grad.data")) and isinstance(node.operator, cst.AddAssign):
            self.found = True

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if isinstance(func, cst.Attribute):
            owner = dotted(func.value) or ""
            if func.attr.value in _GRAD_WRITERS and owner.endswith((".grad", ".grad.data")):
                self.found = True
            name = func.attr.value
            self.helpers.extend(m for _, m in self.facts.methods.get(name, []))
        else:
            name = dotted(func) or ""
            if name in self.facts.functions:
                self.helpers.append(self.facts.functions[name])
        if _SETS_GRADIENTS.fullmatch(name):
            self.found = True
