from __future__ import annotations

from collections.abc import Iterator

from gradlint.fixes.after_step import move_before
from gradlint.fixes.edits import Fix
from gradlint.model import Event, Kind, LoopKind, ModuleModel, TrainingLoop, When
from gradlint.rules.base import Finding, Rule, runs_on, show, step_of, via

_OFF_WINDOW = (When.EVERY, When.REST)


class UnscaleEveryMicroBatch(Rule):
    """
    ## What it does
    In a loop that accumulates gradients with a `GradScaler`, flags `scaler.unscale_(optimizer)`
    running on micro-batches where the optimizer does not step.

    ## Why is this bad?
    `unscale_` divides `.grad` by the loss scale in place and records that it did, until the next
    `scaler.update()`. Mid-window, the next micro-batches then add *scaled* gradients to the
    unscaled ones, and the next `unscale_` raises `RuntimeError: unscale_() has already been called
    on this optimizer since the last update()` (only with the scaler enabled, so only in the AMP
    runs). When `scaler.update()` runs on every micro-batch too, nothing raises: each `unscale_`
    divides the whole `.grad` again, so every earlier micro-batch is divided by the scale once more
    and only the last one really counts. With the `unscale_` in the `else` of a gate and K = 2, the
    step finds the gradient already unscaled and applies the mix silently.

    Not flagged: `unscale_` once per window, under the step condition or after an inner micro-step
    loop; a scaler shared with an optimizer that steps on every micro-batch.

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = criterion(model(x), y) / accum_steps
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        if (i + 1) % accum_steps == 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    for i, (x, y) in enumerate(loader):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = criterion(model(x), y) / accum_steps
        scaler.scale(loss).backward()
        if (i + 1) % accum_steps == 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
    ```

    ## Fix
    Safe: the `unscale_` moves right above the window's first clip, or above the scaler's step when
    nothing clips, comments with it. Unsafe when a clip also runs on every micro-batch (it would
    then clip scaled gradients) or the `unscale_` is in a helper function. No fix when an `unscale_`
    already runs once per window, or when the call shares its line. A gradient norm logged on every
    micro-batch reads scaled values after the fix: check such logging by hand.
    """

    code = "GA009"
    name = "unscale-every-micro-batch"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        for loop in model.loops:
            if loop.kind not in (LoopKind.GATED, LoopKind.INNER):
                continue
            accumulating = loop.accumulating_optimizers
            if any(loop.when(s) is When.EVERY and s.optimizer not in accumulating
                   for s in loop.of_kind(Kind.STEP)):
                continue  # another optimizer steps every micro-batch: its unscale_ is due
            updates_too = any(loop.when(u) in _OFF_WINDOW for u in loop.of_kind(Kind.SCALER_UPDATE))
            if updates_too:
                effect = ("with `scaler.update()` on every micro-batch too nothing raises, but each "
                          "`unscale_()` divides the whole `.grad` again, so earlier micro-batches are "
                          "divided by the loss scale once more each time")
            else:
                effect = "the next `unscale_()` before `update()` raises RuntimeError (with the scaler enabled)"
            for unscale in loop.of_kind(Kind.UNSCALE):
                when = loop.when(unscale)
                if when not in _OFF_WINDOW:
                    continue
                if unscale.spec.optimizer is not None and accumulating and unscale.spec.optimizer not in accumulating:
                    continue
                fix = _fix(model, loop, unscale)
                yield Finding(
                    self.code,
                    unscale.node,
                    f"{show(unscale)}{via(unscale, loop)} runs on {runs_on(loop, unscale)}, "
                    f"but {step_of(loop)} only every "
                    f"{loop.k_phrase} micro-batches: later micro-batches add scaled gradients to the "
                    f"unscaled ones; {effect}; unscale once per window, just before clipping and the step",
                    fix,
                )


def _fix(model: ModuleModel, loop: TrainingLoop, unscale: Event) -> Fix | None:
    """Move the `unscale_` above the window's first clip (or its step), where it runs once. Unsafe
    when a clip also runs on every micro-batch: it would then clip scaled gradients."""
    window = [e for e in loop.of_kind(Kind.CLIP, Kind.STEP)
              if loop.when(e) is When.ONCE and e.order > unscale.order and "gate" not in e.spec.extra]
    if any(loop.when(u) is When.ONCE for u in loop.of_kind(Kind.UNSCALE)) or not window:
        return None
    off_window_clip = any(loop.when(c) in _OFF_WINDOW for c in loop.of_kind(Kind.CLIP))
    return move_before(model, loop, unscale, window[0], unsafe=off_window_clip)
