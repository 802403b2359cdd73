from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from gradlint.fixes import ga001
from gradlint.model import (
    Counter,
    Event,
    Framework,
    Guard,
    Kind,
    LoopKind,
    ModuleModel,
    Role,
    TrainingLoop,
    When,
    loop_counter,
    traversal,
)
from gradlint.model.grad_writes import writes_gradients
from gradlint.model.syntax import code, conjuncts, dotted, number
from gradlint.rules.base import Finding, Rule, conditions, exclusive, runs_on, show, step_of, via


class ZeroGradEveryMicroBatch(Rule):
    """
    ## What it does
    Flags a `zero_grad()` that runs on micro-batches where no optimizer step runs, in a loop that
    accumulates gradients over K micro-batches.

    Also one under the step's own condition that runs before that micro-batch's backward (`if (i +
    1) % K == 0: optimizer.zero_grad()`, then `loss.backward()`, then the gated step): it wipes the
    K - 1 micro-batches before it.

    ## Why is this bad?
    Gradient accumulation relies on `.grad` summing over the K micro-batches of a window. Clearing
    the gradients on every micro-batch (unconditionally, in the `else` of the step gate, in a helper
    called on every micro-batch, or inside a fixed inner micro-step loop) throws away all but the
    last micro-batch: the effective batch is one micro-batch, silently. Nothing crashes and the
    loss still goes down.

    Not flagged: `zero_grad()` at the start of each window (`if i % K == 0:`), after the step inside
    the gate, before an inner micro-step loop, on a skip path (`if not torch.isfinite(loss):
    optimizer.zero_grad(); continue`), in an inner per-task loop whose gradients are then written
    back by hand (PCGrad-style surgery), or on an Accelerate-prepared optimizer inside
    `accelerator.accumulate()` (Accelerate skips it mid-window). `model.zero_grad()` inside
    `accumulate()` is flagged: Accelerate does not skip it. Nor a GAN that updates its generator
    every n-th iteration (`if it % n_d == 0: loss_g.backward(); opt_g.step()`) and its
    discriminator on every one: the generator's backward runs under its step's condition, so
    nothing accumulates. Nor a clear in a block that asserts no gradient is there (`assert
    next(model.parameters()).grad is None`, a probe at a window's start): that block can only
    run where nothing has accumulated. Nor one that runs only on a pass's first micro-batch
    (`if step == 0:`) before that iteration's backward, where a window starts, or under a flag that
    opens windows (`if should_start_update:`, set False in that block and True again only right
    after the step). Nor a branch that runs only with K = 1: the `else` of `if K > 1:`, `if K == 1
    and ...:` (tez), or where an `assert A or K == 1` in the file makes A false (`if params.amp ==
    -1:` with `assert params.amp >= 0 or params.accumulate_gradients == 1`).

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss = criterion(model(x), y) / accum_steps
        loss.backward()
        if (i + 1) % accum_steps == 0:
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
    Safe: the `zero_grad()` that runs on every micro-batch is removed (with the `else:` it was alone
    in), and, unless another `zero_grad()` already runs once per window, the same call (arguments and
    comments kept) is put right after the step, after a `scaler.update()` or `scheduler.step()` that
    follows it. Unsafe when the `zero_grad()` is in a helper function (its other callers may rely on
    it; the call is then written with the argument the loop passes), or when the step runs under a
    further condition (`if not overflow:`), which would skip the clear too. Under Accelerate,
    `model.zero_grad()` becomes `optimizer.zero_grad()`: unsafe, since the optimizer may not hold every
    parameter. No fix when the step is ambiguous (several optimizers) or done by a call that steps
    under a flag, when the clearing is `p.grad = None` in a loop, when the call shares its line, or
    when it cancels a probe's backward (moved after the step, it would let the probe's gradient into
    the window: move the probe to a window's start instead).
    """

    code = "GA001"
    name = "zero-grad-every-micro-batch"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        for loop in model.loops:
            if loop.kind is LoopKind.INNER and writes_gradients(model, loop):
                continue  # per-task gradients combined by hand (PCGrad): clearing between them is the recipe
            if loop.kind in (LoopKind.GATED, LoopKind.INNER):
                stepped_every = {
                    e.optimizer
                    for e in loop.of_kind(Kind.STEP)
                    if loop.when(e) is When.EVERY
                }
                for event in loop.of_kind(Kind.ZERO_GRAD):
                    when = loop.when(event)
                    if when is When.ONCE and loop.kind is LoopKind.GATED and event.spec.framework is not \
                            Framework.DEEPSPEED and _before_the_last_backward(loop, event):
                        yield Finding(self.code, event.node, self._message_before_backward(loop, event),
                                      ga001.fix(model, loop, event))
                        continue
                    if when not in (When.EVERY, When.REST) or event.spec.framework is Framework.DEEPSPEED:
                        continue
                    if any(g.skip_branch for g in loop.inner_guards(event)):
                        continue  # a reset on a skip path (non-finite loss, bad batch), then `continue`
                    receiver = event.optimizer
                    if stepped_every and receiver not in loop.accumulating_optimizers:
                        continue  # GAN-style: another optimizer steps every iteration
                    if (_asserted_clear(model, loop, event) or _on_first_micro_batch(loop, event)
                            or _under_window_flag(model, loop, event)):
                        continue  # its block runs only where no gradient has accumulated yet
                    # A clear that cancels a probe's backward cannot move after the step: the probe's
                    # gradient would join the window's. The probe must move (or save the gradients).
                    probe = any(loop.discarding(b) is event for b in loop.of_kind(Kind.BACKWARD))
                    yield Finding(self.code, event.node, self._message(loop, event, when),
                                  None if probe else ga001.fix(model, loop, event))
            elif loop.kind is LoopKind.ACCELERATE:
                for event in loop.of_kind(Kind.ZERO_GRAD):
                    if loop.when(event) not in (When.EVERY, When.REST):
                        continue
                    if model.facts.role(event.spec.receiver) is Role.OPTIMIZER:
                        continue  # the prepared optimizer: a no-op mid-window
                    yield Finding(
                        self.code,
                        event.node,
                        f"{show(event)}{via(event, loop)} inside `accelerator.accumulate()` runs on every "
                        "micro-batch: Accelerate only skips the prepared optimizer's `zero_grad()` "
                        "mid-window, so the accumulated gradient is wiped; call "
                        "`optimizer.zero_grad()` instead",
                        ga001.fix(model, loop, event),
                    )

    def _message_before_backward(self, loop: TrainingLoop, event: Event) -> str:
        assert loop.gate is not None
        return (
            f"{show(event)}{via(event, loop)} runs under the step's condition (`{code(loop.gate.expr)}`) but "
            f"before that micro-batch's backward: it wipes the {loop.k_phrase} - 1 micro-batches accumulated "
            f"before it, so each step applies one micro-batch's gradient; clear after the step instead"
        )

    def _message(self, loop, event, when: When) -> str:
        what = f"{show(event)}{via(event, loop)}"
        if loop.kind is LoopKind.INNER:
            return (
                f"{what} runs on every micro-step of the inner loop, but {step_of(loop, event.optimizer)} only "
                "after it: only the last micro-batch's gradient reaches the step"
            )
        if when is When.REST:
            return f"{what} runs on {runs_on(loop, event)}: the accumulated gradient is wiped before each step"
        first = _first_micro_batch_guard(loop, event)
        if first is not None:  # after that micro-batch's backward, or `_on_first_micro_batch` skips it
            return (
                f"{what} runs on each pass's first micro-batch (when `{code(first.expr)}`) after its backward: "
                f"that micro-batch's gradient is wiped before {step_of(loop, event.optimizer)}"
            )
        return (
            f"{what} runs on every micro-batch, but {step_of(loop, event.optimizer)} only every "
            f"{loop.k_phrase} micro-batches: the accumulated gradient is wiped before each step"
        )


