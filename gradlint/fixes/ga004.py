"""GA004 fix: a last-batch clause in the gate, `or (i + 1) == len(loader)`.

What it does, and when it is safe or unsafe or not offered: the `## Fix` section of the rule
(docs/rules/GA004.md), which tests/test_fixes.py and fixtures/fixes/GA004/ hold to."""

from __future__ import annotations

import re

import libcst as cst

from gradlint.fixes.edits import Applicability, EditKind, Fix, NodeEdit
from gradlint.fixes.tree import (
    block,
    event_statements,
    expr_text,
    function_of,
    inside,
    loop_function,
    owner,
    parent,
    source,
    statement_text,
)
from gradlint.model import Kind, ModuleModel, Phase, TrainingLoop, loop_iterable, traversal
from gradlint.model.gates import periodicity
from gradlint.model.syntax import dotted, last_part, number, positional, reads_layout

_DISPLAY = ("tqdm", "track")
_SYNC = re.compile(r"no_sync|grad_sync|gradient_sync|backward_sync")


def fix(model: ModuleModel, loop: TrainingLoop) -> Fix | None:
    gate, node = loop.gate, loop.loop.node
    if gate is None or gate.periodic is None or not isinstance(node, cst.For):
        return None
    found = _index_and_length(loop)
    counter = dotted(gate.periodic.counter)
    if counter is None:
        return None
    if found is None or found[0] != counter:
        return _flush(model, loop, counter)
    _, offset, length = found
    target = _condition(model, loop)
    if target is None:
        return None
    raw = periodicity(target, lambda _name: [])
    if raw is None or raw.modulus is None or raw.has_alternative or dotted(raw.counter) != counter:
        return None
    position = f"({counter} + {offset})" if offset else counter
    if raw.phase is Phase.ONCE:
        text, clause = f"{expr_text(target)} or {position} == {length}", f"or {position} == {length}"
    else:
        text, clause = f"{expr_text(target)} and {position} != {length}", f"and {position} != {length}"
    safe = not _period_tested_elsewhere(model, loop, target)
    return Fix(Applicability.SAFE if safe else Applicability.UNSAFE,
               f"Step on the epoch's last batch too: `{clause}`", (NodeEdit(EditKind.REPLACE, target, text),))


def _index_and_length(loop: TrainingLoop) -> tuple[str, int, str] | None:
    """(the loop's index, what to add to it to count batches, `len(loader)`)."""
    iterable = loop_iterable(loop.loop)
    node = loop.loop.node
    assert isinstance(node, cst.For)
    if not isinstance(iterable, cst.Call):
        return None
    name = last_part(dotted(iterable.func))
    args = positional(iterable)
    if name == "range" and len(args) == 1 and isinstance(args[0], cst.Call) and dotted(args[0].func) == "len":
        index = dotted(node.target)
        return (index, 1, expr_text(args[0])) if index else None
    while name in _DISPLAY and args and isinstance(args[0], cst.Call):  # tqdm(enumerate(loader))
        iterable = args[0]
        name, args = last_part(dotted(iterable.func)), positional(iterable)
    if name != "enumerate" or not args or len(iterable.args) > 2:
        return None
    start = number(iterable.args[1].value) if len(iterable.args) == 2 else 0.0
    if start not in (0.0, 1.0) or not isinstance(node.target, cst.Tuple) or not node.target.elements:
        return None
    index = dotted(node.target.elements[0].value)
    inner = args[0]
    while isinstance(inner, cst.Call) and last_part(dotted(inner.func)) in _DISPLAY and positional(inner):
        inner = positional(inner)[0]  # enumerate(tqdm(loader)): the loader's length
    sized = dotted(inner)
    if index is None or sized is None:
        return None
    return index, 1 - int(start), f"len({sized})"


