from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from gradlint.model import Framework, LoopKind, ModuleModel, TrainingLoop, traversal
from gradlint.model.facts import SYNC_CONTROL, ModuleFacts
from gradlint.model.syntax import code, dotted, last_part
from gradlint.rules.base import Finding, Rule, show, step_of, via


class MissingNoSync(Rule):
    """
    ## What it does
    Flags a DDP or FSDP model whose gradients are synchronised on every micro-batch of an
    accumulating loop (a performance rule: severity warning).

    That is: no `no_sync()`, `require_backward_grad_sync` or `set_requires_gradient_sync` on the
    micro-batches where no step runs, or a DDP sync switch set after the forward pass, where it
    has no effect. The result is correct, only slower.

    ## Why is this bad?
    DDP all-reduces (FSDP reduce-scatters) gradients in every backward. When the optimizer steps
    once every K micro-batches, the K - 1 intermediate reductions are wasted: K times the
    gradient communication per update, often the bottleneck of multi-node training. DDP reads
    `require_backward_grad_sync` (which `no_sync()` sets) in its *forward*, so switching it off
    after the forward, or wrapping only `backward()` in `no_sync()`, still all-reduces.

    Not flagged: Accelerate's `accumulate()`, DeepSpeed engines and Lightning (they skip the sync
    themselves), a model not visibly wrapped in `DDP(...)`/`FSDP(...)`/`fully_shard(...)` in the
    file (a helper of the file that wraps and returns it counts as wrapping: `self.model =
    self.parallel_model(model)`), and a file that controls sync anywhere (a `maybe_no_sync()` helper counts).

    ## Example
    ```python
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(model, device_ids=[rank])
    for i, (x, y) in enumerate(loader):
        loss = criterion(model(x), y) / accum_steps
        loss.backward()
        if (i + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(model, device_ids=[rank])
    for i, (x, y) in enumerate(loader):
        sync = (i + 1) % accum_steps == 0
        with contextlib.nullcontext() if sync else model.no_sync():
            loss = criterion(model(x), y) / accum_steps
            loss.backward()
        if sync:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Fix
    None: where the window's last micro-batch is known, and whether the forward can move inside
    `no_sync()`, is the script's structure, not one edit.
    """

    code = "GA012"
    name = "missing-no-sync"
    severity = "warning"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        wrapped = model.facts.wrapped_models
        if not wrapped:
            return
        controls_sync: bool | None = None
        for loop in model.loops:
            if loop.kind not in (LoopKind.GATED, LoopKind.INNER) or loop.mixed:
                continue
            backwards = [b for b in loop.accumulating_backwards() if b.spec.framework is Framework.TORCH]
            if not backwards:
                continue
            yield from _late_switches(loop, wrapped)
            if controls_sync is None:
                controls_sync = _mentions_sync_control(model.module)
            if controls_sync:
                continue
            name = _trained_model(loop, backwards, wrapped, model.facts)
            if name is None:
                continue
            event = backwards[0]
            reduce = "all-reduces" if wrapped[name] == "ddp" else "reduce-scatters"
            fix = ("`model.no_sync()`" if wrapped[name] == "ddp"
                   else "`model.no_sync()` (FSDP2: `model.set_requires_gradient_sync(False)`)")
            yield Finding(
                self.code,
                event.node,
                f"(performance) {show(event)}{via(event, loop)} {reduce} the gradients of the {wrapped[name].upper()}-"
                f"wrapped `{name}` on every micro-batch, but {step_of(loop)} runs only every {loop.k_phrase}: "
                f"{loop.k_phrase} times the gradient communication per update; run the micro-batches where no "
                f"step runs (forward and backward) under {fix}",
            )


def _mentions_sync_control(module: cst.Module) -> bool:
    """A name or attribute (not a comment or docstring) that controls gradient sync."""
    found = False

    class _Visitor(cst.CSTVisitor):
        def visit_Name(self, node: cst.Name) -> None:
            nonlocal found
            found = found or bool(SYNC_CONTROL.fullmatch(node.value))

    traversal.visit(module, _Visitor())
    return found


