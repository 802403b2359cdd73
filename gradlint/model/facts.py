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
from gradlint.model.syntax import called_name, callee, dotted, keyword, last_part, number, string


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
# Models whose `outputs.loss` is a mean over a varying number of (non-ignored) tokens.
_TOKEN_MODEL = re.compile(r"CausalLM|LMHead|MaskedLM|Seq2SeqLM|ConditionalGeneration|TokenClassification|PreTraining")
_WRAPPERS = {"DistributedDataParallel": "ddp", "DDP": "ddp", "FullyShardedDataParallel": "fsdp", "FSDP": "fsdp",
             "fully_shard": "fsdp"}
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
    # ids of the functions that hold a call or `.grad` write the walker may take for an event, or
    # call (by name, at any depth) one that does: the only helpers whose inlining can emit anything
    may_emit: set[int] = field(default_factory=set)
    accelerator_calls: dict[str, list[cst.Call]] = field(default_factory=dict)  # name -> its `Accelerator(...)`s
    # names bound to `DDP(...)` / `FSDP(...)` / `fully_shard(...)` -> "ddp" or "fsdp"
    wrapped_models: dict[str, str] = field(default_factory=dict)
    token_mean_criteria: set[str] = field(default_factory=set)  # `CrossEntropyLoss(ignore_index=...)`
    builds_token_model: bool = False  # a causal/masked LM (`AutoModelForCausalLM.from_pretrained`) is built here
    trainer_calls: list[cst.Call] = field(default_factory=list)  # Lightning `Trainer(...)` constructions
    # name -> the constructor call that gave it its role (`scheduler = get_linear_schedule...(...)`)
    constructors: dict[str, cst.Call] = field(default_factory=dict)
    # names passed to or bound from `accelerator.prepare(...)` / `prepare_scheduler(...)`
    prepared: set[str] = field(default_factory=set)
    # `assert A or K == 1` (either order): (A, K); where A fails, K is 1 (XLM: `assert params.amp >= 0
    # or params.accumulate_gradients == 1`, so its `if params.amp == -1:` branch does not accumulate)
    k_one_unless: list[tuple[cst.BaseExpression, cst.BaseExpression]] = field(default_factory=list)
    # A class of this module subclasses Hugging Face's `Trainer` (imported from `transformers`), and
    # no `training_step` is defined here: `self.training_step(model, inputs)` is the inherited one,
    # which runs the backward (dividing the loss by K itself). Old copies of `Trainer.train()`
    # in research code (SimCSE, P-tuning v2) call it from their own loop.
    inherits_training_step: bool = False
    # What names `typing.cast` here (`cast` after `from typing import cast`): `cast(T, x)` is `x`
    # (ignite's `cast(torch.Tensor, scaler.scale(loss)).backward()`).
    type_casts: set[str] = field(default_factory=lambda: {"typing.cast", "typing_extensions.cast"})

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

    def cast_value(self, node: cst.BaseExpression) -> cst.BaseExpression:
        """`x` for `typing.cast(T, x)` (at any depth of such casts), else `node` itself."""
        while type(node) is cst.Call and len(node.args) == 2 and dotted(node.func) in self.type_casts \
                and all(a.keyword is None and not a.star for a in node.args):
            node = node.args[1].value
        return node

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


def target_names(node: cst.BaseAssignTargetExpression | cst.BaseExpression) -> list[str]:
    """The dotted names an assignment target binds: `a`, `self.x`, both of `a, (b, c)`."""
    if isinstance(node, cst.Tuple | cst.List):
        out: list[str] = []
        for element in node.elements:
            out.extend(target_names(element.value))
        return out
    text = dotted(node)
    return [text] if text else []


def constructor_role(name: str) -> Role | None:
    last = last_part(name)
    if last in ("GradScaler", "ShardedGradScaler") or last.endswith("Scaler"):
        return Role.SCALER
    # Schedule-free optimizers (`schedulefree.AdamWScheduleFree`, `SGDScheduleFree`) say "schedule"
    # and are optimizers: their step() updates the weights.
    if "schedulefree" in name.lower().replace("_", ""):
        return Role.OPTIMIZER
    # Schedulers first: `torch.optim.lr_scheduler.LambdaLR` lives under `torch.optim` too.
    if "Scheduler" in last or re.fullmatch(r"[A-Z]\w*LR", last) or "schedule" in last.lower():
        return Role.SCHEDULER
    if last in _OPTIMIZER_CLASSES or (".optim." in f".{name}." and last[:1].isupper()):
        return Role.OPTIMIZER
    if last == "Fabric":
        return Role.FABRIC
    return None