def _asserted_clear(model: ModuleModel, loop: TrainingLoop, event: Event) -> bool:
    """The clear sits in an `if` block of the loop that asserts no gradient is there
    (`assert next(model.parameters()).grad is None`): the block runs only where nothing has
    accumulated (at a window's start), or it would fail. A probe: a forward and backward whose
    gradient the clear then removes."""
    for guard in loop.inner_guards(event):
        if guard.negated:
            continue  # the `else` side, or the statements after an early exit: not that block's body
        block = model.parents.get(id(guard.expr))
        if isinstance(block, cst.If) and block.test is guard.expr and _asserts_no_grad(block.body):
            return True
    return False


def _before_the_last_backward(loop: TrainingLoop, event: Event) -> bool:
    """The clear runs exactly where the step does (under the step's own gate, `if (j + 1) % K == 0:
    optimizer.zero_grad()` before `loss.backward()`, dlrm's mlperf path), and a backward of every
    micro-batch runs between it and the step: the window's earlier micro-batches are wiped."""
    gate = loop.gate
    if gate is None or gate.key not in conditions(event):
        return False
    here = tuple(map(id, event.loops))  # one pass of the same loop (not a second training phase after it)
    steps = [s for s in loop.of_kind(Kind.STEP) if gate.key in conditions(s) and s.order > event.order
             and s.optimizer in loop.accumulating_optimizers and not exclusive(s, event)
             and tuple(map(id, s.loops)) == here]
    backwards = [b for b in loop.accumulating_backwards()
                 if tuple(map(id, b.loops)) == here and not exclusive(b, event)]
    # Before every backward of the pass (a helper walked twice lists the loop's events twice: a clear
    # after the first copy's step is not before the second copy's backward).
    return loop.in_loop(event) and bool(backwards) and all(event.order < b.order for b in backwards) and any(
        b.order < s.order and loop.when(b) is When.EVERY and not exclusive(b, s) for b in backwards for s in steps)


