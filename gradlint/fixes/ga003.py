"""GA003 fix: move the clip into the gate, just before the step (so after an `unscale_` there).

What it does, and when it is safe or unsafe or not offered: the `## Fix` section of the rule
(docs/rules/GA003.md), which tests/test_fixes.py and fixtures/fixes/GA003/ hold to."""

from __future__ import annotations

import libcst as cst

from gradlint.fixes.common import step_statement, window_step
from gradlint.fixes.edits import Applicability, EditKind, Fix, NodeEdit
from gradlint.fixes.tree import (
    block,
    function_of,
    inside,
    moving,
    owner,
    portable,
    statement,
    statement_text,
)
from gradlint.model import Event, Kind, LoopKind, ModuleModel, TrainingLoop, traversal
from gradlint.model.walker import Context


def fix(model: ModuleModel, loop: TrainingLoop, clip: Event) -> Fix | None:
    stmt = statement(model, clip.node)
    if stmt is None:
        return None
    if loop.kind is LoopKind.ACCELERATE:
        return _accelerate(model, loop, clip, stmt)
    unit: cst.CSTNode = stmt
    holder = owner(model, stmt)
    if isinstance(holder, cst.If) and holder.orelse is None and len(holder.body.body) == 1:
        unit, holder = holder, owner(model, holder)
    step = window_step(model, loop)
    in_helper = isinstance(holder, cst.FunctionDef) and holder is not loop.loop.node
    if (holder is not loop.loop.node and not in_helper) or step is None or step.order < clip.order:
        return None
    step_stmt = step_statement(model, loop, step)
    moved = moving(model, unit)
    if step_stmt is None or moved is None or not _assigned_only_for_step(model, stmt, step_stmt):
        return None
    if in_helper and not portable(model, unit, step_stmt):
        return None  # the helper's names (its parameters) mean nothing at the step
    edits, comments, text = moved
    edits.append(NodeEdit(EditKind.INSERT_BEFORE, step_stmt, "\n".join([*comments, text])))
    # Out of a helper that runs on every micro-batch: its other callers lose the clip, so unsafe.
    safety = Applicability.UNSAFE if in_helper else Applicability.SAFE
    return Fix(safety, "Move the clip into the step's block, just before the step", tuple(edits))


def _assigned_only_for_step(model: ModuleModel, stmt: cst.SimpleStatementLine, step_stmt: cst.CSTNode) -> bool:
    """`norm = clip(...)` may move only if `norm` is read after the step in its block, nowhere else."""
    small = stmt.body[0]
    if not isinstance(small, cst.Assign):
        return isinstance(small, cst.Expr)
    names = {t.target.value for t in small.targets if isinstance(t.target, cst.Name)}
    if len(names) != len(small.targets):
        return False
    found = block(model, step_stmt)
    if found is None:
        return False
    suite, index = found
    after = suite.body[index + 1:]
    uses: list[cst.Name] = []

    class _Uses(cst.CSTVisitor):
        def visit_Name(self, node: cst.Name) -> None:
            if node.value in names:
                uses.append(node)

    traversal.visit(function_of(model, stmt), _Uses())
    targets = {id(t.target) for t in small.targets}
    return all(id(u) in targets or any(inside(model, u, later) for later in after) for u in uses)


def _accelerate(model: ModuleModel, loop: TrainingLoop, clip: Event, stmt: cst.SimpleStatementLine) -> Fix | None:
    contexts: list[Context] = [c for e in loop.of_kind(Kind.BACKWARD) for c in e.contexts if c.method == "accumulate"]
    accelerators = {c.receiver for c in contexts}
    text = statement_text(stmt)
    if len(accelerators) != 1 or None in accelerators or text is None or not portable(model, contexts[0].expr, stmt):
        return None
    accelerator = accelerators.pop()
    body = "\n".join("    " + line for line in text.splitlines())
    return Fix(Applicability.SAFE, f"Clip only when `{accelerator}.sync_gradients`",
               (NodeEdit(EditKind.REPLACE_LINES, stmt, f"if {accelerator}.sync_gradients:\n{body}"),))
