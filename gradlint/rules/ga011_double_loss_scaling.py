from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from gradlint.fixes import ga011
from gradlint.model import Framework, Kind, LoopKind, ModuleModel, Scaling, TrainingLoop, traversal
from gradlint.model.provenance import trace
from gradlint.model.quantities import is_k_name, looks_like_k, same_quantity
from gradlint.model.syntax import called_name, code, dotted, keyword, last_part, number, string
from gradlint.model.walker import Event, Frame
from gradlint.rules.base import Finding, Rule, show, via


class DoubleLossScaling(Rule):
    """
    ## What it does
    Flags a loss divided by K before a backward that already divides by K, and
    `accelerator.accumulate()` with an Accelerator built without `gradient_accumulation_steps`.

    The backwards that divide: `accelerator.backward()` when the Accelerator was built with
    `gradient_accumulation_steps`, a DeepSpeed engine's `backward()`, and Lightning's automatic
    optimisation with `accumulate_grad_batches` (a `training_step` returning `loss / K`).

    ## Why is this bad?
    These frameworks divide the loss by K themselves. Dividing it again makes every update K times
    too small: the effective learning rate is lr / K, and changing K changes training. With
    `Accelerator()` built without `gradient_accumulation_steps`, `accumulate()` syncs and steps on
    every micro-batch: the effective batch is one micro-batch, whatever the script intends.

    Not flagged: a division by a token or sample count, a DeepSpeed `backward(loss,
    scale_wrt_gas=False)`, an engine whose `step()` is gated by hand, an `Accelerator(**kwargs)` or
    one given a plugin, or a script that sets `gradient_accumulation_steps` on it later (the
    `ACCELERATE_GRADIENT_ACCUMULATION_STEPS` environment variable can also set it: silence the
    finding with `# noqa: GA011` if you rely on that).

    ## Example
    ```python
    accelerator = Accelerator(gradient_accumulation_steps=accum_steps)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    for x, y in loader:
        with accelerator.accumulate(model):
            loss = criterion(model(x), y) / accum_steps
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    accelerator = Accelerator(gradient_accumulation_steps=accum_steps)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    for x, y in loader:
        with accelerator.accumulate(model):
            loss = criterion(model(x), y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Fix
    Safe: the hand-written division goes (`loss / K` becomes `loss`, a `loss /= K` line is
    removed, with the `if K > 1:` it stood alone under), where the backpropagated loss is divided.
    Unsafe when that division is in a helper
    function (its other callers may need it). No fix for `accumulate()` without
    `gradient_accumulation_steps`: where K comes from is the script's choice.
    """

    code = "GA011"
    name = "double-loss-scaling"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        reported: set[int] = set()
        for loop in model.loops:
            for event in loop.of_kind(Kind.BACKWARD):
                if id(event.node) in reported or not loop.in_loop(event):
                    continue
                found = self._divided_twice(model, loop, event)
                if found:
                    message, divisor = found
                    reported.add(id(event.node))
                    yield Finding(self.code, event.node, message, _fix(model, event, divisor))
            if loop.kind is LoopKind.ACCELERATE:
                yield from self._accumulate_without_steps(model, loop, reported)
        yield from self._lightning(model)

    def _divided_twice(self, model: ModuleModel, loop: TrainingLoop,
                       event: Event) -> tuple[str, cst.BaseExpression] | None:
        framework = event.spec.framework
        receiver = event.spec.receiver
        if framework is Framework.ACCELERATE:
            call = _accelerator_call(model, loop, event.frame.scope, receiver)
            k = keyword(call, "gradient_accumulation_steps") if call is not None else None
            if k is None:
                return None
            divisor = self._divisor(model, event, k)
            if divisor is None:
                return None
            return (f"{show(event)}{via(event, loop)} backpropagates a loss divided by `{code(divisor)}`, but "
                    f"`{receiver}` was built with `gradient_accumulation_steps={code(k)}` and divides by it "
                    "again in `backward()`: every update is K times too small; drop the division"), divisor
        if framework is Framework.DEEPSPEED and loop.kind is LoopKind.ENGINE:
            if isinstance(event.node, cst.Call) and keyword(event.node, "scale_wrt_gas") is not None:
                return None
            steps = [s for s in loop.of_kind(Kind.STEP) if s.spec.framework is Framework.DEEPSPEED]
            if not steps or not loop.on_every_path(steps):
                return None  # the step is gated by hand: the engine may be configured with K = 1
            divisor = self._divisor(model, event, None)
            if divisor is None:
                return None
            return (f"{show(event)}{via(event, loop)} backpropagates a loss divided by `{code(divisor)}`, but the "
                    "DeepSpeed engine already divides by its `gradient_accumulation_steps` in `backward()`: "
                    "every update is K times too small; drop the division"), divisor
        return None

    @staticmethod
    def _divisor(model: ModuleModel, event: Event, k: cst.BaseExpression | None) -> cst.BaseExpression | None:
        order = event.frame.scope.call_order.get(id(event.node))
        literal = number(k) if k is not None else None  # `/ 4` with gradient_accumulation_steps=4
        found = trace(event.spec.value, event.frame, order, model.facts, model.scopes, literal, k)
        divisor = found.divisor
        if found.scaling is not Scaling.DIVIDED or divisor is None:
            return None
        if same_quantity(divisor, k) or looks_like_k(divisor):
            return divisor
        return None

    def _accumulate_without_steps(self, model: ModuleModel, loop: TrainingLoop,
                                  reported: set[int]) -> Iterator[Finding]:
        for event in loop.of_kind(Kind.BACKWARD):
            for context in event.contexts:
                if context.method != "accumulate" or id(context.expr) in reported:
                    continue
                call = _accelerator_call(model, loop, event.frame.scope, context.receiver)
                if call is None or not _clearly_without_accumulation(model, call, context.receiver or ""):
                    continue
                reported.add(id(context.expr))
                yield Finding(
                    self.code,
                    context.expr,
                    f"`{code(context.expr)}` accumulates nothing: `{context.receiver}` was built with "
                    "`Accelerator(...)` without "
                    "`gradient_accumulation_steps`, so every micro-batch syncs and steps; pass "
                    "`gradient_accumulation_steps=K` to `Accelerator(...)`",
                )

    def _lightning(self, model: ModuleModel) -> Iterator[Finding]:
        """`training_step` returning `loss / K` under automatic optimisation with accumulate_grad_batches."""
        trainer_k = [keyword(c, "accumulate_grad_batches") for c in model.facts.trainer_calls]
        trainer_k = [k for k in trainer_k if k is not None]
        for cls, method in model.facts.methods.get("training_step", []):
            if _manual_optimisation(cls):
                continue
            scope = model.scopes.get(method)
            frame = Frame(scope, cls)
            for value in scope.returns:
                loss: cst.BaseExpression | None = value
                if isinstance(value, cst.Dict):
                    loss = next((e.value for e in value.elements if isinstance(e, cst.DictElement)
                                 and string(e.key) == "loss"), None)
                if loss is None:
                    continue
                found = trace(loss, frame, None, model.facts, model.scopes, None)
                divisor = found.divisor
                if found.scaling is not Scaling.DIVIDED or divisor is None:
                    continue
                explicit = last_part(dotted(divisor)) == "accumulate_grad_batches"
                if not explicit and not any(same_quantity(divisor, k) for k in trainer_k):
                    continue
                yield Finding(
                    self.code,
                    value,
                    f"`training_step` returns a loss divided by `{code(divisor)}`, but Lightning's automatic "
                    "optimisation already divides it by `accumulate_grad_batches`: every update is K times "
                    "too small; return the undivided loss",
                    ga011.fix(model, method, divisor, False),
                )


