from __future__ import annotations

from collections.abc import Iterator, Sequence

import libcst as cst

from gradlint.model import Event, Kind, ModuleModel, TrainingLoop, traversal
from gradlint.model.loops import bound_names, names_assigned
from gradlint.model.quantities import looks_like_k, same_quantity
from gradlint.model.syntax import code, dotted, method_name, positional, receiver
from gradlint.rules.base import Finding, Rule, show


class BackwardAfterMicroBatchLoop(Rule):
    """
    ## What it does
    Flags a backward that runs once, right after a loop of K forward passes that reassigns the loss
    on every pass and runs no backward itself: only the last pass's loss is backpropagated.

    ## Why is this bad?
    The loop was meant to accumulate: K micro-batches, each with its forward and backward, then one
    step. With the backward indented one level too little, each pass overwrites the loss and frees
    the graph of the one before, so the step sees the gradient of the last micro-batch alone
    (divided by K, when the loss is: 1/K of one batch's gradient). K - 1 forward passes per step are
    computed for nothing, the effective batch is one micro-batch, and nothing crashes.

    The loop must iterate `range(B)` with B a name for K (`gradient_accumulate_every`,
    `accum_steps`) or the number the backward's loss is divided by, or a list of micro-batches
    (`for mb in micro_batches:`). Not flagged: a loss accumulated over the passes (`loss += ...`,
    `loss = loss + ...`, `losses.append(...)`), a loss that reads state carried from pass to pass
    (`h, loss = cell(x, h)`: backpropagation through the whole unrolled loop), a loop that runs a
    backward of its own, and a loss reassigned between the loop and the backward.

    ## Example
    ```python
    for step in range(num_steps):
        for _ in range(accum_steps):
            loss = model(next(loader))
        (loss / accum_steps).backward()
        optimizer.step()
        optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    for step in range(num_steps):
        for _ in range(accum_steps):
            loss = model(next(loader))
            (loss / accum_steps).backward()
        optimizer.step()
        optimizer.zero_grad()
    ```

    ## Fix
    None: moving the backward into the loop changes which statements run per micro-batch (logging
    of the loss, a condition around the backward), which is the script's to decide.
    """

    code = "GA016"
    name = "backward-after-micro-batch-loop"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        seen: set[int] = set()
        for loop in model.loops:
            for event in loop.of_kind(Kind.BACKWARD):
                if id(event.node) in seen or event.frame.scope is not loop.loop.frame.scope:
                    continue
                found = _forward_only_loop(loop, event)
                if found is None:
                    continue
                seen.add(id(event.node))
                micro, name = found
                yield Finding(
                    self.code,
                    event.node,
                    f"{show(event)} runs once, after the loop over `{code(micro.iter)}`, on the `{name}` of "
                    f"its last pass: the loop reassigns `{name}` on every pass and runs no backward, so only "
                    f"the last micro-batch's loss is backpropagated and the other passes' forward is thrown "
                    f"away; move the backward into the loop",
                )


def _forward_only_loop(loop: TrainingLoop, event: Event) -> tuple[cst.For, str] | None:
    """The `for` statement before the backward, in the training loop's body (or an `if`/`with`/`try`
    block in it that holds the backward), that overwrites the backpropagated loss on every pass."""
    name = _loss_name(event.spec.value)
    body = getattr(loop.loop.node, "body", None)
    if name is None or not isinstance(body, cst.IndentedBlock):
        return None
    path: list[tuple[Sequence[cst.BaseStatement], int]] = []  # each block down to the backward's statement
    statements: Sequence[cst.BaseStatement] = body.body
    while True:
        index = next((i for i, s in enumerate(statements) if traversal.holds(s, event.node)), None)
        if index is None:
            return None
        path.append((statements, index))
        inner = next((b for b in _blocks(statements[index]) if traversal.holds(b, event.node)), None)
        if inner is None:
            break
        statements = inner.body
    for level, (statements, index) in enumerate(reversed(path)):  # the nearest loop before the backward
        at = next((i for i in range(index - 1, -1, -1) if isinstance(statements[i], cst.For | cst.While)), None)
        if at is None:
            continue
        micro = statements[at]
        if not isinstance(micro, cst.For) or not _k_passes(micro, event):
            return None
        # Nothing sets the loss again between the loop and the backward, at this level or below it.
        between = [s for s in statements[at + 1 : index]]
        between += [s for inner, i in path[len(path) - level :] for s in inner[:i]]
        if any(name in names_assigned(s) for s in between):
            return None
        return (micro, name) if _overwrites(micro, name) else None
    return None


