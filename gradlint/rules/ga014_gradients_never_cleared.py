from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from gradlint.fixes.after_step import insert_after
from gradlint.model import Event, Framework, Kind, LoopKind, ModuleModel, Role, TrainingLoop, traversal
from gradlint.model.events import classify_call
from gradlint.model.facts import GRAD_CLEARING
from gradlint.model.syntax import dotted, keyword, last_part, positional
from gradlint.rules.base import Finding, Rule, show, via

_CLEARING = GRAD_CLEARING
# In-place calls on `.grad` that can clear it (`p.grad.zero_()`, `p.grad.detach_()`).
_GRAD_MUTATORS = {"zero_", "detach_", "fill_", "set_", "copy_", "requires_grad_", "resize_"}


class GradientsNeverCleared(Rule):
    """
    ## What it does
    Flags an optimizer that is stepped in a training loop when nothing in the file ever clears the
    gradients: no `zero_grad()` on it or on a model, no `p.grad = None`, no helper whose name
    says it clears.

    ## Why is this bad?
    `backward()` adds to `.grad`; only `zero_grad()` (or setting `.grad` to `None`) resets it. Without
    one, the gradient each step applies is the sum of every gradient since the start of training:
    the updates grow without bound, the loss diverges or oscillates, and it looks like a
    learning-rate problem.

    Silent unless the whole loop is visible: the optimizer must be built in this file (not by a
    factory or a framework), every call in the loop that could clear gradients out of sight (one
    that is given the optimizer or `self`, an inherited method) keeps the rule silent, and so does
    an optimizer or model rebuilt inside the loop. DeepSpeed engines clear gradients themselves;
    Lightning's automatic optimisation and Hugging Face's `Trainer` leave no loop to check.
    Accelerate does not clear them for you.

    ## Example
    ```python
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for x, y in loader:
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
    ```

    ## Use instead
    ```python
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for x, y in loader:
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    ```

    ## Fix
    Safe: `optimizer.zero_grad()` (the stepped optimizer, as the step names it) is added right below
    the step (below a `scaler.update()` or `scheduler.step()` that follows it); unsafe when the step
    is in a helper function. No fix when the optimizer's name does not mean the same there.
    """

    code = "GA014"
    name = "gradients-never-cleared"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        if model.facts.uses_deepspeed:
            return
        clears: _Clears | None = None
        imports: set[str] | None = None
        for loop in model.loops:
            if loop.kind in (LoopKind.ENGINE, LoopKind.UNKNOWN):
                continue
            for step in loop.of_kind(Kind.STEP):
                body = _step_loop(loop, step)
                optimizer = step.spec.optimizer or step.spec.receiver
                if body is None or optimizer is None or not _plain(step):
                    continue
                built = model.facts.constructor(optimizer)
                if built is None or model.facts.role(optimizer) is not Role.OPTIMIZER:
                    continue  # built elsewhere: a wrapper may clear in its own step()
                if imports is None:
                    imports = _library_aliases(model.module)
                if not _library_optimizer(built, imports) or _wrapper_backward(model, loop):
                    continue  # a project's optimizer class (fairseq, apex-style): its step may clear
                if clears is None:
                    clears = _Clears(model)
                if clears.covers(optimizer) or _rebuilt_in(body, optimizer, built):
                    continue
                if _hidden_calls(model, body, optimizer):
                    continue
                holder = _optimizer_expression(step)
                fix = None if holder is None else insert_after(
                    model, loop, step, f"{optimizer}.zero_grad()", holder)
                yield Finding(
                    self.code,
                    step.node,
                    f"{show(step)}{via(step, loop)} runs in a loop, but nothing in this file clears the "
                    f"gradients it applies (no `{optimizer}.zero_grad()`, `model.zero_grad()` or "
                    "`p.grad = None`): every backward adds to `.grad`, so each step applies the sum of "
                    f"all gradients so far; call `{optimizer}.zero_grad()` after the step",
                    fix,
                )


# Packages whose optimizers are plain `torch.optim.Optimizer`s: their step() never clears.
_OPTIMIZER_LIBRARIES = {"torch", "transformers", "bitsandbytes", "apex", "timm", "torch_optimizer",
                        "lion_pytorch", "came_pytorch", "pytorch_optimizer", "schedulefree"}