def _condition(model: ModuleModel, loop: TrainingLoop) -> cst.BaseExpression | None:
    """The periodic condition as written: the gate's test, or the one assignment of the flag it tests."""
    gate = loop.gate
    assert gate is not None and gate.periodic is not None
    modulus = gate.periodic.modulus
    if modulus is None:
        return None
    candidate: cst.CSTNode | None = modulus
    while candidate is not None and not isinstance(candidate, cst.If | cst.Assign | cst.BaseSmallStatement):
        previous, candidate = candidate, parent(model, candidate)
        if (isinstance(candidate, cst.If) and candidate.test is previous) or isinstance(candidate, cst.Assign):
            target = previous if isinstance(candidate, cst.If) else candidate.value
            pure = isinstance(target, cst.Comparison | cst.UnaryOperation | cst.BinaryOperation)
            if not pure or not isinstance(target, cst.BaseExpression):
                return None
            if isinstance(candidate, cst.Assign):
                flag = candidate.targets[0].target
                tested = gate.expr.expression if isinstance(gate.expr, cst.UnaryOperation) else gate.expr
                if len(candidate.targets) != 1 or not isinstance(flag, cst.Name) or dotted(tested) != flag.value \
                        or len(loop.loop.frame.scope.assignments.get(flag.value, [])) != 1:
                    return None
            same_function = loop_function(model, loop) is function_of(model, target)
            if not same_function or not inside(model, target, loop.loop.node):
                return None
            return target
    return None


def _period_tested_elsewhere(model: ModuleModel, loop: TrainingLoop, target: cst.BaseExpression) -> bool:
    """Another test of the same period in the loop (a `no_sync()` flag, a second condition)."""
    if any(c.method == "no_sync" for e in loop.of_kind(Kind.BACKWARD) for c in e.contexts):
        return True
    body = source(loop.loop.node)
    if _SYNC.search(body):  # `require_backward_grad_sync = ...`, `maybe_no_sync()`, FSDP, Fabric
        return True
    own = source(target)
    modulus = loop.gate.periodic.modulus if loop.gate and loop.gate.periodic else None
    if modulus is None:
        return True
    needle = re.compile(rf"%\s*{re.escape(expr_text(modulus))}\b")
    return len(needle.findall(body)) > len(needle.findall(own))


_BLOCK_KINDS = (Kind.STEP, Kind.ZERO_GRAD, Kind.SCALER_UPDATE, Kind.UNSCALE, Kind.CLIP, Kind.SCHEDULER_STEP)


def _flush(model: ModuleModel, loop: TrainingLoop, counter: str) -> Fix | None:
    """`if seen % K != 0:` + the step block, after the loop (unsafe: a guess)."""
    gate, node = loop.gate, loop.loop.node
    assert gate is not None and isinstance(node, cst.For)
    test = gate.expr
    gate_if = parent(model, test)
    if not isinstance(gate_if, cst.If) or gate_if.test is not test or gate_if.orelse is not None or gate.negated:
        return None
    if owner(model, gate_if) is not node or node.orelse is not None or block(model, node) is None:
        return None
    raw = periodicity(test, lambda _name: [])
    if not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1
            and isinstance(test.comparisons[0].operator, cst.Equal) and raw is not None
            and raw.phase is Phase.ONCE and dotted(raw.counter) == counter and raw.offset == 0):
        return None
    events = event_statements(model, loop, *_BLOCK_KINDS)
    texts = [statement_text(s) if id(s) in events else None for s in gate_if.body.body]
    if not texts or None in texts or not any(events[id(s)].kind is Kind.STEP for s in gate_if.body.body):
        return None
    suite, index = block(model, gate_if)  # type: ignore[misc]
    if not any(_increments(s, counter) for s in suite.body[:index]) or any(
            _assigns(s, counter) for s in suite.body[index:]):
        return None
    space = cst.SimpleWhitespace(" ")
    reads_layout(test)  # the copy below keeps its brackets and spaces
    inverted = test.with_changes(comparisons=[test.comparisons[0].with_changes(
        operator=cst.NotEqual(whitespace_before=space, whitespace_after=space))])
    body = "\n".join("    " + line for text in texts for line in str(text).splitlines())
    return Fix(Applicability.UNSAFE, "Step once more after the loop for the epoch's last micro-batches",
               (NodeEdit(EditKind.INSERT_AFTER, node, f"if {expr_text(inverted)}:\n{body}"),))


def _increments(stmt: cst.CSTNode, counter: str) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and any(
        isinstance(s, cst.AugAssign) and isinstance(s.operator, cst.AddAssign) and dotted(s.target) == counter
        and number(s.value) == 1 for s in stmt.body)


def _assigns(stmt: cst.CSTNode, counter: str) -> bool:
    """Whether a statement (or anything in it) sets the counter."""
    found = False

    class _Targets(cst.CSTVisitor):
        def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
            nonlocal found
            found = found or dotted(node.target) == counter

        def visit_AugAssign(self, node: cst.AugAssign) -> None:
            nonlocal found
            found = found or dotted(node.target) == counter

    traversal.visit(stmt, _Targets())
    return found
