"""Where a gate's micro-batch counter stands when the gate is first tested.

`i % K == 0` means different things for a 0-based `enumerate` index (the step fires on the first
micro-batch: an off-by-one) and for a counter incremented before the test (1-based: correct).
"""

from __future__ import annotations

from typing import NamedTuple

import libcst as cst

from gradlint.model import traversal
from gradlint.model.facts import ModuleFacts, target_names
from gradlint.model.gates import Phase
from gradlint.model.loops import TrainingLoop, loop_iterable
from gradlint.model.syntax import canonical, dotted, last_part, number, positional
from gradlint.model.walker import Guard


class Reached(NamedTuple):
    """`counter >= bound` (or `>`, `==`): a test that holds once a counter has reached a bound."""

    counter: cst.BaseExpression  # `iter_num` in `iter_num + 1 >= max_iters`
    added: cst.BaseExpression | None  # `1` there; None for `iter_num >= max_iters`
    bound: cst.BaseExpression


def reached(test: cst.BaseExpression) -> Reached | None:
    """The counter and bound of an exit test (`if step >= max_steps: break`, `if global_step ==
    total: return`), also with an offset (`iter_num + 1 >= max_iters`)."""
    if not isinstance(test, cst.Comparison) or len(test.comparisons) != 1:
        return None
    target = test.comparisons[0]
    if not isinstance(target.operator, cst.GreaterThan | cst.GreaterThanEqual | cst.Equal):
        return None
    left = test.left
    if isinstance(left, cst.BinaryOperation) and isinstance(left.operator, cst.Add):
        return Reached(left.left, left.right, target.comparator)
    return Reached(left, None, target.comparator)


def zero_based_counter(loop: TrainingLoop, gate: Guard, mod: cst.BinaryOperation) -> str | None:
    """The name of the counter under `mod` (`i` in `i % K`) when it is 0 at the first micro-batch's
    test, else None (1-based, or unknown)."""
    info = loop.loop
    name = dotted(mod.left) or ""
    test_site: cst.CSTNode = mod
    if gate.frame.scope is not info.frame.scope:
        # The gate sits in a helper: follow the counter to the argument at the loop's call site.
        bound = gate.frame.binding(name)
        calls = gate.frame.calls_below(info.frame)
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
        if isinstance(node, cst.If) and traversal.holds(node.test, self.site):
            self.gate_ifs += 1
        return not isinstance(node, cst.FunctionDef | cst.ClassDef | cst.Lambda) or self.index == 1

    def on_leave(self, original_node: cst.CSTNode) -> None:
        if isinstance(original_node, cst.If) and traversal.holds(original_node.test, self.site):
            self.gate_ifs -= 1

    @property
    def _inside_gate(self) -> bool:
        return self.gate_ifs > 0




def frozen_counter(loop: TrainingLoop, facts: ModuleFacts) -> cst.AugAssign | None:
    """The increment of the gate's counter when the loop advances that counter only while the gate
    holds (`c += 1` under the gate, `c += int(flag)` with the gate's own flag): once the gate fails
    the counter stops, so the gate can never hold again. None when anything else may move it (an
    assignment, an increment elsewhere, a loop target, a helper called in the loop that sets it)."""
    gate = loop.gate
    periodic = gate.periodic if gate is not None else None
    if gate is None or periodic is None or periodic.test is None or periodic.phase is not Phase.ONCE or gate.negated:
        return None
    name = dotted(periodic.counter)
    if not name or number(periodic.modulus) == 1 or gate.frame.scope is not loop.loop.frame.scope:
        return None
    node = loop.loop.node
    if not isinstance(node, cst.For | cst.While) or _loop_target_start(loop, name) is not None:
        return None
    writes = _Writes(name, canonical(gate.expr))
    traversal.visit(node.body, writes)
    if writes.other or not writes.gated:
        return None
    if _helpers_may_set(writes.calls, name, facts):
        return None
    return writes.gated[0]


class _Writes(cst.CSTVisitor):
    """Writes of `name` in a loop body: increments under the gate's test (or by the gate's flag),
    and anything else; with the names the body calls."""

    def __init__(self, name: str, gate_text: str) -> None:
        self.name = name
        self.gate_text = gate_text
        self.gated: list[cst.AugAssign] = []
        self.other = False
        self.calls: set[str] = set()
        self._under_gate = 0

    def visit_If(self, node: cst.If) -> bool:
        # Walked by hand: only the taken branch of a test of the gate counts as under it.
        traversal.visit(node.test, self)
        gate = canonical(node.test) == self.gate_text
        self._under_gate += gate
        traversal.visit(node.body, self)
        self._under_gate -= gate
        if node.orelse is not None:
            traversal.visit(node.orelse, self)
        return False

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False

    def visit_Call(self, node: cst.Call) -> None:
        self.calls.add(last_part(dotted(node.func)))

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        if dotted(node.target) != self.name:
            return
        value = node.value
        by_flag = isinstance(value, cst.Call) and dotted(value.func) in ("int", "float") \
            and len(value.args) == 1 and canonical(value.args[0].value) == self.gate_text
        if isinstance(node.operator, cst.AddAssign) and (self._under_gate or by_flag
                                                          or canonical(value) == self.gate_text):
            self.gated.append(node)
        else:
            self.other = True

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        self.other = self.other or self.name in target_names(node.target)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.other = self.other or self.name in target_names(node.target)

    def visit_For(self, node: cst.For) -> None:
        self.other = self.other or self.name in target_names(node.target)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self.other = self.other or dotted(node.target) == self.name


def _helpers_may_set(calls: set[str], name: str, facts: ModuleFacts) -> bool:
    """Whether a function or method of this module called in the loop (or by those, two levels
    deep) assigns the counter: `self.step += 1` in `self.optimizer_step()`, `global step`."""
    attribute = name.split(".", 1)[1] if name.startswith("self.") else None
    seen: set[int] = set()
    pending = [f for c in calls for f in _functions_named(c, facts)]
    for _ in range(3):
        found: list[cst.FunctionDef] = []
        for function in pending:
            if id(function) in seen:
                continue
            seen.add(id(function))
            writes = _Writes(f"self.{attribute}" if attribute else name, "")
            traversal.visit(function.body, writes)
            if writes.gated or writes.other or (attribute is None and _declares_global(function, name)):
                return True
            found += [f for c in writes.calls for f in _functions_named(c, facts)]
        pending = found
    return False


def _functions_named(name: str, facts: ModuleFacts) -> list[cst.FunctionDef]:
    found = [m for _, m in facts.methods.get(name, [])]
    function = facts.functions.get(name)
    return [*found, function] if function is not None else found


def _declares_global(function: cst.FunctionDef, name: str) -> bool:
    finder = _Globals()
    traversal.visit(function.body, finder)
    return name in finder.names


class _Globals(cst.CSTVisitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Global(self, node: cst.Global) -> None:
        self.names.update(n.name.value for n in node.names)

    def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
        self.names.update(n.name.value for n in node.names)
