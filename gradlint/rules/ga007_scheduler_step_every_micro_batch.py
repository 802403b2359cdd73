from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

import libcst as cst

from gradlint.fixes.after_step import move_after
from gradlint.model import Event, Kind, LoopKind, ModuleModel, TrainingLoop, When, traversal
from gradlint.model.counters import reached
from gradlint.model.syntax import code, dotted, keyword, last_part, method_name, number, positional, string
from gradlint.rules.base import Finding, Rule, show, step_of, via

_OFF_WINDOW = (When.EVERY, When.REST)
_K_WORDS = re.compile(r"(?i)accum|grad_acc|iter_size|update_freq")
_MAX_DEPTH = 5


class Unit(Enum):
    MICRO_BATCHES = "micro-batches"  # len(loader) * epochs: stepping per micro-batch is consistent
    OPTIMIZER_STEPS = "optimizer steps"  # divided by K: per micro-batch runs K times too fast
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Length:
    unit: Unit
    evidence: str = ""  # why it counts optimizer steps: the expression that divides by K


class SchedulerStepEveryMicroBatch(Rule):
    """
    ## What it does
    Flags an LR scheduler's `step()` that runs on every micro-batch in a loop that steps the
    optimizer only every K micro-batches, unless the schedule's length visibly counts
    micro-batches.

    ## Why is this bad?
    A schedule sized in optimizer steps (`num_training_steps = len(loader) // K * epochs`, the usual
    way) then advances K times per optimizer step: warm-up ends K times too early and the decay
    reaches its floor after 1/K of training (`OneCycleLR` raises when it runs past its total). The
    run trains most of its steps at the final learning rate and nothing fails.

    Not flagged: a schedule whose length counts micro-batches (`len(loader) * epochs` or
    `data.num_batches * epochs`, not divided by K; a step count multiplied by K,
    `max_train_steps * K`; or the budget at which the micro-batch loop returns,
    `if global_step >= num_steps: return` with `global_step += 1` on every micro-batch, as its
    caller passes it): it spans the whole run, and the learning rate each optimizer step sees is
    on schedule; a scheduler built by a helper out of sight from a whole namespace
    (`create_scheduler(optimizer, args)`) when a length field this file sets on it counts
    micro-batches (`args.max_step = args.max_epoch * data.num_batches`) and none is divided by K,
    also where the scheduler reaches the stepping helper as a parameter (it is the one the caller
    passes);
    `scheduler.step(metric)` (`ReduceLROnPlateau`) and `scheduler.step(epoch)`; constant schedules
    (`get_constant_schedule`, `get_scheduler("constant", ...)`); schedulers stepped
    once per window or per epoch; and Accelerate-prepared schedulers inside
    `accelerator.accumulate()`, which skip mid-window (a scheduler that was never passed to
    `accelerator.prepare()` does not skip, and is flagged unless its length counts micro-batches;
    nor does any scheduler of an Accelerator built with `step_scheduler_with_optimizer=False`, flagged
    likewise; in a helper, the scheduler is the one its caller passes).

    ## Example
    ```python
    total_steps = len(loader) // accum_steps * epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, 100, total_steps)
    for epoch in range(epochs):
        for i, (x, y) in enumerate(loader):
            (criterion(model(x), y) / accum_steps).backward()
            if (i + 1) % accum_steps == 0:
                optimizer.step()
                optimizer.zero_grad()
            scheduler.step()
    ```

    ## Use instead
    ```python
    total_steps = len(loader) // accum_steps * epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, 100, total_steps)
    for epoch in range(epochs):
        for i, (x, y) in enumerate(loader):
            (criterion(model(x), y) / accum_steps).backward()
            if (i + 1) % accum_steps == 0:
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
    ```

    ## Fix
    The `scheduler.step()` moves right below the optimizer step (below a `scaler.update()` that
    follows it), comments with it. Safe when the schedule's length visibly counts optimizer steps;
    unsafe when its length is not visible (if it was counted in micro-batches elsewhere, stepping
    it once per window makes it K times too slow), or when the scheduler is in a helper function.
    No fix for a scheduler never passed to `accelerator.prepare()` (prepare it), or when the call
    shares its line.
    """

    code = "GA007"
    name = "scheduler-step-every-micro-batch"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        assignments: dict[str, list[cst.BaseExpression]] | None = None  # built once, on demand
        for loop in model.loops:
            if loop.loop.implicit and id(loop.loop.node) in model.called_from_loops:
                continue  # its caller's loop here knows which scheduler it is handed
            if loop.kind in (LoopKind.GATED, LoopKind.INNER) and not loop.mixed:
                for event in loop.of_kind(Kind.SCHEDULER_STEP):
                    if loop.when(event) not in _OFF_WINDOW or _positioned(event):
                        continue
                    # A helper's parameter (`_schedule.step()`) is the scheduler its caller passes.
                    scheduler = event.frame.origin(event.spec.receiver) if event.spec.receiver else None
                    if _constant(model.facts.constructor(scheduler)):
                        continue  # a constant learning rate: how often it steps does not matter
                    if assignments is None:
                        assignments = _assignments(model.module)
                    length = schedule_length(model, scheduler, loop, assignments)
                    if length.unit is Unit.MICRO_BATCHES:
                        continue
                    step = _step(loop)
                    fix = None if step is None else move_after(
                        model, loop, event, step, unsafe=length.unit is not Unit.OPTIMIZER_STEPS)
                    yield Finding(self.code, event.node, _message(loop, event, length), fix)
            elif loop.kind is LoopKind.ACCELERATE:
                yield from self._unprepared(model, loop)

    def _unprepared(self, model: ModuleModel, loop: TrainingLoop) -> Iterator[Finding]:
        """Only a prepared scheduler skips mid-window: one built here and never prepared steps on
        every micro-batch (when the Accelerator really accumulates)."""
        accelerator = next((c.receiver for b in loop.of_kind(Kind.BACKWARD) for c in b.contexts
                            if c.method == "accumulate"), None)
        if model.facts.accelerator_divides(accelerator) is not True:
            return
        every_call = _steps_schedulers_every_call(model, accelerator)
        for event in loop.of_kind(Kind.SCHEDULER_STEP):
            # A helper's parameter (`schedule.step()`) is the scheduler its caller passes.
            name = event.frame.origin(event.spec.receiver) if event.spec.receiver else None
            if loop.when(event) not in _OFF_WINDOW or _positioned(event) or name is None:
                continue
            if every_call:
                if schedule_length(model, name, loop).unit is Unit.MICRO_BATCHES:
                    continue
                yield Finding(
                    self.code,
                    event.node,
                    f"{show(event)}{via(event, loop)} runs on every micro-batch inside `accelerator.accumulate()`, "
                    "and the Accelerator was built with `step_scheduler_with_optimizer=False`, so even a prepared "
                    "scheduler advances on each call: `gradient_accumulation_steps` times per optimizer step; step "
                    "it under `if accelerator.sync_gradients:`, unless its length was counted in micro-batches",
                )
                continue
            if model.facts.constructor(name) is None or last_part(name) in model.facts.prepared:
                continue
            if schedule_length(model, name, loop).unit is Unit.MICRO_BATCHES:
                continue  # sized in micro-batches (`max_train_steps * K`): stepping each one is right
            yield Finding(
                self.code,
                event.node,
                f"{show(event)}{via(event, loop)} runs on every micro-batch inside `accelerator.accumulate()`, "
                f"but `{name}` was never passed to `accelerator.prepare()`: only a prepared scheduler "
                "skips mid-window, so this one advances `gradient_accumulation_steps` times per "
                "optimizer step; prepare it",
            )


