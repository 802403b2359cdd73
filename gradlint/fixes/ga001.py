"""GA001 fix: remove the per-micro-batch `zero_grad()`, and clear once per window after the step.

What it does, and when it is safe or unsafe or not offered: the `## Fix` section of the rule
(docs/rules/GA001.md), which tests/test_fixes.py and fixtures/fixes/GA001/ hold to."""

from __future__ import annotations

import libcst as cst

from gradlint.fixes.common import after_step, applicability, window_step
from gradlint.fixes.edits import Applicability, EditKind, Fix, NodeEdit
from gradlint.fixes.tree import (
    as_divisor,
    loop_function,
    moving,
    portable,
    removal,
    root_names,
    statement,
)
from gradlint.model import Event, Kind, LoopKind, ModuleModel, Role, TrainingLoop, When
from gradlint.model.syntax import code


def fix(model: ModuleModel, loop: TrainingLoop, event: Event) -> Fix | None:
    if loop.kind is LoopKind.ACCELERATE:
        return _accelerate(model, loop, event)
    stmt = statement(model, event.node)
    if stmt is None:
        return None
    if any(e is not event and loop.when(e) is When.ONCE and _clears_the_same(model, loop, e, event)
           for e in loop.of_kind(Kind.ZERO_GRAD)):
        edits = removal(model, stmt)  # a clear already runs once per window: this one only goes
        if edits is None:
            return None
        return Fix(applicability(model, loop, edits), f"Remove `{code(event.node)}`", tuple(edits))
    moved = moving(model, stmt)
    step = window_step(model, loop, event.optimizer)
    if not isinstance(event.node, cst.Call) or moved is None or step is None:
        return None
    edits, comments, text = moved
    anchor = after_step(model, loop, step)
    written = _at_loop(model, loop, event, text) if not portable(model, event.node, anchor) else text
    if written is None:
        return None
    edits.append(NodeEdit(EditKind.INSERT_AFTER, anchor, "\n".join([*comments, written])))
    safety = applicability(model, loop, edits)
    if _conditions(loop, step) - _conditions(loop, event):
        # `if not skip: optimizer.step()` in the gate: the clear would be skipped with the step,
        # where the reported code cleared on every micro-batch.
        safety = Applicability.UNSAFE
    return Fix(safety, f"Move `{written.split('#')[0].strip()}` after the step", tuple(edits))


def _clears_the_same(model: ModuleModel, loop: TrainingLoop, clear: Event, reported: Event) -> bool:
    """`clear` covers what `reported` clears: the same receiver, or a model's `zero_grad()` where one
    optimizer steps (not a second model's optimizer, cleared by nothing else)."""
    if clear.optimizer == reported.optimizer:
        return True
    optimizers = {e.optimizer for e in loop.of_kind(Kind.STEP)}
    return model.facts.role(clear.spec.receiver) is not Role.OPTIMIZER and len(optimizers) == 1


def _conditions(loop: TrainingLoop, event: Event) -> set[tuple[str, bool]]:
    """The non-periodic conditions an event runs under inside the loop."""
    return {g.key for g in loop.inner_guards(event) if g.periodic is None}


def _at_loop(model: ModuleModel, loop: TrainingLoop, event: Event, text: str) -> str | None:
    """`optimizer.zero_grad()` of a helper, written as the loop's function calls it: the helper's
    parameter replaced by the argument the loop passes (`forward_backward(model, batch, opt)`)."""
    names = root_names(event.node)
    if len(names) != 1:
        return None
    name = names.pop()
    bound = event.frame.binding(name)
    if bound is None or not text.startswith(f"{name}."):
        return None
    value, caller = bound
    if caller.scope.node is not loop_function(model, loop) or caller.via != loop.loop.frame.via:
        return None
    return f"{as_divisor(value)}{text[len(name):]}"


def _accelerate(model: ModuleModel, loop: TrainingLoop, event: Event) -> Fix | None:
    node = event.node
    if not isinstance(node, cst.Call) or not isinstance(node.func, cst.Attribute):
        return None
    steps = [e for e in loop.of_kind(Kind.STEP) if model.facts.role(e.spec.receiver) is Role.OPTIMIZER]
    names = {e.spec.receiver for e in steps}
    if len(names) != 1 or not portable(model, steps[0].node, node):
        return None
    optimizer = names.pop()
    return Fix(Applicability.UNSAFE, f"Call `{optimizer}.zero_grad()` instead",
               (NodeEdit(EditKind.REPLACE, node.func.value, str(optimizer)),))
