"""The second, structural stage: blank out the definitions the model can never look at.

The model walks only functions that run a backward (directly or through same-module helpers, by
name) and inlines the helpers those functions call, by name. A top-level function or method that
is neither, nor calls a constructor the module facts record (an optimizer, scheduler, scaler,
`Accelerator`, `deepspeed.initialize`, a `reduction="sum"` criterion), nor imports deepspeed, can
change no finding. In big library files (torch's `distributed_test.py` is 460 kB with a handful
of training loops) such definitions are most of the file, and LibCST's parse and visits cost ten
times the stdlib `ast` pass that finds them.

Blanked lines are emptied in place (the first becomes `pass`, so a block is never left empty):
every line number and column of what remains is unchanged, so findings land where they would in
the full file. Stdlib `ast` decides; when it cannot parse the file, the file is kept whole and
LibCST reports the error as before.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Iterable, Iterator

from gradlint.model.facts import (
    BACKWARD_CALLS,
    FACT_METHODS,
    GRAD_CLEARING,
    SYNC_CONTROL,
    WHOLE_FILE_ATTRIBUTES,
    records_call_fact,
    records_fact,
)
from gradlint.model.quantities import is_k_name

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")  # Python's own line ends, not str.splitlines'
_Def = ast.FunctionDef | ast.AsyncFunctionDef


# Below this size the stdlib pass costs about what it saves (training scripts are mostly loop).
MIN_BYTES = 16_000


def relevant_source(source: str, tree: ast.Module | None = None) -> str:
    """`source` with the definitions no rule can depend on blanked; unchanged when unsure.
    `tree`: CPython's tree of `source`, when the caller has it already."""
    if len(source) < MIN_BYTES:
        return source
    if tree is None:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            return source
    lines = source_lines(source)
    return blanked(source, blank_spans(source, tree, lines), lines)


def blank_spans(source: str, tree: ast.Module, lines: list[str]) -> list[tuple[int, int]]:
    """The (first, last) lines of the statements no rule can depend on (`lines`: `source_lines`);
    none below MIN_BYTES, nor when the walk nests too deep for Python (the file is kept whole)."""
    if len(source) < MIN_BYTES:
        return []
    try:
        return list(_irrelevant_units(tree, lines))
    except RecursionError:
        return []


def blanked(source: str, spans: list[tuple[int, int]], lines: list[str]) -> str:
    """`source` with the `spans` emptied in place (the first line becomes `pass`)."""
    if not spans:
        return source
    text = list(lines)
    for start, end in spans:
        first = text[start - 1]
        indent = first[: len(first) - len(first.lstrip(" \t\f"))]
        text[start - 1] = indent + "pass"
        for row in range(start, end):
            text[row] = ""
        # Joined into one logical line by backslashes: LibCST then reads the span as whitespace of
        # the `pass` line, where empty lines would each become an `EmptyLine` node (27,000 of them
        # cost 0.4 s in torch's common_methods_invocations.py). The last line only ends the statement.
        for row in range(start - 1, end - 1):
            text[row] += (" \\" if row == start - 1 else "\\") + _ending(lines[row])
        text[end - 1] += _ending(lines[end - 1]) or "\n"  # a backslash cannot precede the end of file
    return "".join(text)


def source_lines(source: str) -> list[str]:
    """The lines of `source` with their ends, split where Python splits them (not str.splitlines)."""
    return [m.group() for m in _LINE.finditer(source)]


def _ending(line: str) -> str:
    return line[len(line.rstrip("\r\n")) :]


def _units(body: list[ast.stmt]) -> Iterator[_Def]:
    """The definitions that can be blanked one by one: top-level functions and the methods of
    classes (nested ones too). Anything under `if`/`try` stays (rare, and a block must not empty)."""
    for node in body:
        if isinstance(node, _Def):
            yield node
        elif isinstance(node, ast.ClassDef):
            yield from _units(node.body)