def _steps_schedulers_every_call(model: ModuleModel, accelerator: str | None) -> bool:
    """`Accelerator(..., step_scheduler_with_optimizer=False)`: its prepared schedulers step on every
    call, not once per optimizer step."""
    if accelerator is None:
        return False
    calls = model.facts.accelerator_calls.get(accelerator) or model.facts.accelerator_calls.get(
        last_part(accelerator), [])
    return bool(calls) and all(dotted(keyword(c, "step_scheduler_with_optimizer")) == "False" for c in calls)


def _step(loop: TrainingLoop) -> Event | None:
    """The one step of the accumulating optimizer, once per window."""
    steps = [s for s in loop.of_kind(Kind.STEP) if loop.when(s) is When.ONCE
             and s.optimizer in loop.accumulating_optimizers and "gate" not in s.spec.extra]
    return steps[0] if len(steps) == 1 else None


def _constant(call: cst.Call | None) -> bool:
    """`get_constant_schedule(opt)`, `get_scheduler("constant", ...)` (no warm-up)."""
    if call is None:
        return False
    name = last_part(dotted(call.func)).lower()
    kind = string(call.args[0].value).lower() if call.args and string(call.args[0].value) else ""
    texts = (name, kind)
    return any("constant" in t and "warmup" not in t for t in texts)


