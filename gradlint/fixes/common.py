"""What several fixes need: the step to put things next to, and applicability by location."""

from __future__ import annotations

import libcst as cst

from gradlint.fixes.edits import Applicability, NodeEdit
from gradlint.fixes.tree import block, event_statements, in_loop_function, statement
from gradlint.model import Event, Kind, ModuleModel, TrainingLoop, When


def window_step(model: ModuleModel, loop: TrainingLoop, receiver: str | None = None) -> Event | None:
    """The one accumulating step that runs once per window, written as its own statement; with
    several, the one whose optimizer is `receiver`. None when it is ambiguous or hidden (a helper
    that steps under a flag, `loss_scaler(..., update_grad=...)`)."""
    steps = [e for e in loop.of_kind(Kind.STEP) if loop.when(e) is When.ONCE and "gate" not in e.spec.extra
             and e.optimizer in loop.accumulating_optimizers]
    if len(steps) > 1 and receiver is not None:
        steps = [e for e in steps if e.optimizer == receiver]
    if len(steps) != 1:
        return None
    step = steps[0]
    stmt = step_statement(model, loop, step)
    if stmt is None or block(model, stmt) is None:
        return None
    return step


def step_statement(model: ModuleModel, loop: TrainingLoop, step: Event) -> cst.SimpleStatementLine | None:
    """The step's statement in the loop's function: the step itself, or the call of the helper that
    steps (`self.optimizer_step()`)."""
    depth = len(loop.loop.frame.via)
    node = step.node if len(step.frame.via) == depth else step.frame.via[depth]
    stmt = statement(model, node)
    return stmt if stmt is not None and in_loop_function(model, loop, stmt) else None


def after_step(model: ModuleModel, loop: TrainingLoop, step: Event) -> cst.CSTNode:
    """The statement to insert after: the step, or `scaler.update()` / `scheduler.step()` right after it."""
    stmt = step_statement(model, loop, step)
    assert stmt is not None
    suite, index = block(model, stmt)  # type: ignore[misc]
    followers = event_statements(model, loop, Kind.SCALER_UPDATE, Kind.SCHEDULER_STEP)
    anchor: cst.CSTNode = stmt
    for following in suite.body[index + 1:]:
        if id(following) not in followers:
            break
        anchor = following
    return anchor


def applicability(model: ModuleModel, loop: TrainingLoop, edits: list[NodeEdit]) -> Applicability:
    """Safe when every edit is in the loop's own function; a helper may have other callers."""
    if all(in_loop_function(model, loop, e.node) for e in edits):
        return Applicability.SAFE
    return Applicability.UNSAFE
