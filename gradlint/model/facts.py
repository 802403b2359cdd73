"""Module-wide facts the model needs: what each name was built from, and where helpers live.

One cheap pass over the module. Roles (optimizer, scheduler, scaler, ...) come first from
constructors seen in the module, then from naming conventions, because real code often
builds its optimizer in another module and only passes it in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

import libcst as cst

from gradlint.model import traversal
from gradlint.model.syntax import callee, dotted, keyword, last_part, string


class Role(Enum):
    OPTIMIZER = "optimizer"
    SCHEDULER = "scheduler"
    SCALER = "scaler"
    ENGINE = "engine"  # DeepSpeed engine: accumulates and scales by itself
    ACCELERATOR = "accelerator"
    FABRIC = "fabric"
    OTHER = "other"


_OPTIMIZER_CLASSES = {
    "SGD", "Adam", "AdamW", "Adamax", "Adagrad", "Adadelta", "RMSprop", "Rprop", "NAdam", "RAdam",
    "LBFGS", "SparseAdam", "ASGD", "Adafactor", "Lion", "LAMB", "Lamb", "FusedAdam", "FusedLAMB",
    "DeepSpeedCPUAdam", "AdamW8bit", "Adam8bit", "PagedAdamW", "PagedAdamW8bit", "Muon", "Shampoo",
    "ZeroRedundancyOptimizer", "Sophia", "Adan", "AdaBelief",
}
_OPT_NAME = re.compile(r"(?:.*_)?opt(?:[_0-9].*|[a-z])?|.*optim.*", re.IGNORECASE)


@dataclass
class ModuleFacts:
    roles: dict[str, Role] = field(default_factory=dict)
    # Accelerator objects: True when built with gradient_accumulation_steps (it then divides
    # the loss in backward() and skips step/zero_grad mid-window), False when built without.
    accelerators: dict[str, bool] = field(default_factory=dict)
    uses_deepspeed: bool = False
    sum_criteria: set[str] = field(default_factory=set)
    functions: dict[str, cst.FunctionDef] = field(default_factory=dict)
    methods: dict[str, list[tuple[cst.ClassDef, cst.FunctionDef]]] = field(default_factory=dict)
    # ids of the functions (0: module-level code) that run a backward themselves or call a
    # same-module helper that does: only their walks can find a training loop.
    reaches_backward: set[int] = field(default_factory=set)
    # name -> the constructor call that gave it its role (`scheduler = get_linear_schedule...(...)`)
    constructors: dict[str, cst.Call] = field(default_factory=dict)
    # names passed to or bound from `accelerator.prepare(...)` / `prepare_scheduler(...)`
    prepared: set[str] = field(default_factory=set)

    def role(self, text: str | None) -> Role:
        if not text:
            return Role.OTHER
        for key in (text, last_part(text)):
            if key in self.roles:
                return self.roles[key]
        name = last_part(text).lower()
        if "scaler" in name:
            return Role.SCALER
        if "sched" in name or name.startswith("lr_") or name == "warmup":
            return Role.SCHEDULER
        if "accelerator" in name:
            return Role.ACCELERATOR
        if name == "fabric" or name.endswith("_fabric"):
            return Role.FABRIC
        if "engine" in name:
            return Role.ENGINE
        if _OPT_NAME.fullmatch(name):
            return Role.OPTIMIZER
        return Role.OTHER

    def constructor(self, text: str | None) -> cst.Call | None:
        """The call that built `text` in this module (`torch.optim.AdamW(...)`), or None."""
        for key in (text, last_part(text)):
            if key and key in self.constructors:
                return self.constructors[key]
        return None

    def accelerator_divides(self, text: str | None) -> bool | None:
        """Whether `text.backward(loss)` divides by K: None when the Accelerator is not built here."""
        if not text:
            return None
        for key in (text, last_part(text)):
            if key in self.accelerators:
                return self.accelerators[key]
        if len(self.accelerators) == 1:
            return next(iter(self.accelerators.values()))
        return None


def _targets(node: cst.BaseAssignTargetExpression | cst.BaseExpression) -> list[str]:
    if isinstance(node, cst.Tuple | cst.List):
        out: list[str] = []
        for element in node.elements:
            out.extend(_targets(element.value))
        return out
    text = dotted(node)
    return [text] if text else []


def _constructor_role(name: str) -> Role | None:
    last = last_part(name)
    if last in ("GradScaler", "ShardedGradScaler") or last.endswith("Scaler"):
        return Role.SCALER
    # Schedulers first: `torch.optim.lr_scheduler.LambdaLR` lives under `torch.optim` too.
    if "Scheduler" in last or re.fullmatch(r"[A-Z]\w*LR", last) or "schedule" in last.lower():
        return Role.SCHEDULER
    if last in _OPTIMIZER_CLASSES or (".optim." in f".{name}." and last[:1].isupper()):
        return Role.OPTIMIZER
    if last == "Fabric":
        return Role.FABRIC
    return None


# Names that clear gradients, or may: `zero_grad`, `clear_grads(model)`, `torch._foreach_zero_`.
# Rules that need the whole file (GA014) look for them anywhere, so the structural stage keeps
# every definition that mentions one, as it keeps those that call `prepare` (GA007).
GRAD_CLEARING = re.compile(r"(?i).*((zero|clear|reset|free)_?grads?|_foreach_zero_|set_to_none).*")
WHOLE_FILE_ATTRIBUTES = frozenset({"grad", "prepare", "prepare_scheduler"})


def records_fact(name: str, summed: bool) -> bool:
    """Whether an assignment from a call to `name` (with `reduction="sum"` when `summed`) is one
    `_FactsCollector._record` keeps. The structural stage (gradlint/relevance.py) keeps every
    definition holding one, so the two must agree: both go through here."""
    last = last_part(name)
    return (
        last in ("Accelerator", "initialize")
        or summed
        or _constructor_role(name) is not None
    )


class _FactsCollector(cst.CSTVisitor):
    def __init__(self) -> None:
        self.facts = ModuleFacts()
        self._classes: list[cst.ClassDef] = []
        self._depth = 0  # function nesting
        self._owners: list[int] = [0]  # innermost function being visited (0: module level)
        self._backward: set[int] = set()
        self._calls: dict[int, set[str]] = {}
        self._helpers: dict[str, set[int]] = {}

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        name = func.value if isinstance(func, cst.Name) else func.attr.value if isinstance(func, cst.Attribute) else ""
        owner = self._owners[-1]
        if "backward" in name or any(a.keyword is not None and a.keyword.value == "update_grad" for a in node.args):
            self._backward.add(owner)
        elif name:
            self._calls.setdefault(owner, set()).add(name)
            if name in ("prepare", "prepare_scheduler") and isinstance(func, cst.Attribute):
                self.facts.prepared.update(last_part(dotted(a.value)) for a in node.args)

    def leave_Module(self, original_node: cst.Module) -> None:
        reached = set(self._backward)
        changed = True
        while changed:  # callers of callers: a fixpoint over the module's call names
            reached_names = {n for n, ids in self._helpers.items() if ids & reached}
            grown = {o for o, names in self._calls.items() if names & reached_names}
            changed = not grown <= reached
            reached |= grown
        self.facts.reaches_backward = reached

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            if (dotted(alias.name) or "").split(".")[0] == "deepspeed":
                self.facts.uses_deepspeed = True

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.module is not None and (dotted(node.module) or "").split(".")[0] == "deepspeed":
            self.facts.uses_deepspeed = True

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._classes.append(node)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self._classes.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        name = node.name.value
        if self._classes and self._depth == 0:
            self.facts.methods.setdefault(name, []).append((self._classes[-1], node))
        elif not self._classes and self._depth == 0:
            self.facts.functions[name] = node
        self._helpers.setdefault(name, set()).add(id(node))
        self._owners.append(id(node))
        self._depth += 1

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._owners.pop()
        self._depth -= 1

    def visit_Assign(self, node: cst.Assign) -> None:
        if not isinstance(node.value, cst.Call):
            return
        names = [t for target in node.targets for t in _targets(target.target)]
        func = node.value.func
        if isinstance(func, cst.Attribute) and func.attr.value in ("prepare", "prepare_scheduler"):
            self.facts.prepared.update(last_part(n) for n in names)
        self._record(node.value, names)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if isinstance(node.value, cst.Call):
            self._record(node.value, _targets(node.target))

    def _record(self, call: cst.Call, names: list[str]) -> None:
        name = callee(call) or ""
        if not records_fact(name, string(keyword(call, "reduction")) == "sum"):
            return
        last = last_part(name)
        facts = self.facts
        if last == "Accelerator":
            accumulates = (
                keyword(call, "gradient_accumulation_steps") is not None
                or keyword(call, "gradient_accumulation_plugin") is not None
            )
            for target in names:
                facts.accelerators[target] = accumulates
                facts.roles[target] = Role.ACCELERATOR
            return
        if name.endswith("deepspeed.initialize") or (name == "initialize" and facts.uses_deepspeed):
            if names:
                facts.roles[names[0]] = Role.ENGINE
            return
        reduction = string(keyword(call, "reduction"))
        if reduction == "sum":
            facts.sum_criteria.update(names)
        role = _constructor_role(name)
        if role is not None and len(names) == 1:
            facts.roles[names[0]] = role
            facts.constructors[names[0]] = call


def collect_facts(module: cst.Module) -> ModuleFacts:
    collector = _FactsCollector()
    traversal.visit(module, collector)
    return collector.facts
