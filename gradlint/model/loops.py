"""Training loops: which loop holds the micro-batches, how the step is gated, and K."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import libcst as cst

from gradlint.model import traversal
from gradlint.model.events import Framework, Kind
from gradlint.model.facts import Role, constructor_role, target_names
from gradlint.model.gates import Phase
from gradlint.model.quantities import same_quantity
from gradlint.model.syntax import canonical, code, dotted, last_part, number, positional, same_code
from gradlint.model.walker import Event, Guard, LoopInfo, WalkResult


class LoopKind(Enum):
    GATED = "gated"  # the step runs under a periodic gate inside the micro-batch loop
    INNER = "inner"  # a fixed inner micro-step loop; the step runs after it
    ACCELERATE = "accelerate"  # `with accelerator.accumulate(model):` decides
    ENGINE = "engine"  # a DeepSpeed engine accumulates by itself
    PLAIN = "plain"  # the step runs on every iteration: no accumulation
    UNKNOWN = "unknown"  # backward, but no step in this module


class When(Enum):
    """When an event runs, relative to the accumulation window."""

    EVERY = "every"  # on every micro-batch
    REST = "rest"  # on the micro-batches where no step runs
    ONCE = "once"  # once per window (with the step, or at the window's start)
    EXCEPTIONAL = "exceptional"  # in an `except` handler


_NOT_SIZED = {"range", "count", "cycle", "repeat", "iter", "islice", "infinite_loader", "chain"}


@dataclass(frozen=True)
class Counter:
    names: frozenset[str]  # the loop's own counters (enumerate index, per-epoch counters)
    start: float = 0.0
    sized: bool = False  # iterates a finite, sized iterable once per epoch


@dataclass
class TrainingLoop:
    kind: LoopKind
    loop: LoopInfo  # the micro-batch loop (innermost loop that runs backward)
    window: LoopInfo | None  # INNER: the loop whose iterations are windows (None: a function)
    events: list[Event]  # every event of the window scope, in order
    after: list[Event] = field(default_factory=list)  # events after the loop in its scope
    # events before the loop in its own pass (the epoch loop's body, or the function), not in loops
    before: list[Event] = field(default_factory=list)
    gate: Guard | None = None  # the periodic condition the step runs under
    k: cst.BaseExpression | None = None  # K as written
    accumulating_optimizers: frozenset[str] = frozenset()

    @property
    def mixed(self) -> bool:
        """Another optimizer steps on every iteration (a GAN's discriminator): which backward
        feeds which optimizer is then beyond a static look."""
        return any(self.when(e) is When.EVERY for e in self.of_kind(Kind.STEP))

    def accumulating_backwards(self) -> list[Event]:
        """Backward calls that run more often than the step: the ones whose gradients add up."""
        return [e for e in self.of_kind(Kind.BACKWARD)
                if self.in_loop(e) and self.when(e) in (When.EVERY, When.REST)]

    def discarded(self, backward: Event) -> bool:
        """A backward whose gradient is cleared before any step can use it (`discarding`)."""
        return self.discarding(backward) is not None

    def discarding(self, backward: Event) -> Event | None:
        """The `zero_grad()` that clears a conditional backward's gradient before any step can use it
        (a probe: `if every_n_steps(...):` a forward and backward, then `optimizer.zero_grad()`): the
        next step or clear after it, when that is a clear that runs whenever the backward did (under
        the same conditions, or some of them). How such a backward is scaled changes no update. An
        unconditional backward cleared at once is the window's own, and its clear GA001's bug."""
        guards = self.inner_guards(backward)
        if not guards:
            return None
        later = [e for e in self.events if e.order > backward.order and e.kind in (Kind.STEP, Kind.ZERO_GRAD)]
        first = min(later, key=lambda e: e.order, default=None)
        if first is None or first.kind is not Kind.ZERO_GRAD:
            return None
        # All of the clear's conditions, not only those inside the loop: a clear after the loop under
        # `if not torch.isfinite(grad_norm):` (a skipped update) does not run whenever the backward did.
        clear = list(first.guards)
        return first if clear == list(backward.guards[: len(clear)]) else None

    @property
    def depth(self) -> int:
        return len(self.loop.chain)

    def in_loop(self, event: Event) -> bool:
        return self.loop.node in event.loops

    def of_kind(self, *kinds: Kind) -> list[Event]:
        return [e for e in self.events if e.kind in kinds]

    def inner_guards(self, event: Event) -> list[Guard]:
        """Conditions the event runs under inside the micro-batch loop."""
        return [g for g in event.guards if g.depth > self.depth]

    def when(self, event: Event) -> When:
        if not self.in_loop(event):
            return When.ONCE  # in the window scope, outside the micro-step loop
        guards = self.inner_guards(event)
        if any(g.exceptional for g in guards):
            return When.EXCEPTIONAL
        phases = [g.periodic.phase for g in guards if g.periodic is not None]
        if Phase.ONCE in phases:
            return When.ONCE
        if Phase.REST in phases:
            return When.REST
        return When.EVERY

    def on_every_path(self, events: list[Event]) -> bool:
        """Whether, together, the events run on every micro-batch: one of them does, or two sit on
        the two branches of one gate (`if (i + 1) % K == 0: engine.step()` / `else: engine.step()`)."""
        whens = [self.when(e) for e in events]
        if When.EVERY in whens:
            return True
        once = [e for e, w in zip(events, whens, strict=True) if w is When.ONCE]
        rest = [e for e, w in zip(events, whens, strict=True) if w is When.REST]
        return any(_branches_of_one_gate(self.inner_guards(a), self.inner_guards(b)) for a in once for b in rest)

    @property
    def k_text(self) -> str:
        return code(self.k) if self.k is not None else "K"

    @property
    def k_phrase(self) -> str:
        """K for messages: `grad_accum` as code, a literal as a plain number."""
        literal = self.k_literal
        if literal is not None and literal.is_integer():
            return str(int(literal))
        if self.k is None:
            return "K"  # not written anywhere gradlint sees (an inner loop over a list): the generic K, not a name
        return f"`{self.k_text}`"

    @property
    def k_is_one(self) -> bool:
        """K is a name bound only to the literal 1 (`GRADIENT_ACCUMULATE_EVERY = 1` at the top of a
        script): as written, nothing accumulates."""
        if self.k is None or self.k_literal is not None or not isinstance(self.k, cst.Name):
            return self.k_literal == 1
        values = self.loop.frame.resolve(self.k.value)
        return bool(values) and all(number(value) == 1 for value, _ in values)

    @property
    def k_varies(self) -> bool:
        """K is assigned inside a loop of its function (a warm-up ramp, an adaptive window drawn
        after each step): its value changes during training, and the scale is managed by hand."""
        if self.k is None or self.k_literal is not None:
            return False
        return any(a.in_loop for a in self.loop.frame.scope.assignments.get(self.k_text, []))

    @property
    def k_literal(self) -> float | None:
        return number(self.k)


def _k_from_deepspeed_or_one(gate: Guard, gated: list[Event], prepared: set[str] | frozenset[str]) -> bool:
    """Accelerate under DeepSpeed: K read from the DeepSpeed config, and 1 without DeepSpeed
    (`K = plugin.deepspeed_config["gradient_accumulation_steps"] if plugin else 1`). Without it, every
    micro-batch steps; with it, the prepared optimizer's step() and zero_grad() do nothing (the engine
    steps inside `accelerator.backward`): the hand-written gate decides nothing either way."""
    name = dotted(gate.periodic.modulus) if gate.periodic is not None else None
    if name is None or not gated or any(last_part(e.optimizer) not in prepared for e in gated):
        return False
    values: list[cst.BaseExpression] = []
    for value, _ in gate.frame.resolve(name):
        values += [value.body, value.orelse] if isinstance(value, cst.IfExp) else [value]
    # The 1 must be written: a K taken from the DeepSpeed config only when the plugin is there
    # (`if plugin is not None: args.K = ...config[...]`) is the command line's K otherwise.
    from_config = ["deepspeed" in canonical(v).lower() for v in values]
    ones = [number(v) == 1 for v in values]
    return any(from_config) and any(ones) and all(f or one for one, f in zip(ones, from_config, strict=True))


_FLIPPED: dict[type, type] = {cst.GreaterThan: cst.LessThan, cst.LessThan: cst.GreaterThan,
                              cst.GreaterThanEqual: cst.LessThanEqual, cst.LessThanEqual: cst.GreaterThanEqual,
                              cst.Equal: cst.Equal, cst.NotEqual: cst.NotEqual}


def _optimizers_built_here(gated: list[Event]) -> bool:
    """Every gated step is of an optimizer made in the step's own function (`opt = torch.optim.Adam(...)`):
    each call steps a new optimizer, so the function is no per-micro-batch step whose flag opens a window."""
    return bool(gated) and all(
        any(isinstance(a.value, cst.Call) and constructor_role(dotted(a.value.func) or "") is Role.OPTIMIZER
            for a in e.frame.scope.assignments.get(e.spec.optimizer or e.spec.receiver or "", []))
        for e in gated)


def _only_when_k_is_one(guard: Guard, k: cst.BaseExpression | None) -> bool:
    """The guard's branch runs only when K (an integer, at least 1) is 1: the `else` of `if K > 1:`
    (`K >= 2`, `K != 1`), or the branch of `if K == 1:` (`K <= 1`, `K < 2`), also as one side of an
    `and` (`if K == 1 and step == 0:`, tez) or, for the `else`, of an `or`."""
    if k is None or number(k) is not None or guard.periodic is not None:
        return False
    return _holds_only_for_k_one(guard.expr, k, guard.negated)


def holds_while_accumulating(guard: Guard, k: cst.BaseExpression | None) -> bool:
    """The guard holds for every K above 1 (`if K > 1:`, the `else` of `if K == 1:`): relative to an
    accumulating window it is no condition at all."""
    if k is None or number(k) is not None or guard.periodic is not None:
        return False
    return _holds_only_for_k_one(guard.expr, k, not guard.negated)


def _holds_only_for_k_one(expr: cst.BaseExpression, k: cst.BaseExpression, negated: bool) -> bool:
    if isinstance(expr, cst.BooleanOperation):
        # `A and B` holds only where both do; `not (A or B)` only where neither does.
        if isinstance(expr.operator, cst.And if not negated else cst.Or):
            return any(_holds_only_for_k_one(side, k, negated) for side in (expr.left, expr.right))
        return False
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Not):
        return _holds_only_for_k_one(expr.expression, k, not negated)
    if not isinstance(expr, cst.Comparison) or len(expr.comparisons) != 1:
        return False
    left, right, operator = expr.left, expr.comparisons[0].comparator, type(expr.comparisons[0].operator)
    if number(left) is not None and operator in _FLIPPED:  # `1 < K`
        left, right, operator = right, left, _FLIPPED[operator]
    n = number(right)
    if n is None or number(left) is not None or not same_quantity(left, k):
        return False
    holds_for_one_only = {cst.Equal: n == 1, cst.LessThanEqual: n == 1, cst.LessThan: n == 2}
    fails_for_one_only = {cst.GreaterThan: n == 1, cst.GreaterThanEqual: n == 2, cst.NotEqual: n == 1}
    if negated:
        return fails_for_one_only.get(operator, False)
    return holds_for_one_only.get(operator, False)


def _asserted_k_one(guard: Guard, k: cst.BaseExpression | None,
                    k_one_unless: Sequence[tuple[cst.BaseExpression, cst.BaseExpression]]) -> bool:
    """The guard's branch runs only where an `assert A or K == 1` makes K 1: where A fails, as the
    `else` of `if A:` or under `x == c` for an A of `x >= n` (or `>`, `<`, `<=`, `!=`, `==`) that c fails."""
    if k is None or guard.periodic is not None:
        return False
    for condition, asserted_k in k_one_unless:
        if not same_quantity(asserted_k, k):
            continue
        if guard.negated and same_code(guard.expr, condition):
            return True
        if not guard.negated and _excludes(guard.expr, condition):
            return True
    return False


_HOLDS: dict[type, Callable[[float, float], bool]] = {
    cst.GreaterThanEqual: operator.ge, cst.GreaterThan: operator.gt, cst.LessThanEqual: operator.le,
    cst.LessThan: operator.lt, cst.Equal: operator.eq, cst.NotEqual: operator.ne,
}


def _excludes(test: cst.BaseExpression, condition: cst.BaseExpression) -> bool:
    """`x == c` where `condition` is `x <op> n` and `c <op> n` is false (`amp == -1` against `amp >= 0`)."""
    if not (isinstance(test, cst.Comparison) and isinstance(condition, cst.Comparison)
            and len(test.comparisons) == 1 and len(condition.comparisons) == 1):
        return False
    holds = _HOLDS.get(type(condition.comparisons[0].operator))
    value, bound = number(test.comparisons[0].comparator), number(condition.comparisons[0].comparator)
    return (isinstance(test.comparisons[0].operator, cst.Equal) and holds is not None and value is not None
            and bound is not None and same_code(test.left, condition.left) and not holds(value, bound))


def _branches_of_one_gate(first: list[Guard], second: list[Guard]) -> bool:
    """The same conditions but for one periodic gate, taken in `first` and not taken in `second`."""
    if len(first) != len(second):
        return False
    split = [(a, b) for a, b in zip(first, second, strict=True)
             if a.expr is not b.expr or a.negated is not b.negated]
    if len(split) != 1:
        return False
    a, b = split[0]
    return a.expr is b.expr and a.periodic is not None and a.negated is not b.negated


def _inner_range_k(loop: cst.CSTNode) -> cst.BaseExpression | None:
    if not isinstance(loop, cst.For) or not isinstance(loop.iter, cst.Call):
        return None
    if dotted(loop.iter.func) != "range":
        return None
    args = positional(loop.iter)
    if len(args) == 1:
        return args[0]
    if len(args) == 2 and number(args[0]) == 0:
        return args[1]
    return None


# Wrappers whose result is commonly bound to a name first: `it = tqdm(enumerate(loader))`.
_ITER_WRAPPERS = {"enumerate", "tqdm", "trange", "iter", "cycle", "islice", "zip", "track"}


def loop_iterable(info: LoopInfo) -> cst.BaseExpression | None:
    """What a for loop iterates, seeing through one name bound to a wrapper call."""
    node = info.node
    if not isinstance(node, cst.For):
        return None
    name = dotted(node.iter)
    if name is not None and not isinstance(node.iter, cst.Call):
        # `tqdm(enumerate(loader)) if rank0 else enumerate(loader)`, or `it = loader` in one branch of
        # an `if` and `it = tqdm(loader)` in the other: every value must show the same iterable
        found = _bound_wrappers(info, name, _ITER_WRAPPERS)
        if found is not None:
            return found[0][0]
    return node.iter


def _bound_wrappers(info: LoopInfo, name: str, wrappers: set[str] | frozenset[str]
                    ) -> tuple[list[cst.Call], cst.BaseExpression] | None:
    """The calls `name` is bound to (each value, or each side of `a if c else b`) and the one iterable
    they all show, when every value is a call of `wrappers` or that iterable itself and at least one
    is a call. None otherwise."""
    values = info.frame.scope.assignments.get(name, [])
    if not values or any(v.index is not None or v.operator is not None for v in values):
        return None
    branches = [b for v in values
                for b in ((v.value.body, v.value.orelse) if isinstance(v.value, cst.IfExp) else (v.value,))]
    calls = [b for b in branches if isinstance(b, cst.Call) and last_part(dotted(b.func)) in wrappers]
    plain = [b for b in branches if not any(b is c for c in calls) and dotted(b) is not None]
    shown = [_unwrap(c) for c in calls] + plain
    if not calls or len(calls) + len(plain) != len(branches) or len({canonical(x) for x in shown}) != 1:
        return None
    return calls, shown[0]


_PROGRESS_BARS = frozenset({"tqdm", "track"})


def _unwrap(call: cst.Call) -> cst.BaseExpression:
    """The iterable under display wrappers: `tqdm(enumerate(loader), ...)` -> `enumerate(loader)`."""
    while last_part(dotted(call.func)) in _PROGRESS_BARS and positional(call):
        inner = positional(call)[0]
        if not isinstance(inner, cst.Call):
            return inner
        call = inner
    return call


def loop_counter(info: LoopInfo) -> Counter:
    node = info.node
    names: set[str] = set()
    start = 0.0
    sized = False
    iterable = loop_iterable(info)
    if isinstance(node, cst.For) and iterable is not None:
        target = node.target
        while isinstance(iterable, cst.Call):
            name = last_part(dotted(iterable.func))
            args = positional(iterable)
            if name == "enumerate" and args:
                if isinstance(target, cst.Tuple) and target.elements:
                    first = dotted(target.elements[0].value)
                    if first:
                        names.add(first)
                    target = None
                for a in iterable.args:
                    if a.keyword is not None and a.keyword.value == "start":
                        start = number(a.value) or 0.0
                if len(args) > 1:
                    start = number(args[1]) or 0.0
                iterable = args[0]
                continue
            if name == "range":
                inner = args[-1] if args else None
                sized = isinstance(inner, cst.Call) and dotted(inner.func) == "len"
                if target is not None and dotted(target):
                    names.add(dotted(target) or "")
                return Counter(frozenset(names), start, sized)
            if name in _NOT_SIZED or not args:
                return Counter(frozenset(names), start, False)
            iterable = args[0]  # tqdm(loader), log_every(loader, ...), zip(a, b)
        iterable = _displayed(iterable, info)
        text = dotted(iterable) or ""
        lowered = last_part(text).lower()
        sized = bool(text) and not any(w in lowered for w in ("iter", "cycle", "infinite", "stream"))
        # Counters reset right before or after the loop are per-epoch: `step = 0; for batch in
        # loader:`, or speechbrain's `self.step = 0` at the end of its epoch function.
        for statement in (*info.preceding, *info.following):
            if isinstance(statement, cst.SimpleStatementLine):
                for small in statement.body:
                    if (isinstance(small, cst.Assign) and isinstance(small.value, cst.Integer)
                            and small.value.value == "0"):
                        for t in small.targets:
                            text_t = dotted(t.target)
                            if text_t:
                                names.add(text_t)
        # A copy of the index made at the top of the body (`self.batch_index = b_idx`, for a helper
        # the loop calls to read) is the index too.
        for statement in node.body.body if isinstance(node.body, cst.IndentedBlock) else ():
            if isinstance(statement, cst.SimpleStatementLine):
                for small in statement.body:
                    if isinstance(small, cst.Assign) and len(small.targets) == 1 and dotted(small.value) in names:
                        alias = dotted(small.targets[0].target)
                        if alias:
                            names.add(alias)
        if not any(isinstance(n, cst.For | cst.While) for n in info.chain):
            # One pass: every local counter is the loop's own; an attribute (`self.num_train_step`)
            # keeps counting across calls, so windows run on from one call (epoch) to the next.
            names.update(n for n in info.frame.scope.incremented if "." not in n)
    elif info.implicit:
        params = info.frame.scope.params
        if "batch_idx" in params:
            names.add("batch_idx")
    elif isinstance(node, cst.While):
        drained = drained_iterable(info)
        if drained is not None:
            body = _LoopBody(node)
            # Counted by hand: reset right before the loop, `+= 1` once per pass at the body's top level.
            once = {dotted(s.target) for line in node.body.body if isinstance(line, cst.SimpleStatementLine)
                    for s in line.body if isinstance(s, cst.AugAssign) and isinstance(s.operator, cst.AddAssign)
                    and number(s.value) == 1}
            names = {n for n in _reset_before(info) & once if body.written.count(n) == 1}
            return Counter(frozenset(names), 0.0, _sized_name(drained))
    return Counter(frozenset(names), start, sized)


def _displayed(iterable: cst.BaseExpression, info: LoopInfo) -> cst.BaseExpression:
    """`loader` for a name bound to a progress bar over it (`epoch_iterator = tqdm(loader,
    desc=...)` then `enumerate(epoch_iterator)`; also `= loader` in another branch): a bar is as
    long as what it shows; and `loader` for a name bound once to it (`epoch_iterator =
    train_dataloader`). Else unchanged."""
    name = dotted(iterable)
    if not name:
        return iterable
    found = _bound_wrappers(info, name, _PROGRESS_BARS)
    if found is not None and dotted(found[1]) is not None:
        return found[1]
    # A plain alias bound once: Hugging Face's `epoch_iterator = train_dataloader`.
    values = info.frame.scope.assignments.get(name, [])
    if len(values) == 1 and values[0].index is None and values[0].operator is None \
            and isinstance(values[0].value, cst.Name | cst.Attribute):
        return values[0].value
    return iterable


def drained_iterable(info: LoopInfo) -> cst.BaseExpression | None:
    """`X` of a `while True:` loop that draws `batch = next(it)` from `it = iter(X)`, made right
    before it, and ends only when `it` is exhausted (`except StopIteration: break`, or
    `next(it, None)` then `if batch is None: break`): it runs once over X, as `for batch in X:`.
    None when anything else may end or shorten a pass (another break, a return or raise, a
    continue) or `it` is rebound."""
    node = info.node
    if not isinstance(node, cst.While) or (number(node.test) != 1 and dotted(node.test) != "True"):
        return None
    statements = node.body.body
    first = statements[0] if statements else None
    exit_block: Sequence[cst.BaseStatement] = ()
    it: str | None = None
    if isinstance(first, cst.Try) and len(first.handlers) == 1 and first.orelse is None and first.finalbody is None:
        draw = _draw(first.body.body, with_default=False)
        if draw is not None and dotted(first.handlers[0].type) == "StopIteration":
            it, exit_block = draw[0], first.handlers[0].body.body
    else:
        draw = _draw(statements[:1], with_default=True)
        second = statements[1] if len(statements) > 1 else None
        if draw is not None and isinstance(second, cst.If) and second.orelse is None and _is_none_test(
                second.test, draw[1]):
            it, exit_block = draw[0], second.body.body
    if it is None:
        return None
    body = _LoopBody(node)
    if body.continues or body.returns or len(body.breaks) != 1 or _only_break(exit_block) is not body.breaks[0]:
        return None
    if it in body.written:
        return None
    value = _last_value(info.preceding, it)
    if isinstance(value, cst.Call) and dotted(value.func) == "iter" and len(value.args) == 1 \
            and value.args[0].keyword is None and not value.args[0].star:
        return value.args[0].value
    return None


def _draw(statements: Sequence[cst.BaseStatement], with_default: bool) -> tuple[str, cst.BaseExpression] | None:
    """(`it`, the target) of a lone `target = next(it)` (`next(it, None)` when `with_default`)."""
    if len(statements) != 1 or not isinstance(statements[0], cst.SimpleStatementLine):
        return None
    line = statements[0].body
    small = line[0] if len(line) == 1 else None
    if not isinstance(small, cst.Assign) or len(small.targets) != 1 or not isinstance(small.value, cst.Call):
        return None
    call = small.value
    if dotted(call.func) != "next" or any(a.keyword is not None or a.star for a in call.args):
        return None
    if len(call.args) != (2 if with_default else 1):
        return None
    if with_default and dotted(call.args[1].value) != "None":
        return None
    it = dotted(call.args[0].value)
    return (it, small.targets[0].target) if it else None


def _is_none_test(test: cst.BaseExpression, target: cst.BaseExpression) -> bool:
    """`target is None`, for a plain name."""
    return (isinstance(test, cst.Comparison) and isinstance(target, cst.Name) and dotted(test.left) == target.value
            and len(test.comparisons) == 1 and isinstance(test.comparisons[0].operator, cst.Is)
            and dotted(test.comparisons[0].comparator) == "None")


def _last_value(statements: Sequence[cst.CSTNode], name: str) -> cst.BaseExpression | None:
    """The value last bound to `name` by plain assignments among `statements` (None if any other
    statement binds or may bind it)."""
    value: cst.BaseExpression | None = None
    for statement in statements:
        if not isinstance(statement, cst.SimpleStatementLine):
            if name in _LoopBody.targets(statement):
                value = None  # bound under a condition or a loop: unknown
            continue
        for small in statement.body:
            if isinstance(small, cst.Assign) and any(name in _bound(t.target) for t in small.targets):
                single = len(small.targets) == 1 and dotted(small.targets[0].target) == name
                value = small.value if single else None
            elif name in _LoopBody.targets(small):
                value = None
    return value


def _only_break(statements: Sequence[cst.BaseStatement]) -> cst.Break | None:
    """The `break` of a block that is nothing else (`break`, or a log call then `break`)."""
    last = statements[-1] if statements else None
    if isinstance(last, cst.SimpleStatementLine) and isinstance(last.body[-1], cst.Break):
        return last.body[-1]
    return None


def _reset_before(info: LoopInfo) -> set[str]:
    """Names whose last binding right before the loop is `= 0`: `step = 0; while ...`."""
    names: set[str] = set()
    for statement in info.preceding:
        if isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                if isinstance(small, cst.Assign):
                    names.update(filter(None, (dotted(t.target) for t in small.targets)))
    return {n for n in names if number(_last_value(info.preceding, n)) == 0}


def _sized_name(node: cst.BaseExpression) -> bool:
    """A loader by name (`loader`, `self._dataloader`, under display wrappers), not a stream."""
    while isinstance(node, cst.Call) and last_part(dotted(node.func)) in ("tqdm", "track") and positional(node):
        node = positional(node)[0]
    text = dotted(node) if isinstance(node, cst.Name | cst.Attribute) else None
    lowered = last_part(text).lower() if text else ""
    return bool(lowered) and not any(w in lowered for w in ("iter", "cycle", "infinite", "stream"))


def names_assigned(node: cst.CSTNode) -> list[str]:
    """Every name a statement or block assigns (`x = ...`, `x += ...`, loop targets, `as x`), nested
    blocks included."""
    return _LoopBody.targets(node)


def bound_names(target: cst.BaseExpression | cst.CSTNode) -> list[str]:
    """The names an assignment target binds: `x`, `self.x`, each of `a, (b, *c)`."""
    return _bound(target)


class _LoopBody(cst.CSTVisitor):
    """The exits and writes of one loop body, not counting a nested loop's own break/continue."""

    def __init__(self, loop: cst.While) -> None:
        self.breaks: list[cst.Break] = []
        self.continues = False
        self.returns = False  # a return or raise: the pass may end early
        self.written: list[str] = []
        traversal.visit(loop.body, self)

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.FunctionDef | cst.ClassDef | cst.Lambda):
            return False
        if isinstance(node, cst.For | cst.While):
            self.returns = self.returns or _leaves(node)
            self.written.extend(_LoopBody.targets(node))
            return False
        if isinstance(node, cst.Break):
            self.breaks.append(node)
        elif isinstance(node, cst.Continue):
            self.continues = True
        elif isinstance(node, cst.Return | cst.Raise):
            self.returns = True
        elif isinstance(node, cst.AssignTarget | cst.AugAssign | cst.AnnAssign | cst.NamedExpr):
            self.written.extend(_bound(node.target))
        elif isinstance(node, cst.AsName):
            self.written.extend(_bound(node.name))
        return True

    @staticmethod
    def targets(node: cst.CSTNode) -> list[str]:
        """Every name `node` assigns, nested blocks included."""
        found: list[str] = []

        class _Writes(cst.CSTVisitor):
            def on_visit(self, child: cst.CSTNode) -> bool:
                if isinstance(child, cst.AssignTarget | cst.AugAssign | cst.AnnAssign | cst.NamedExpr | cst.For):
                    found.extend(_bound(child.target))
                elif isinstance(child, cst.AsName):
                    found.extend(_bound(child.name))
                return True

        traversal.visit(node, _Writes())
        return found


