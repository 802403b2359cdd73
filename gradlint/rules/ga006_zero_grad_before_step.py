from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from gradlint.fixes.after_step import move_after
from gradlint.model import Event, Framework, Kind, LoopKind, ModuleModel, Role, TrainingLoop, traversal
from gradlint.model.grad_writes import writes_gradients
from gradlint.model.syntax import dotted, keyword, last_part, positional
from gradlint.rules.base import Finding, Rule, conditions, show, via


class ZeroGradBeforeStep(Rule):
    """
    ## What it does
    Flags a `zero_grad()` (on the optimizer, or on the whole model it optimizes) that runs after the
    last backward and before the optimizer step on the same path, so that the step sees cleared
    gradients.

    ## Why is this bad?
    The optimizer applies whatever `.grad` holds when `step()` runs. Clearing it between the
    backward and the step throws the whole window's gradient away: with `set_to_none=True` (the
    default since PyTorch 2.0) the step skips every parameter, otherwise it applies a zero gradient
    (plus momentum and weight decay). The model does not learn from its data, and nothing raises.

    Not flagged: `zero_grad()` before the backward, after the step, in an `except` handler, on a path
    that leaves the iteration without stepping (`if not torch.isfinite(loss): optimizer.zero_grad();
    continue`), under a condition the step does not share, on another optimizer's gradients, on a
    sub-module or single parameters (`model.encoder.zero_grad()`, `p.grad = None`: dropping a
    frozen part's gradients before the step is how some code freezes it), before
    `optimizer.step(closure)` (the closure computes fresh gradients), and DeepSpeed engines.

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        loss = criterion(model(x), y) / accum_steps
        loss.backward()
        if (i + 1) % accum_steps == 0:
            optimizer.zero_grad()
            optimizer.step()
    ```

    ## Use instead
    ```python
    for i, (x, y) in enumerate(loader):
        loss = criterion(model(x), y) / accum_steps
        loss.backward()
        if (i + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Fix
    Safe: the clear moves right below the step (below a `scaler.update()` or `scheduler.step()`
    that follows it), comments with it. Unsafe when the clear is in a helper function (other
    callers) or when the step runs under a condition the clear does not (it used to clear when the
    step was skipped). No fix when the clear shares its line with other code or sits in a loop.
    """

    code = "GA006"
    name = "zero-grad-before-step"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        for loop in model.loops:
            if loop.kind is LoopKind.ENGINE:
                continue
            backwards = loop.of_kind(Kind.BACKWARD)
            steps = [s for s in loop.of_kind(Kind.STEP) if _plain_step(s)]
            optimizers = {stepped(s) for s in steps}
            for clear in loop.of_kind(Kind.ZERO_GRAD):
                if clear.spec.framework is Framework.DEEPSPEED or _exceptional(clear):
                    continue
                if not any(b.order < clear.order for b in backwards):
                    continue  # nothing to throw away yet
                for step in steps:
                    if step.order < clear.order or not _clears_for(model, clear, step, optimizers):
                        continue
                    if any(clear.order < b.order < step.order for b in backwards + _beside(model, loop, clear, step)):
                        continue  # a backward refills the gradients before the step
                    if not conditions(clear) <= conditions(step):
                        continue  # the clear does not run every time the step does
                    if writes_gradients(model, loop):
                        break  # gradients written by hand after the clear (PCGrad, GradCache)
                    # The clear then runs only with the step: unsafe when the step has conditions the
                    # clear does not (it used to clear when the step was skipped).
                    fix = move_after(model, loop, clear, step, unsafe=conditions(step) != conditions(clear))
                    yield Finding(self.code, clear.node, _message(loop, clear, step), fix)
                    break


def stepped(step: Event) -> str | None:
    """The optimizer a step applies: `optimizer` for `optimizer.step()` and `scaler.step(optimizer)`."""
    return step.optimizer


def _plain_step(step: Event) -> bool:
    """Not a DeepSpeed engine, and not `optimizer.step(closure)`: a closure recomputes the gradients."""
    if step.spec.framework is Framework.DEEPSPEED:
        return False
    node = step.node
    if step.spec.framework is Framework.TORCH and "gate" not in step.spec.extra and isinstance(node, cst.Call):
        return not positional(node) and keyword(node, "closure") is None
    return True


def _beside(model: ModuleModel, loop: TrainingLoop, clear: Event, step: Event) -> list[Event]:
    """The backwards of the loops that share `clear` and `step` with `loop` (sibling loops of one
    function: a GAN's discriminator phase, then `opt_g.zero_grad()`, the generator's own loop of
    backwards, `opt_g.step()`): a loop's events hold what runs around it, not inside its siblings."""
    return [b for other in model.loops if other is not loop and clear in other.events and step in other.events
            for b in other.of_kind(Kind.BACKWARD)]


def _exceptional(event: Event) -> bool:
    return any(g.exceptional for g in event.guards)


def _clears_for(model: ModuleModel, clear: Event, step: Event, optimizers: set[str | None]) -> bool:
    """Whether the clear wipes the gradients this step applies: the same optimizer, or the whole
    model that optimizer was built over (`model.zero_grad()` with `AdamW(model.parameters())`) when
    only one optimizer steps here. Per-parameter clears (`p.grad = None`) and sub-modules
    (`model.encoder.zero_grad()`) are left alone: dropping a frozen part's gradients before the
    step is a way to freeze it."""
    cleared = clear.optimizer
    target = stepped(step)
    if cleared is None or target is None:
        return False
    if cleared == target or last_part(cleared) == last_part(target):
        return True
    if model.facts.role(cleared) is Role.OPTIMIZER or len(optimizers) != 1:
        return False
    parts = cleared.split(".")
    parts = parts[1:] if parts[0] == "self" else parts
    parts = parts[:-1] if len(parts) > 1 and parts[-1] == "module" else parts  # DDP's `.module`
    if len(parts) != 1:
        return False
    built = model.facts.constructor(target)
    return built is not None and parts[0] in _parameter_owners(model, built)


def _parameter_owners(model: ModuleModel, built: cst.Call) -> set[str]:
    """Names an optimizer's parameters come from: `model` in `AdamW(model.parameters())`, also through
    one assignment (`groups = [{"params": [p for n, p in model.named_parameters() ...]}]`)."""
    names = traversal.names_in(built)
    direct = set(names)

    class Assignments(cst.CSTVisitor):
        def visit_Assign(self, node: cst.Assign) -> None:
            if any(last_part(dotted(t.target)) in direct for t in node.targets):
                names.update(traversal.names_in(node.value))

    traversal.visit(model.module, Assignments())
    return names


def _message(loop: TrainingLoop, clear: Event, step: Event) -> str:
    where = via(step, loop) if via(step, loop) != via(clear, loop) else ""
    return (
        f"{show(clear)}{via(clear, loop)} runs after the last backward and before {show(step)}{where}: "
        "the step sees cleared gradients, so the window's gradient is thrown away; clear the "
        "gradients after the step (or before the backward)"
    )
