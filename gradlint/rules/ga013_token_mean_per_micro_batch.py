from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import libcst as cst

from gradlint.model import Framework, Kind, LoopKind, ModuleModel, TrainingLoop, When
from gradlint.model.engine_config import engine_accumulation
from gradlint.model.facts import ModuleFacts
from gradlint.model.quantities import looks_like_k, same_quantity
from gradlint.model.syntax import code, dotted, keyword, last_part, method_name, positional, receiver, string
from gradlint.model.walker import Event, Frame
from gradlint.rules.base import Finding, Rule, show, via

_PASS_THROUGH = {"float", "half", "bfloat16", "double", "clone", "to", "contiguous", "type_as", "squeeze"}
_MAX_DEPTH = 10


class TokenMeanPerMicroBatch(Rule):
    """
    ## What it does
    Flags a per-micro-batch mean over a varying number of tokens that is divided by K in an
    accumulating loop.

    The token means: an HF language model's `outputs.loss`, cross-entropy with `ignore_index`.
    The division: `/ K`, or a backward that divides by K (`accelerator.backward`, a DeepSpeed
    engine). Off by default: enable it with `--select GA013`.

    ## Why is this bad?
    Each micro-batch's loss is a mean over *its* non-ignored tokens. Dividing each by K gives the
    window a mean of K means, not the mean over the window's tokens: a micro-batch with 10 target
    tokens weighs as much as one with 1000. The gradient differs from the large-batch gradient
    whenever the token counts differ (padding, prompt masking, packed sequences of varying length);
    this was the 2024 gradient-accumulation bug in `transformers`. With fixed-length batches and no
    ignored tokens the two are equal, which is why the rule is opt-in; `gradlint probe` measures
    the difference on your script.

    Not flagged: a loss summed over tokens (`reduction="sum"`) and divided by the window's token
    count (`num_items_in_batch`), a loss that is not a token mean, models not visibly built as
    language models in the file (for `outputs.loss`), and a DeepSpeed engine whose config, written
    in the same function, accumulates nothing (`"gradient_accumulation_steps": 1`, or neither that
    key nor `train_batch_size`).

    ## Example
    ```python
    model = AutoModelForCausalLM.from_pretrained(name)
    for i, batch in enumerate(loader):
        loss = model(**batch).loss / accum_steps
        loss.backward()
        if (i + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    model = AutoModelForCausalLM.from_pretrained(name)
    for window in windows(loader, accum_steps):
        n_tokens = sum((b["labels"][:, 1:] != -100).sum() for b in window)
        for batch in window:
            logits = model(input_ids=batch["input_ids"]).logits[:, :-1]
            loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                   ignore_index=-100, reduction="sum") / n_tokens
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    ```

    ## Fix
    None: the window's token count must be known before its first backward (fetch the window
    ahead), which restructures the loop.
    """

    code = "GA013"
    name = "token-mean-per-micro-batch"
    default_enabled = False

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        facts = model.facts
        for loop in model.loops:
            for event in _backwards(loop, facts):
                order = event.frame.scope.call_order.get(id(event.node))
                found = _Origin(facts).trace(event.spec.value, event.frame, order, 0)
                if found is None:
                    continue
                if loop.kind in (LoopKind.GATED, LoopKind.INNER):
                    if found.divisor is None or not (same_quantity(found.divisor, loop.k)
                                                     or looks_like_k(found.divisor)):
                        continue
                    how = f"divided by `{code(found.divisor)}`"
                elif found.divisor is None:
                    how = "which the framework divides by K"
                else:
                    continue  # divided twice: GA011's finding
                yield Finding(
                    self.code,
                    event.node,
                    f"{show(event)}{via(event, loop)} backpropagates `{_short(found.origin)}`, a mean over this "
                    f"micro-batch's {found.what}, {how}: the window's gradient is a mean of per-micro-batch "
                    "means, not the mean over the window's tokens; sum the token losses "
                    "(`reduction=\"sum\"`) and divide by the window's token count",
                )


def _backwards(loop: TrainingLoop, facts: ModuleFacts) -> list[Event]:
    if loop.kind in (LoopKind.GATED, LoopKind.INNER) and not loop.mixed:
        return [e for e in loop.accumulating_backwards() if e.spec.framework is Framework.TORCH]
    if loop.kind is LoopKind.ACCELERATE:
        return [e for e in loop.accumulating_backwards()
                if e.spec.framework is Framework.ACCELERATE and facts.accelerator_divides(e.spec.receiver)]
    if loop.kind is LoopKind.ENGINE:
        steps = [s for s in loop.of_kind(Kind.STEP) if s.spec.framework is Framework.DEEPSPEED]
        if steps and all(loop.when(s) is When.EVERY for s in steps):
            return [e for e in loop.accumulating_backwards() if e.spec.framework is Framework.DEEPSPEED
                    and engine_accumulation(e.spec.receiver, e.frame) != 1]  # K = 1: nothing to average
    return []


