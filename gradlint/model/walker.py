"""Walk a function (and the same-module helpers it calls) into an ordered list of gradient
events, each with the conditions, `with` contexts and loops it runs under."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import libcst as cst

from gradlint.model import traversal
from gradlint.model.events import EventSpec, Framework, Kind, classify_call
from gradlint.model.facts import ModuleFacts
from gradlint.model.gates import Periodicity, Resolver, periodicity
from gradlint.model.scopes import Scope, ScopeCache
from gradlint.model.syntax import canonical, dotted, method_name, positional, terminates

MAX_INLINE_DEPTH = 4
# Method names never worth inlining: they are torch/stdlib calls far more often than helpers.
_NOT_HELPERS = {"forward", "__call__", "__init__", "item", "append", "update", "get", "to", "cuda",
                "train", "eval", "format", "log", "info", "print", "save", "load", "close"}


@dataclass(frozen=True)
class Frame:
    """One function being walked: its assignments, and its parameters bound at the call site."""

    scope: Scope
    cls: cst.ClassDef | None
    env: tuple[tuple[str, cst.BaseExpression, Frame | None], ...] = ()
    via: tuple[cst.Call, ...] = ()

    def calls_below(self, outer: Frame) -> tuple[cst.Call, ...]:
        """The helper calls that lead from `outer` (a frame this one was inlined under) down to this
        frame, outermost first: the first is where this frame's code runs in `outer`."""
        return self.via[len(outer.via):]

    def binding(self, name: str) -> tuple[cst.BaseExpression, Frame] | None:
        for param, value, caller in self.env:
            if param == name and caller is not None:
                return value, caller
        return None

    def origin(self, name: str) -> str:
        """`name` as the outermost call site that hands it down names it: a helper's parameter
        (`_schedule` in `_schedule.step()`) followed through each call while the argument there
        is a plain dotted name (`scheduler`); `name` itself when it is no parameter."""
        frame: Frame = self
        while True:
            head, dot, rest = name.partition(".")
            bound = frame.binding(head)
            passed = dotted(bound[0]) if bound is not None else None
            if bound is None or passed is None:
                return name
            name, frame = passed + dot + rest, bound[1]  # callers only: the chain ends

    def resolve(self, name: str) -> list[tuple[cst.BaseExpression, Resolver]]:
        bound = self.binding(name)
        if bound is not None:
            return [(bound[0], bound[1].resolve)]
        return [
            (a.value, self.resolve)
            for a in self.scope.assignments.get(name, [])
            if a.operator is None and a.index is None
        ]

    @property
    def reset_counters(self) -> frozenset[str]:
        return frozenset(set(self.scope.zeroed) & set(self.scope.incremented))


@dataclass(frozen=True)
class Guard:
    """A condition an event runs under; `negated` for `else` branches and early exits."""

    expr: cst.BaseExpression
    negated: bool
    frame: Frame = field(compare=False)
    depth: int = 0  # how many loops enclosed the condition
    periodic: Periodicity | None = field(default=None, compare=False)
    exceptional: bool = False  # an `except` handler: not the normal path
    # a non-periodic branch that ends in continue/break/return/raise: a skip path (`if not
    # torch.isfinite(loss): optimizer.zero_grad(); continue`), not what runs per micro-batch
    skip_branch: bool = False
    node: cst.CSTNode | None = field(default=None, compare=False)  # where to report the gate

    @property
    def key(self) -> tuple[str, bool]:
        """The condition as text (`syntax.canonical`) and whether it is negated: equal for the same
        test written twice (`if (i + 1) % k == 0:` before the clip and again before the step)."""
        return canonical(self.expr), self.negated


@dataclass(frozen=True)
class Context:
    """A `with` item around an event: `accelerator.accumulate(model)`, `model.no_sync()`."""

    expr: cst.BaseExpression
    method: str | None
    receiver: str | None
    depth: int


@dataclass(frozen=True)
class Event:
    spec: EventSpec
    guards: tuple[Guard, ...]
    contexts: tuple[Context, ...]
    loops: tuple[cst.CSTNode, ...]
    order: int
    frame: Frame = field(compare=False)

    @property
    def kind(self) -> Kind:
        return self.spec.kind

    @property
    def node(self) -> cst.CSTNode:
        return self.spec.node

    @property
    def optimizer(self) -> str | None:
        """The optimizer the event is of (a step's, or the receiver's) as the outermost caller
        names it: `model_optimizer` for the `optimizer.step()` of `update_parameters(optimizer)`
        called as `update_parameters(model_optimizer)`, so two call sites with two optimizers are two
        optimizers (fairscale's gossip tests). Fixes write code where the event is, so they use the
        names of `spec`."""
        name = self.spec.optimizer or self.spec.receiver
        return self.frame.origin(name) if name else None


