from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from gradlint.fixes import ga004
from gradlint.model import (
    Event,
    Kind,
    LoopKind,
    ModuleModel,
    Phase,
    Role,
    TrainingLoop,
    drained_iterable,
    loop_counter,
    loop_iterable,
)
from gradlint.model.counters import frozen_counter, reached, steps_on_first_micro_batch
from gradlint.model.gates import Periodicity
from gradlint.model.loops import holds_while_accumulating
from gradlint.model.quantities import same_quantity
from gradlint.model.syntax import code, dotted, last_part, positional, same_code
from gradlint.model.walker import Guard
from gradlint.rules.base import Finding, Rule, same_test


class MissingRemainderStep(Rule):
    """
    ## What it does
    Flags an epoch loop over a sized iterable (a DataLoader) whose step is gated on
    `(i + 1) % K == 0` (or an equivalent) with no last-batch clause and no step after the loop.
    A last-batch clause that holds only in an epoch of at most K micro-batches, `or (len(loader)
    <= K and i + 1 == len(loader))` (the old Hugging Face examples, `run_glue.py` and the research
    projects copied from it), counts as none: a longer epoch's tail still reaches no step.

    The loop is a `for` over the loader, or a `while True:` that draws `batch = next(it)` from an
    `it = iter(loader)` made right before it, ends only when `it` runs dry (`except StopIteration:
    break`, or `next(it, None)` then `if batch is None: break`), and counts its micro-batches
    with a counter set to 0 right before it and advanced once per pass.

    ## Why is this bad?
    When the number of batches is not a multiple of K, the last `len(loader) % K` micro-batches of
    every epoch reach no optimizer step within it. Their gradient either leaks into the next epoch's
    first window (which then holds more than K micro-batches) or is wiped by the next
    `zero_grad()`; at the end of training it is simply lost.

    The message says which: a `zero_grad()` that runs before the loop on every pass (at the top
    of the epoch loop, or of the per-epoch function) discards the tail; otherwise it is carried into
    the next epoch's first window, which then holds up to 2K - 1 micro-batches while the loss was
    divided by K.

    Not flagged: fixed inner micro-step loops, step-bounded loops (`for step in range(max_steps)`,
    `while`) over infinite iterators, `while` loops with any other exit, `continue`, or bound
    (`while done < len(loader) // K:` never draws the tail), pre-grouped windows, Accelerate's
    `accumulate()` (its prepared loader forces a sync at the end), global counters that run across
    epochs (also an attribute such as `self.num_train_step` advanced in a method called once per
    epoch), unless a `zero_grad()` at the start of every epoch wipes the window they carry over
    (YOLO's `ni = i + nb * epoch` with `optimizer.zero_grad()` before each epoch's batches:
    flagged, without a fix), gates with a clause such as `or (i + 1) == len(loader)`, and gates that hold on the
    first micro-batch of every epoch (`i % K == 0` with a 0-based `i`) when nothing clears the
    gradients between epochs: that first step applies what the previous epoch left, a window of at
    most K (an off-by-one after the backward is GA010's finding). Nor loops that skip everything after
    the last whole window before its backward (`if i // K >= n: continue`), nor a gate whose counter
    never advances again (GA015), nor a loop followed by a clear under the gate's own test on its
    other side (`if i % K != K - 1: optimizer.zero_grad()`): the incomplete window is dropped on
    purpose, like `drop_last=True`. A loop with no epoch loop around it in the file is one pass, as far
    as gradlint can see: the message then says the tail is carried into the next pass, if any; such
    a pass that breaks on its own micro-batch count (`if iter_num > max_iters: break`, pretraining
    over a streaming dataset) is the whole run, and is not flagged: its tail is the end of training
    (unless its function is named for an epoch, `train_one_epoch`: a capped epoch).

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        (criterion(model(x), y) / accum_steps).backward()
        if (i + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    for i, (x, y) in enumerate(loader):
        (criterion(model(x), y) / accum_steps).backward()
        if (i + 1) % accum_steps == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Fix
    Safe: a last-batch clause joins the periodic condition, where it is written (the `if`, or the
    flag it tests): `or (i + 1) == len(loader)`, or `and (i + 1) != len(loader)` for an early exit
    (`if (i + 1) % K != 0: continue`). Offered when the counter is the loop's own index
    (`enumerate`, from 0 or 1, or `range(len(x))`) and the loader has a length, as the rule
    assumes. Unsafe when the loop tests the same period elsewhere (`model.no_sync()` while
    accumulating, `require_backward_grad_sync`, a second flag): review that condition too. With a
    counter of its own (`seen += 1` before the gate), the step block is repeated after the loop
    under `if seen % K != 0:` (unsafe: a guess at the counter's final value). No fix when the gate
    tests anything else (`and not dry_run`), nor for a short-epoch clause (make it a plain
    `or (i + 1) == len(loader)`), nor for a `while True:` loop.
    """

    code = "GA004"
    name = "missing-remainder-step"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        for loop in model.loops:
            if loop.kind is not LoopKind.GATED or loop.gate is None or loop.gate.periodic is None:
                continue
            node = loop.loop.node
            if loop.loop.implicit or not (isinstance(node, cst.For) or drained_iterable(loop.loop) is not None):
                continue
            periodic = loop.gate.periodic
            counter = loop_counter(loop.loop)
            if not counter.sized or periodic.modulus is None or (
                    periodic.has_alternative and periodic.short_epoch_test is None):
                continue
            own_counter = dotted(periodic.counter) in counter.names
            if any(e.kind is Kind.STEP for e in loop.after):
                continue  # a flush after the loop
            if _tail_dropped(loop):
                continue  # a clear after the loop where a window is incomplete: the tail dropped on purpose
            if frozen_counter(loop, model.facts) is not None:
                continue  # GA015: the gate never holds again, so there is no last window to flush
            if _whole_windows_only(loop, periodic):
                continue
            if _one_budgeted_pass(loop, counter.names):
                continue
            clear = _clear_before(model, loop)
            if not own_counter:
                # A global counter (`ni = i + nb * epoch`): windows run across epochs, unless a clear
                # at the start of every epoch wipes what the last one left (YOLO's trainers).
                if clear is not None and _epoch_loop_around(loop):
                    yield Finding(self.code, loop.gate.node or node, _global_counter_message(loop, periodic, clear))
                continue
            opens_with_step = steps_on_first_micro_batch(loop)
            if opens_with_step and clear is None:
                continue  # each pass opens with a step, which applies what the previous one left
            yield Finding(
                self.code,
                loop.gate.node or node,
                _message(loop, periodic, clear, opens_with_step),
                ga004.fix(model, loop),
            )


