from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from gradlint.fixes import ga004
from gradlint.model import Kind, LoopKind, ModuleModel, loop_counter, loop_iterable
from gradlint.model.syntax import code, dotted, last_part, positional
from gradlint.rules.base import Finding, Rule


class MissingRemainderStep(Rule):
    """
    ## What it does
    Flags an epoch loop over a sized iterable (a DataLoader) whose step is gated on
    `(i + 1) % K == 0` (or an equivalent) with no last-batch clause and no step after the loop.

    ## Why is this bad?
    When the number of batches is not a multiple of K, the last `len(loader) % K` micro-batches of
    every epoch never reach an optimizer step. Their gradient either leaks into the next epoch's
    first window (which then holds more than K micro-batches) or is wiped by the next
    `zero_grad()`; at the end of training it is simply lost.

    Not flagged: fixed inner micro-step loops, step-bounded loops (`for step in range(max_steps)`,
    `while`) over infinite iterators, pre-grouped windows, Accelerate's `accumulate()` (its prepared
    loader forces a sync at the end), global counters that run across epochs, and gates with a
    clause such as `or (i + 1) == len(loader)`.

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
    tests anything else (`and not dry_run`).
    """

    code = "GA004"
    name = "missing-remainder-step"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        for loop in model.loops:
            if loop.kind is not LoopKind.GATED or loop.gate is None or loop.gate.periodic is None:
                continue
            node = loop.loop.node
            if not isinstance(node, cst.For) or loop.loop.implicit:
                continue
            periodic = loop.gate.periodic
            counter = loop_counter(loop.loop)
            if not counter.sized or periodic.has_alternative or periodic.modulus is None:
                continue
            if dotted(periodic.counter) not in counter.names:
                continue  # a global counter: windows run across epochs
            if any(e.kind is Kind.STEP for e in loop.after):
                continue  # a flush after the loop
            iterable = _iterable_text(loop_iterable(loop.loop) or node.iter)
            yield Finding(
                self.code,
                loop.gate.node or node,
                f"the step runs only when `{code(loop.gate.expr)}`, with no last-batch clause and "
                f"no step after the loop: when `len({iterable})` is not a multiple of "
                f"`{code(periodic.modulus)}`, the epoch's last micro-batches never reach a step "
                "(their gradient leaks into the next window or is wiped)",
                ga004.fix(model, loop),
            )


def _iterable_text(iterable: cst.BaseExpression) -> str:
    while isinstance(iterable, cst.Call) and positional(iterable):
        if last_part(dotted(iterable.func)) == "range":
            break
        iterable = positional(iterable)[0]
    return code(iterable)
