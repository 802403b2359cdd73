"""GA005 fix: `scaler.unscale_(optimizer)` just before the clip.

What it does, and when it is safe or unsafe or not offered: the `## Fix` section of the rule
(docs/rules/GA005.md), which tests/test_fixes.py and fixtures/fixes/GA005/ hold to."""

from __future__ import annotations

import libcst as cst

from gradlint.fixes.edits import Applicability, EditKind, Fix, NodeEdit
from gradlint.fixes.tree import ancestors, block, in_loop_function, moving, portable, statement
from gradlint.model import Event, Framework, Kind, LoopKind, ModuleModel, TrainingLoop, When


def _in_own_loop(model: ModuleModel, loop: TrainingLoop, stmt: cst.CSTNode) -> bool:
    """A clip in a loop of its own (`for group in optimizer.param_groups:`) would unscale twice."""
    stops = {id(loop.loop.node), id(loop.window.node) if loop.window else 0}
    for node in ancestors(model, stmt):
        if id(node) in stops or isinstance(node, cst.FunctionDef):
            return False
        if isinstance(node, cst.For | cst.While):
            return True
    return False


def fix(model: ModuleModel, loop: TrainingLoop, clip: Event, scaler: str) -> Fix | None:
    if loop.kind in (LoopKind.GATED, LoopKind.INNER) and loop.when(clip) is not When.ONCE:
        return None
    if loop.kind not in (LoopKind.GATED, LoopKind.INNER, LoopKind.PLAIN):
        return None
    steps = [e for e in loop.of_kind(Kind.STEP)
             if e.spec.framework is Framework.SCALER and e.spec.receiver == scaler and e.spec.optimizer]
    if len({e.spec.optimizer for e in steps}) != 1 or not portable(model, steps[0].node, clip.node):
        return None
    optimizer = steps[0].spec.optimizer
    clip_stmt = statement(model, clip.node)
    if clip_stmt is None or block(model, clip_stmt) is None or _in_own_loop(model, loop, clip_stmt):
        return None
    edits: list[NodeEdit] = []
    unscales = loop.of_kind(Kind.UNSCALE)
    if unscales:
        later = unscales[0]
        later_stmt = statement(model, later.node)
        same_block = later_stmt is not None and block(model, later_stmt) is not None \
            and block(model, later_stmt)[0] is block(model, clip_stmt)[0]  # type: ignore[index]
        if len(unscales) > 1 or later.order < clip.order or not same_block:
            return None  # an unscale_ under another condition: adding one could unscale twice
        moved = moving(model, later_stmt)  # type: ignore[arg-type]
        if moved is None:
            return None
        removed, comments, text = moved
        edits += removed
        edits.append(NodeEdit(EditKind.INSERT_BEFORE, clip_stmt, "\n".join([*comments, text])))
        message = f"Move `{scaler}.unscale_({optimizer})` before the clip"
    else:
        edits.append(NodeEdit(EditKind.INSERT_BEFORE, clip_stmt, f"{scaler}.unscale_({optimizer})"))
        message = f"Call `{scaler}.unscale_({optimizer})` before the clip"
    safe = in_loop_function(model, loop, clip.node)
    return Fix(Applicability.SAFE if safe else Applicability.UNSAFE, message, tuple(edits))