def _calls_of(node: cst.CSTNode, names: dict[str, str]) -> list[tuple[cst.Call, str]]:
    found: list[tuple[cst.Call, str]] = []

    class _Visitor(cst.CSTVisitor):
        def visit_Call(self, call: cst.Call) -> None:
            name = dotted(call.func)
            if name in names:
                found.append((call, name))

    traversal.visit(node, _Visitor())
    return found


def _trained_model(loop: TrainingLoop, backwards: list, wrapped: dict[str, str], facts: ModuleFacts) -> str | None:
    """The wrapped model whose forward runs in this loop, in a helper its backward sits in, or in a
    helper of the module the loop calls (`loss = self._compute_loss(batch)`, verl's SFT trainer)."""
    nodes: list[cst.CSTNode] = [loop.loop.node]
    nodes += [b.frame.scope.node for b in backwards if b.frame.scope.node is not loop.loop.frame.scope.node]
    for node in nodes:
        for _, name in _calls_of(node, wrapped):
            return name
    for helper in _helpers_called(loop.loop.node, facts):
        for _, name in _calls_of(helper, wrapped):
            return name
    return None


def _helpers_called(node: cst.CSTNode, facts: ModuleFacts) -> list[cst.FunctionDef]:
    """The module's functions and methods (by name, one level) that calls under `node` name."""
    found: list[cst.FunctionDef] = []

    class _Visitor(cst.CSTVisitor):
        def visit_Call(self, call: cst.Call) -> None:
            func = call.func
            if isinstance(func, cst.Name) and func.value in facts.functions:
                found.append(facts.functions[func.value])
            elif isinstance(func, cst.Attribute) and dotted(func.value) in ("self", "cls"):
                found.extend(m for _, m in facts.methods.get(func.attr.value, []))

    traversal.visit(node, _Visitor())
    return found


def _late_switches(loop: TrainingLoop, wrapped: dict[str, str]) -> Iterator[Finding]:
    """`model.require_backward_grad_sync = ...` or `with model.no_sync():` after `model(...)` ran:
    DDP decided in the forward whether this backward all-reduces."""
    ddp = {n: kind for n, kind in wrapped.items() if kind == "ddp"}
    if not ddp:
        return
    order = _Order(ddp)
    traversal.visit(loop.loop.node, order)
    for node, name, index in order.switches:
        first_forward = order.forwards.get(name)
        if first_forward is None or first_forward > index:
            continue
        if isinstance(node, cst.With) and any(n == name for _, n in _calls_of(node.body, ddp)):
            continue  # the forward runs again inside the no_sync block
        where = node.items[0].item if isinstance(node, cst.With) else node
        yield Finding(
            MissingNoSync.code,
            where,
            f"(performance) `{code(where)}` switches off the gradient sync of the DDP-wrapped `{name}` after "
            f"its forward (`{name}(...)`) ran: DDP reads the switch in the forward, so this backward still "
            "all-reduces; set it before the forward, or run forward and backward inside `no_sync()`",
        )


class _Order(cst.CSTVisitor):
    def __init__(self, names: dict[str, str]) -> None:
        self.names = names
        self.index = 0
        self.forwards: dict[str, int] = {}
        self.switches: list[tuple[cst.CSTNode, str, int]] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        self.index += 1
        if isinstance(node, cst.Call):
            name = dotted(node.func)
            if name in self.names:
                self.forwards.setdefault(name, self.index)
        elif isinstance(node, cst.Assign):
            for target in node.targets:
                text = dotted(target.target) or ""
                owner = text.rsplit(".", 1)[0]
                if last_part(text) == "require_backward_grad_sync" and owner in self.names:
                    self.switches.append((node, owner, self.index))
        elif isinstance(node, cst.With):
            for item in node.items:
                call = item.item
                if isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute) \
                        and call.func.attr.value == "no_sync" and dotted(call.func.value) in self.names:
                    self.switches.append((node, dotted(call.func.value) or "", self.index))
        return not isinstance(node, cst.FunctionDef | cst.ClassDef | cst.Lambda)
