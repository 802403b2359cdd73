"""GA002 fix: divide what reaches backward by K, leaving the logged loss alone.

What it does, and when it is safe or unsafe or not offered: the `## Fix` section of the rule
(docs/rules/GA002.md), which tests/test_fixes.py and fixtures/fixes/GA002/ hold to."""

from __future__ import annotations

import libcst as cst

from gradlint.fixes.edits import Applicability, EditKind, Fix, NodeEdit
from gradlint.fixes.tree import as_dividend, as_divisor, in_loop_function, parent, portable
from gradlint.model import Event, ModuleModel, TrainingLoop
from gradlint.model.syntax import reads_layout

_TENSOR_LIKE = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.BinaryOperation, cst.UnaryOperation)


def fix(model: ModuleModel, loop: TrainingLoop, event: Event) -> Fix | None:
    value, k = event.spec.value, loop.k
    if value is None or k is None or not isinstance(value, _TENSOR_LIKE) or not portable(model, k, event.node):
        return None  # `torch.autograd.backward([l1, l2])`: a list cannot be divided
    text = f"{as_dividend(value)} / {as_divisor(k)}"
    holder = parent(model, value)
    reads_layout(value)  # its brackets
    if isinstance(holder, cst.Attribute) and holder.value is value and not value.lpar:
        text = f"({text})"  # the receiver of `.backward()`
    safe = in_loop_function(model, loop, event.node)
    return Fix(Applicability.SAFE if safe else Applicability.UNSAFE,
               f"Divide the loss by `{as_divisor(k)}` before backward",
               (NodeEdit(EditKind.REPLACE, value, text),))
