"""Where an event sits in the syntax tree, as fixes need it: its statement, block and function,
and whether an expression's names mean the same thing in another function."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from gradlint.fixes.edits import EditKind, NodeEdit
from gradlint.model import Event, Kind, ModuleModel, TrainingLoop, traversal
from gradlint.model.syntax import reads_layout, written


def parent(model: ModuleModel, node: cst.CSTNode) -> cst.CSTNode | None:
    return model.parents.get(id(node))


def ancestors(model: ModuleModel, node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    current = parent(model, node)
    while current is not None:
        yield current
        current = parent(model, current)


def inside(model: ModuleModel, node: cst.CSTNode, container: cst.CSTNode) -> bool:
    return any(a is container for a in ancestors(model, node))


def statement(model: ModuleModel, node: cst.CSTNode) -> cst.SimpleStatementLine | None:
    """The line whose one statement is `node` (`opt.zero_grad()`, `p.grad = None`), or that assigns
    it (`norm = clip_grad_norm_(...)`); None when the line holds more (`a(); b()`) or it is nested
    in an expression."""
    if isinstance(node, cst.BaseSmallStatement):
        small: cst.CSTNode | None = node
    else:
        small = parent(model, node)
        if not (isinstance(small, cst.Expr | cst.Assign) and small.value is node):
            return None
    line = parent(model, small) if small is not None else None
    if isinstance(line, cst.SimpleStatementLine) and len(line.body) == 1:
        return line
    return None


def block(model: ModuleModel, stmt: cst.CSTNode) -> tuple[cst.IndentedBlock, int] | None:
    """The indented block holding `stmt`, and its index there."""
    suite = parent(model, stmt)
    if not isinstance(suite, cst.IndentedBlock):
        return None
    for index, child in enumerate(suite.body):
        if child is stmt:
            return suite, index
    return None


def owner(model: ModuleModel, stmt: cst.CSTNode) -> cst.CSTNode | None:
    """The compound statement (or function) whose block holds `stmt`."""
    found = block(model, stmt)
    return parent(model, found[0]) if found else None


def function_of(model: ModuleModel, node: cst.CSTNode) -> cst.FunctionDef | cst.Module:
    for a in ancestors(model, node):
        if isinstance(a, cst.FunctionDef):
            return a
    return model.module


def class_of(model: ModuleModel, function: cst.CSTNode) -> cst.ClassDef | None:
    for a in ancestors(model, function):
        if isinstance(a, cst.ClassDef):
            return a
        if isinstance(a, cst.FunctionDef):
            return None
    return None


def source(node: cst.CSTNode) -> str:
    """A node's text as written (comments included), without the lines above a statement."""
    if isinstance(node, cst.SimpleStatementLine | cst.BaseCompoundStatement):
        reads_layout(node)
        node = node.with_changes(leading_lines=())
    return written(node)


def statement_text(stmt: cst.CSTNode) -> str | None:
    """A statement's lines (trailing comment kept) for moving or copying; None when it holds a
    string over several lines, which re-indenting would change."""
    text = source(stmt).rstrip("\r\n")
    if '"""' in text or "'''" in text:
        return None
    return text


def comments_above(stmt: cst.CSTNode) -> list[str]:
    """The own-line comments right above a statement (no blank line between): they describe it."""
    found: list[str] = []
    reads_layout(stmt)
    for line in reversed(getattr(stmt, "leading_lines", ())):
        if line.comment is None:
            break
        found.insert(0, line.comment.value)
    return found


def moving(model: ModuleModel, stmt: cst.CSTNode) -> tuple[list[NodeEdit], list[str], str] | None:
    """Edits that take a statement out, the comments right above it and its own text (trailing
    comment included): the comments travel with the code when it moves."""
    text = statement_text(stmt)
    edits = removal(model, stmt)  # type: ignore[arg-type]
    if text is None or edits is None:
        return None
    above = comments_above(stmt)
    if not (above and len(edits) == 1 and edits[0].kind is EditKind.REMOVE and edits[0].node is stmt):
        return edits, [], text
    return [NodeEdit(EditKind.REMOVE, stmt, above=len(above))], above, text