def _tail_dropped(loop: TrainingLoop) -> bool:
    """`if i % K != K - 1: optimizer.zero_grad()` right after the loop (icefall's trainers): the
    gate's own test, on the side where no step ran last, clears the incomplete window: a remainder
    policy like `drop_last`, not a gradient carried on."""
    gate = loop.gate
    assert gate is not None
    for event in loop.after:
        if event.kind is not Kind.ZERO_GRAD:
            continue
        for guard in event.guards:
            periodic = guard.periodic
            if periodic is None or not same_test(guard, gate):
                continue
            if periodic.phase is Phase.REST or (guard.negated and periodic.phase is Phase.ONCE):
                return True
    return False


def _clear_before(model: ModuleModel, loop: TrainingLoop) -> Event | None:
    """A `zero_grad()` that runs unconditionally before the loop on every pass (at the start of the
    epoch loop's body, or of the function that holds the loop), on the accumulating optimizer or
    a model: it wipes the gradient the previous pass left."""
    if not loop.loop.chain:
        return None  # module level: it runs once, before training
    depth = len(loop.loop.chain)
    # Conditions the whole loop runs under too (`else: train_one_epoch(...)` around both) do not make
    # the clear conditional relative to the loop.
    backwards = loop.accumulating_backwards()
    around = set.intersection(*({g.key for g in b.guards} for b in backwards)) if backwards else set()
    for event in loop.before:
        if event.kind is not Kind.ZERO_GRAD or any(
                g.depth >= depth and g.key not in around and not holds_while_accumulating(g, loop.k)
                for g in event.guards):
            continue  # (`if K > 1: optimizer.zero_grad()` is no condition where K accumulates)
        name = event.spec.receiver
        if model.facts.role(name) is Role.OPTIMIZER and name not in loop.accumulating_optimizers:
            continue  # another optimizer's gradients
        return event
    return None