def _under_window_flag(model: ModuleModel, loop: TrainingLoop, event: Event) -> bool:
    """The clear sits under `if should_start_update:` (mmf's trainer), a flag the same block sets
    False and that is set True only before the loop or right after the step (a later statement of a
    block whose earlier statement runs the step): the block runs once per window, at its start."""
    scope = loop.loop.frame.scope
    steps = [_call_site(loop, s) for s in loop.of_kind(Kind.STEP) if s.spec.optimizer or s.spec.receiver]
    for guard in loop.inner_guards(event):
        flag = dotted(guard.expr)
        block = model.parents.get(id(guard.expr))
        if guard.negated or flag is None or guard.frame.scope is not scope or not isinstance(block, cst.If):
            continue
        values = scope.assignments.get(flag, [])
        if not values or any(a.operator is not None or dotted(a.value) not in ("True", "False") for a in values):
            continue
        closes = any(dotted(a.value) == "False" and traversal.holds(block.body, a.value) for a in values)
        opens = [a for a in values if dotted(a.value) == "True" and traversal.holds(loop.loop.node, a.value)]
        if closes and opens and all(_right_after(model, a.value, steps) for a in opens):
            return True
    return False


def _call_site(loop: TrainingLoop, event: Event) -> cst.CSTNode:
    """Where the event runs in the loop's own function: the event, or the helper call holding it."""
    calls = event.frame.calls_below(loop.loop.frame)
    return calls[0] if calls else event.node


def _right_after(model: ModuleModel, value: cst.CSTNode, steps: list[cst.CSTNode]) -> bool:
    """`flag = True` follows, in its block, a simple statement that runs a step (not an `if` that may
    skip it: the flag would reopen the window on passes without a step)."""
    statement = model.parents.get(id(value))
    while statement is not None and not isinstance(statement, cst.SimpleStatementLine):
        statement = model.parents.get(id(statement))
    block = model.parents.get(id(statement)) if statement is not None else None
    if not isinstance(block, cst.IndentedBlock):
        return False
    index = next((i for i, s in enumerate(block.body) if s is statement), 0)
    return any(isinstance(s, cst.SimpleStatementLine) and traversal.holds(s, step)
               for s in block.body[:index] for step in steps)


def _on_first_micro_batch(loop: TrainingLoop, event: Event) -> bool:
    """The clear runs only on a pass's first micro-batch (`if step == 0 and recompute_norms:`, with
    `step` the loop's enumerate index), before any backward of that iteration but those in its own
    block (a probe whose gradient it removes): a window starts there, so nothing accumulated is lost
    (a tail carried over from the previous pass is GA004's)."""
    guard = _first_micro_batch_guard(loop, event)
    if guard is None:
        return False
    # `if a: ... elif b: <event>`: a backward under `a` never runs before it in the same pass
    return not any(loop.in_loop(b) and b.order < event.order and guard.key not in conditions(b)
                   and not exclusive(event, b) for b in loop.of_kind(Kind.BACKWARD))


def _first_micro_batch_guard(loop: TrainingLoop, event: Event) -> Guard | None:
    """A condition of the event that holds only on a pass's first micro-batch: `step == 0` for the
    loop's counter from its start, alone or in an `and`."""
    counter = loop_counter(loop.loop)
    for guard in loop.inner_guards(event):
        if not guard.negated and guard.frame.scope is loop.loop.frame.scope and any(
                _is_first(test, counter) for test in conjuncts(guard.expr)):
            return guard
    return None


def _is_first(test: cst.BaseExpression, counter: Counter) -> bool:
    """`step == 0` (or `0 == step`) for the loop's counter from its start."""
    if not isinstance(test, cst.Comparison) or len(test.comparisons) != 1:
        return False
    target = test.comparisons[0]
    if not isinstance(target.operator, cst.Equal):
        return False
    for name, value in ((test.left, target.comparator), (target.comparator, test.left)):
        if dotted(name) in counter.names and number(value) == counter.start:
            return True
    return False


def _asserts_no_grad(body: cst.BaseSuite) -> bool:
    for line in getattr(body, "body", ()):
        for small in getattr(line, "body", ()) if isinstance(line, cst.SimpleStatementLine) else ():
            if isinstance(small, cst.Assert):
                finder = _NoGradTest()
                traversal.visit(small.test, finder)
                if finder.found:
                    return True
    return False


class _NoGradTest(cst.CSTVisitor):
    """`<x>.grad is None` anywhere in an expression (also inside `all(p.grad is None for p in ...)`)."""

    def __init__(self) -> None:
        self.found = False

    def visit_Comparison(self, node: cst.Comparison) -> None:
        left = node.left
        if (isinstance(left, cst.Attribute) and left.attr.value == "grad" and len(node.comparisons) == 1
                and isinstance(node.comparisons[0].operator, cst.Is)
                and dotted(node.comparisons[0].comparator) == "None"):
            self.found = True