def root_names(expr: cst.CSTNode) -> set[str]:
    """Names an expression reads: `self` and `args` in `self.opt.step(args.k)`."""
    found: set[str] = set()

    class _Roots(cst.CSTVisitor):
        def visit_Attribute(self, node: cst.Attribute) -> bool:
            traversal.visit(node.value, self)
            return False

        def visit_Arg(self, node: cst.Arg) -> bool:
            traversal.visit(node.value, self)
            return False

        def visit_Name(self, node: cst.Name) -> None:
            found.add(node.value)

        def visit_Lambda(self, node: cst.Lambda) -> bool:
            return False

    traversal.visit(expr, _Roots())
    return found


def portable(model: ModuleModel, expr: cst.CSTNode, target: cst.CSTNode) -> bool:
    """Whether `expr`, written where it is, reads the same names at `target` (another node): the
    same function, or only names neither function (nor one around it) binds, which Python then
    reads from the module (or builtins) in both; `self` only between methods of one class."""
    here, there = function_of(model, expr), function_of(model, target)
    if here is there:
        return True
    local = _locals(model, here) | _locals(model, there)
    for name in root_names(expr):
        if name in ("self", "cls"):
            if not (isinstance(here, cst.FunctionDef) and isinstance(there, cst.FunctionDef)):
                return False
            if class_of(model, here) is None or class_of(model, here) is not class_of(model, there):
                return False
        elif name in local:
            return False
    return True


def _locals(model: ModuleModel, function: cst.CSTNode) -> set[str]:
    """Names bound in a function and in the functions around it (closures)."""
    names: set[str] = set()
    for node in (function, *ancestors(model, function)):
        if isinstance(node, cst.FunctionDef):
            names |= _bound(node)
    return names