# Names that clear gradients, or may: `zero_grad`, `clear_grads(model)`, `torch._foreach_zero_`.
# GA014 looks for them anywhere in the file.
GRAD_CLEARING = re.compile(r"(?i).*((zero|clear|reset|free)_?grads?|_foreach_zero_|set_to_none).*")
# Names that control DDP/FSDP gradient sync: GA012 stays silent when any appears in the file.
SYNC_CONTROL = re.compile(r".*(no_sync|require_backward_grad_sync|requires_gradient_sync|no_backward_sync).*")
# The names of the calls that can be backward events (`events.classify_call`): `x.backward(...)` (a
# tensor, an Accelerator, a DeepSpeed engine, Fabric, `torch.autograd.backward`) and Lightning's
# `self.manual_backward(...)`. Not `max_pool2d_backward(...)`: torch calls hundreds of those, and a
# function calling them holds no training loop. The walk roots here.
BACKWARD_CALLS = frozenset({"backward", "manual_backward"})
# The names of every call `events.classify_call` may take for a gradient event (method names, last
# parts of dotted names), for `ModuleFacts.may_emit`: a helper without any is not worth inlining.
CLIP_NAMES = frozenset({
    "clip_grad_norm_", "clip_grad_value_", "clip_grad_norm", "clip_grads_with_norm_",
    "clip_gradients", "clip_grad_norm_fp32",
})
RESCALE_NAMES = ("multiply_grads", "scale_grads", "rescale_grad", "div_grads", "normalize_grad")
_EVENT_METHODS = BACKWARD_CALLS | {"step", "zero_grad", "zero_", "unscale_", "update", "div_", "mul_"}


_RESCALING = re.compile("|".join(map(re.escape, RESCALE_NAMES)))


def may_be_event_name(name: str) -> bool:
    """Whether a call whose method or function is named `name` can be a gradient event."""
    return name in _EVENT_METHODS or name in CLIP_NAMES or _RESCALING.search(name) is not None


def records_call_fact(name: str) -> bool:
    """Whether a call to `name` (anywhere, assigned or not) is one `_model_facts` keeps: a language
    model built, a Lightning `Trainer`, a DDP/FSDP wrapper."""
    last = last_part(name)
    if last in ("from_pretrained", "from_config"):
        return bool(_TOKEN_MODEL.search(last_part(name.rsplit(".", 1)[0]) if "." in name else ""))
    return (bool(_TOKEN_MODEL.search(last)) and last[:1].isupper()) or last in ("Trainer", "CrossEntropyLoss") \
        or last in _WRAPPERS


def records_fact(name: str, summed: bool) -> bool:
    """Whether an assignment from a call to `name` (with `reduction="sum"` when `summed`) is one
    `_FactsCollector._record` keeps."""
    last = last_part(name)
    return (
        last in ("Accelerator", "initialize")
        or summed
        or constructor_role(name) is not None
    )