def _positioned(event: Event) -> bool:
    """`scheduler.step(val_loss)` (ReduceLROnPlateau), `scheduler.step(epoch + i / n)`: the caller
    says where the schedule is, so how often it is called does not matter."""
    node = event.node
    return isinstance(node, cst.Call) and bool(node.args)


def _message(loop: TrainingLoop, event: Event, length: Length) -> str:
    where = "every micro-step of the inner loop" if loop.kind is LoopKind.INNER else "every micro-batch"
    head = (f"{show(event)}{via(event, loop)} runs on {where}, but {step_of(loop)} only every {loop.k_phrase} "
            "micro-batches")
    if length.unit is Unit.OPTIMIZER_STEPS:
        return (
            f"{head}: the schedule's length counts optimizer steps ({length.evidence}), so it runs "
            f"{loop.k_phrase} times too fast and ends after 1/{loop.k_phrase} of training; step it "
            "together with the optimizer"
        )
    return (
        f"{head}: the schedule advances {loop.k_phrase} times per optimizer step ({loop.k_phrase} "
        "times too fast, unless its length was counted in micro-batches); step it together with "
        "the optimizer"
    )


def schedule_length(model: ModuleModel, scheduler: str | None, loop: TrainingLoop,
                    assignments: dict[str, list[cst.BaseExpression]] | None = None) -> Length:
    """In which unit the scheduler's constructor counts its length, as far as this module shows."""
    call = model.facts.constructor(scheduler)
    if call is None:
        return Length(Unit.UNKNOWN)
    k_names = {last_part(loop.k_text)} if loop.k is not None and loop.k_literal is None else set()
    found = _Expansion(model, k_names, assignments if assignments is not None else _assignments(model.module))
    for a in call.args:
        if a.keyword is not None and a.keyword.value == "optimizer":
            continue
        if a is call.args[0] and a.keyword is None:
            continue  # the optimizer
        found.expand(a.value, 0)
    if found.divided is not None:
        return Length(Unit.OPTIMIZER_STEPS, f"`{found.divided}`")
    if found.multiplied:
        return Length(Unit.MICRO_BATCHES)
    window = _loop_bound(loop.window.node) if loop.kind is LoopKind.INNER and loop.window else None
    if window is not None and window in found.names:
        return Length(Unit.OPTIMIZER_STEPS, f"`{window}`, the outer loop's length")
    bound = _loop_bound(loop.loop.node)
    if found.counts_batches or (bound is not None and bound in found.names):
        return Length(Unit.MICRO_BATCHES)
    if any(last_part(budget) in found.names for budget in _micro_batch_budgets(loop)):
        return Length(Unit.MICRO_BATCHES)
    return Length(Unit.UNKNOWN)


