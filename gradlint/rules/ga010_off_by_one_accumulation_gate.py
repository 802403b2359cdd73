from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from gradlint.fixes import ga010
from gradlint.model import Guard, Kind, LoopKind, ModuleModel, TrainingLoop, loop_iterable
from gradlint.model.gates import Resolver
from gradlint.model.syntax import code, dotted, last_part, number, positional
from gradlint.rules.base import Finding, Rule, step_of


class OffByOneAccumulationGate(Rule):
    """
    ## What it does
    Flags an optimizer step gated on `i % K == 0` where `i` counts micro-batches from 0.

    That is, `i` is an `enumerate` index, a `range` target or a counter incremented only after the
    test, and the step follows the backward in the same iteration.

    ## Why is this bad?
    With a 0-based `i`, `i % K == 0` holds at micro-batches 0, K, 2K, ...: the first window is a
    single micro-batch (its update is 1/K of what it should be when the loss is divided by K), and
    every later window is shifted by one, so the epoch's last micro-batches spill into the next
    epoch. Nothing crashes; training is only slightly, silently wrong.

    Not flagged: `enumerate(loader, start=1)`, `range(1, n + 1)`, a counter incremented before the
    test (`step += 1; if step % K == 0:`), `(i + 1) % K == 0`, and `zero_grad()` (not the step) at
    the start of each window (`if i % K == 0: optimizer.zero_grad()`), which is correct.

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
    tests). Unsafe when the gate sits in a helper: its other call sites pass other counters.
    """

    code = "GA010"
    name = "off-by-one-accumulation-gate"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        for loop in model.loops:
            gate = loop.gate
            if loop.kind is not LoopKind.GATED or gate is None:
                continue
            mod = _zero_test(gate.expr, gate.frame.resolve, 0)
            if mod is None:
                continue
            steps = [s for s in loop.of_kind(Kind.STEP) if gate in s.guards]
            backwards = loop.accumulating_backwards()
            if not any(b.order < s.order for b in backwards for s in steps):
                continue  # the step opens the window (before the backward): `i % K == 0` is right there
            counter = _zero_based_counter(loop, gate, mod)
            if counter is None:
                continue
            k = code(mod.right)
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


def _bare_modulo(node: cst.BaseExpression) -> cst.BinaryOperation | None:
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Modulo) and dotted(node.left):
        return node
    return None


def _zero_based_counter(loop: TrainingLoop, gate: Guard, mod: cst.BinaryOperation) -> str | None:
    """The counter's name when it is 0 at the first micro-batch's test, else None (1-based or unknown)."""
    info = loop.loop
    name = dotted(mod.left) or ""
    test_site: cst.CSTNode = mod
    if gate.frame.scope is not info.frame.scope:
        # The gate sits in a helper: follow the counter to the argument at the loop's call site.
        bound = gate.frame.binding(name)
        calls = gate.frame.via[len(info.frame.via):]
        if bound is None or bound[1].scope is not info.frame.scope or not calls:
            return None
        name, test_site = dotted(bound[0]) or "", calls[0]
        if not name:
            return None
    scope = info.frame.scope
    if info.implicit:
        return name if name == "batch_idx" and name not in scope.assignments else None
    start = _loop_target_start(loop, name)
    if start is not None:
        return name if start == 0 and name not in scope.incremented else None
    if name not in scope.incremented or not scope.zeroed.get(name):
        return None
    others = [a for a in scope.assignments.get(name, [])
              if a.operator is None and not (isinstance(a.value, cst.Integer) and a.value.value == "0")]
    if others:
        return None  # resumed from a checkpoint or otherwise set: cannot tell where it starts
    order = _Order(name, test_site)
    info.node.visit(order)
    if order.test is None or not order.after or any(i < order.test for i in order.before):
        return None  # incremented before the test: 1-based where it is tested
    return name


def _loop_target_start(loop: TrainingLoop, name: str) -> float | None:
    """Where an `enumerate` index or `range` target named `name` starts; None if it is neither."""
    node = loop.loop.node
    iterable = loop_iterable(loop.loop)
    if not isinstance(node, cst.For) or iterable is None:
        return None
    target: cst.BaseExpression | None = node.target
    while isinstance(iterable, cst.Call):
        func = last_part(dotted(iterable.func))
        args = positional(iterable)
        if func == "enumerate" and args:
            if isinstance(target, cst.Tuple) and target.elements and dotted(target.elements[0].value) == name:
                start = next((a.value for a in iterable.args if a.keyword and a.keyword.value == "start"), None)
                if start is None and len(args) > 1:
                    start = args[1]
                return 0.0 if start is None else number(start)
            return None
        if func == "range":
            if dotted(target) != name:
                return None
            return 0.0 if len(args) == 1 else number(args[0]) if args else None
        if func not in ("tqdm", "trange", "track") or not args:
            return None
        iterable = args[0]
    return None


class _Order(cst.CSTVisitor):
    """Lexical order of a counter's increments and of the test, within one loop body."""

    def __init__(self, name: str, test_site: cst.CSTNode) -> None:
        self.name = name
        self.site = test_site
        self.index = 0
        self.test: int | None = None
        self.before: list[int] = []
        self.after: list[int] = []
        self.gate_ifs = 0

    def on_visit(self, node: cst.CSTNode) -> bool:
        self.index += 1
        if node is self.site:
            self.test = self.index
        if isinstance(node, cst.AugAssign) and isinstance(node.operator, cst.AddAssign) \
                and dotted(node.target) == self.name:
            if self.test is None:
                self.before.append(self.index)
            elif not self._inside_gate:
                self.after.append(self.index)
        if isinstance(node, cst.If) and _contains(node.test, self.site):
            self.gate_ifs += 1
        return not isinstance(node, cst.FunctionDef | cst.ClassDef | cst.Lambda) or self.index == 1

    def on_leave(self, original_node: cst.CSTNode) -> None:
        if isinstance(original_node, cst.If) and _contains(original_node.test, self.site):
            self.gate_ifs -= 1

    @property
    def _inside_gate(self) -> bool:
        return self.gate_ifs > 0


def _contains(root: cst.CSTNode, target: cst.CSTNode) -> bool:
    if root is target:
        return True
    return any(_contains(child, target) for child in root.children)