@dataclass
class LoopInfo:
    node: cst.CSTNode  # For, While, or the FunctionDef of an implicit (Lightning) loop
    chain: tuple[cst.CSTNode, ...]  # enclosing loops, outermost first
    frame: Frame
    start: int
    end: int = 0
    implicit: bool = False
    preceding: tuple[cst.CSTNode, ...] = ()  # statements before the loop in its block
    following: tuple[cst.CSTNode, ...] = ()  # statements after the loop in its block and after the `with`s around it


@dataclass
class WalkResult:
    events: list[Event] = field(default_factory=list)
    loops: list[LoopInfo] = field(default_factory=list)


class _State(NamedTuple):
    """Where the walk is (a named tuple: `_replace` costs a third of `dataclasses.replace`, and the
    walk makes one per block, branch and inlined call)."""

    frame: Frame
    guards: tuple[Guard, ...] = ()
    contexts: tuple[Context, ...] = ()
    loops: tuple[cst.CSTNode, ...] = ()
    active: tuple[int, ...] = ()  # ids of functions being inlined (recursion guard)


class _Calls(cst.CSTVisitor):
    """Calls of one statement in evaluation order (inner before outer), not inside lambdas."""

    def __init__(self) -> None:
        self.calls: list[cst.Call] = []

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False

    def leave_Call(self, original_node: cst.Call) -> None:
        self.calls.append(original_node)


def _calls_in(node: cst.CSTNode) -> list[cst.Call]:
    collector = _Calls()
    traversal.visit(node, collector)
    return collector.calls


