"""GA011 fix: drop the hand-written division by K that the framework repeats.

What it does, and when it is safe or unsafe: the `## Fix` section of the rule (docs/rules/GA011.md)."""

from __future__ import annotations

import libcst as cst

from gradlint.fixes.edits import Applicability, EditKind, Fix, NodeEdit
from gradlint.fixes.tree import removal
from gradlint.model import ModuleModel, traversal
from gradlint.model.syntax import code, same_code


def fix(model: ModuleModel, root: cst.CSTNode, divisor: cst.BaseExpression, in_helper: bool) -> Fix | None:
    """`x / K` becomes `x`; a statement `loss /= K` goes (with the `if K > 1:` it was alone under).
    None when the division is not found, or its removal would leave a loop body empty."""
    finder = _Division(divisor)
    traversal.visit(root, finder)
    if finder.found is None:
        return None
    applicability = Applicability.UNSAFE if in_helper else Applicability.SAFE
    message = f"Drop the division by `{code(divisor)}`"
    if isinstance(finder.found, cst.SimpleStatementLine):
        edits = removal(model, finder.found)
        return Fix(applicability, message, tuple(edits)) if edits else None
    left = finder.found.left  # type: ignore[union-attr]
    return Fix(applicability, message, (NodeEdit(EditKind.REPLACE, finder.found, code(left)),))


class _Division(cst.CSTVisitor):
    def __init__(self, divisor: cst.BaseExpression) -> None:
        self.divisor = divisor
        self.found: cst.CSTNode | None = None

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if node.right is self.divisor and isinstance(node.operator, cst.Divide) and self.found is None:
            self.found = node

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        small = node.body[0] if len(node.body) == 1 else None
        if isinstance(small, cst.AugAssign) and small.value is self.divisor:
            self.found = node  # `loss /= K`
        elif (isinstance(small, cst.Assign) and len(small.targets) == 1
              and isinstance(small.value, cst.BinaryOperation) and small.value.right is self.divisor
              and same_code(small.value.left, small.targets[0].target)):
            self.found = node  # `loss = loss / K`