def _bound(function: cst.FunctionDef) -> set[str]:
    """Every name a function binds, as a superset: parameters, assignment, `for`, `with ... as`,
    `except ... as`, imports, nested definitions, walrus, `global`/`nonlocal`."""
    names = {p.name.value for p in (*function.params.posonly_params, *function.params.params,
                                    *function.params.kwonly_params)}
    for star in (function.params.star_arg, function.params.star_kwarg):
        if isinstance(star, cst.Param):
            names.add(star.name.value)

    def targets(node: cst.CSTNode | None) -> None:
        if isinstance(node, cst.Name):
            names.add(node.value)
        elif isinstance(node, cst.Tuple | cst.List):
            for element in node.elements:
                targets(element.value)
        elif isinstance(node, cst.StarredElement):
            targets(node.value)

    class _Binds(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            names.add(node.name.value)
            return node is function

        def visit_ClassDef(self, node: cst.ClassDef) -> bool:
            names.add(node.name.value)
            return False

        def visit_Lambda(self, node: cst.Lambda) -> bool:
            return False

        def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
            targets(node.target)

        def visit_AugAssign(self, node: cst.AugAssign) -> None:
            targets(node.target)

        def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
            targets(node.target)

        def visit_For(self, node: cst.For) -> None:
            targets(node.target)

        def visit_CompFor(self, node: cst.CompFor) -> None:
            targets(node.target)

        def visit_AsName(self, node: cst.AsName) -> None:  # with / except / import ... as
            targets(node.name)

        def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
            targets(node.target)

        def visit_Import(self, node: cst.Import) -> None:
            names.update(a.evaluated_alias or a.evaluated_name.split(".")[0] for a in node.names)

        def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
            if not isinstance(node.names, cst.ImportStar):
                names.update(a.evaluated_alias or a.evaluated_name for a in node.names)

        def visit_Global(self, node: cst.Global) -> None:
            names.update(n.name.value for n in node.names)

        def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
            names.update(n.name.value for n in node.names)

    traversal.visit(function, _Binds())
    return names


def loop_function(model: ModuleModel, loop: TrainingLoop) -> cst.CSTNode:
    node = loop.loop.node
    return node if loop.loop.implicit else function_of(model, node)


def in_loop_function(model: ModuleModel, loop: TrainingLoop, node: cst.CSTNode) -> bool:
    return function_of(model, node) is loop_function(model, loop)


def event_statements(model: ModuleModel, loop: TrainingLoop, *kinds: Kind) -> dict[int, Event]:
    """id(statement) -> the event it performs, for events of these kinds."""
    out: dict[int, Event] = {}
    for event in loop.of_kind(*kinds):
        stmt = statement(model, event.node)
        if stmt is not None:
            out[id(stmt)] = event
    return out


_PURE = (cst.Name, cst.Attribute, cst.Comparison, cst.BooleanOperation, cst.UnaryOperation,
         cst.BinaryOperation, cst.Integer, cst.Float, cst.SimpleString, cst.Subscript, cst.Index,
         cst.ComparisonTarget, cst.SubscriptElement, cst.Arg)


def side_effect_free(expr: cst.CSTNode) -> bool:
    """No calls (but `len(...)`) and nothing but names, attributes, literals and operators."""
    if isinstance(expr, cst.Call):
        return (isinstance(expr.func, cst.Name) and expr.func.value == "len"
                and all(side_effect_free(a.value) for a in expr.args))
    if not isinstance(expr, _PURE) and not isinstance(expr, cst.BaseBinaryOp | cst.BaseCompOp
                                                        | cst.BaseBooleanOp | cst.BaseUnaryOp
                                                        | cst.BaseParenthesizableWhitespace
                                                        | cst.LeftParen | cst.RightParen | cst.Dot):
        return False
    return all(side_effect_free(c) for c in expr.children if not isinstance(c, cst.BaseParenthesizableWhitespace))


def removal(model: ModuleModel, stmt: cst.SimpleStatementLine) -> list[NodeEdit] | None:
    """Edits that delete a statement and keep the code valid: its lines; the whole `else:` or
    side-effect-free `if` it was the only statement of; or `pass` where a block would be empty."""
    found = block(model, stmt)
    if found is None:
        return None
    suite, _ = found
    if len(suite.body) > 1:
        return [NodeEdit(EditKind.REMOVE, stmt)]
    container = parent(model, suite)
    if isinstance(container, cst.Else):
        return [NodeEdit(EditKind.REMOVE, container)]
    if isinstance(container, cst.If) and container.orelse is None and side_effect_free(container.test):
        holder = parent(model, container)
        if isinstance(holder, cst.IndentedBlock) and len(holder.body) > 1:
            return [NodeEdit(EditKind.REMOVE, container)]
    if isinstance(container, cst.If | cst.With | cst.FunctionDef):
        return [NodeEdit(EditKind.REPLACE_LINES, stmt, "pass")]
    return None  # a loop left with an empty body: a fix would only hide that


def expr_text(expr: cst.BaseExpression) -> str:
    """An expression's text without its own parentheses (positions exclude them too)."""
    reads_layout(expr)
    if getattr(expr, "lpar", None):
        expr = expr.with_changes(lpar=[], rpar=[])
    return written(expr)


_ATOMS = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float)


def as_divisor(expr: cst.BaseExpression) -> str:
    """`K`, `args.k`, `(a * b)`: safe on the right of `/`."""
    text = expr_text(expr)
    return text if isinstance(expr, _ATOMS) else f"({text})"


def as_dividend(expr: cst.BaseExpression) -> str:
    """Safe on the left of `/`: atoms, unary operators, and `*`-level operations as they are."""
    text = expr_text(expr)
    multiplicative = (cst.Multiply, cst.Divide, cst.FloorDivide, cst.Modulo, cst.MatrixMultiply, cst.Power)
    if isinstance(expr, _ATOMS) or (isinstance(expr, cst.UnaryOperation) and not isinstance(expr.operator, cst.Not)):
        return text
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, multiplicative):
        return text
    return f"({text})"