class Walker:
    def __init__(self, facts: ModuleFacts, scopes: ScopeCache) -> None:
        self.facts = facts
        self.scopes = scopes
        self._order = 0
        self._result = WalkResult()
        # The statements before the current one in its block, as (block, index): a tuple per statement
        # would make a long module quadratic.
        self._preceding: tuple[Sequence[cst.CSTNode], int] = ((), 0)
        # For the body of a `with` being walked: where the `with` stands, as (block, index), since the
        # statements after it follow a loop at the top of that body too (speechbrain's `with tqdm(...)
        # as t: for batch in t:`). Positions, not tuples, for the same reason as `_preceding`.
        self._after_with: dict[int, tuple[Sequence[cst.CSTNode], int]] = {}
        # A helper's statements are walked once per call site and once as a root of their own.
        self._calls_of: dict[int, list[cst.Call]] = {}

    def walk(self, root: cst.FunctionDef | cst.Module, cls: cst.ClassDef | None) -> WalkResult:
        self._order = 0
        self._result = WalkResult()
        frame = Frame(self.scopes.get(root), cls)
        state = _State(frame, active=(id(root),))
        body = root.body.body if isinstance(root, cst.FunctionDef) else root.body
        if isinstance(root, cst.FunctionDef):
            # A function runs once per call, and a function with a backward outside any loop is
            # called once per micro-batch by a loop we may not see (another module, Lightning's
            # trainer calling training_step): its body is an implicit loop.
            info = LoopInfo(root, (), frame, self._tick(), implicit=True)
            self._result.loops.append(info)
            self._block(body, state._replace(loops=(root,)))
            info.end = self._tick()
        else:
            self._block(body, state)
        return self._result

    def _following(self, block: Sequence[cst.CSTNode], index: int) -> tuple[cst.CSTNode, ...]:
        rest = list(block[index + 1:])
        while (where := self._after_with.get(id(block))) is not None:
            block, index = where
            rest.extend(block[index + 1:])
        return tuple(rest)

    def _tick(self) -> int:
        self._order += 1
        return self._order

    # -- statements -------------------------------------------------------------------------

    def _block(self, statements: Sequence[cst.CSTNode], state: _State) -> None:
        exits: list[Guard] = []
        for index, statement in enumerate(statements):
            current = state._replace(guards=state.guards + tuple(exits)) if exits else state
            self._preceding = (statements, index)
            self._statement(statement, current)
            if type(statement) is cst.If and statement.orelse is None and terminates(statement.body):
                exits.append(self._guard(statement.test, True, current, exit_kind=_exit_kind(statement.body)))

    def _statement(self, node: cst.CSTNode, state: _State) -> None:
        if type(node) is cst.SimpleStatementLine:  # most statements: an exact type, no ABCMeta check
            for small in node.body:
                self._small(small, state)
        elif isinstance(node, cst.If):
            self._calls(node.test, state)
            taken = _skip_path(self._guard(node.test, False, state), node.body)
            self._block(node.body.body, state._replace(guards=(*state.guards, taken)))
            if node.orelse is not None:
                other = self._guard(node.test, True, state)
                if isinstance(node.orelse, cst.Else):
                    other = _skip_path(other, node.orelse.body)
                negated = state._replace(guards=(*state.guards, other))
                if isinstance(node.orelse, cst.If):
                    self._statement(node.orelse, negated)
                else:
                    self._block(node.orelse.body.body, negated)
        elif isinstance(node, cst.For | cst.While):
            self._calls(node.iter if isinstance(node, cst.For) else node.test, state)
            block, index = self._preceding
            info = LoopInfo(node, state.loops, state.frame, self._tick(), preceding=tuple(block[:index]),
                            following=self._following(block, index))
            self._result.loops.append(info)
            self._block(node.body.body, state._replace(loops=(*state.loops, node)))
            info.end = self._tick()
        elif isinstance(node, cst.With):
            block, index = self._preceding  # before the items' calls, which may walk a helper
            contexts = list(state.contexts)
            for item in node.items:
                self._calls(item.item, state)
                expr = item.item
                is_method = isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute)
                contexts.append(Context(
                    expr,
                    method_name(expr) if isinstance(expr, cst.Call) else None,
                    dotted(expr.func.value) if is_method else None,  # type: ignore[union-attr]
                    len(state.loops),
                ))
            body = node.body.body
            outer = self._after_with.get(id(body))
            self._after_with[id(body)] = (block, index)
            self._block(body, state._replace(contexts=tuple(contexts)))
            if outer is None:
                del self._after_with[id(body)]
            else:  # the same `with` walked again inside itself (a helper inlined in its body)
                self._after_with[id(body)] = outer
        elif isinstance(node, cst.Try | cst.TryStar):
            self._block(node.body.body, state)
            for handler in node.handlers:
                marker = Guard(handler.type or cst.Name("BaseException"), False, state.frame,
                               len(state.loops), exceptional=True)
                self._block(handler.body.body, state._replace(guards=(*state.guards, marker)))
            if node.orelse is not None:
                self._block(node.orelse.body.body, state)
            if node.finalbody is not None:
                self._block(node.finalbody.body.body, state)
        elif isinstance(node, cst.Match):
            self._calls(node.subject, state)
            for case in node.cases:
                marker = Guard(node.subject, False, state.frame, len(state.loops))
                self._block(case.body.body, state._replace(guards=(*state.guards, marker)))
        # FunctionDef / ClassDef bodies are walked as their own roots or when called.

    def _small(self, node: cst.BaseSmallStatement, state: _State) -> None:
        self._calls(node, state)
        kind = type(node)
        if kind is cst.Assign and type(node.value) is cst.Name and node.value.value == "None":
            for target in node.targets:
                text = dotted(target.target)
                if text and text.endswith(".grad"):
                    self._emit(EventSpec(Kind.ZERO_GRAD, node, text, extra={"name": f"{text} = None"}), state)
        elif kind is cst.AugAssign and isinstance(node.operator, cst.DivideAssign | cst.MultiplyAssign):
            text = dotted(node.target)
            if text and (text.endswith(".grad") or text.endswith(".grad.data")):
                self._emit(EventSpec(Kind.GRAD_RESCALE, node, text, extra={"name": text}), state)

    # -- calls ------------------------------------------------------------------------------

    def _calls(self, node: cst.CSTNode | None, state: _State) -> None:
        if node is None:
            return
        calls = self._calls_of.get(id(node))
        if calls is None:
            calls = self._calls_of[id(node)] = _calls_in(node)
        for call in calls:
            specs = classify_call(call, self.facts)
            if specs:
                for spec in specs:
                    gate = spec.extra.get("gate")
                    if isinstance(gate, cst.BaseExpression):
                        guard = self._guard(gate, False, state)
                        self._emit(spec, state._replace(guards=(*state.guards, guard)))
                    else:
                        self._emit(spec, state)
                continue
            self._inline(call, state)

    def _emit(self, spec: EventSpec, state: _State) -> None:
        self._result.events.append(
            Event(spec, state.guards, state.contexts, state.loops, self._tick(), state.frame)
        )

    def _helper(self, call: cst.Call, state: _State) -> tuple[cst.FunctionDef, cst.ClassDef | None] | None:
        func = call.func
        if isinstance(func, cst.Name):
            found = self.facts.functions.get(func.value)
            return (found, None) if found is not None else None
        if not isinstance(func, cst.Attribute):
            return None
        name = func.attr.value
        candidates = self.facts.methods.get(name, [])
        if not candidates or name in _NOT_HELPERS:
            return None
        owner = dotted(func.value)
        if owner in ("self", "cls") and state.frame.cls is not None:
            for cls, method in candidates:
                if cls is state.frame.cls:
                    return method, cls
        if len(candidates) == 1:
            cls, method = candidates[0]
            return method, cls
        return None

    def _inline(self, call: cst.Call, state: _State) -> None:
        found = self._helper(call, state)
        if found is None:
            return
        func, cls = found
        if id(func) in state.active or len(state.active) > MAX_INLINE_DEPTH:
            return
        if id(func) not in self.facts.may_emit:
            return  # nothing in it (nor in what it calls) can be an event: walking it would add nothing
        scope = self.scopes.get(func)
        params = list(scope.params)
        if cls is not None and params and params[0] in ("self", "cls"):
            params = params[1:]
        env: list[tuple[str, cst.BaseExpression, Frame | None]] = []
        for param, value in zip(params, positional(call), strict=False):
            env.append((param, value, state.frame))
        for a in call.args:
            if a.keyword is not None:
                env.append((a.keyword.value, a.value, state.frame))
        frame = Frame(scope, cls, tuple(env), (*state.frame.via, call))
        self._block(func.body.body, state._replace(frame=frame, active=(*state.active, id(func))))

    def _guard(self, expr: cst.BaseExpression, negated: bool, state: _State,
               exit_kind: str | None = None) -> Guard:
        found = periodicity(expr, state.frame.resolve, state.frame.reset_counters)
        if found is not None and negated:
            found = found.inverted()
        if exit_kind not in (None, "continue"):
            found = None  # `if done: break` is about when training ends, not the window
        return Guard(expr, negated, state.frame, len(state.loops), found, node=expr)