def _blocks(statement: cst.BaseStatement) -> list[cst.IndentedBlock]:
    """The blocks of an `if`/`with`/`try` statement (not of loops or definitions: another scope or
    another loop's passes)."""
    found: list[cst.BaseSuite] = []
    if isinstance(statement, cst.If):
        found.append(statement.body)
        orelse = statement.orelse
        while orelse is not None:
            found.append(orelse.body)
            orelse = orelse.orelse if isinstance(orelse, cst.If) else None
    elif isinstance(statement, cst.With | cst.Try):
        found.append(statement.body)
    return [b for b in found if isinstance(b, cst.IndentedBlock)]


def _loss_name(value: cst.BaseExpression | None) -> str | None:
    """`loss` in `loss`, `loss / K`, `loss.div(K)`, `scaler.scale(loss)`, `(loss / K).mean()`."""
    for _ in range(4):
        if isinstance(value, cst.BinaryOperation):
            value = value.left
        elif isinstance(value, cst.Call) and method_name(value) in ("scale", "scale_loss") and positional(value):
            value = positional(value)[0]
        elif isinstance(value, cst.Call) and method_name(value) in ("div", "mean", "sum", "float"):
            value = receiver(value)
        else:
            break
    return dotted(value) if isinstance(value, cst.Name) else None


def _overwrites(micro: cst.For, name: str) -> bool:
    writes = _Writes(name)
    traversal.visit(micro.body, writes)
    if not writes.plain or writes.other or writes.backward:
        return False
    # State carried from pass to pass: a name updated from itself (`h = cell(x, h)`, `h += x`), and
    # what is computed from such a name. A loss read from it depends on every pass.
    carried = {n for targets, value in writes.assignments for n in targets if value is None or _reads(value, {n})}
    grew = True
    while grew:
        grew = False
        for targets, value in writes.assignments:
            if value is not None and not targets <= carried and _reads(value, carried):
                carried |= targets
                grew = True
    return not any(_reads(value, carried | {name}) for value in writes.plain)


def _k_passes(micro: cst.For, event: Event) -> bool:
    """`range(K)` with K a name for the window, or the number the loss is divided by; or a list of
    micro-batches."""
    iterable = micro.iter
    if isinstance(iterable, cst.Call) and dotted(iterable.func) == "range" and len(positional(iterable)) == 1:
        bound = positional(iterable)[0]
        return looks_like_k(bound) or any(same_quantity(bound, d) for d in _divisors(event.spec.value))
    return dotted(iterable) is not None and looks_like_k(iterable)


def _divisors(value: cst.BaseExpression | None) -> list[cst.BaseExpression]:
    found: list[cst.BaseExpression] = []
    while isinstance(value, cst.BinaryOperation):
        if isinstance(value.operator, cst.Divide):
            found.append(value.right)
        value = value.left
    if isinstance(value, cst.Call) and method_name(value) == "div" and positional(value):
        found.append(positional(value)[0])
    return found


class _Writes(cst.CSTVisitor):
    """How a loop body writes `name`: plain assignments (their values), anything else (`+=`, an
    append, a subscript), and whether it runs a backward."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.plain: list[cst.BaseExpression] = []
        self.other = False
        self.backward = False
        # every assignment in the body: the names it binds and the value (None for `x += ...`)
        self.assignments: list[tuple[set[str], cst.BaseExpression | None]] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.FunctionDef | cst.ClassDef | cst.Lambda):
            return False
        if isinstance(node, cst.Assign):
            targets = {n for t in node.targets for n in bound_names(t.target)}
            self.assignments.append((targets, node.value))
            if self.name in targets:
                self.plain.append(node.value)
        elif isinstance(node, cst.AugAssign | cst.AnnAssign | cst.NamedExpr):
            targets = set(bound_names(node.target))
            self.assignments.append((targets, None))
            if self.name in targets:
                self.other = True
        elif isinstance(node, cst.Call):
            method = method_name(node)
            if method in ("backward", "manual_backward"):
                self.backward = True
            elif method in ("append", "extend") and dotted(receiver(node)) == self.name:
                self.other = True
        return True


def _reads(value: cst.BaseExpression, names: set[str]) -> bool:
    return not traversal.names_in(value).isdisjoint(names)