def _library_aliases(module: cst.Module) -> set[str]:
    """Names imported at the top of the module from optimizer libraries: `torch`, `optim` (`from torch
    import optim`), `AdamW` (`from transformers import AdamW`)."""
    found: set[str] = set()
    for statement in module.body:
        for small in statement.body if isinstance(statement, cst.SimpleStatementLine) else ():
            if isinstance(small, cst.Import):
                for alias in small.names:
                    top = (dotted(alias.name) or "").split(".")[0]
                    if top in _OPTIMIZER_LIBRARIES:
                        found.add((dotted(alias.asname.name) if alias.asname else None) or top)
            elif isinstance(small, cst.ImportFrom) and not small.relative and small.module is not None:
                library = (dotted(small.module) or "").split(".")[0] in _OPTIMIZER_LIBRARIES
                names = small.names if library and not isinstance(small.names, cst.ImportStar) else ()
                for alias in names:
                    found.add(dotted(alias.asname.name if alias.asname else alias.name) or "")
    return found


def _library_optimizer(built: cst.Call, imports: set[str]) -> bool:
    """`torch.optim.AdamW(...)`, `optim.SGD(...)` with `optim` from torch, `AdamW(...)` imported from
    transformers: not a project's own optimizer class."""
    root = (dotted(built.func) or "").split(".")[0]
    return root in imports or root == "torch"


def _wrapper_backward(model: ModuleModel, loop: TrainingLoop) -> bool:
    """`optimizer.backward(loss)`: an optimizer wrapper (fairseq, apex FP16_Optimizer) runs the loop."""
    return any(model.facts.role(b.spec.receiver) is Role.OPTIMIZER for b in loop.of_kind(Kind.BACKWARD))


def _optimizer_expression(step: Event) -> cst.BaseExpression | None:
    """`optimizer` in `optimizer.step()` or `scaler.step(optimizer)`: what the added clear names."""
    node = step.node
    if not isinstance(node, cst.Call) or not isinstance(node.func, cst.Attribute):
        return None
    if step.spec.framework is Framework.SCALER:
        args = positional(node)
        return args[0] if args else None
    return node.func.value


def _plain(step: Event) -> bool:
    if step.spec.framework is Framework.DEEPSPEED:
        return False
    node = step.node
    if step.spec.framework is Framework.TORCH and isinstance(node, cst.Call) and "gate" not in step.spec.extra:
        return not positional(node) and keyword(node, "closure") is None  # a closure clears for itself
    return True


def _step_loop(loop: TrainingLoop, step: Event) -> cst.CSTNode | None:
    """The real (for/while) loop that runs both the backward and this step, or None."""
    if loop.kind is LoopKind.INNER:
        window = loop.window
        if window is None or window.implicit or window.node not in step.loops:
            return None
        return window.node
    if loop.loop.implicit or not loop.in_loop(step):
        return None
    return loop.loop.node


class _Clears:
    """Every place in the module that clears gradients, or may."""

    def __init__(self, model: ModuleModel) -> None:
        scan = _ClearScan(model)
        for statement in model.module.body:
            traversal.visit(statement, scan)
            if scan.anywhere:
                break  # `covers` is then true for every optimizer: the rest cannot change it
        scan.finish()
        self.anywhere = scan.anywhere
        self.receivers = scan.receivers
        self.stepped = {
            last_part(s.spec.optimizer or s.spec.receiver)
            for loop in model.loops for s in loop.of_kind(Kind.STEP)
        }

    def covers(self, optimizer: str) -> bool:
        if self.anywhere:
            return True
        for receiver in self.receivers:
            # Another optimizer that is itself stepped here clears only its own parameters;
            # any other receiver (`opt` in `for opt in optimizers:`) may be this one.
            if last_part(receiver) == last_part(optimizer) or last_part(receiver) not in self.stepped:
                return True
        return False