def _irrelevant_units(tree: ast.Module, source_lines: list[str]) -> Iterator[tuple[int, int]]:
    owners = _Owners()
    marked = owners.visit_module(tree)
    needed = owners.reaching_backward()
    # Everything a needed function calls by name may be inlined; close over those names.
    names = set().union(*(owners.calls.get(o, set()) for o in needed)) if needed else set()
    frontier = set(names)
    while frontier:
        grown: set[int] = set()
        for name in frontier:
            grown |= owners.defs.get(name, set())
        grown -= needed
        needed |= grown
        new = set().union(*(owners.calls.get(o, set()) for o in grown)) - names if grown else set()
        names |= new
        frontier = new
    keep = set(owners.defs) | owners.bound
    for unit in _units(tree.body):
        if owners.inner[id(unit)] & (needed | owners.with_facts):
            yield from _inert_runs(unit.body, keep, source_lines)
            continue
        yield statement_start(unit), unit.end_lineno or unit.lineno
    if 0 not in needed:
        # Module-level code is walked only when it reaches a backward; otherwise only its facts
        # and the definitions inside it count (torch's 27k-line tables of test cases do not).
        for statement in tree.body:
            if not isinstance(statement, _Def | ast.ClassDef) and id(statement) not in marked:
                yield statement.lineno, statement.end_lineno or statement.lineno


# Inside the definitions that stay, a statement that only calls for its effect (`parser.add_argument(
# ...)`, `logger.info(...)`, `progress_bar.set_postfix(...)`) is blanked too when nothing in it is
# anything the model or a rule reads: no call it could inline (a name defined in the module), no
# name that could be a gradient event, a fact, a wrapped model, K or a whole-file read. A
# discarded value carries no provenance, so nothing else can depend on it. (`parse_args` alone is
# 17-21 kB of `add_argument` calls in each diffusers training script.)
_MEANINGFUL = re.compile(
    r"(?i)step|zero|grad|clip|scale|backward|update|sync|accum|prepare|initiali[sz]e|shard|hook|loss|"
    r"optim|sched|deepspeed|engine|fabric|accelerat|trainer|lightning|setdefault|setitem|len|append|extend|insert|"
    r"div|mul|sum|entropy|warmup|register|no_grad|inference_mode"
)
_PRINTING = frozenset({"print", "pprint"})
_DISALLOWED = (ast.NamedExpr, ast.Lambda, ast.Yield, ast.YieldFrom, ast.Await, ast.Starred)


def _inert_runs(body: list[ast.stmt], keep: set[str], source_lines: list[str]) -> Iterator[tuple[int, int]]:
    """Spans of consecutive inert statements in `body` and the blocks nested in it, each made of
    whole lines (no statement shares a line with one that stays)."""
    run: tuple[int, int] | None = None
    previous_end = 0
    for index, statement in enumerate(body):
        following = body[index + 1].lineno if index + 1 < len(body) else None
        own_lines = (statement.lineno > previous_end and starts_line(statement, source_lines)
                     and (following is None or following > (statement.end_lineno or statement.lineno)))
        if own_lines and _inert(statement, keep):
            end = statement.end_lineno or statement.lineno
            run = (run[0], end) if run is not None else (statement.lineno, end)
        else:
            if run is not None:
                yield run
                run = None
            for block in _blocks(statement):
                yield from _inert_runs(block, keep, source_lines)
        previous_end = statement.end_lineno or statement.lineno
    if run is not None:
        yield run


def statement_start(statement: ast.stmt) -> int:
    """The first line of a statement, its decorators included (where a blanked span starts)."""
    decorators = getattr(statement, "decorator_list", None)
    return min(statement.lineno, *(d.lineno for d in decorators)) if decorators else statement.lineno


def starts_line(statement: ast.stmt, source_lines: list[str]) -> bool:
    """Whether only indentation comes before the statement on its first line."""
    line = source_lines[statement.lineno - 1]
    return len(line) - len(line.lstrip(" \t\f")) == statement.col_offset


def _blocks(statement: ast.stmt) -> Iterator[list[ast.stmt]]:
    for field in ("body", "orelse", "finalbody"):
        value = getattr(statement, field, None)
        if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
            yield value
    for handler in getattr(statement, "handlers", []):
        yield handler.body
    for case in getattr(statement, "cases", []):
        yield case.body


