"""Where the value passed to backward came from: was it divided by K, normalised some other
way, or is it the raw per-micro-batch loss?"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import libcst as cst

from gradlint.model import traversal
from gradlint.model.facts import ModuleFacts
from gradlint.model.gates import Resolver
from gradlint.model.quantities import looks_like_k, same_quantity
from gradlint.model.scopes import ScopeCache
from gradlint.model.syntax import (
    code,
    dotted,
    keyword,
    last_part,
    method_name,
    number,
    positional,
    receiver,
    string,
)
from gradlint.model.walker import Frame


class Scaling(IntEnum):
    """Ordered: when a loss combines several terms, the strongest evidence wins."""

    RAW = 0  # the loss as computed, never divided
    UNKNOWN = 1  # cannot tell (a parameter nobody binds, a literal)
    NORMALISED = 2  # by a token/sample count, a weight, a deliberate sum
    DIVIDED = 3  # by an expression (K, or something standing for it)


@dataclass(frozen=True)
class Provenance:
    scaling: Scaling
    how: str  # for messages: "divided by `K`", "from `criterion(...)`"
    divisor: cst.BaseExpression | None = None  # DIVIDED: what it was divided by
    # RAW: a mean over the micro-batch written by hand (`loss.sum() / mask.sum()`); as a reassignment
    # (`loss = torch.sum(loss) / n`) it reads the earlier values as its input, not as alternatives
    hand_mean: bool = False
    # NORMALISED only by a weight (`beta * kl`), not by a count, a sum or K: in a sum with a raw term
    # (`pg_loss + vf_coef * vf_loss`) it does not make the total divided
    weighted: bool = False


_COUNT_KEYWORDS = ("num_items", "num_items_in_batch", "normalizer", "num_tokens", "n_tokens", "sample_size")
_PASS_THROUGH = {"mean", "float", "half", "bfloat16", "double", "clone", "squeeze", "to", "contiguous",
                 "type", "type_as", "cuda", "cpu", "view", "reshape", "requires_grad_"}
_MAX_DEPTH = 12
_DELIBERATE_SUM = Provenance(Scaling.NORMALISED, "a deliberate sum")
_SUM_REDUCTION = "a loss with reduction='sum'"
_UNREAD = object()
_CONCAT = {"cat", "concat", "concatenate", "stack", "vstack", "hstack"}


class _Tracer:
    def __init__(self, facts: ModuleFacts, scopes: ScopeCache, k_literal: float | None,
                 k: cst.BaseExpression | None = None) -> None:
        self.facts = facts
        self.scopes = scopes
        self.k_literal = k_literal
        self.k = k
        self.seen: set[tuple[int, int]] = set()
        self._summed_forward: Provenance | object | None = _UNREAD

    def expr(self, node: cst.BaseExpression | None, frame, order: int | None, depth: int) -> Provenance:
        if node is None or depth > _MAX_DEPTH:
            return Provenance(Scaling.UNKNOWN, "")
        if isinstance(node, cst.BinaryOperation):
            return self._binary(node, frame, order, depth)
        if isinstance(node, cst.Call):
            return self._call(node, frame, order, depth)
        if isinstance(node, cst.Name | cst.Attribute):
            return self._name(node, frame, order, depth)
        if isinstance(node, cst.Subscript):
            return self.expr(node.value, frame, order, depth + 1) if dotted(node.value) else Provenance(Scaling.RAW, "")
        if isinstance(node, cst.UnaryOperation):
            return self.expr(node.expression, frame, order, depth + 1)
        if isinstance(node, cst.IfExp):  # `out if isinstance(out, Tensor) else out["loss"]`
            found = [self.expr(n, frame, order, depth + 1) for n in (node.body, node.orelse)]
            return self._strongest(found)
        if isinstance(node, cst.Tuple | cst.List):
            found = [self.expr(e.value, frame, order, depth + 1) for e in node.elements]
            return self._strongest(found, Provenance(Scaling.UNKNOWN, ""))
        return Provenance(Scaling.UNKNOWN, "")

    def _binary(self, node: cst.BinaryOperation, frame, order, depth) -> Provenance:
        op = node.operator
        if isinstance(op, cst.Divide | cst.FloorDivide):
            divisor = number(node.right)
            if (divisor is None and _micro_batch_count(node.right, frame.resolve, 0) and not self._by_k(node.right)
                    and self.expr(node.left, frame, order, depth + 1) == _DELIBERATE_SUM):
                # `loss.sum() / x.shape[0]`: the mean over this micro-batch, written by hand
                return Provenance(Scaling.RAW, f"a mean over the micro-batch, `{code(node)}`", hand_mean=True)
            if divisor is None or self._is_k(divisor):
                return Provenance(Scaling.DIVIDED, f"divided by `{code(node.right)}`", node.right)
            return self.expr(node.left, frame, order, depth + 1)
        if isinstance(op, cst.Multiply):
            left, right = number(node.left), number(node.right)
            factor = left if left is not None else right
            if factor is not None:
                if self.k_literal and abs(factor * self.k_literal - 1) < 1e-9:
                    return Provenance(Scaling.DIVIDED, f"multiplied by `{factor:g}`")
                other = node.right if left is not None else node.left
                return self.expr(other, frame, order, depth + 1)
            for mean, other in ((node.left, node.right), (node.right, node.left)):
                if _has_division(mean) and not _has_division(other) and not self._by_k(other):
                    found = self.expr(mean, frame, order, depth + 1)
                    if found.hand_mean:  # `torch.sum(loss) / n_tokens * dp_size`: still one micro-batch's mean
                        return found
            if _has_division(node.left) or _has_division(node.right):
                return Provenance(Scaling.DIVIDED, f"multiplied by a ratio in `{code(node)}`")
            # `loss * weight`: a deliberate weighting of the terms; not evidence of a bug.
            found = [self.expr(n, frame, order, depth + 1) for n in (node.left, node.right)]
            best = self._strongest(found)
            if best.scaling >= Scaling.NORMALISED:
                return best
            return Provenance(Scaling.NORMALISED, f"weighted in `{code(node)}`", weighted=True)
        if isinstance(op, cst.Add | cst.Subtract):
            found = [self.expr(n, frame, order, depth + 1) for n in (node.left, node.right)]
            raw = [p for p in found if p.scaling is Scaling.RAW]
            if raw and all(p.scaling is Scaling.RAW or p.weighted for p in found):
                return raw[0]  # `pg_loss + vf_coef * vf_loss`: the weight divides one term at most
            return self._strongest(found)
        return Provenance(Scaling.UNKNOWN, "")

    def _call(self, node: cst.Call, frame, order, depth) -> Provenance:
        value = self.facts.cast_value(node)
        if value is not node:
            return self.expr(value, frame, order, depth + 1)
        method = method_name(node)
        recv = receiver(node)
        if method in ("div", "div_", "true_divide", "divide", "true_divide_"):
            divisor = number(positional(node)[0]) if positional(node) else None
            if divisor is None or self._is_k(divisor):
                return Provenance(Scaling.DIVIDED, f"divided with `.{method}()`",
                                  positional(node)[0] if positional(node) else None)
        if method in ("mul", "mul_", "multiply") and positional(node) and number(positional(node)[0]) is None:
            return Provenance(Scaling.NORMALISED, f"multiplied with `.{method}()`")
        if method == "sum":
            return _DELIBERATE_SUM
        if method in ("scale", "scale_loss") and positional(node):
            return self.expr(positional(node)[0], frame, order, depth + 1)
        if method in _PASS_THROUGH and recv is not None:
            inner = self.expr(recv, frame, order, depth + 1)
            if method == "mean" and inner.weighted:
                # `-(logp * advantages).mean()`: a weighted mean over this micro-batch, not a weight
                # of the loss
                return Provenance(Scaling.RAW, f"a mean over the micro-batch, `{_short(node)}`")
            return inner
        if string(keyword(node, "reduction")) == "sum":
            return Provenance(Scaling.NORMALISED, _SUM_REDUCTION)
        if any(keyword(node, k) is not None for k in _COUNT_KEYWORDS):
            return Provenance(Scaling.NORMALISED, "normalised by an item count")
        name = dotted(node.func)
        if name == "sum" and len(node.args) == 1 and node.args[0].keyword is None and not node.args[0].star:
            # `sum(losses.values())`, `sum(terms)`: the terms' scaling, as for `a + b`.
            terms = node.args[0].value
            if isinstance(terms, cst.Call) and method_name(terms) == "values" and receiver(terms) is not None:
                terms = receiver(terms)
            if isinstance(terms, cst.Name | cst.Attribute):
                return self.expr(terms, frame, order, depth + 1)
        if frame is not None and _over_cached_features(node, frame, order):
            # GradCache-style: each backward's loss spans the whole window (cached no-grad
            # features of the other micro-batches), so the backwards sum to the window gradient.
            return Provenance(Scaling.NORMALISED, "a window-level loss over cached no-grad features")
        if name and (name in self.facts.sum_criteria or last_part(name) in self.facts.sum_criteria):
            return Provenance(Scaling.NORMALISED, _SUM_REDUCTION)
        helper = self._helper_returns(node, frame)
        if helper is not None:
            return helper
        forward = self._module_forward(node, frame)
        if forward is not None:
            return forward
        if frame is not None and any(self._given_k(a.value, frame.resolve) for a in node.args):
            # `extract_loss(report, loss_divisor)` from another module, given K (or a value made
            # from it): it may well divide by it, and its body is not in this file.
            return Provenance(Scaling.UNKNOWN, f"from `{_short(node)}`, given K")
        return Provenance(Scaling.RAW, f"from `{_short(node)}`")

    def _given_k(self, node: cst.BaseExpression, resolve: Resolver, depth: int = 0) -> bool:
        """K itself, or a name bound (through parameters and locals) to a value that mentions K
        (`loss_divisor` given `n = min(update_frequency, remaining)`)."""
        if self._by_k(node):
            return True
        name = dotted(node)
        if name is None or depth > 2:
            return False
        values = resolve(name)
        return 0 < len(values) <= 3 and all(
            any(self._by_k(n) for n in _names_and_attributes(value))
            or (dotted(value) is not None and self._given_k(value, inner, depth + 1))
            for value, inner in values)

    def _module_forward(self, node: cst.Call, frame) -> Provenance | None:
        """`model(x, y)` where a module class of this file returns its loss from `forward` with
        `reduction="sum"` (modded-nanogpt's `F.cross_entropy(..., reduction="sum")`): a deliberate
        sum. Which class `model` is, is not traced: any such `forward` counts, and a sum only (a
        `forward` returning a mean says nothing about what `model` is). Read once per module."""
        if not isinstance(node.func, cst.Name | cst.Attribute) or dotted(node.func) is None:
            return None
        if self._summed_forward is _UNREAD:
            self._summed_forward = None  # while reading: calls inside those forwards find nothing
            for cls, method in self.facts.methods.get("forward", []):
                inner = Frame(self.scopes.get(method), cls)
                if any(self.expr(r, inner, None, 1).how == _SUM_REDUCTION for r in inner.scope.returns):
                    self._summed_forward = Provenance(
                        Scaling.NORMALISED, f"{_SUM_REDUCTION} (`{cls.name.value}.forward`)")
                    break
        return self._summed_forward  # type: ignore[return-value]

    def _helper_returns(self, node: cst.Call, frame) -> Provenance | None:
        func = node.func
        target: cst.FunctionDef | None = None
        if isinstance(func, cst.Name):
            target = self.facts.functions.get(func.value)
        elif isinstance(func, cst.Attribute):
            candidates = self.facts.methods.get(func.attr.value, [])
            if dotted(func.value) in ("self", "cls") and frame is not None and frame.cls is not None:
                target = next((m for c, m in candidates if c is frame.cls), None)
            if target is None and len(candidates) == 1:
                target = candidates[0][1]
        if target is None or (id(target), 0) in self.seen:
            return None
        self.seen.add((id(target), 0))
        inner = Frame(self.scopes.get(target), frame.cls if frame else None)
        found = [self.expr(r, inner, None, 1) for r in inner.scope.returns]
        if not found:
            return None
        return self._strongest(found)

    def _name(self, node: cst.BaseExpression, frame, order: int | None, depth: int) -> Provenance:
        text = dotted(node)
        if text is None or frame is None:
            return Provenance(Scaling.UNKNOWN, "")
        key = (id(frame.scope), hash(text))
        if key in self.seen:
            return Provenance(Scaling.RAW, "")
        self.seen.add(key)
        try:
            bound = frame.binding(text)
            if bound is not None:
                value, caller = bound
                return self.expr(value, caller, None, depth + 1)
            assignments = frame.scope.before(text, order)
            if not assignments:
                if text in frame.scope.params:
                    return Provenance(Scaling.UNKNOWN, f"the parameter `{text}`")
                return Provenance(Scaling.RAW if "." in text else Scaling.UNKNOWN, "")
            found: list[Provenance] = []
            for a in assignments:
                if a.operator is not None:
                    if isinstance(a.operator, cst.DivideAssign | cst.FloorDivideAssign):
                        divisor = number(a.value)
                        if divisor is None or self._is_k(divisor):
                            found.append(Provenance(Scaling.DIVIDED, f"divided by `{code(a.value)}`", a.value))
                    elif isinstance(a.operator, cst.MultiplyAssign):
                        factor = number(a.value)
                        if factor is None:
                            found.append(Provenance(Scaling.NORMALISED, f"multiplied by `{code(a.value)}`"))
                        elif self.k_literal and abs(factor * self.k_literal - 1) < 1e-9:
                            found.append(Provenance(Scaling.DIVIDED, f"multiplied by `{factor:g}`"))
                    continue
                value = self.expr(a.value, frame, a.order, depth + 1)
                if value.hand_mean and _mentions(a.value, {last_part(text)}):
                    # `loss = loss * mask` then `loss = torch.sum(loss) / valid`: the mask weights the
                    # mean's terms; only a division by K before it still scales what reaches backward
                    found = [f for f in found if f.scaling is Scaling.DIVIDED]
                found.append(value)
            return self._strongest(found, Provenance(Scaling.RAW, ""))
        finally:
            self.seen.discard(key)

    def _strongest(self, found: list[Provenance], default: Provenance | None = None) -> Provenance:
        """The strongest evidence; among divisions, one by K, then one that names its divisor. In
        `x = a * (w / z)` then `x = x / K` (or `x = a / norm` then `x /= K`) every assignment says
        "divided", and the value that reaches backward is divided by K."""
        if not found and default is not None:
            return default
        return max(found, key=lambda p: (p.scaling, self._by_k(p.divisor), p.divisor is not None))

    def _by_k(self, divisor: cst.BaseExpression | None) -> bool:
        return divisor is not None and (looks_like_k(divisor) or same_quantity(divisor, self.k)
                                        or (self.k_literal is not None and number(divisor) == self.k_literal))

    def _is_k(self, literal: float) -> bool:
        return self.k_literal is not None and literal == self.k_literal


def _over_cached_features(node: cst.Call, frame: Frame, order: int | None) -> bool:
    """`torch.cat(cached[:j] + [live] + ...)` where `cached` was filled under no_grad, as the call
    itself or as a name passed to it (`loss = contrastive(full)`)."""
    scope = frame.scope
    if not scope.no_grad_names:
        return False
    candidates: list[cst.BaseExpression] = [node]
    for arg in node.args:
        name = dotted(arg.value)
        if name is not None:
            candidates += [a.value for a in scope.before(name, order) if a.operator is None]
            candidates += [a.value for a in scope.item_assignments.get(name, []) if a.operator is None]
    concatenations = [c for c in candidates if isinstance(c, cst.Call) and last_part(dotted(c.func)) in _CONCAT]
    if not concatenations:
        return False  # the usual case: decided before the aliases, which visit every assignment
    cached = set(scope.no_grad_names)
    for _ in range(2):  # aliases: `accumulated = accum_features[key]`, and one more step
        cached |= {name for name, found in scope.assignments.items()
                   if name not in cached and any(_mentions(a.value, cached) for a in found)}
    return any(_mentions(c, cached) for c in concatenations)


def _mentions(node: cst.CSTNode, names: set[str]) -> bool:
    return bool(names) and not traversal.names_in(node).isdisjoint(names)


def _names_and_attributes(node: cst.BaseExpression) -> list[cst.BaseExpression]:
    found: list[cst.BaseExpression] = []

    class Collect(cst.CSTVisitor):
        def visit_Name(self, n: cst.Name) -> None:
            found.append(n)

        def visit_Attribute(self, n: cst.Attribute) -> None:
            found.append(n)

    traversal.visit(node, Collect())
    return found


def _micro_batch_count(node: cst.BaseExpression, resolve: Resolver, depth: int) -> bool:
    """The size of this micro-batch (`_micro_batch_size`), or the count of its tokens computed where
    the loss is: `mask.sum()`, `torch.sum(batch["loss_mask"])`, `(labels != -100).sum()`, with `+ eps`,
    `.item()` or through a local name (`valid = torch.sum(mask)` ... `/ (valid + 1e-8)`). A
    parameter is not followed (it may be the window's count), nor a sum over a comprehension (the
    window's micro-batches counted together)."""
    if depth > 3:
        return False
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add):
        if number(node.right) is not None:
            return _micro_batch_count(node.left, resolve, depth + 1)
        if number(node.left) is not None:
            return _micro_batch_count(node.right, resolve, depth + 1)
        return False
    if _micro_batch_size(node):
        return True
    if isinstance(node, cst.Call):
        name = method_name(node)
        if name in ("item", "float", "clamp", "clamp_min") and isinstance(node.func, cst.Attribute):
            return _micro_batch_count(node.func.value, resolve, depth + 1)
        if name == "sum" and not node.args and isinstance(node.func, cst.Attribute):
            return _counts_tokens(node.func.value)
        if dotted(node.func) == "torch.sum" and len(node.args) == 1:
            return _counts_tokens(node.args[0].value)
        return False
    text = dotted(node)
    if text is not None:
        values = resolve(text)
        if len(values) != 1 or values[0][0] is node:
            return False
        value, inner = values[0]
        return _micro_batch_count(value, inner, depth + 1)
    return False


def _counts_tokens(summed: cst.BaseExpression) -> bool:
    """A mask of this micro-batch (`mask`, `batch["loss_mask"]`, `labels != -100`), not a list of
    per-micro-batch counts."""
    class Lists(cst.CSTVisitor):
        found = False

        def on_visit(self, n: cst.CSTNode) -> bool:
            if isinstance(n, cst.ListComp | cst.GeneratorExp | cst.List | cst.Tuple) or (
                    isinstance(n, cst.Call) and any(number(a.value) is None for a in n.args)):
                self.found = True  # conversions (`.float()`, `.ne(-100)`) pass; `torch.stack(counts)` does not
            return not self.found

    finder = Lists()
    traversal.visit(summed, finder)
    return not finder.found


def _micro_batch_size(node: cst.BaseExpression) -> bool:
    """`x.shape[0]`, `x.size(0)`, `x.numel()`: the size of a tensor of this micro-batch. Not
    `len(...)`, which may count the window's micro-batches (`len(chunks)`), nor a named count
    (`num_tokens` may be the window's)."""
    value = node.value if isinstance(node, cst.Subscript) else None
    if isinstance(value, cst.Attribute) and value.attr.value == "shape" and len(node.slice) == 1:  # type: ignore[attr-defined]
        index = node.slice[0].slice  # type: ignore[attr-defined]
        return isinstance(index, cst.Index) and number(index.value) == 0
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
        name = method_name(node)
        args = positional(node)
        return (name == "numel" and not node.args) or (name == "size" and len(args) == 1 and number(args[0]) == 0)
    return False


def _has_division(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Divide)


def _short(node: cst.Call) -> str:
    name = dotted(node.func)
    return f"{name}(...)" if name else code(node)[:40]


def trace(value: cst.BaseExpression | None, frame: Frame, order: int | None, facts: ModuleFacts,
          scopes: ScopeCache, k_literal: float | None, k: cst.BaseExpression | None = None) -> Provenance:
    """How the backpropagated `value` was scaled (`k`: K as written, where known)."""
    return _Tracer(facts, scopes, k_literal, k).expr(value, frame, order, 0)