class _ClearScan(cst.CSTVisitor):
    def __init__(self, model: ModuleModel) -> None:
        self.facts = model.facts
        self.anywhere = False  # a clear not tied to a known optimizer (a model, `p.grad`, a helper)
        self.receivers: list[str] = []
        self._references = 0  # `x.zero_grad` mentioned: more mentions than calls means a callback
        self._calls = 0

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if isinstance(func, cst.Attribute):
            name = func.attr.value
            if name == "zero_grad":
                self._calls += 1
                owner = dotted(func.value)
                if owner is not None and self.facts.role(owner) is Role.OPTIMIZER:
                    self.receivers.append(owner)
                else:
                    self.anywhere = True  # `model.zero_grad()`
            elif name in _GRAD_MUTATORS and _is_grad(func.value):
                self.anywhere = True
        for a in node.args:
            if a.keyword is not None and _CLEARING.fullmatch(a.keyword.value):
                self.anywhere = True  # `first_step(zero_grad=True)`

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        name = node.attr.value
        if name == "zero_grad":
            self._references += 1
        elif _CLEARING.fullmatch(name):
            self.anywhere = True  # `model.clear_grads()`, `torch._foreach_zero_(...)`
        traversal.visit(node.value, self)
        return False  # `attr` is a Name too: not a free-standing helper name

    def visit_Name(self, node: cst.Name) -> None:
        if _CLEARING.fullmatch(node.value):
            self.anywhere = True  # a helper `zero_grads(model)`

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        if _is_grad(node.target):
            self.anywhere = True  # `p.grad = None`, `p.grad = torch.zeros_like(p)`

    def visit_Del(self, node: cst.Del) -> None:
        targets = node.target.elements if isinstance(node.target, cst.Tuple) else [node.target]
        if any(_is_grad(t.value if isinstance(t, cst.Element) else t) for t in targets):
            self.anywhere = True

    def finish(self) -> None:
        if self._references > self._calls:
            self.anywhere = True  # `hooks.append(optimizer.zero_grad)`


def _is_grad(node: cst.CSTNode) -> bool:
    text = dotted(node) or ""
    return text.endswith(".grad") or text.endswith(".grad.data")


def _rebuilt_in(body: cst.CSTNode, optimizer: str, built: cst.Call) -> bool:
    """The optimizer, or what it optimizes (`model` in `model.parameters()`), is assigned inside the
    loop: each iteration has fresh parameters and fresh gradients."""
    watched = {last_part(optimizer)}
    for a in built.args:
        text = dotted(a.value.func) if isinstance(a.value, cst.Call) else dotted(a.value)
        if text:  # `model` for `model.parameters()`, `self.model` for `self.model.parameters()`
            parts = text.split(".")
            watched.add(parts[1] if parts[0] == "self" and len(parts) > 1 else parts[0])
    assigned = _AssignedNames()
    traversal.visit(body, assigned)
    return bool(watched & {last_part(n) for n in assigned.names})


class _AssignedNames(cst.CSTVisitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        targets = node.target.elements if isinstance(node.target, cst.Tuple | cst.List) else [node.target]
        for target in targets:
            value = target.value if isinstance(target, cst.Element) else target
            text = dotted(value)
            if text:
                self.names.add(text)


def _hidden_calls(model: ModuleModel, body: cst.CSTNode, optimizer: str) -> bool:
    """A call in the loop (or in the same-module helpers it calls) that could clear gradients out of
    sight: an unknown function given the optimizer or `self`, or a `self.method()` defined elsewhere."""
    seen: set[int] = set()
    pending: list[cst.CSTNode] = [body]
    attributes = _self_attributes(model.module)
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        calls = _CallCollector()
        traversal.visit(node, calls)
        for call in calls.calls:
            func = call.func
            helpers: list[cst.FunctionDef] = []
            if isinstance(func, cst.Name) and func.value in model.facts.functions:
                helpers = [model.facts.functions[func.value]]
            elif isinstance(func, cst.Attribute):
                helpers = [m for _, m in model.facts.methods.get(func.attr.value, [])]
            if helpers:
                pending.extend(helpers)
                continue
            if classify_call(call, model.facts):
                continue  # a gradient event we know (`scaler.step(optimizer)`, a clip): it does not clear
            owner = dotted(func.value) if isinstance(func, cst.Attribute) else None
            if owner == "self" and dotted(func) not in attributes:
                return True  # an inherited method: it may clear
            for a in call.args:
                passed = dotted(a.value)
                if passed == "self" or (passed and last_part(passed) == last_part(optimizer)):
                    return True
    return False


class _CallCollector(cst.CSTVisitor):
    def __init__(self) -> None:
        self.calls: list[cst.Call] = []

    def visit_Call(self, node: cst.Call) -> None:
        self.calls.append(node)


def _self_attributes(module: cst.Module) -> set[str]:
    """`self.x` names assigned anywhere: calling one (`self.model(x)`) calls an object, not an
    inherited method."""
    assigned = _AssignedNames()
    traversal.visit(module, assigned)
    return {n for n in assigned.names if n.startswith("self.")}