def _inert(statement: ast.stmt, keep: set[str]) -> bool:
    if type(statement) is not ast.Expr or type(statement.value) is not ast.Call:
        return False
    stack: list[ast.AST] = [statement.value]
    while stack:  # every node of the expression, in any order (`ast.walk` is a generator per node)
        node = stack.pop()
        kind = type(node)
        if kind is ast.Name:
            if _meaningful(node.id, keep):  # type: ignore[attr-defined]
                return False
            continue
        if kind is ast.Attribute:
            attr = node.attr  # type: ignore[attr-defined]
            if attr in WHOLE_FILE_ATTRIBUTES or _meaningful(attr, keep):
                return False
            stack.append(node.value)  # type: ignore[attr-defined]
            continue
        if kind is ast.Constant:
            value = node.value  # type: ignore[attr-defined]
            if isinstance(value, str) and _meaningful_text(value):
                return False
            continue
        if kind is ast.Call:
            func = node.func  # type: ignore[attr-defined]
            if type(func) is ast.Name and func.id not in _PRINTING:
                return False  # `model(x)`, a helper, a constructor: too many ways to matter
            if type(func) not in (ast.Name, ast.Attribute) or records_call_fact(_dotted(func)):
                return False
            if any(k.arg is None or _meaningful(k.arg, keep) for k in node.keywords):  # type: ignore[attr-defined]
                return False
        elif kind in _DISALLOWED:
            return False
        _push_fields(node, kind, stack.append)
    return True


def _meaningful(name: str, keep: set[str]) -> bool:
    return name in keep or _meaningful_word(name)


@functools.cache
def _meaningful_word(name: str) -> bool:
    return bool(_MEANINGFUL.search(name) or is_k_name(name) or _whole_file_name(name))


def _meaningful_text(text: str) -> bool:
    """A string GA011 may read as a name for K (`"--gradient_accumulation_steps"`), or any string
    that mentions a word the model cares about: kept, cheaply."""
    return "ACCELERATE" in text or _MEANINGFUL.search(text) is not None or is_k_name(text.strip("\"'-"))


