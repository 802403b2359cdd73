"""What every rule is: a code, a name, documentation in its docstring, and a check over the model."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import libcst as cst

from gradlint.fixes.edits import Fix
from gradlint.model import Event, Kind, ModuleModel, TrainingLoop
from gradlint.model.syntax import code


@dataclass(frozen=True)
class Finding:
    code: str
    node: cst.CSTNode
    message: str
    fix: Fix | None = field(default=None, compare=False)  # in node edits; see gradlint/fixes/


class Rule:
    """Subclasses document themselves: the docstring's sections (What it does / Why is this bad?
    / Example / Use instead) are what `gradlint rule CODE` prints and docs/rules/ shows."""

    code: ClassVar[str]
    name: ClassVar[str]
    default_enabled: ClassVar[bool] = True
    severity: ClassVar[str] = "error"  # "warning": a performance rule (the result is correct, only slower)

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        raise NotImplementedError

    @classmethod
    def documentation(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def offers_fixes(cls) -> bool:
        """False when the `## Fix` section starts with `None:` (no edit is safe to suggest)."""
        section = cls.documentation().split("## Fix", 1)[-1].strip()
        return not section.startswith("None:")

    @classmethod
    def summary(cls) -> str:
        """The first sentence of 'What it does'."""
        doc = cls.documentation()
        section = doc.split("## What it does", 1)[-1].strip().split("\n\n", 1)[0]
        return " ".join(section.split())


def conditions(event: Event) -> set[tuple[str, bool]]:
    """The conditions an event runs under on the normal path (no `except` handler), by `Guard.key`."""
    return {g.key for g in event.guards if not g.exceptional}


def show(event: Event) -> str:
    """`optimizer.zero_grad()`, for messages."""
    return f"`{event.spec.display}`"


def via(event: Event, loop: TrainingLoop) -> str:
    """' (via `train_step()`)' when the event sits in a helper that the loop calls; nothing when the
    loop itself is in that helper (a caller's walk inlined the function holding the loop)."""
    calls = event.frame.via[len(loop.loop.frame.via):]
    return f" (via `{code(calls[0].func)}()`)" if calls else ""


def step_of(loop: TrainingLoop, optimizer: str | None = None) -> str:
    """The accumulating optimizer's step, for messages: `optimizer`'s own when it has one (the
    zero_grad of a second model's optimizer is about that optimizer's step)."""
    steps = loop.of_kind(Kind.STEP)
    gated = [e for e in steps if (e.spec.optimizer or e.spec.receiver) in loop.accumulating_optimizers]
    own = [e for e in gated if optimizer is not None and (e.spec.optimizer or e.spec.receiver) == optimizer]
    chosen = (own or gated or steps)[:1]
    return show(chosen[0]) if chosen else "the optimizer step"
