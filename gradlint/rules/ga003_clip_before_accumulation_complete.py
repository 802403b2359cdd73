from __future__ import annotations

from collections.abc import Iterator

from gradlint.fixes import ga003
from gradlint.model import Kind, LoopKind, ModuleModel, When
from gradlint.rules.base import Finding, Rule, show, step_of, via


class ClipBeforeAccumulationComplete(Rule):
    """
    ## What it does
    Flags gradient clipping that runs on micro-batches where no optimizer step runs, in a loop that
    accumulates gradients.

    ## Why is this bad?
    Clipping is meant for the gradient the optimizer applies: the full window's. Clipping after
    each micro-batch clips a partial sum (rescaling earlier micro-batches again and again), so the
    applied gradient is neither the clipped large-batch gradient nor anything with a clear meaning.
    Under Accelerate, clipping inside `accelerator.accumulate()` must sit under
    `if accelerator.sync_gradients:`.

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        (criterion(model(x), y) / accum_steps).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if (i + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    for i, (x, y) in enumerate(loader):
        (criterion(model(x), y) / accum_steps).backward()
        if (i + 1) % accum_steps == 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Fix
    Safe: the clip statement moves into the step's block, just before the step (so after an
    `unscale_` there), with its comments; a clip under its own `if` (`if max_norm > 0:`) moves with
    that `if`. `norm = clip_grad_norm_(...)` moves only when `norm` is read nowhere but after the step.
    Unsafe for a clip in a helper called on every micro-batch (`self.train_step()`): it moves next to
    the step when its names mean the same there, and the helper's other callers lose it. Under
    Accelerate, the clip is wrapped in `if accelerator.sync_gradients:`. No fix for a clip that is
    not directly in the loop's (or helper's) body, whose names are the helper's parameters, or when
    the step is ambiguous.
    """

    code = "GA003"
    name = "clip-before-accumulation-complete"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        for loop in model.loops:
            if loop.kind in (LoopKind.GATED, LoopKind.INNER) and not loop.mixed:
                for event in loop.of_kind(Kind.CLIP):
                    if loop.when(event) in (When.EVERY, When.REST):
                        inner = loop.kind is LoopKind.INNER
                        where = "every micro-step of the inner loop" if inner else "every micro-batch"
                        yield Finding(
                            self.code,
                            event.node,
                            f"{show(event)}{via(event, loop)} runs on {where}, but {step_of(loop)} only "
                            f"every {loop.k_phrase} micro-batches: it clips a partial gradient; clip once, just "
                            "before the step",
                            ga003.fix(model, loop, event),
                        )
            elif loop.kind is LoopKind.ACCELERATE:
                for event in loop.of_kind(Kind.CLIP):
                    if loop.when(event) not in (When.EVERY, When.REST):
                        continue
                    contexts = [c for e in loop.of_kind(Kind.BACKWARD) for c in e.contexts]
                    accelerator = next((c.receiver for c in contexts if c.method == "accumulate"), None)
                    if model.facts.accelerator_divides(accelerator) is False:
                        continue  # Accelerator built without gradient_accumulation_steps: K = 1
                    yield Finding(
                        self.code,
                        event.node,
                        f"{show(event)}{via(event, loop)} inside `accelerator.accumulate()` runs on every "
                        "micro-batch: it clips a partial gradient; put it under "
                        "`if accelerator.sync_gradients:`",
                        ga003.fix(model, loop, event),
                    )