class _Owners:
    """Per function (0: module level): does it call a backward, which names does it call, does it
    record a module fact; and for each unit, the ids of the functions defined inside it."""

    def __init__(self) -> None:
        self.backward: set[int] = set()
        self.calls: dict[int, set[str]] = {}
        self.defs: dict[str, set[int]] = {}
        self.with_facts: set[int] = set()
        self.inner: dict[int, set[int]] = {}
        self.marked = False  # the statement being visited defines something or records a fact
        # Names bound to, or passed to, a call that records a fact (a DDP/FSDP-wrapped model...)
        self.bound: set[str] = set()
        self._targets: list[str] = []

    def reaching_backward(self) -> set[int]:
        """The same fixpoint as `ModuleFacts.reaches_backward`, over stdlib nodes."""
        reached = set(self.backward)
        while True:
            names = {n for n, ids in self.defs.items() if ids & reached}
            grown = {o for o, called in self.calls.items() if called & names} - reached
            if not grown:
                return reached
            reached |= grown

    def visit_module(self, tree: ast.Module) -> set[int]:
        """Visit every top-level statement; return the ids of those that define something or
        record a fact (they must stay even when module-level code is not walked)."""
        marked: set[int] = set()
        for statement in tree.body:
            self.marked = False
            self.visit(statement)
            if self.marked:
                marked.add(id(statement))
        return marked

    def visit(self, root: ast.AST) -> None:
        # An explicit stack, not `ast.NodeVisitor`: its per-node dispatch costs more than the parse.
        # A function on it in a 1-tuple: its body is done. Names, attributes and constants (half of
        # all nodes) are handled before the generic walk over fields.
        owners: list[int] = [0]
        open_defs: list[set[int]] = []
        stack: list[ast.AST | tuple[ast.AST]] = [root]
        push, pop = stack.append, stack.pop
        whole_file_name = _whole_file_name
        while stack:
            node = pop()
            kind = type(node)
            if kind is ast.Name:
                if whole_file_name(node.id):  # type: ignore[union-attr]
                    self._reads_whole_file(owners[-1])
                continue
            if kind is ast.Attribute:
                attr = node.attr  # type: ignore[union-attr]
                if attr in WHOLE_FILE_ATTRIBUTES or whole_file_name(attr):
                    self._reads_whole_file(owners[-1])
                push(node.value)  # type: ignore[union-attr]
                continue
            if kind is ast.Constant:
                continue
            if kind is tuple:  # the end of a function
                self.inner[id(node[0])] = open_defs.pop()  # type: ignore[index]
                owners.pop()
                continue
            if kind is ast.FunctionDef or kind is ast.AsyncFunctionDef:
                key = id(node)
                self.defs.setdefault(node.name, set()).add(key)  # type: ignore[union-attr]
                for group in open_defs:
                    group.add(key)
                if node.name in FACT_METHODS:  # type: ignore[union-attr]
                    self.with_facts.add(key)
                owners.append(key)
                open_defs.append({key})
                self.marked = True
                push((node,))  # type: ignore[arg-type]
            elif kind is ast.ClassDef:
                self.marked = True
            elif kind is ast.Call:
                self._call(node, owners[-1])  # type: ignore[arg-type]
            elif kind is ast.Assign or kind is ast.AnnAssign:
                targets = node.targets if kind is ast.Assign else [node.target]  # type: ignore[union-attr]
                self._targets = [_last_part(_dotted(t)) for t in targets]
                self._assignment(node.value, owners[-1])  # type: ignore[union-attr]
            elif kind is ast.Import or kind is ast.ImportFrom:
                modules = [a.name for a in node.names] if kind is ast.Import else [node.module or ""]  # type: ignore[union-attr]
                if _imports_deepspeed(modules):
                    self.with_facts.add(owners[-1])
                self.marked = True  # kept: GA014 reads where an optimizer class was imported from
            _push_fields(node, kind, push)  # type: ignore[arg-type]

    def _reads_whole_file(self, owner: int) -> None:
        """A name that rules reading the whole file look for (`zero_grad`, `p.grad`, `prepare`,
        `no_sync`): GA014/GA007 read it, so its function and statement stay."""
        self.with_facts.add(owner)
        self.marked = True

    def _call(self, node: ast.Call, owner: int) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name in BACKWARD_CALLS or any(k.arg == "update_grad" for k in node.keywords):
            self.backward.add(owner)
        elif name:
            self.calls.setdefault(owner, set()).add(name)
            if records_call_fact(_dotted(func)):
                self.with_facts.add(owner)
                self.marked = True
                self.bound.update(_last_part(_dotted(a)) for a in node.args)  # `fully_shard(model)`

    def _assignment(self, value: ast.expr | None, owner: int) -> None:
        if isinstance(value, ast.Call):
            reduction = next((k.value for k in value.keywords if k.arg == "reduction"), None)
            summed = isinstance(reduction, ast.Constant) and reduction.value == "sum"
            if records_fact(_dotted(value.func), summed) or records_call_fact(_dotted(value.func)):
                self.bound.update(self._targets)  # `self.model = DDP(model)`: GA012 looks for its calls
            if records_fact(_dotted(value.func), summed):
                self.with_facts.add(owner)
                self.marked = True


@functools.cache
def _whole_file_name(name: str) -> bool:
    # Memoised: a big file repeats a few thousand names hundreds of thousands of times.
    return bool(GRAD_CLEARING.fullmatch(name) or SYNC_CONTROL.fullmatch(name))


def _push_fields(node: ast.AST, kind: type, push: Callable[[ast.AST], object]) -> None:
    """Push the nodes held by `node`'s fields (of type `kind`)."""
    for field in _child_fields(kind):
        value = getattr(node, field, None)
        if type(value) is list:
            for child in value:
                if isinstance(child, ast.AST):
                    push(child)
        elif isinstance(value, ast.AST):
            push(value)


@functools.cache
def _child_fields(kind: type) -> tuple[str, ...]:
    """The fields of a node type that can hold nodes; not `ctx` (a Load/Store marker on every name)."""
    return tuple(f for f in kind._fields if f != "ctx")  # type: ignore[attr-defined]


def _imports_deepspeed(modules: Iterable[str]) -> bool:
    return any(m.split(".")[0] == "deepspeed" for m in modules)


def _last_part(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _dotted(node: ast.expr) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""  # as `syntax.dotted`: only a Name/Attribute chain has a name