def _skip_path(guard: Guard, block: cst.BaseSuite) -> Guard:
    return replace(guard, skip_branch=True) if guard.periodic is None and terminates(block) else guard


def _exit_kind(block: cst.BaseSuite) -> str:
    last = block.body[-1] if block.body else None
    if isinstance(last, cst.SimpleStatementLine):
        for small in last.body:
            if isinstance(small, cst.Continue):
                return "continue"
    return "exit"


def iter_roots(module: cst.Module) -> Iterator[tuple[cst.FunctionDef | cst.Module, cst.ClassDef | None]]:
    """The module body, and every function and method (nested ones included)."""
    yield module, None
    stack: list[tuple[cst.CSTNode, cst.ClassDef | None]] = [(module, None)]
    while stack:
        node, cls = stack.pop()
        body = node.body if isinstance(node, cst.Module) else getattr(node.body, "body", [])
        for child in _compound_children(body):
            if isinstance(child, cst.FunctionDef):
                yield child, cls
                stack.append((child, None))
            elif isinstance(child, cst.ClassDef):
                stack.append((child, child))


_COMPOUND = frozenset({cst.If, cst.For, cst.While, cst.With, cst.Try, cst.TryStar})


def _compound_children(body: Sequence[cst.CSTNode]) -> Iterator[cst.CSTNode]:
    """Function and class definitions in a block, including under if/try/with/for."""
    for statement in body:
        kind = type(statement)
        if kind is cst.FunctionDef or kind is cst.ClassDef:
            yield statement
        elif kind in _COMPOUND:
            yield from _compound_children(getattr(statement.body, "body", []))
            other = getattr(statement, "orelse", None)
            while other is not None:
                yield from _compound_children(getattr(other.body, "body", []))
                other = getattr(other, "orelse", None) if isinstance(other, cst.If) else None
            for handler in getattr(statement, "handlers", ()):
                yield from _compound_children(handler.body.body)


__all__ = ["Context", "Event", "Frame", "Framework", "Guard", "LoopInfo", "WalkResult", "Walker", "iter_roots"]