def _epoch_loop_around(loop: TrainingLoop) -> bool:
    return any(isinstance(node, cst.For | cst.While) for node in loop.loop.chain)


def _global_counter_message(loop: TrainingLoop, periodic: Periodicity, clear: Event) -> str:
    assert loop.gate is not None and periodic.modulus is not None and periodic.counter is not None
    k = code(periodic.modulus)
    return (f"the step runs only when `{code(loop.gate.expr)}`, on `{code(periodic.counter)}`, which counts "
            f"micro-batches across epochs, but `{clear.spec.display}` at the start of every epoch discards the "
            f"gradient of the micro-batches after the epoch's last step (up to `{k}` - 1 of them): they never "
            "reach a step, and the next epoch's first window is short")


def _message(loop: TrainingLoop, periodic: Periodicity, clear: Event | None, opens_with_step: bool) -> str:
    assert loop.gate is not None and periodic.modulus is not None
    iterable = drained_iterable(loop.loop) or loop_iterable(loop.loop) or loop.loop.node.iter  # type: ignore[attr-defined]
    length = f"len({_iterable_text(iterable)})"
    k = code(periodic.modulus)
    if periodic.short_epoch_test is not None:
        head = (f"the step's last-batch clause holds only in an epoch of at most `{k}` micro-batches "
                f"(`{code(periodic.short_epoch_test)}`), and no step follows the loop")
    else:
        head = f"the step runs only when `{code(loop.gate.expr)}`, with no last-batch clause and no step after the loop"
    unit = "epoch" if loop.loop.chain else "loop"
    if opens_with_step:  # steps at micro-batches 0, K, 2K, ...: the tail is what follows the last of them
        when, tail = f"unless `{length} % {k} == 1`", f"the micro-batches after the {unit}'s last step"
    elif periodic.short_epoch_test is not None:
        when = f"when `{length}` is over `{k}` and not a multiple of it"
        tail = f"the {unit}'s last `{length} % {k}` micro-batches"
    else:
        when, tail = f"when `{length}` is not a multiple of `{k}`", f"the {unit}'s last `{length} % {k}` micro-batches"
    one_pass = all(isinstance(node, cst.FunctionDef) for node in loop.loop.chain)
    if clear is not None and one_pass:
        # No epoch loop in sight: the function may be called per epoch or, once, for the whole run.
        function = loop.loop.chain[-1].name.value  # type: ignore[attr-defined]
        return (f"{head}: {when}, {tail} never reach a step: `{clear.spec.display}` before the loop "
                f"discards their gradient on the next call of `{function}()`, and after the last call it is "
                "never applied")
    if clear is not None:
        return (f"{head}: {when}, {tail} never reach a step: `{clear.spec.display}` before the loop "
                "discards their gradient on the next pass")
    if not loop.loop.chain:
        return f"{head}: {when}, {tail} never reach a step: training ends with their gradient unapplied"
    if one_pass:
        # No epoch loop in sight, only the functions the loop sits in: called once, or per epoch?
        tail = tail.replace("epoch's", "loop's")
        return (f"{head}: {when}, {tail} are not stepped in this pass: their gradient is "
                f"carried into the next pass's first window (which then spans more than `{k}` micro-batches) "
                "or, after the last pass, never applied")
    return (f"{head}: {when}, {tail} are not stepped in their epoch: their gradient is carried into the "
            f"next epoch's first window, which then spans more than `{k}` micro-batches")


