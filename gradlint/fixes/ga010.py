"""GA010 fix: `i % K == 0` becomes `(i + 1) % K == 0` where the gate is written.

What it does, and when it is safe or unsafe: the `## Fix` section of the rule (docs/rules/GA010.md)."""

from __future__ import annotations

import libcst as cst

from gradlint.fixes.edits import Applicability, EditKind, Fix, NodeEdit
from gradlint.model.syntax import code


def fix(mod: cst.BinaryOperation, counter: str, in_helper: bool) -> Fix:
    text = f"({code(mod.left)} + 1) % {code(mod.right)}"
    # In a helper, other call sites pass other counters (a flush with 0): review them.
    applicability = Applicability.UNSAFE if in_helper else Applicability.SAFE
    return Fix(applicability, f"Step after the K-th micro-batch: `({counter} + 1) % ...`",
               (NodeEdit(EditKind.REPLACE, mod, text),))