def _fix(model: ModuleModel, event: Event, divisor: cst.BaseExpression):
    """Where the loss was divided: in the backward's own function (safe), else anywhere (a helper)."""
    local = ga011.fix(model, event.frame.scope.node, divisor, bool(event.frame.via))
    return local if local is not None else ga011.fix(model, model.module, divisor, True)


def _manual_optimisation(cls: cst.ClassDef) -> bool:
    """True unless `cls` is a LightningModule under automatic optimisation: it sets
    `self.automatic_optimization = False` or calls `self.manual_backward(...)` somewhere."""
    if not any(last_part(dotted(b.value)) == "LightningModule" for b in cls.bases):
        return True
    found = _ManualOptimisation()
    traversal.visit(cls, found)
    return found.manual


class _ManualOptimisation(cst.CSTVisitor):
    def __init__(self) -> None:
        self.manual = False

    def visit_Call(self, node: cst.Call) -> None:
        self.manual = self.manual or called_name(node) == "manual_backward"

    def visit_Assign(self, node: cst.Assign) -> None:
        if (isinstance(node.value, cst.Name) and node.value.value == "False"
                and any(last_part(dotted(t.target)) == "automatic_optimization" for t in node.targets)):
            self.manual = True


def _accelerator_call(model: ModuleModel, loop: TrainingLoop, scope, name: str | None) -> cst.Call | None:
    """The `Accelerator(...)` that built `name`: the one assigned in the loop's (or the event's) own
    function, else the module's only one. Several functions often each build their own."""
    for candidate in (scope, loop.loop.frame.scope):
        local = [a.value for a in candidate.assignments.get(name or "", [])
                 if isinstance(a.value, cst.Call) and last_part(dotted(a.value.func)) == "Accelerator"]
        if local:
            return local[-1]
    calls = model.facts.accelerator_calls
    found = calls.get(name or "") or (next(iter(calls.values())) if len(calls) == 1 else [])
    return found[0] if len(found) == 1 else None


def _clearly_without_accumulation(model: ModuleModel, call: cst.Call, name: str) -> bool:
    if any(a.star for a in call.args):
        return False  # `Accelerator(**kwargs)`: may carry it
    if any(keyword(call, k) is not None for k in ("gradient_accumulation_steps", "gradient_accumulation_plugin",
                                                   "deepspeed_plugin", "deepspeed_plugins")):
        return False
    scan = _AccumulationNames()
    traversal.visit(model.module, scan)
    # Set later (`accelerator.gradient_accumulation_steps = ...`, in any function), or never meant
    # to accumulate (no K anywhere: `accumulate()` kept from a template is a harmless no-op).
    if scan.assigned or not scan.intent:
        return False
    return "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in model.text


class _AccumulationNames(cst.CSTVisitor):
    def __init__(self) -> None:
        self.assigned = False  # `x.gradient_accumulation_steps = ...`
        self.intent = False  # a name for K (`gradient_accumulation_steps`, `accum_iter`) in the code

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        if last_part(dotted(node.target)) == "gradient_accumulation_steps" and "." in (dotted(node.target) or ""):
            self.assigned = True

    def visit_Name(self, node: cst.Name) -> None:
        if not self.intent and node.value != "accumulate" and is_k_name(node.value):
            self.intent = True

    def visit_SimpleString(self, node: cst.SimpleString) -> None:
        # `parser.add_argument("--gradient_accumulation_steps", ...)`
        text = node.value.strip("\"'-")
        if not self.intent and " " not in text and is_k_name(text):
            self.intent = True
