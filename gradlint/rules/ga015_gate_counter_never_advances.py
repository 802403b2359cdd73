from __future__ import annotations

from collections.abc import Iterator

from gradlint.model import LoopKind, ModuleModel
from gradlint.model.counters import frozen_counter
from gradlint.model.syntax import code
from gradlint.rules.base import Finding, Rule, step_of


class GateCounterNeverAdvances(Rule):
    """
    ## What it does
    Flags an accumulation gate (`c % K == 0`) whose counter `c` the loop advances only when the
    gate holds: `c += 1` under the gate, or `c += int(should_step)` with the gate's own flag.

    ## Why is this bad?
    While the gate does not hold, nothing moves `c`, so the gate can never hold again. With
    `c % K == 0` and `c` starting at 0, the optimizer steps after the first micro-batch, `c`
    becomes 1, and no step ever runs after that: every later backward adds to `.grad` for the rest
    of training. With `(c + 1) % K == 0` it never steps at all. Nothing crashes, and with K = 1
    (the usual default) the loop works, so the bug appears only when accumulation is switched on.
    It is the easy mistake when one counter is meant to count optimizer steps and also drives the
    window.

    Not flagged: a counter advanced on every micro-batch (also inside both branches of the gate), a
    gate on the micro-batch index with a separate step counter advanced under it, and a counter a
    helper called in the loop may also set (gradlint cannot see how it moves).

    ## Example
    ```python
    global_step = 0
    for batch in loader:
        should_step = global_step % accum_steps == 0
        loss = criterion(model(batch)) / accum_steps
        loss.backward()
        if should_step:
            optimizer.step()
            optimizer.zero_grad()
        global_step += int(should_step)
    ```

    ## Use instead
    ```python
    global_step = 0
    for micro_step, batch in enumerate(loader, start=1):
        loss = criterion(model(batch)) / accum_steps
        loss.backward()
        if micro_step % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
            global_step += 1
    ```

    ## Fix
    None: which counter should drive the window (a micro-batch index, or this counter advanced on
    every micro-batch) and what the step counter then means is the script's choice.
    """

    code = "GA015"
    name = "gate-counter-never-advances"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        for loop in model.loops:
            if loop.kind is not LoopKind.GATED or loop.gate is None or loop.gate.periodic is None:
                continue
            increment = frozen_counter(loop, model.facts)
            if increment is None:
                continue
            periodic = loop.gate.periodic
            counter = code(periodic.counter) if periodic.counter is not None else "the counter"
            test = code(loop.gate.expr)
            if periodic.test is not None and periodic.residue is not None:
                test = f"{code(periodic.test)} == {periodic.residue:g}"
            yield Finding(
                self.code,
                loop.gate.node or loop.gate.expr,
                f"{step_of(loop)} runs when `{test}` holds, but `{counter}` only advances when it does "
                f"(`{code(increment)}`): once the test fails the counter stops, so the optimizer steps at "
                f"most once and every later backward adds to `.grad`; advance `{counter}` on every "
                "micro-batch, or gate on the micro-batch index",
            )
