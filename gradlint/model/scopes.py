"""Per-function assignment tables, for resolving flags and tracing the backpropagated loss."""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst

from gradlint.model import traversal
from gradlint.model.syntax import dotted


@dataclass(frozen=True)
class Assignment:
    order: int  # lexical position in the function
    value: cst.BaseExpression
    operator: cst.BaseAugOp | None = None  # `loss /= K`
    index: int | None = None  # position in a tuple target: `loss, logs = f()`
    in_loop: bool = False  # under a for/while of the same function: the value changes as it runs


@dataclass
class Scope:
    node: cst.CSTNode
    assignments: dict[str, list[Assignment]] = field(default_factory=dict)
    params: list[str] = field(default_factory=list)
    returns: list[cst.BaseExpression] = field(default_factory=list)
    # name -> orders where it is set to 0 (`count = 0`) or incremented (`count += 1`)
    zeroed: dict[str, list[int]] = field(default_factory=dict)
    incremented: dict[str, list[int]] = field(default_factory=dict)
    call_order: dict[int, int] = field(default_factory=dict)  # id(Call) -> lexical position
    # names filled under `torch.no_grad()` (`feats.append(model(x))`): cached, detached values
    no_grad_names: set[str] = field(default_factory=set)
    # `inputs[key] = value`: item assignments by container name (GradCache-style feature dicts)
    item_assignments: dict[str, list[Assignment]] = field(default_factory=dict)

    def before(self, name: str, order: int | None) -> list[Assignment]:
        found = self.assignments.get(name, [])
        if order is None:
            return found
        earlier = [a for a in found if a.order < order]
        return earlier or found  # a loop-carried value may be assigned later in the body


_IN_PLACE: dict[str, cst.BaseAugOp] = {
    "div_": cst.DivideAssign(), "true_divide_": cst.DivideAssign(), "divide_": cst.DivideAssign(),
    "mul_": cst.MultiplyAssign(), "multiply_": cst.MultiplyAssign(),
}


class _ScopeCollector(cst.CSTVisitor):
    """Records assignments in one function body, without entering nested functions or classes."""

    def __init__(self, scope: Scope, root: cst.CSTNode) -> None:
        self.scope = scope
        self.root = root
        self.order = 0
        self.loop_depth = 0
        self.no_grad_depth = 0

    # `order` counts the nodes with a hook below, in source order: what it is compared against
    # (assignments, calls, `= 0` and `+= 1` of the same scope) all have one, so counting every
    # node would order them the same; the fast visit then passes the others over without a call.
    def visit_For(self, node: cst.For) -> None:
        self.order += 1
        self.loop_depth += 1

    def leave_For(self, original_node: cst.For) -> None:
        self.loop_depth -= 1

    def visit_While(self, node: cst.While) -> None:
        self.order += 1
        self.loop_depth += 1

    def leave_While(self, original_node: cst.While) -> None:
        self.loop_depth -= 1

    def visit_With(self, node: cst.With) -> None:
        self.order += 1
        if _is_no_grad(node):
            self.no_grad_depth += 1

    def leave_With(self, original_node: cst.With) -> None:
        if _is_no_grad(original_node):
            self.no_grad_depth -= 1

    def visit_Call(self, node: cst.Call) -> None:
        self.order += 1
        self.scope.call_order[id(node)] = self.order
        func = node.func
        if type(func) is cst.Attribute and func.attr.value in _IN_PLACE and len(node.args) == 1 \
                and node.args[0].keyword is None and not node.args[0].star:
            # `loss.div_(K)`, `loss.mul_(n / total)` (composer): the tensor is scaled in place, as
            # by `loss /= K` and `loss *= n / total`
            self._add(func.value, node.args[0].value, _IN_PLACE[func.attr.value])
        if self.no_grad_depth and type(func) is cst.Attribute and func.attr.value in ("append", "extend", "insert"):
            container = func.value
            filled = dotted(container.value if type(container) is cst.Subscript else container)
            if filled:
                self.scope.no_grad_names.add(filled)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self.order += 1
        return node is self.root

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        self.order += 1
        return node is self.root

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        self.order += 1
        return False

    def _add(self, target: cst.BaseExpression, value: cst.BaseExpression,
             operator: cst.BaseAugOp | None = None, index: int | None = None) -> None:
        if isinstance(target, cst.Tuple | cst.List):
            for i, element in enumerate(target.elements):
                inner = element.value
                if isinstance(inner, cst.StarredElement):
                    continue
                self._add(inner, value, operator, i)
            return
        if isinstance(target, cst.Subscript):
            container = dotted(target.value)
            if container is not None:
                item = Assignment(self.order, value, operator, index, self.loop_depth > 0)
                self.scope.item_assignments.setdefault(container, []).append(item)
                if self.no_grad_depth:
                    self.scope.no_grad_names.add(container)
            return
        name = dotted(target)
        if name is None:
            return
        assignment = Assignment(self.order, value, operator, index, self.loop_depth > 0)
        if self.no_grad_depth:
            self.scope.no_grad_names.add(name)
        self.scope.assignments.setdefault(name, []).append(assignment)
        if operator is None and isinstance(value, cst.Integer) and value.value == "0":
            self.scope.zeroed.setdefault(name, []).append(self.order)
        if isinstance(operator, cst.AddAssign):
            self.scope.incremented.setdefault(name, []).append(self.order)

    def visit_Assign(self, node: cst.Assign) -> None:
        self.order += 1
        for target in node.targets:
            self._add(target.target, node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.order += 1
        if node.value is not None:
            self._add(node.target, node.value)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self.order += 1
        self._add(node.target, node.value, node.operator)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self.order += 1
        self._add(node.target, node.value)

    def visit_WithItem(self, node: cst.WithItem) -> None:
        self.order += 1
        if node.asname is not None:
            self._add(node.asname.name, node.item)

    def visit_Return(self, node: cst.Return) -> None:
        self.order += 1
        if node.value is not None:
            self.scope.returns.append(node.value)


def _is_no_grad(node: cst.With) -> bool:
    for item in node.items:
        call = item.item
        func = call.func if isinstance(call, cst.Call) else call
        name = dotted(func) or ""
        if name.rsplit(".", 1)[-1] in ("no_grad", "inference_mode"):
            return True
    return False


def build_scope(node: cst.FunctionDef | cst.Module) -> Scope:
    scope = Scope(node)
    if isinstance(node, cst.FunctionDef):
        params = node.params
        for p in [*params.posonly_params, *params.params, *params.kwonly_params]:
            scope.params.append(p.name.value)
    traversal.visit(node, _ScopeCollector(scope, node))
    return scope


class ScopeCache:
    def __init__(self) -> None:
        self._scopes: dict[int, Scope] = {}

    def get(self, node: cst.FunctionDef | cst.Module) -> Scope:
        key = id(node)
        if key not in self._scopes:
            self._scopes[key] = build_scope(node)
        return self._scopes[key]