def _micro_batch_budgets(loop: TrainingLoop) -> list[str]:
    """`num_steps` where the micro-batch loop ends training once a counter it advances by one on
    every pass reaches it (`global_step += 1` ... `if global_step >= num_steps: return`; `break`
    when no loop encloses it), named as the caller that hands it down names it (`max_train_steps`):
    a schedule of that length counts micro-batches."""
    node = loop.loop.node
    if not isinstance(node, cst.For | cst.While):
        return []
    scan = _Budgets(may_break=not any(isinstance(n, cst.For | cst.While) for n in loop.loop.chain))
    traversal.visit(node.body, scan)
    return [loop.loop.frame.origin(bound) for counter, bound in scan.exits if counter in scan.advanced]


class _Budgets(cst.CSTVisitor):
    """In a loop's body, outside any `if` or inner loop (so: on every pass): the counters advanced by
    one (`step += 1`), and each `if <counter> >= <bound>:` (`>`, `==`) that returns (or breaks), as
    (counter, bound) names."""

    def __init__(self, may_break: bool) -> None:
        self.may_break = may_break
        self.depth = 0  # ifs and loops around the node, inside the body
        self.advanced: set[str] = set()
        self.exits: list[tuple[str, str]] = []

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False  # not the loop's code

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return False

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        name = dotted(node.target)
        if self.depth == 0 and name and isinstance(node.operator, cst.AddAssign) and number(node.value) == 1:
            self.advanced.add(name)

    def visit_If(self, node: cst.If) -> None:
        if self.depth == 0:
            self._exit(node)
        self.depth += 1

    def leave_If(self, original_node: cst.If) -> None:
        self.depth -= 1

    def visit_For(self, node: cst.For) -> None:
        self.depth += 1

    def leave_For(self, original_node: cst.For) -> None:
        self.depth -= 1

    def visit_While(self, node: cst.While) -> None:
        self.depth += 1

    def leave_While(self, original_node: cst.While) -> None:
        self.depth -= 1

    def _exit(self, node: cst.If) -> None:
        exit_test = reached(node.test)
        if node.orelse is not None or exit_test is None or exit_test.added is not None:
            return
        counter, bound = dotted(exit_test.counter), dotted(exit_test.bound)
        last = node.body.body[-1] if node.body.body else None  # a line, or in `if c: return` a small statement
        last = last.body[-1] if isinstance(last, cst.SimpleStatementLine) else last
        ends = isinstance(last, cst.Return) or (self.may_break and isinstance(last, cst.Break))
        if counter and bound and ends:
            self.exits.append((counter, bound))


def _loop_bound(node: cst.CSTNode) -> str | None:
    """`max_steps` in `for step in range(max_steps):`."""
    if isinstance(node, cst.For) and isinstance(node.iter, cst.Call) and dotted(node.iter.func) == "range":
        args = positional(node.iter)
        if args:
            return last_part(dotted(args[-1]))
    return None


class _Expansion:
    """The expressions a length is computed from, through assignments anywhere in the module and
    same-module functions (an `lr_lambda`)."""

    def __init__(self, model: ModuleModel, k_names: set[str], assignments: dict[str, list[cst.BaseExpression]]) -> None:
        self.model = model
        self.k_names = k_names
        self.assignments = assignments
        self.names: set[str] = set()
        self.divided: str | None = None
        self.multiplied = False  # `max_train_steps * K`: optimizer steps turned into micro-batches
        self.counts_batches = False
        self._seen: set[str] = set()

    def expand(self, node: cst.CSTNode, depth: int) -> None:
        if depth > _MAX_DEPTH:
            return
        visitor = _Terms(self.k_names)
        traversal.visit(node, visitor)
        if visitor.divided is not None and self.divided is None:
            self.divided = visitor.divided
        self.multiplied = self.multiplied or visitor.multiplied
        self.counts_batches = self.counts_batches or visitor.counts_batches
        for name in visitor.names:
            self.names.add(last_part(name))
            self.counts_batches = self.counts_batches or bool(_BATCH_COUNT.fullmatch(last_part(name)))
            if name in self._seen:
                continue
            self._seen.add(name)
            for value in self.assignments.get(name, []) + self.assignments.get(last_part(name), []):
                self.expand(value, depth + 1)
            if "." not in name and depth < _MAX_DEPTH:
                self._namespace(name, depth)
            function = self.model.facts.functions.get(name)
            if function is not None:
                self.expand(function.body, depth + 1)

    def _namespace(self, name: str, depth: int) -> None:
        """A namespace handed whole to a builder (`create_scheduler(optimizer, args)`, from another
        module): the length it carries is what this module sets on it (`args.max_step =
        args.max_epoch * train_data.num_batches`). Which field the builder reads is out of sight,
        so such fields may only clear the scheduler (one counts micro-batches, none is divided by
        K), never make the finding certain."""
        fields = _Expansion(self.model, self.k_names, self.assignments)
        fields._seen = set(self._seen)  # its own: what it expands must not hide names from this one
        for key, values in self.assignments.items():
            if key.startswith(name + ".") and _LENGTH_FIELD.fullmatch(key[len(name) + 1:]):
                for value in values:
                    fields.expand(value, depth + 1)
        if fields.divided is None and (fields.multiplied or fields.counts_batches):
            self.counts_batches = True


