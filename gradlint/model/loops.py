"""Training loops: which loop holds the micro-batches, how the step is gated, and K."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import libcst as cst

from gradlint.model.events import Framework, Kind
from gradlint.model.gates import Phase
from gradlint.model.syntax import code, dotted, last_part, number, positional
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

    @property
    def k_text(self) -> str:
        return code(self.k) if self.k is not None else "K"

    @property
    def k_phrase(self) -> str:
        """K for messages: `grad_accum` as code, a literal as a plain number."""
        literal = self.k_literal
        if literal is not None and literal.is_integer():
            return str(int(literal))
        return f"`{self.k_text}`"

    @property
    def k_literal(self) -> float | None:
        return number(self.k)


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
        values = info.frame.scope.assignments.get(name, [])
        if len(values) == 1 and values[0].index is None:
            value = values[0].value
            # `tqdm(enumerate(loader)) if rank0 else enumerate(loader)`: both branches must agree
            branches = [value.body, value.orelse] if isinstance(value, cst.IfExp) else [value]
            calls = [b for b in branches if isinstance(b, cst.Call) and last_part(dotted(b.func)) in _ITER_WRAPPERS]
            if len(calls) == len(branches) and len({code(_unwrap(c)) for c in calls}) == 1:
                return calls[0]
    return node.iter


def _unwrap(call: cst.Call) -> cst.BaseExpression:
    """The iterable under display wrappers: `tqdm(enumerate(loader), ...)` -> `enumerate(loader)`."""
    while last_part(dotted(call.func)) in ("tqdm", "track") and positional(call):
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
        text = dotted(iterable) or ""
        lowered = last_part(text).lower()
        sized = bool(text) and not any(w in lowered for w in ("iter", "cycle", "infinite", "stream"))
        # Counters reset right before the loop are per-epoch: `step = 0; for batch in loader:`
        for statement in info.preceding:
            if isinstance(statement, cst.SimpleStatementLine):
                for small in statement.body:
                    if (isinstance(small, cst.Assign) and isinstance(small.value, cst.Integer)
                            and small.value.value == "0"):
                        for t in small.targets:
                            text_t = dotted(t.target)
                            if text_t:
                                names.add(text_t)
        if not any(isinstance(n, cst.For | cst.While) for n in info.chain):
            names.update(info.frame.scope.incremented)  # one pass: every counter is the loop's own
    elif info.implicit:
        params = info.frame.scope.params
        if "batch_idx" in params:
            names.add("batch_idx")
    return Counter(frozenset(names), start, sized)


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


def _key(nodes: tuple[cst.CSTNode, ...]) -> tuple[int, ...]:
    return tuple(map(id, nodes))


def build_loops(walk: WalkResult) -> list[TrainingLoop]:
    """The training loops of one walked root."""
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
        after = [e for e in walk.events if e.order > info.end and e.loops[: len(info.chain)] == info.chain
                 and info.node not in e.loops]
        before = [e for e in walk.events if e.order < info.start and e.loops == info.chain]
        steps = [e for e in in_loop if e.kind is Kind.STEP]
        backwards = [e for e in in_loop if e.kind is Kind.BACKWARD]
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
            if gate is not None:
                loop.kind = LoopKind.GATED
                loop.gate = gate
                loop.k = gate.periodic.modulus if gate.periodic else None
                loop.accumulating_optimizers = frozenset(
                    filter(None, (s.spec.optimizer or s.spec.receiver for s in gated))
                )
            else:
                loop.kind = LoopKind.PLAIN
        else:
            window = by_path.get(_key(info.chain)) if info.chain else None
            # The window scope: the enclosing loop's own statements and the micro-step loop,
            # not sibling loops (an evaluation loop, a second training phase).
            inside = {id(e) for e in in_loop}
            scope = [e for e in walk.events if e.loops == info.chain or id(e) in inside]
            if any(e.kind is Kind.STEP and e.loops == info.chain and e.order > info.end for e in scope):
                loop.kind = LoopKind.INNER
                loop.window = window
                loop.events = scope
                loop.k = _inner_range_k(info.node)
                loop.accumulating_optimizers = frozenset(
                    filter(None, (e.spec.optimizer or e.spec.receiver for e in scope
                                  if e.kind is Kind.STEP and e.loops == info.chain))
                )
        loops.append(loop)
    return loops