def _bound(target: cst.BaseExpression | cst.CSTNode) -> list[str]:
    """The names an assignment target binds: `x`, `self.x`, each of `a, (b, *c)`."""
    if isinstance(target, cst.Tuple | cst.List):
        return [n for e in target.elements for n in _bound(e.value)]
    if isinstance(target, cst.StarredElement):
        return _bound(target.value)
    name = dotted(target)
    return [name] if name else []


def _leaves(node: cst.CSTNode) -> bool:
    """A return or raise anywhere under `node`, outside nested functions."""
    return any(isinstance(n, cst.Return | cst.Raise)
               or (not isinstance(n, cst.FunctionDef | cst.ClassDef | cst.Lambda) and _leaves(n))
               for n in traversal.children(node))


def _gate_of(loop: TrainingLoop, steps: list[Event]) -> tuple[Guard | None, list[Event]]:
    gated: list[Event] = []
    gate: Guard | None = None
    for step in steps:
        for guard in loop.inner_guards(step):
            if guard.periodic is not None and guard.periodic.phase is Phase.ONCE and not guard.exceptional:
                gate = gate or guard
                gated.append(step)
                break
    return gate, gated


def _alternating(loop: TrainingLoop, backwards: list[Event], steps: list[Event], gated: list[Event]) -> bool:
    """The gated optimizer's backward runs under its gate too, and every backward that runs on the
    other passes is followed in the pass by the step of another optimizer, one that steps on every
    pass (`if it % n_d == 0: loss_g.backward(); opt_g.step()` then `loss_d.backward(); opt_d.step()`):
    each optimizer applies the gradient of its own pass, and nothing accumulates."""
    names = {s.optimizer for s in gated}
    if None in names or not any(loop.when(b) is When.ONCE for b in backwards):
        return False
    every = [s for s in steps if loop.when(s) is When.EVERY and s.optimizer not in names]
    return all(any(s.order > b.order for s in every) for b in backwards if loop.when(b) is not When.ONCE)


