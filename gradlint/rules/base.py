"""What every rule is: a code, a name, documentation in its docstring, and a check over the model."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import libcst as cst

from gradlint.fixes.edits import Fix
from gradlint.model import Event, Guard, Kind, LoopKind, ModuleModel, Phase, TrainingLoop, When
from gradlint.model.syntax import canonical, code


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


def exclusive(first: Event, second: Event) -> bool:
    """The two never run in the same iteration: one is under a condition the other is under the
    negation of (the two branches of `if use_amp: ... else: ...`)."""
    theirs = conditions(second)
    return any((text, not negated) in theirs for text, negated in conditions(first))


def show(event: Event) -> str:
    """`optimizer.zero_grad()`, for messages. The step a timm-style helper takes only under its
    flag (`loss_scaler(loss, optimizer, update_grad=...)`) is named as that: the call itself also
    runs the backward, on every micro-batch."""
    if event.kind is Kind.STEP and event.spec.extra.get("gate") is not None:
        return f"the step in `{event.spec.display}`"
    return f"`{event.spec.display}`"


def via(event: Event, loop: TrainingLoop) -> str:
    """' (via `train_step()`)' when the event sits in a helper that the loop calls; nothing when the
    loop itself is in that helper (a caller's walk inlined the function holding the loop)."""
    calls = event.frame.calls_below(loop.loop.frame)
    return f" (via `{code(calls[0].func)}()`)" if calls else ""


def step_of(loop: TrainingLoop, optimizer: str | None = None) -> str:
    """The accumulating optimizer's step, for messages: `optimizer`'s own when it has one (the
    zero_grad of a second model's optimizer is about that optimizer's step)."""
    steps = loop.of_kind(Kind.STEP)
    gated = [e for e in steps if e.optimizer in loop.accumulating_optimizers]
    own = [e for e in gated if optimizer is not None and e.optimizer == optimizer]
    chosen = (own or gated or steps)[:1]
    return show(chosen[0]) if chosen else "the optimizer step"


def runs_on(loop: TrainingLoop, event: Event) -> str:
    """Where an event that runs off the window's end runs, for messages: "every micro-batch", "the
    micro-batches where no step runs (when `gate` is false)", or, for the `else` of some other periodic
    test (`if i % log_every == 0: ... else: optimizer.zero_grad()`), "the micro-batches where
    `i % log_every == 0` is false": that test, not the step's gate, decides where it runs."""
    if loop.kind is LoopKind.INNER:
        return "every micro-step of the inner loop"
    if loop.when(event) is not When.REST:
        return "every micro-batch"
    rest = [g for g in loop.inner_guards(event) if g.periodic is not None and g.periodic.phase is Phase.REST]
    if loop.gate is None or any(same_test(g, loop.gate) for g in rest):
        gate = f" (when `{code(loop.gate.expr)}` is false)" if loop.gate is not None else ""
        return f"the micro-batches where no step runs{gate}"
    guard = rest[0]
    return f"the micro-batches where `{code(guard.expr)}` {'is false' if guard.negated else 'holds'}"


def same_test(guard: Guard, gate: Guard) -> bool:
    """The same residue test (`(i + 1) % k`), whatever comparison it is in (`== 0`, `!= 0`, `not`)."""
    first, second = guard.periodic, gate.periodic
    if first is not None and second is not None and first.test is not None and second.test is not None:
        return canonical(first.test) == canonical(second.test)
    return canonical(guard.expr) == canonical(gate.expr)