class _FactsCollector(cst.CSTVisitor):
    def __init__(self) -> None:
        self.facts = ModuleFacts()
        self._classes: list[cst.ClassDef] = []
        self._depth = 0  # function nesting
        self._owners: list[int] = [0]  # innermost function being visited (0: module level)
        self._backward: set[int] = set()
        self._eventful: set[int] = set()
        self._calls: dict[int, set[str]] = {}
        self._helpers: dict[str, set[int]] = {}
        self._torch_names: set[str] = set()  # names imported from torch (`from torch... import X as DDP`)
        # A same-module helper that wraps a model and returns it (YOLOv6's `parallel_model`): the
        # names each function wraps and returns, and what every `x = f(...)` binds, resolved at the end.
        self._wrapped_in: dict[int, dict[str, str]] = {}
        self._returned: dict[int, set[str]] = {}
        self._returns_wrapper: dict[int, str] = {}
        self._bound_from: list[tuple[list[str], str]] = []
        self._transformers_names: set[str] = set()  # names imported from transformers
        self._hf_trainer_classes = 0  # classes seen that subclass transformers' Trainer

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        name = called_name(node)
        owner = self._owners[-1]
        if may_be_event_name(name):
            self._eventful.add(owner)
        inherited_backward = name == "training_step" and self._hf_trainer_classes > 0
        if name in BACKWARD_CALLS or inherited_backward \
                or any(a.keyword is not None and a.keyword.value == "update_grad" for a in node.args):
            self._backward.add(owner)
            self._eventful.add(owner)
        elif name:
            self._calls.setdefault(owner, set()).add(name)
            if name in ("prepare", "prepare_scheduler") and isinstance(func, cst.Attribute):
                self.facts.prepared.update(last_part(dotted(a.value)) for a in node.args)
        self._model_facts(node, name)

    def _model_facts(self, node: cst.Call, name: str) -> None:
        """What kind of model and trainer the module builds (for GA011-GA013)."""
        facts = self.facts
        if name in ("from_pretrained", "from_config") and isinstance(node.func, cst.Attribute):
            if _TOKEN_MODEL.search(last_part(dotted(node.func.value))):
                facts.builds_token_model = True
        elif _TOKEN_MODEL.search(name) and name[:1].isupper():
            facts.builds_token_model = True  # `GPT2LMHeadModel(config)`
        elif name == "Trainer":
            facts.trainer_calls.append(node)
        elif name == "fully_shard" and node.args and self._from_torch(dotted(node.func) or ""):
            # FSDP2 shards in place: `fully_shard(model)`; not another library's `fully_shard`
            # (Megatron's own has no `no_sync` and syncs through its `microbatch(is_last=...)`)
            target = dotted(node.args[0].value)
            if target:
                facts.wrapped_models.setdefault(target, "fsdp")

    def leave_Module(self, original_node: cst.Module) -> None:
        self.facts.inherits_training_step = bool(self._hf_trainer_classes) and not any(
            name == "training_step" for name in self._helpers)
        self.facts.reaches_backward = self._callers_of(self._backward)
        self.facts.may_emit = self._callers_of(self._eventful)
        self._wrapped_by_helpers()

    def _wrapped_by_helpers(self) -> None:
        """`self.model = self.parallel_model(model)` where `parallel_model` ends `model = DDP(model,
        ...); return model` (or `return DDP(...)`): `self.model` is wrapped too."""
        kinds = dict(self._returns_wrapper)
        for owner, wrapped in self._wrapped_in.items():
            for name in self._returned.get(owner, ()):
                if name in wrapped:
                    kinds.setdefault(owner, wrapped[name])
        if not kinds:
            return
        by_name = {name: kinds[owner] for name, owners in self._helpers.items() for owner in owners if owner in kinds}
        for names, called in self._bound_from:
            kind = by_name.get(called)
            if kind is not None:
                for target in names:
                    self.facts.wrapped_models.setdefault(target, kind)

    def visit_Return(self, node: cst.Return) -> None:
        owner = self._owners[-1]
        if owner == 0 or node.value is None:
            return
        value = node.value
        if isinstance(value, cst.Call):
            name = callee(value) or ""
            wrapper = _WRAPPERS.get(last_part(name))
            if wrapper is not None and self._from_torch(name):
                self._returns_wrapper.setdefault(owner, wrapper)
            return
        text = dotted(value)
        if text is not None:
            self._returned.setdefault(owner, set()).add(text)

    def _callers_of(self, found: set[int]) -> set[int]:
        """`found` and every function that calls one of them by name, at any depth."""
        reached = set(found)
        changed = True
        while changed:  # callers of callers: a fixpoint over the module's call names
            reached_names = {n for n, ids in self._helpers.items() if ids & reached}
            grown = {o for o, names in self._calls.items() if names & reached_names}
            changed = not grown <= reached
            reached |= grown
        return reached

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        if (dotted(node.target) or "").endswith((".grad", ".grad.data")):
            self._eventful.add(self._owners[-1])  # `p.grad /= K`: a GRAD_RESCALE event

    def _from_torch(self, name: str) -> bool:
        """`DDP(...)` imported from torch (apex's DDP has no `no_sync`); a dotted call not from apex."""
        if "." in name:
            return name.split(".")[0] not in ("apex", "deepscale")
        return name in self._torch_names

    def visit_Assert(self, node: cst.Assert) -> None:
        test = node.test
        if isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.Or):
            for condition, other in ((test.left, test.right), (test.right, test.left)):
                if (isinstance(other, cst.Comparison) and len(other.comparisons) == 1
                        and isinstance(other.comparisons[0].operator, cst.Equal)
                        and number(other.comparisons[0].comparator) == 1 and number(other.left) is None):
                    self.facts.k_one_unless.append((condition, other.left))

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            if alias.asname is not None and dotted(alias.name) in ("typing", "typing_extensions"):
                self.facts.type_casts.add(f"{dotted(alias.asname.name)}.cast")  # `import typing as t`
            if (dotted(alias.name) or "").split(".")[0] == "deepspeed":
                self.facts.uses_deepspeed = True

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.module is not None and dotted(node.module) in ("typing", "typing_extensions") \
                and not isinstance(node.names, cst.ImportStar):
            for alias in node.names:
                if dotted(alias.name) == "cast":
                    bound = alias.asname.name if alias.asname is not None else alias.name
                    self.facts.type_casts.add(dotted(bound) or "cast")  # type: ignore[arg-type]
        if node.module is not None and (dotted(node.module) or "").split(".")[0] == "torch" \
                and not isinstance(node.names, cst.ImportStar):
            for alias in node.names:
                bound = alias.asname.name if alias.asname is not None else alias.name
                self._torch_names.add(dotted(bound) or "")  # type: ignore[arg-type]
        if node.module is not None and (dotted(node.module) or "").split(".")[0] == "deepspeed":
            self.facts.uses_deepspeed = True
        if node.module is not None and (dotted(node.module) or "").split(".")[0] == "transformers" \
                and not isinstance(node.names, cst.ImportStar):
            for alias in node.names:
                bound = alias.asname.name if alias.asname is not None else alias.name
                self._transformers_names.add(dotted(bound) or "")  # type: ignore[arg-type]

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._classes.append(node)
        for base in node.bases:
            name = dotted(base.value) or ""
            if name.endswith("Trainer") and (name.startswith("transformers.") or name in self._transformers_names):
                self._hf_trainer_classes += 1
                break

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
        if any((dotted(t.target) or "").endswith(".grad") for t in node.targets):
            self._eventful.add(self._owners[-1])  # `p.grad = None`: a ZERO_GRAD event
        if not isinstance(node.value, cst.Call):
            return
        names = [t for target in node.targets for t in target_names(target.target)]
        func = node.value.func
        if isinstance(func, cst.Attribute) and func.attr.value in ("prepare", "prepare_scheduler"):
            self.facts.prepared.update(last_part(n) for n in names)
        self._record(node.value, names)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if isinstance(node.value, cst.Call):
            self._record(node.value, target_names(node.target))

    def _record(self, call: cst.Call, names: list[str]) -> None:
        name = callee(call) or ""
        if names:
            self._bound_from.append((names, last_part(name)))
        if not records_fact(name, string(keyword(call, "reduction")) == "sum") and not records_call_fact(name):
            return
        last = last_part(name)
        facts = self.facts
        if last == "Accelerator":
            for target in names:
                facts.accelerator_calls.setdefault(target, []).append(call)
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
        elif last == "CrossEntropyLoss" and keyword(call, "ignore_index") is not None and reduction is None:
            facts.token_mean_criteria.update(names)
        wrapper = _WRAPPERS.get(last)
        if wrapper is not None and self._from_torch(name):
            for target in names:
                facts.wrapped_models[target] = wrapper
            if self._owners[-1]:
                self._wrapped_in.setdefault(self._owners[-1], {}).update(dict.fromkeys(names, wrapper))
        role = constructor_role(name)
        if role is not None and len(names) == 1:
            facts.roles[names[0]] = role
            facts.constructors[names[0]] = call


def collect_facts(module: cst.Module) -> ModuleFacts:
    collector = _FactsCollector()
    traversal.visit(module, collector)
    return collector.facts
