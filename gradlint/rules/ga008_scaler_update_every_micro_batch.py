from __future__ import annotations

from collections.abc import Iterator

from gradlint.fixes.after_step import move_after
from gradlint.model import Event, Framework, Kind, LoopKind, ModuleModel, TrainingLoop, When
from gradlint.rules.base import Finding, Rule, conditions, runs_on, show, step_of, via

_OFF_WINDOW = (When.EVERY, When.REST)


class ScalerUpdateEveryMicroBatch(Rule):
    """
    ## What it does
    In a loop that accumulates gradients with a `GradScaler`, flags `scaler.update()` or
    `scaler.step(optimizer)` running on micro-batches where the accumulating optimizer does not
    step (outside the step gate, or inside a fixed inner micro-step loop).

    ## Why is this bad?
    `scaler.update()` is meant to run once per optimizer step: it reads the inf/NaN checks that
    `scaler.step()` (or `unscale_`) recorded and may change the loss scale. On a micro-batch without
    a step it raises `AssertionError: No inf checks were recorded prior to update.` (with the scaler
    enabled, so only in the AMP runs); when an `unscale_` runs on every micro-batch too, it passes
    and the scale changes mid-window, so the window adds up gradients multiplied by different
    factors. `scaler.step(optimizer)` outside the gate steps the optimizer on every micro-batch,
    on a partial gradient: there is no accumulation at all.

    Not flagged: a scaler shared with another optimizer that steps on every micro-batch (a GAN's
    discriminator), loops that do not accumulate, and an update right after a mid-window
    `scaler.step()` under the same conditions (that step is the finding; the update belongs to it).

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = criterion(model(x), y) / accum_steps
        scaler.scale(loss).backward()
        if (i + 1) % accum_steps == 0:
            scaler.step(optimizer)
            optimizer.zero_grad()
        scaler.update()
    ```

    ## Use instead
    ```python
    for i, (x, y) in enumerate(loader):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = criterion(model(x), y) / accum_steps
        scaler.scale(loss).backward()
        if (i + 1) % accum_steps == 0:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
    ```

    ## Fix
    Safe: `scaler.update()` moves right below `scaler.step(optimizer)`, comments with it; unsafe
    when either is in a helper function. No fix for a `scaler.step()` outside the gate (which of
    the loop's statements belong under it is a choice), or when the call shares its line.
    """

    code = "GA008"
    name = "scaler-update-every-micro-batch"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        for loop in model.loops:
            if loop.kind in (LoopKind.GATED, LoopKind.INNER):
                yield from self._gated(model, loop)
            elif loop.kind is LoopKind.PLAIN:
                yield from self._step_outside_gate(loop)

    def _gated(self, model: ModuleModel, loop: TrainingLoop) -> Iterator[Finding]:
        accumulating = loop.accumulating_optimizers
        steps = loop.of_kind(Kind.STEP)
        if any(loop.when(s) is When.EVERY and _optimizer(s) not in accumulating for s in steps):
            return  # another optimizer steps every micro-batch through the same scaler
        for step in steps:
            if step.spec.framework is Framework.SCALER and loop.when(step) in _OFF_WINDOW \
                    and _optimizer(step) in accumulating:
                yield Finding(
                    self.code,
                    step.node,
                    f"{show(step)}{via(step, loop)} runs on {runs_on(loop, step)}, but the optimizer is meant to step "
                    f"only every {loop.k_phrase} micro-batches: it steps on a partial gradient and nothing "
                    "accumulates; call it under the step condition",
                )
        unscale_every = any(loop.when(u) in _OFF_WINDOW for u in loop.of_kind(Kind.UNSCALE))
        for update in loop.of_kind(Kind.SCALER_UPDATE):
            if loop.when(update) not in _OFF_WINDOW or _pairs_a_step(loop, update, steps):
                continue
            if unscale_every:
                effect = ("the loss scale can change mid-window, so the window adds up gradients "
                          "multiplied by different scales")
            else:
                effect = ("with the scaler enabled it raises `No inf checks were recorded prior to "
                          "update` on the first micro-batch without a step")
            scaler_steps = [s for s in steps if s.spec.framework is Framework.SCALER and loop.when(s) is When.ONCE
                            and s.spec.receiver == update.spec.receiver]
            fix = move_after(model, loop, update, scaler_steps[0]) if len(scaler_steps) == 1 else None
            yield Finding(
                self.code,
                update.node,
                f"{show(update)}{via(update, loop)} runs on {runs_on(loop, update)}, but {step_of(loop)} only every "
                f"{loop.k_phrase} micro-batches: {effect}; call it right after the scaler's step",
                fix,
            )

    def _step_outside_gate(self, loop: TrainingLoop) -> Iterator[Finding]:
        """`scaler.step(opt)` on every micro-batch while `opt.zero_grad()` waits for a gate: the
        author meant to accumulate, but the step was left outside the gate."""
        if not any(loop.when(b) is When.EVERY for b in loop.of_kind(Kind.BACKWARD)):
            return
        # Only a clear inside `if <gate>:` itself: one after `if not <gate>: continue` (a negated
        # exit) may sit in a branch whose `continue` also keeps the step away (open_clip's legacy
        # loop), which the model does not see.
        gated_clears = {
            z.optimizer for z in loop.of_kind(Kind.ZERO_GRAD)
            if loop.in_loop(z) and loop.when(z) is When.ONCE
            and any(g.periodic is not None and g.periodic.modulus is not None and not g.negated
                    for g in loop.inner_guards(z))
        }
        for step in loop.of_kind(Kind.STEP):
            if step.spec.framework is not Framework.SCALER or loop.when(step) is not When.EVERY:
                continue
            if _optimizer(step) in gated_clears:
                yield Finding(
                    self.code,
                    step.node,
                    f"{show(step)}{via(step, loop)} runs on every micro-batch, but `{_optimizer(step)}."
                    "zero_grad()` only under a step condition: the optimizer steps on partial sums of "
                    "the window's gradient, several times per window; call the step (and "
                    "`scaler.update()`) under the same condition as `zero_grad()`",
                )


def _pairs_a_step(loop: TrainingLoop, update: Event, steps: list[Event]) -> bool:
    """The update follows a `scaler.step()` of its scaler under the same conditions (an extra step
    mid-window, `scaler.step(opt); scaler.update()` in a retry branch): it belongs to that step,
    which is the finding (an update after each step is how GradScaler is used)."""
    return any(s.spec.framework is Framework.SCALER and s.spec.receiver == update.spec.receiver
               and s.order < update.order and loop.when(s) in _OFF_WINDOW and conditions(s) == conditions(update)
               for s in steps)


def _optimizer(event: Event) -> str | None:
    return event.optimizer
