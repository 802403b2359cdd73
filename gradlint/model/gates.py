"""When does a condition hold, relative to the accumulation window?

A condition on the step's path is a *gate* when it is periodic in the micro-batch counter.
`ONCE` holds on one micro-batch per window (`(i + 1) % K == 0`, `is_update`,
`accelerator.sync_gradients`); `REST` holds on the others (`(i + 1) % K != 0`, the `else` of
a gate, `is_accumulating`). Anything else (`if args.clip > 0`, `if scaler is not None`) is not
periodic and says nothing about the window.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

import libcst as cst

from gradlint.model.syntax import dotted, last_part, method_name, number, same_code


class Phase(Enum):
    ONCE = "once"
    REST = "rest"

    def inverted(self) -> Phase:
        return Phase.REST if self is Phase.ONCE else Phase.ONCE


_ONCE_FLAG = re.compile(
    r"(?i).*(sync_gradients|is_update|need_update|needs_update|update_grad|do_update|should_update"
    r"|(do|should|take|is)_(optimizer_|optim_)?step|accumulation_boundary|should_sync|is_sync"
    r"|do_sync|sync_grad|is_last_micro|last_micro_step|optimizer_step_now).*"
)
_REST_FLAG = re.compile(r"(?i).*(is_accumulating|still_accumulating|skip_step|no_sync_step).*")

# Resolves a flag name to the expressions assigned to it (and how to resolve names inside them).
Resolver = Callable[[str], "list[tuple[cst.BaseExpression, Resolver]]"]


@dataclass(frozen=True)
class Periodicity:
    phase: Phase
    modulus: cst.BaseExpression | None = None  # K, as written in the gate
    counter: cst.BaseExpression | None = None  # the counter under `%`, e.g. `i` in `(i + 1) % K`
    offset: float = 0.0  # `(i + 1) % K` -> 1
    has_alternative: bool = False  # `... or is_last_batch`: a last-batch clause
    # When every alternative holds only in an epoch of at most K micro-batches (`or (len(it) <= K
    # and i + 1 == len(it))`, old Hugging Face examples): that size test; a longer epoch's tail
    # still reaches no step.
    short_epoch_test: cst.Comparison | None = None
    test: cst.BinaryOperation | None = None  # the `%` itself, as written
    # ONCE holds when `test` equals this (`i % K == 0`, `not i % K`, `i % K != 0` inverted -> 0);
    # None when the gate is not a plain residue test (a reset counter, a counter difference)
    residue: float | None = None

    def inverted(self) -> Periodicity:
        return replace(self, phase=self.phase.inverted())


def _modulo(node: cst.BaseExpression) -> cst.BinaryOperation | None:
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Modulo):
        return node
    return None


def _counter(left: cst.BaseExpression) -> tuple[cst.BaseExpression, float]:
    """`i + 1` -> (i, 1); `i` -> (i, 0)."""
    if isinstance(left, cst.BinaryOperation) and isinstance(left.operator, cst.Add):
        n = number(left.right)
        if n is not None:
            return left.left, n
    return left, 0.0


def _from_modulo(mod: cst.BinaryOperation, phase: Phase, residue: float | None = 0.0) -> Periodicity:
    counter, offset = _counter(mod.left)
    return Periodicity(phase, mod.right, counter, offset, test=mod, residue=residue)


def periodicity(
    expr: cst.BaseExpression, resolve: Resolver, reset_counters: frozenset[str] = frozenset(),
    depth: int = 0,
) -> Periodicity | None:
    """The window phase in which `expr` is true, or None when it is not periodic."""
    if depth > 6:
        return None
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Not):
        inner = periodicity(expr.expression, resolve, reset_counters, depth + 1)
        return inner.inverted() if inner else None
    mod = _modulo(expr)
    if mod is not None:  # bare `i % K` is truthy off the boundary
        return _from_modulo(mod, Phase.REST)
    if isinstance(expr, cst.Comparison) and len(expr.comparisons) == 1:
        return _comparison(expr, resolve, reset_counters, depth)
    if isinstance(expr, cst.BooleanOperation):
        return _boolean(expr, resolve, reset_counters, depth)
    if isinstance(expr, cst.Call):
        name = method_name(expr) or dotted(expr.func) or ""
        if "accumulation_boundary" in name:
            return Periodicity(Phase.ONCE)
        return None
    text = dotted(expr)
    if text is None:
        return None
    for value, inner_resolve in resolve(text):
        if value is expr:
            continue
        found = periodicity(value, inner_resolve, reset_counters, depth + 1)
        if found is not None:
            return found
    name = last_part(text)
    if _REST_FLAG.fullmatch(name):
        return Periodicity(Phase.REST)
    if _ONCE_FLAG.fullmatch(name):
        return Periodicity(Phase.ONCE)
    return None


def _comparison(
    expr: cst.Comparison, resolve: Resolver, reset_counters: frozenset[str], depth: int
) -> Periodicity | None:
    target = expr.comparisons[0]
    op = target.operator
    left, right = expr.left, target.comparator
    mod = _modulo(left) or _modulo(right)
    if mod is not None:
        other = right if mod is left else left
        if isinstance(op, cst.Equal | cst.Is):
            return _from_modulo(mod, Phase.ONCE, number(other))
        if isinstance(op, cst.NotEqual | cst.IsNot):
            return _from_modulo(mod, Phase.REST, number(other))
        if isinstance(op, cst.GreaterThan) and number(other) == 0 and mod is left:
            return _from_modulo(mod, Phase.REST)
        return None
    # `ni - last_opt_step >= accumulate` (YOLO-style counter difference).
    if (
        isinstance(op, cst.GreaterThanEqual | cst.GreaterThan)
        and isinstance(left, cst.BinaryOperation)
        and isinstance(left.operator, cst.Subtract)
    ):
        return Periodicity(Phase.ONCE, right, left.left)
    # A counter that is reset inside the loop (`if count == K: step(); count = 0`), or one
    # assigned from a modulo (`acc = (acc + 1) % K; if acc == 0:`).
    name = dotted(left)
    if name is not None and isinstance(op, cst.Equal | cst.GreaterThanEqual | cst.NotEqual | cst.LessThan):
        phase = Phase.ONCE if isinstance(op, cst.Equal | cst.GreaterThanEqual) else Phase.REST
        if name in reset_counters and number(right) != 0:
            return Periodicity(phase, right, left)
        for value, _ in resolve(name):
            inner = _modulo(value)
            if inner is not None:
                found = _from_modulo(inner, phase)
                return Periodicity(phase, found.modulus, left, found.offset)  # no residue: `acc` is reassigned
    return None


def _is_len(node: cst.BaseExpression | None) -> bool:
    return isinstance(node, cst.Call) and dotted(node.func) == "len"


def _boolean(
    expr: cst.BooleanOperation, resolve: Resolver, reset_counters: frozenset[str], depth: int
) -> Periodicity | None:
    left = periodicity(expr.left, resolve, reset_counters, depth + 1)
    right = periodicity(expr.right, resolve, reset_counters, depth + 1)
    if left and right:
        if left.phase is not right.phase:
            return None
        # `c % K == 0 or c == len(loader)` with a counter reset before the loop: the second reads
        # like a reset-counter gate, but a window of the loader's whole length is its last batch.
        by_length = [p for p in (left, right) if _is_len(p.modulus)]
        if len(by_length) != 1:
            return left
        found = right if by_length[0] is left else left
        other: cst.BaseExpression = expr.right if found is left else expr.left  # the length gate
    else:
        found = left or right
        if found is None:
            return None
        other = expr.right if found is left else expr.left
    # `(i + 1) % K == 0 or i + 1 == len(loader)`: the other operand is a last-batch clause;
    # `(i + 1) % K != 0 and i + 1 != len(loader)` is the same clause negated (De Morgan).
    once_or = isinstance(expr.operator, cst.Or) and found.phase is Phase.ONCE
    rest_and = isinstance(expr.operator, cst.And) and found.phase is Phase.REST
    if once_or or rest_and:
        short = _short_epoch_test(other, found.modulus) if once_or and found.modulus is not None else None
        if found.has_alternative and found.short_epoch_test is None:
            short = None  # an earlier alternative covers every epoch
        return replace(found, has_alternative=True, short_epoch_test=short)
    return found


def _short_epoch_test(node: cst.BaseExpression, modulus: cst.BaseExpression) -> cst.Comparison | None:
    """`len(it) <= K` in `len(it) <= K and i + 1 == len(it)` (either order; `<`, or `K >= len(it)`):
    a last-batch clause for an epoch of at most K micro-batches only."""
    if not (isinstance(node, cst.BooleanOperation) and isinstance(node.operator, cst.And)):
        return None
    for size_test, last_batch in ((node.left, node.right), (node.right, node.left)):
        size = _at_most(size_test, modulus)
        if size is not None and isinstance(last_batch, cst.Comparison) and len(last_batch.comparisons) == 1:
            target = last_batch.comparisons[0]
            if isinstance(target.operator, cst.Equal) and (
                    same_code(last_batch.left, size) or same_code(target.comparator, size)):
                return size_test  # type: ignore[return-value]
    return None


def _at_most(node: cst.BaseExpression, modulus: cst.BaseExpression) -> cst.BaseExpression | None:
    """X in `X <= K`, `X < K`, `K >= X` or `K > X`, for K as the gate writes it."""
    if not isinstance(node, cst.Comparison) or len(node.comparisons) != 1:
        return None
    target = node.comparisons[0]
    op, left, right = target.operator, node.left, target.comparator
    if isinstance(op, cst.LessThanEqual | cst.LessThan) and same_code(right, modulus):
        return left
    if isinstance(op, cst.GreaterThanEqual | cst.GreaterThan) and same_code(left, modulus):
        return right
    return None
