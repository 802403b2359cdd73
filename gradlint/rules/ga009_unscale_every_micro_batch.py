from __future__ import annotations

from collections.abc import Iterator

from gradlint.model import Kind, LoopKind, ModuleModel, When
from gradlint.rules.base import Finding, Rule, show, step_of, via

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
    """

    code = "GA009"
    name = "unscale-every-micro-batch"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        for loop in model.loops:
            if loop.kind not in (LoopKind.GATED, LoopKind.INNER):
                continue
            accumulating = loop.accumulating_optimizers
            if any(loop.when(s) is When.EVERY and (s.spec.optimizer or s.spec.receiver) not in accumulating
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
                if loop.kind is LoopKind.INNER:
                    where = "every micro-step of the inner loop"
                elif when is When.REST:
                    where = "the micro-batches where no step runs"
                else:
                    where = "every micro-batch"
                yield Finding(
                    self.code,
                    unscale.node,
                    f"{show(unscale)}{via(unscale)} runs on {where}, but {step_of(loop)} only every "
                    f"{loop.k_phrase} micro-batches: later micro-batches add scaled gradients to the "
                    f"unscaled ones; {effect}; unscale once per window, just before clipping and the step",
                )