def _one_budgeted_pass(loop: TrainingLoop, counters: frozenset[str]) -> bool:
    """No epoch loop in sight, and the loop breaks on its own micro-batch count (`if iter_num >
    max_iters: break`) in a function not named for an epoch: the pass is the training run, bounded
    by a budget of micro-batches (pretraining over a streaming dataset). What follows its last step
    is the end of training, at most K - 1 micro-batches out of the run: nothing is carried into a
    later window."""
    chain = loop.loop.chain
    if not all(isinstance(node, cst.FunctionDef) for node in chain):
        return False
    if chain and "epoch" in chain[-1].name.value.lower():  # type: ignore[attr-defined]
        return False  # `train_one_epoch(..., max_batches)`: a capped epoch, called once per epoch
    node = loop.loop.node
    return isinstance(node, cst.For) and _breaks_on(node.body, counters)


def _breaks_on(block: cst.BaseSuite, counters: frozenset[str]) -> bool:
    """A `break` of this loop (not of a nested one) under `if <counter> >/>=/== <bound>:`."""
    for statement in getattr(block, "body", ()):
        if isinstance(statement, cst.If):
            if _compares_counter(statement.test, counters) and _breaks_here(statement.body):
                return True
            if _breaks_on(statement.body, counters) or (
                    isinstance(statement.orelse, cst.Else) and _breaks_on(statement.orelse.body, counters)):
                return True
        elif isinstance(statement, cst.With | cst.Try) and _breaks_on(statement.body, counters):
            return True
    return False


def _breaks_here(block: cst.BaseSuite) -> bool:
    lines = block.body if isinstance(block, cst.IndentedBlock) else (block,)
    return any(isinstance(small, cst.Break)
               for line in lines if isinstance(line, cst.SimpleStatementLine | cst.SimpleStatementSuite)
               for small in line.body)


def _compares_counter(test: cst.BaseExpression, counters: frozenset[str]) -> bool:
    exit_test = reached(test)
    return exit_test is not None and dotted(exit_test.counter) in counters


def _whole_windows_only(loop: TrainingLoop, periodic: Periodicity) -> bool:
    """Every backward sits behind `if i // K >= n: continue` (or `break`): the loop skips whatever
    follows the last whole window before any backward runs, so no partial window is left."""
    backwards = loop.accumulating_backwards()
    return bool(backwards) and all(
        any(g.negated and _caps_at_whole_windows(g, periodic) for g in loop.inner_guards(b)) for b in backwards)


def _caps_at_whole_windows(guard: Guard, periodic: Periodicity) -> bool:
    """`i // K >= n`, or `step >= n` with `step = i // K` assigned once."""
    expr = guard.expr
    if not isinstance(expr, cst.Comparison) or len(expr.comparisons) != 1:
        return False
    operator = expr.comparisons[0].operator
    left = expr.left
    name = dotted(left)
    if name is not None:
        values = guard.frame.resolve(name)
        left = values[0][0] if len(values) == 1 else left
    return (isinstance(operator, cst.GreaterThanEqual | cst.GreaterThan)
            and isinstance(left, cst.BinaryOperation) and isinstance(left.operator, cst.FloorDivide)
            and periodic.counter is not None and same_code(left.left, periodic.counter)
            and same_quantity(left.right, periodic.modulus))


# Wrappers whose length is their argument's: `len(loader)` reads better than `len(enumerate(loader))`
# (`log_every`: the metric logger of the MAE/DeiT/ConvNeXt engines, which yields what it is given).
# Any other call is shown whole: `len(batches(n))`, not `len(n)`; `len(DataLoader(ds))`, not `len(ds)`.
_SAME_LENGTH = frozenset({"enumerate", "tqdm", "track", "iter", "log_every"})


def _iterable_text(iterable: cst.BaseExpression) -> str:
    while isinstance(iterable, cst.Call) and positional(iterable) and last_part(dotted(iterable.func)) in _SAME_LENGTH:
        iterable = positional(iterable)[0]
    return code(iterable)
