from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from gradlint.fixes import ga010
from gradlint.model import Guard, Kind, LoopKind, ModuleModel, Phase, TrainingLoop, traversal
from gradlint.model.counters import zero_based_counter
from gradlint.model.gates import Resolver
from gradlint.model.syntax import code, dotted, number
from gradlint.rules.base import Finding, Rule, step_of


class OffByOneAccumulationGate(Rule):
    """
    ## What it does
    Flags an optimizer step gated on `i % K == 0` where `i` counts micro-batches from 0.

    That is, `i` is an `enumerate` index, a `range` target or a counter incremented only after the
    test, and the step follows the backward in the same iteration. The test may be written through
    a flag, negated or not (`is_accumulating = i % K != 0` ... `if not is_accumulating:`).

    ## Why is this bad?
    With a 0-based `i`, `i % K == 0` holds at micro-batches 0, K, 2K, ...: the first window is a
    single micro-batch (its update is 1/K of what it should be when the loss is divided by K), and
    every later window is shifted by one, so the epoch's last micro-batches spill into the next
    epoch. Nothing crashes; training is only slightly, silently wrong.

    Not flagged: `enumerate(loader, start=1)`, `range(1, n + 1)`, a counter incremented before the
    test (`step += 1; if step % K == 0:`), `(i + 1) % K == 0`, and `zero_grad()` (not the step) at
    the start of each window (`if i % K == 0: optimizer.zero_grad()`), which is correct. Nor an
    Accelerate script whose K is read from the DeepSpeed config and is a written 1 otherwise (`K =
    config[...] if plugin else 1`; a K taken from the command line without DeepSpeed is judged):
    without DeepSpeed every micro-batch steps, and under it the prepared optimizer's step() does nothing
    (the engine steps inside `accelerator.backward`), so the gate decides nothing. Nor a K assigned
    inside the loop (a warm-up ramp or an adaptive window drawn after each step, which start at 1:
    the first window's size is the schedule's, not an off-by-one).

    A counter reset to 0 at each step and advanced before the next test (`if c % K == 0: ...;
    c = 0` then `c += 1`) is flagged for its first window only: later windows hold K.

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        (criterion(model(x), y) / accum_steps).backward()
        if i % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    for i, (x, y) in enumerate(loader):
        (criterion(model(x), y) / accum_steps).backward()
        if (i + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Fix
    Safe: `i % K` becomes `(i + 1) % K` where the gate is written (the `if`, or the flag it
    tests). Unsafe when the gate sits in a helper: its other call sites pass other counters. No fix
    for a counter reset at each step (`(c + 1) % K` would make its later windows one short): it
    should start at 1.
    With no last-batch clause, the fixed gate no longer steps at the start of each epoch, so the
    epoch's tail becomes GA004's finding; `--fix` applies that rule's fix in its next pass.
    """

    code = "GA010"
    name = "off-by-one-accumulation-gate"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        for loop in model.loops:
            gate = loop.gate
            if loop.kind is not LoopKind.GATED or gate is None:
                continue
            mod = _zero_test(gate.expr, gate.frame.resolve, 0) or _residue_zero(gate)
            if mod is None:
                continue
            steps = [s for s in loop.of_kind(Kind.STEP) if gate in s.guards]
            backwards = loop.accumulating_backwards()
            if not any(b.order < s.order for b in backwards for s in steps):
                continue  # the step opens the window (before the backward): `i % K == 0` is right there
            counter = zero_based_counter(loop, gate, mod)
            if counter is None or loop.k_varies:
                continue  # K's first value decides the first window (warm-up ramps and adaptive windows start at 1)
            k = code(mod.right)
            if _reset_in_loop(loop, counter):
                # After each step the counter restarts at 0 and is advanced before the next test: later
                # windows hold K. `(i + 1) % K` would make them K - 1: the counter must start at 1.
                yield Finding(
                    self.code,
                    gate.node or gate.expr,
                    f"{step_of(loop)} runs when `{code(mod)} == 0`, but `{counter}` is 0 at the first test: the "
                    f"first step runs after a single micro-batch (later windows hold {_count(mod.right)} "
                    f"micro-batches: the counter is reset at each step); start `{counter}` at 1",
                )
                continue
            literal = number(mod.right)
            later = f"{int(literal)}, {2 * int(literal)}" if literal is not None else f"{k}, 2 * {k}"
            yield Finding(
                self.code,
                gate.node or gate.expr,
                f"{step_of(loop)} runs when `{code(mod)} == 0`, but `{counter}` counts micro-batches from 0: "
                f"the step runs after micro-batches 0, {later}, ..., so the first window is a single "
                f"micro-batch and every later window is shifted by one; gate on `({code(mod.left)} + 1) % {k} == 0`",
                ga010.fix(mod, code(mod.left), gate.frame.scope is not loop.loop.frame.scope),
            )


def _count(k: cst.BaseExpression) -> str:
    literal = number(k)
    return str(int(literal)) if literal is not None and literal.is_integer() else f"`{code(k)}`"


def _reset_in_loop(loop: TrainingLoop, counter: str) -> bool:
    """`counter = 0` inside the micro-batch loop (in the step's block, as hlb-gpt writes it)."""
    node = loop.loop.node
    return any(a.operator is None and number(a.value) == 0 and traversal.holds(node, a.value)
               for a in loop.loop.frame.scope.assignments.get(counter, []))


def _zero_test(expr: cst.BaseExpression, resolve: Resolver, depth: int) -> cst.BinaryOperation | None:
    """The `i % K` of `i % K == 0` / `not i % K` (a bare counter, no `+ 1`), through flags and `or`."""
    if depth > 4:
        return None
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Not):
        return _bare_modulo(expr.expression)
    if isinstance(expr, cst.Comparison) and len(expr.comparisons) == 1:
        target = expr.comparisons[0]
        if isinstance(target.operator, cst.Equal) and number(target.comparator) == 0:
            return _bare_modulo(expr.left)
        return None
    if isinstance(expr, cst.BooleanOperation) and isinstance(expr.operator, cst.Or):
        return _zero_test(expr.left, resolve, depth + 1) or _zero_test(expr.right, resolve, depth + 1)
    text = dotted(expr)
    if text is not None:
        for value, inner in resolve(text):
            if value is not expr:
                found = _zero_test(value, inner, depth + 1)
                if found is not None:
                    return found
    return None


def _residue_zero(gate: Guard) -> cst.BinaryOperation | None:
    """The `i % K` of a gate that holds when it is 0, seen through negations the plain test above
    does not follow: `is_accumulating = i % K != 0; if not is_accumulating:`."""
    periodic = gate.periodic
    if periodic is None or periodic.test is None or periodic.phase is not Phase.ONCE:
        return None
    if periodic.residue != 0 or periodic.offset != 0:
        return None
    return _bare_modulo(periodic.test)


def _bare_modulo(node: cst.BaseExpression) -> cst.BinaryOperation | None:
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Modulo) and dotted(node.left):
        return node
    return None