@dataclass(frozen=True)
class _Found:
    origin: cst.BaseExpression
    what: str  # "non-ignored tokens", for the message
    divisor: cst.BaseExpression | None


class _Origin:
    """Follows the backpropagated value back through names, `/ K` and casts to a token-mean loss;
    anything else on the way (a sum of terms, a weighting) ends the search with None."""

    def __init__(self, facts: ModuleFacts) -> None:
        self.facts = facts

    def trace(self, node: cst.BaseExpression | None, frame: Frame, order: int | None, depth: int,
              divisor: cst.BaseExpression | None = None) -> _Found | None:
        if node is None or depth > _MAX_DEPTH:
            return None
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Divide) and divisor is None:
            return self.trace(node.left, frame, order, depth + 1, node.right)
        if isinstance(node, cst.Call):
            return self._call(node, frame, order, depth, divisor)
        if isinstance(node, cst.Attribute) and node.attr.value == "loss":
            return self._model_output(node, node.value, frame, order, divisor)
        if isinstance(node, cst.Subscript) and _is_loss_key(node):
            return self._model_output(node, node.value, frame, order, divisor)
        text = dotted(node)
        if text is None:
            return None
        bound = frame.binding(text)
        if bound is not None:
            return self.trace(bound[0], bound[1], None, depth + 1, divisor)
        found = frame.scope.assignments.get(text, [])
        earlier = [a for a in found if order is None or a.order < order]
        if not earlier or (order is None and len(found) != 1):
            return None
        latest = max(earlier, key=lambda a: a.order)  # the value in effect where it is used
        if latest.index is not None:
            return None
        if latest.operator is None:
            return self.trace(latest.value, frame, latest.order, depth + 1, divisor)
        if isinstance(latest.operator, cst.DivideAssign) and divisor is None:
            return self.trace(node, frame, latest.order, depth + 1, latest.value)
        return None

    def _call(self, node: cst.Call, frame: Frame, order: int | None, depth: int,
              divisor: cst.BaseExpression | None) -> _Found | None:
        method = method_name(node)
        if method in ("scale", "scale_loss") and positional(node):
            return self.trace(positional(node)[0], frame, order, depth + 1, divisor)
        if method in _PASS_THROUGH and receiver(node) is not None:
            return self.trace(receiver(node), frame, order, depth + 1, divisor)
        if method in ("div", "true_divide") and positional(node) and divisor is None:
            return self.trace(receiver(node), frame, order, depth + 1, positional(node)[0])
        name = dotted(node.func) or ""
        reduction = string(keyword(node, "reduction"))
        if reduction not in (None, "mean"):
            return None
        if last_part(name) == "cross_entropy" and keyword(node, "ignore_index") is not None:
            return _Found(node, "non-ignored tokens", divisor)
        if name in self.facts.token_mean_criteria or last_part(name) in self.facts.token_mean_criteria:
            return _Found(node, "non-ignored tokens", divisor)
        return None

    def _model_output(self, node: cst.BaseExpression, base: cst.BaseExpression, frame: Frame,
                      order: int | None, divisor: cst.BaseExpression | None) -> _Found | None:
        """`outputs.loss` / `outputs["loss"]` of a language model built in this file."""
        if not self.facts.builds_token_model:
            return None
        if isinstance(base, cst.Call):
            return _Found(node, "target tokens", divisor)
        text = dotted(base)
        if text is None:
            return None
        values = [a.value for a in frame.scope.before(text, order) if a.operator is None and a.index is None]
        if values and all(isinstance(v, cst.Call) for v in values):
            return _Found(node, "target tokens", divisor)
        return None


def _is_loss_key(node: cst.Subscript) -> bool:
    """`outputs["loss"]`."""
    first = node.slice[0].slice if node.slice else None
    return isinstance(first, cst.Index) and string(first.value) == "loss"


def _short(node: cst.BaseExpression) -> str:
    text = code(node)
    if len(text) <= 40 or not isinstance(node, cst.Call):
        return text
    return f"{dotted(node.func) or 'loss'}(...)"
