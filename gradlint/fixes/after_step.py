"""Fixes that move a statement next to the window's step (GA006, GA007, GA008 below it; GA009 above
the window's clip), or write a new one below it (GA014).

What each does, and when it is safe or unsafe or not offered: the `## Fix` section of its rule."""

from __future__ import annotations

import libcst as cst

from gradlint.fixes.common import after_step, applicability, step_statement
from gradlint.fixes.edits import Applicability, EditKind, Fix, NodeEdit
from gradlint.fixes.tree import in_loop_function, moving, portable, statement
from gradlint.model import Event, ModuleModel, TrainingLoop
from gradlint.model.syntax import code


def move_after(model: ModuleModel, loop: TrainingLoop, event: Event, step: Event,
               unsafe: bool = False) -> Fix | None:
    """The statement holding `event`, moved below the step (and below a `scaler.update()` or
    `scheduler.step()` right after it), its comments with it."""
    if step_statement(model, loop, step) is None:
        return None
    anchor = after_step(model, loop, step)
    return _move(model, loop, event, anchor, EditKind.INSERT_AFTER, unsafe, "after the step")


def move_before(model: ModuleModel, loop: TrainingLoop, event: Event, target: Event,
                unsafe: bool = False) -> Fix | None:
    """The statement holding `event`, moved right above the statement holding `target` (GA009: the
    `unscale_` above the window's clip or step)."""
    anchor = statement(model, target.node)
    if anchor is None or not in_loop_function(model, loop, anchor):
        return None
    return _move(model, loop, event, anchor, EditKind.INSERT_BEFORE, unsafe, "into the window's step")


def _move(model: ModuleModel, loop: TrainingLoop, event: Event, anchor: cst.CSTNode, kind: EditKind,
          unsafe: bool, where: str) -> Fix | None:
    stmt = statement(model, event.node)
    if stmt is None or anchor is stmt or not portable(model, event.node, anchor):
        return None
    moved = moving(model, stmt)
    if moved is None:
        return None
    edits, comments, text = moved
    if any(e.node is anchor for e in edits):
        return None
    edits.append(NodeEdit(kind, anchor, "\n".join([*comments, text])))
    safety = Applicability.UNSAFE if unsafe else applicability(model, loop, edits)
    return Fix(safety, f"Move `{code(event.node)}` {where}", tuple(edits))


def insert_after(model: ModuleModel, loop: TrainingLoop, step: Event, text: str, names: cst.CSTNode) -> Fix | None:
    """`text` written as a new statement below the step; `names` is an expression that reads the
    same names, checked to mean the same there."""
    if step_statement(model, loop, step) is None:
        return None
    anchor = after_step(model, loop, step)
    if not portable(model, names, anchor):
        return None
    edits = [NodeEdit(EditKind.INSERT_AFTER, anchor, text)]
    return Fix(applicability(model, loop, edits), f"Add `{text}` after the step", tuple(edits))
