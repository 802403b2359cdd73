from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from gradlint.fixes import ga002
from gradlint.model import Framework, Kind, LoopKind, ModuleModel, Scaling, TrainingLoop
from gradlint.model.grad_writes import writes_gradients
from gradlint.model.syntax import code, dotted, positional
from gradlint.rules.base import Finding, Rule, show, step_of, via


class LossNotScaled(Rule):
    """
    ## What it does
    Flags a backward call in an accumulating loop whose loss was never divided by K (nor
    normalised in another way) when no framework divides it for you.

    ## Why is this bad?
    With the step gated every K micro-batches, `.grad` holds the *sum* of K micro-batch
    gradients. Unless each loss is divided by K, the update is K times the large-batch gradient:
    the effective learning rate is K times what you set, and changing K changes training.

    Not flagged: a loss divided by K (`/ K`, `/= K`, `* (1 / K)`, `.div(K)`, in place with
    `loss.div_(K)`, inside `scaler.scale(...)` or `typing.cast(T, ...)`, through assignments and
    helper returns), scaled by its micro-batch's share (`loss.mul_(n / total)`), normalised by a token or sample
    count or a deliberate sum (also `model(x, y)` when a module class of the file returns its loss
    from `forward` with `reduction="sum"`), gradients rescaled after backward (`p.grad /= K`,
    `multiply_grads`, also in a loop over the parameters after an inner micro-step loop),
    `accelerator.backward()` when the Accelerator was built with
    `gradient_accumulation_steps` (it divides), DeepSpeed engines, a K that changes during
    training (YOLO-style warm-up), where the scale is managed on purpose, and a K that is a name
    bound only to 1 (`GRADIENT_ACCUMULATE_EVERY = 1`: nothing accumulates as written). ColossalAI's
    `booster.backward(loss=..., optimizer=...)` is judged on its `loss` (it does not divide). Dividing a copy for
    logging does not count: only what reaches backward does. An object of unknown kind given the
    loss (`accumulator.backward(loss)`) is not judged: whether it divides is not visible here; nor a
    loss from a function of another module given K or a value made from it (`extract_loss(report,
    loss_divisor)`), nor Hugging Face's inherited `self.training_step(model, inputs)` called from a
    copy of `Trainer.train()` in a subclass (it divides by K itself; the other rules read that loop). A
    sum divided by the micro-batch's own size (`losses.sum() / x.shape[0]`, `x.size(0)`,
    `x.numel()`) or by its own token count computed there (`/ mask.sum()`, `/ (valid + 1e-8)` with
    `valid = torch.sum(batch["loss_mask"])`) is a mean written by hand, and counts as undivided; a
    count given from outside (`num_items_in_batch`) may be the window's, and counts as normalised.
    Nor a conditional backward whose gradient a `zero_grad()` right after it clears before any
    step (a probe of the model's statistics): its scale reaches no update.

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        loss = criterion(model(x), y)
        loss.backward()
        if (i + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    for i, (x, y) in enumerate(loader):
        loss = criterion(model(x), y)
        (loss / accum_steps).backward()
        if (i + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Fix
    Safe: what reaches backward is divided by K, as the gate writes it; the loss you log is
    unchanged: `loss.backward()` -> `(loss / K).backward()`, `scaler.scale(loss)` ->
    `scaler.scale(loss / K)`, `accelerator.backward(loss / K)`, `self.manual_backward(loss / K)`.
    Unsafe when the backward is in a helper function (its other callers may not accumulate). No fix
    when K cannot be read where the backward is (a local variable of another function), or when K
    is the length of the list an inner loop iterates (`for mb in micro_batches:`: divide by
    `len(micro_batches)`, computed where the backward can read it).
    """

    code = "GA002"
    name = "loss-not-scaled"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        for loop in model.loops:
            if loop.kind not in (LoopKind.GATED, LoopKind.INNER):
                continue
            count = _micro_batch_list(loop) if loop.k is None else None
            if loop.k is None and count is None:
                continue
            k = loop.k_phrase if count is None else f"`len({code(count)})`"
            if loop.k_varies or loop.k_is_one:
                continue  # K changes during training (YOLO warm-up), or is the constant 1: nothing to divide
            if loop.of_kind(Kind.GRAD_RESCALE) or loop.mixed:
                continue
            if loop.kind is LoopKind.INNER and writes_gradients(model, loop):
                continue  # per-task gradients combined by hand (PCGrad): the inner loop is not a window
            for event in loop.accumulating_backwards():
                if loop.discarded(event):
                    continue  # cleared before any step: its scale changes nothing
                framework = event.spec.framework
                if framework is Framework.DEEPSPEED:
                    continue
                divides = model.facts.accelerator_divides(event.spec.receiver)
                if framework is Framework.ACCELERATE and divides is not False:
                    continue  # it divides by gradient_accumulation_steps, or we cannot tell
                provenance = model.provenance(loop, event)
                if provenance.scaling is not Scaling.RAW:
                    continue
                value = code(event.spec.value) if event.spec.value is not None else "the loss"
                origin = f" ({provenance.how})" if provenance.how else ""
                yield Finding(
                    self.code,
                    event.node,
                    f"{show(event)}{via(event, loop)} backpropagates `{value}`{origin} undivided, but "
                    f"{step_of(loop)} runs only every {k} micro-batches: the update is "
                    f"{k} times the large-batch gradient; divide the loss by {k}",
                    ga002.fix(model, loop, event) if count is None else None,
                )


def _micro_batch_list(loop: TrainingLoop) -> cst.BaseExpression | None:
    """`micro_batches` of an inner loop `for mb in micro_batches:` (a window split into a list
    before it): K is its length."""
    node = loop.loop.node
    if loop.kind is not LoopKind.INNER or not isinstance(node, cst.For):
        return None
    iterable = node.iter
    if isinstance(iterable, cst.Call) and dotted(iterable.func) == "enumerate" and positional(iterable):
        iterable = positional(iterable)[0]
    return iterable if dotted(iterable) is not None else None
