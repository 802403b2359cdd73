"""How many micro-batches a DeepSpeed engine accumulates, when the file shows its config.

`deepspeed.initialize(..., config=ds_config)` with `ds_config = {...}` written in the same function:
the engine accumulates `gradient_accumulation_steps` micro-batches, 1 when the dict sets neither
that nor `train_batch_size` (DeepSpeed's default). A config read from a file or built elsewhere
is unknown.
"""

from __future__ import annotations

import libcst as cst

from gradlint.model import traversal
from gradlint.model.syntax import callee, dotted, keyword, last_part, number, string
from gradlint.model.walker import Frame

_SIZES = ("gradient_accumulation_steps", "train_batch_size")


def engine_accumulation(engine: str | None, frame: Frame) -> float | None:
    """The engine's K as a literal, or None when it cannot be seen."""
    if not engine:
        return None
    calls = [a.value for a in frame.scope.assignments.get(engine, [])
             if isinstance(a.value, cst.Call) and last_part(callee(a.value) or "") == "initialize"]
    if len(calls) != 1:
        return None
    config = keyword(calls[0], "config") or keyword(calls[0], "config_params")
    name = dotted(config) if config is not None and not isinstance(config, cst.Dict) else None
    if name is not None:
        values = frame.scope.assignments.get(name, [])
        if len(values) != 1 or values[0].operator is not None or _changed(frame.scope.node, name):
            return None
        config = values[0].value
    if not isinstance(config, cst.Dict):
        return None
    keys: dict[str, cst.BaseExpression] = {}
    for element in config.elements:
        key = string(element.key) if isinstance(element, cst.DictElement) else None
        if key is None:
            return None  # `**base`, a computed key: cannot tell
        keys[key] = element.value
    if "gradient_accumulation_steps" in keys:
        return number(keys["gradient_accumulation_steps"])
    return None if "train_batch_size" in keys else 1.0


def _changed(scope: cst.CSTNode, name: str) -> bool:
    """`config["gradient_accumulation_steps"] = ...`, a computed key, or `config.update(...)`."""
    found = _Writes(name)
    traversal.visit(scope, found)
    return found.changed


class _Writes(cst.CSTVisitor):
    def __init__(self, name: str) -> None:
        self.name = name
        self.changed = False

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        target = node.target
        if isinstance(target, cst.Subscript) and dotted(target.value) == self.name:
            keys = [string(s.slice.value) if isinstance(s.slice, cst.Index) else None for s in target.slice]
            if any(k is None or k in _SIZES for k in keys):
                self.changed = True

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if isinstance(func, cst.Attribute) and dotted(func.value) == self.name and func.attr.value in (
                "update", "setdefault", "__setitem__"):
            self.changed = True