# A field of a namespace that sizes a schedule: `args.max_step`, `cfg.total_steps`, `args.t_total`.
_LENGTH_FIELD = re.compile(r"(?i)t_total|(max|total|num|n|train)_?(train_|training_|optim_|optimizer_)?"
                           r"(steps?|iters?|iterations|updates?)")
# A count of the loader's batches under its own name (`train_data.num_batches`), as `len(loader)`
# is: micro-batches, not updates.
_BATCH_COUNT = re.compile(r"(?i)(num|n)_?(train_)?batch(es)?|(num_)?batches_per_epoch|num_micro_?batches")


class _Terms(cst.CSTVisitor):
    def __init__(self, k_names: set[str]) -> None:
        self.k_names = k_names
        self.names: list[str] = []
        self.divided: str | None = None
        self.multiplied = False
        self.counts_batches = False

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> bool:
        if isinstance(node.operator, cst.Divide | cst.FloorDivide) and self.divided is None:
            divisor = code(node.right)
            words = {last_part(n) for n in _dotted_names(node.right)}
            if words & self.k_names or _K_WORDS.search(divisor):
                self.divided = code(node)
        if isinstance(node.operator, cst.Multiply) and (self._is_k(node.left) or self._is_k(node.right)):
            # whatever the other factor counts (optimizer steps, usually), the product counts
            # micro-batches: a division by K inside it is undone, so do not look further
            self.multiplied = True
            return False
        return True

    def _is_k(self, node: cst.BaseExpression) -> bool:
        """K itself (`args.gradient_accumulation_steps`), not an expression that mentions it."""
        name = dotted(node)
        return name is not None and (last_part(name) in self.k_names or bool(_K_WORDS.search(last_part(name))))

    def visit_Call(self, node: cst.Call) -> None:
        if dotted(node.func) == "len" or method_name(node) == "__len__":
            self.counts_batches = True

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        text = dotted(node)
        if text is not None:
            self.names.append(text)
            return False
        return True

    def visit_Name(self, node: cst.Name) -> None:
        self.names.append(node.value)


def _dotted_names(node: cst.CSTNode) -> list[str]:
    terms = _Terms(set())
    traversal.visit(node, terms)
    return terms.names


def _assignments(module: cst.Module) -> dict[str, list[cst.BaseExpression]]:
    collector = _Assignments()
    traversal.visit(module, collector)
    return collector.values


class _Assignments(cst.CSTVisitor):
    def __init__(self) -> None:
        self.values: dict[str, list[cst.BaseExpression]] = {}

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            name = dotted(target.target)
            if name is not None:
                self.values.setdefault(name, []).append(node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        name = dotted(node.target)
        if name is not None and node.value is not None:
            self.values.setdefault(name, []).append(node.value)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        name = dotted(node.target)
        if name is not None:
            self.values.setdefault(name, []).append(node.value)