def _in_other_branch(event: Event, around: list[set[tuple[str, bool]]]) -> bool:
    """The event runs under the negation of a condition every backward of the loop runs under."""
    if not around:
        return False
    negated = {(text, not flag) for text, flag in (g.key for g in event.guards)}
    return all(negated & keys for keys in around)


def _key(nodes: tuple[cst.CSTNode, ...]) -> tuple[int, ...]:
    return tuple(map(id, nodes))


def build_loops(walk: WalkResult, prepared: set[str] | frozenset[str] = frozenset(),
                k_one_unless: Sequence[tuple[cst.BaseExpression, cst.BaseExpression]] = ()) -> list[TrainingLoop]:
    """The training loops of one walked root (`prepared`: names passed to `accelerator.prepare`;
    `k_one_unless`: the module's `assert A or K == 1`, as (A, K))."""
    loops: list[TrainingLoop] = []
    # A helper inlined at two call sites walks the same loop twice, under different enclosing
    # loops: a loop is its whole path, so the two walks never mix.
    by_path = {_key((*info.chain, info.node)): info for info in walk.loops}
    micro_loops: list[LoopInfo] = []
    for event in walk.events:
        if event.kind is Kind.BACKWARD and event.loops:
            info = by_path[_key(event.loops)]
            if info not in micro_loops:
                micro_loops.append(info)
    for info in micro_loops:
        path = (*info.chain, info.node)
        in_loop = [e for e in walk.events if _key(e.loops[: len(path)]) == _key(path)]
        steps = [e for e in in_loop if e.kind is Kind.STEP]
        backwards = [e for e in in_loop if e.kind is Kind.BACKWARD]
        # Not what runs in another branch of an `if` around the loop (`if distill: train_a(...) else:
        # train_b(...)`): that never follows this loop in one pass.
        around = [{g.key for g in b.guards if g.depth <= len(info.chain)} for b in backwards]
        after = [e for e in walk.events if e.order > info.end and e.loops[: len(info.chain)] == info.chain
                 and info.node not in e.loops and not _in_other_branch(e, around)]
        before = [e for e in walk.events if e.order < info.start and e.loops == info.chain]
        loop = TrainingLoop(LoopKind.UNKNOWN, info, None, in_loop, after, before)
        if any(b.spec.framework is Framework.DEEPSPEED for b in backwards) or any(
            s.spec.framework is Framework.DEEPSPEED for s in steps
        ):
            loop.kind = LoopKind.ENGINE
        elif any(c.method == "accumulate" for b in backwards for c in b.contexts):
            loop.kind = LoopKind.ACCELERATE
        elif steps:
            gate, gated = _gate_of(loop, steps)
            loop.kind = LoopKind.GATED  # provisionally, so that `when` reads the gate
            if gate is not None and all(loop.when(b) is When.ONCE for b in backwards):
                gate = None  # backward and step both run once per K batches: nothing accumulates
            if gate is not None and _alternating(loop, backwards, steps, gated):
                gate = None  # a GAN's generator updated every n-th pass, its discriminator on every one
            if gate is not None and _k_from_deepspeed_or_one(gate, gated, prepared):
                gate = None
            if gate is not None and info.implicit and _optimizers_built_here(gated):
                gate = None  # a function that builds its own optimizer is not called once per micro-batch
            if gate is not None:
                loop.kind = LoopKind.GATED
                loop.gate = gate
                loop.k = gate.periodic.modulus if gate.periodic else None
                # `if K > 1: <accumulate> else: <step every micro-batch>`: the other branch runs
                # only with K == 1, where nothing accumulates: no rule of the window reads it.
                loop.events = [e for e in loop.events if not any(
                    _only_when_k_is_one(g, loop.k) or _asserted_k_one(g, loop.k, k_one_unless)
                    for g in loop.inner_guards(e))]
                loop.accumulating_optimizers = frozenset(
                    filter(None, (s.optimizer for s in gated))
                )
            else:
                loop.kind = LoopKind.PLAIN
        else:
            window = by_path.get(_key(info.chain)) if info.chain else None
            # The window scope: the enclosing loop's own statements and the micro-step loop,
            # not sibling loops (an evaluation loop, a second training phase), except for the
            # gradient rescales after the micro-step loop (`for p in params: p.grad.mul_(1 / n)`).
            inside = {id(e) for e in in_loop}
            # Loops over the optimizers after the micro-step loop (`for opt, sched in zip(optimizers,
            # schedulers): opt.step()`, modded-nanogpt) step in the window's own pass.
            over_optimizers = _optimizer_loops(walk.events, info)
            scope = [e for e in walk.events if e.loops == info.chain or id(e) in inside
                     or (e.kind is Kind.GRAD_RESCALE and e.order > info.end
                         and e.loops[: len(info.chain)] == info.chain)
                     or (e.order > info.end and _in_loops_over(e, info.chain, over_optimizers))]
            if any(e.kind is Kind.STEP and e.order > info.end
                   and (e.loops == info.chain or _in_loops_over(e, info.chain, over_optimizers)) for e in scope):
                loop.kind = LoopKind.INNER
                loop.window = window
                loop.events = scope
                loop.k = _inner_range_k(info.node)
                loop.accumulating_optimizers = frozenset(
                    filter(None, (e.optimizer for e in scope
                                  if e.kind is Kind.STEP and e.order > info.end
                                  and (e.loops == info.chain or _in_loops_over(e, info.chain, over_optimizers))))
                )
        loops.append(loop)
    return loops


def _optimizer_loops(events: Sequence[Event], info: LoopInfo) -> set[int]:
    """ids of the `for` loops right inside `info`'s enclosing pass, after it, whose target names the
    optimizer a step in them steps (`for opt in optimizers: opt.step()`)."""
    found: set[int] = set()
    depth = len(info.chain)
    for e in events:
        if e.kind is not Kind.STEP or e.order <= info.end or len(e.loops) != depth + 1 \
                or e.loops[:depth] != info.chain:
            continue
        node = e.loops[depth]
        stepped = e.optimizer
        if isinstance(node, cst.For) and stepped and stepped in target_names(node.target):
            found.add(id(node))
    return found


def _in_loops_over(event: Event, chain: tuple[cst.CSTNode, ...], loops: set[int]) -> bool:
    depth = len(chain)
    return len(event.loops) == depth + 1 and event.loops[:depth] == chain and id(event.loops[depth]) in loops
