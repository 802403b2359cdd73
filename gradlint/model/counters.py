"""Where a gate's micro-batch counter stands when the gate is first tested.

`i % K == 0` means different things for a 0-based `enumerate` index (the step fires on the first
micro-batch: an off-by-one) and for a counter incremented before the test (1-based: correct).
"""

from __future__ import annotations

import libcst as cst

from gradlint.model import traversal
from gradlint.model.gates import Phase
from gradlint.model.loops import TrainingLoop, loop_iterable
from gradlint.model.syntax import dotted, last_part, number, positional
from gradlint.model.walker import Guard


def zero_based_counter(loop: TrainingLoop, gate: Guard, mod: cst.BinaryOperation) -> str | None:
    """The name of the counter under `mod` (`i` in `i % K`) when it is 0 at the first micro-batch's
    test, else None (1-based, or unknown)."""
    info = loop.loop
    name = dotted(mod.left) or ""
    test_site: cst.CSTNode = mod
    if gate.frame.scope is not info.frame.scope:
        # The gate sits in a helper: follow the counter to the argument at the loop's call site.
        bound = gate.frame.binding(name)
        calls = gate.frame.via[len(info.frame.via):]
        if bound is None or bound[1].scope is not info.frame.scope or not calls:
            return None
        name, test_site = dotted(bound[0]) or "", calls[0]
        if not name:
            return None
    scope = info.frame.scope
    if info.implicit:
        return name if name == "batch_idx" and name not in scope.assignments else None
    start = _loop_target_start(loop, name)
    if start is not None:
        return name if start == 0 and name not in scope.incremented else None
    if name not in scope.incremented or not scope.zeroed.get(name):
        return None
    others = [a for a in scope.assignments.get(name, [])
              if a.operator is None and not (isinstance(a.value, cst.Integer) and a.value.value == "0")]
    if others:
        return None  # resumed from a checkpoint or otherwise set: cannot tell where it starts
    order = _Order(name, test_site)
    traversal.visit(info.node, order)
    if order.test is None or not order.after or any(i < order.test for i in order.before):
        return None  # incremented before the test: 1-based where it is tested
    return name


def steps_on_first_micro_batch(loop: TrainingLoop) -> bool:
    """The step's gate holds on the loop's first micro-batch (`i % K == 0`, `not i % K`, a flag
    `is_accumulating = i % K != 0` negated, with `i` 0-based): every pass over the loader then
    opens with a step, which applies whatever gradient the previous pass left behind."""
    gate = loop.gate
    periodic = gate.periodic if gate is not None else None
    if gate is None or periodic is None or periodic.test is None:
        return False
    if periodic.phase is not Phase.ONCE or periodic.residue != 0 or periodic.offset != 0:
        return False
    return zero_based_counter(loop, gate, periodic.test) is not None


def _loop_target_start(loop: TrainingLoop, name: str) -> float | None:
    """Where an `enumerate` index or `range` target named `name` starts; None if it is neither."""
    node = loop.loop.node
    iterable = loop_iterable(loop.loop)
    if not isinstance(node, cst.For) or iterable is None:
        return None
    target: cst.BaseExpression | None = node.target
    while isinstance(iterable, cst.Call):
        func = last_part(dotted(iterable.func))
        args = positional(iterable)
        if func == "enumerate" and args:
            if isinstance(target, cst.Tuple) and target.elements and dotted(target.elements[0].value) == name:
                start = next((a.value for a in iterable.args if a.keyword and a.keyword.value == "start"), None)
                if start is None and len(args) > 1:
                    start = args[1]
                return 0.0 if start is None else number(start)
            return None
        if func == "range":
            if dotted(target) != name:
                return None
            return 0.0 if len(args) == 1 else number(args[0]) if args else None
        if func not in ("tqdm", "trange", "track") or not args:
            return None
        iterable = args[0]
    return None


class _Order(cst.CSTVisitor):
    """Lexical order of a counter's increments and of the test, within one loop body."""

    def __init__(self, name: str, test_site: cst.CSTNode) -> None:
        self.name = name
        self.site = test_site
        self.index = 0
        self.test: int | None = None
        self.before: list[int] = []
        self.after: list[int] = []
        self.gate_ifs = 0

    def on_visit(self, node: cst.CSTNode) -> bool:
        self.index += 1
        if node is self.site:
            self.test = self.index
        if isinstance(node, cst.AugAssign) and isinstance(node.operator, cst.AddAssign) \
                and dotted(node.target) == self.name:
            if self.test is None:
                self.before.append(self.index)
            elif not self._inside_gate:
                self.after.append(self.index)
        if isinstance(node, cst.If) and _contains(node.test, self.site):
            self.gate_ifs += 1
        return not isinstance(node, cst.FunctionDef | cst.ClassDef | cst.Lambda) or self.index == 1

    def on_leave(self, original_node: cst.CSTNode) -> None:
        if isinstance(original_node, cst.If) and _contains(original_node.test, self.site):
            self.gate_ifs -= 1

    @property
    def _inside_gate(self) -> bool:
        return self.gate_ifs > 0


def _contains(root: cst.CSTNode, target: cst.CSTNode) -> bool:
    if root is target:
        return True
    return any(_contains(child, target) for child in root.children)
