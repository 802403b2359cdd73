"""Gradient events: which calls backpropagate, step, clear, clip, unscale or schedule."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

import libcst as cst

from gradlint.model.facts import CLIP_NAMES, RESCALE_NAMES, ModuleFacts, Role, may_be_event_name
from gradlint.model.syntax import (
    arg,
    called_name,
    callee,
    code,
    dotted,
    keyword,
    last_part,
    method_name,
    positional,
    receiver,
)


class Kind(Enum):
    BACKWARD = "backward"
    STEP = "step"
    ZERO_GRAD = "zero_grad"
    CLIP = "clip"
    UNSCALE = "unscale"
    SCALER_UPDATE = "scaler_update"
    SCHEDULER_STEP = "scheduler_step"
    GRAD_RESCALE = "grad_rescale"  # gradients scaled after backward (`p.grad /= K`, multiply_grads)


class Framework(Enum):
    TORCH = "torch"
    ACCELERATE = "accelerate"
    DEEPSPEED = "deepspeed"
    FABRIC = "fabric"
    LIGHTNING = "lightning"
    SCALER = "scaler"  # scaler.step(opt), scaler.unscale_(opt)


@dataclass(frozen=True)
class EventSpec:
    """What one call does to gradients, before the walker adds where and when it runs."""

    kind: Kind
    node: cst.CSTNode
    receiver: str | None = None  # `optimizer`, `scaler`, `model`, ...
    framework: Framework = Framework.TORCH
    value: cst.BaseExpression | None = None  # what backward propagates from
    scaler: str | None = None  # backward through `scaler.scale(...)`: the scaler's name
    optimizer: str | None = None  # scaler.step(opt) / unscale_(opt): the optimizer
    extra: dict[str, object] = field(default_factory=dict, hash=False, compare=False)

    @property
    def display(self) -> str:
        """How the call reads in a message: `optimizer.zero_grad()`, `p.grad = None`."""
        name = self.extra.get("name")
        if isinstance(self.node, cst.Call):
            text = code(self.node)
            if len(text) <= 60 and "gate" not in self.extra:
                return text
            return f"{name}(...)"
        return name if isinstance(name, str) else self.kind.value


# A receiver named like a loss is the tensor being backpropagated, whatever it is passed.
_LOSS_WORDS = re.compile(r"(?i)loss|objective|cost")


def _grad_target(text: str | None) -> bool:
    return bool(text) and (text.endswith(".grad") or text.endswith(".grad.data"))


def classify_call(call: cst.Call, facts: ModuleFacts) -> list[EventSpec]:
    """The gradient events a call performs (usually none, at most a few)."""
    called = called_name(call)
    if not may_be_event_name(called) and keyword(call, "update_grad") is None:
        if called == "training_step" and facts.inherits_training_step and dotted(receiver(call)) == "self":
            # Hugging Face's inherited `Trainer.training_step`: the backward of a loss it divides by
            # K itself, not visible here (no value to trace: GA002/GA011/GA013 do not judge it).
            return [EventSpec(Kind.BACKWARD, call, "self", Framework.TORCH, None, extra={"name": "self.training_step"})]
        return []  # most calls: decided before the names, receiver and label are built
    name = callee(call) or ""
    method = method_name(call)
    recv_node = receiver(call)
    recv = dotted(recv_node)
    label: dict[str, object] = {"name": name or code(call.func)}

    if name in ("torch.autograd.backward", "autograd.backward"):
        value = arg(call, 0, "tensors")
        return [EventSpec(Kind.BACKWARD, call, value=value, extra=label)]
    if method == "manual_backward":
        return [EventSpec(Kind.BACKWARD, call, recv, Framework.LIGHTNING, arg(call, 0, "loss"), extra=label)]
    if method == "backward":
        return [_backward(call, recv_node, recv, facts, label)]
    if keyword(call, "update_grad") is not None and positional(call):
        return _scaler_helper(call, name, label)

    role = facts.role(recv)
    if method == "step":
        if role is Role.SCALER:
            opt = dotted(arg(call, 0, "optimizer"))
            return [EventSpec(Kind.STEP, call, recv, Framework.SCALER, optimizer=opt, extra=label)]
        if role is Role.SCHEDULER:
            return [EventSpec(Kind.SCHEDULER_STEP, call, recv, extra=label)]
        if role is Role.OPTIMIZER:
            return [EventSpec(Kind.STEP, call, recv, extra=label)]
        if role is Role.ENGINE:
            return [EventSpec(Kind.STEP, call, recv, Framework.DEEPSPEED, extra=label)]
        return []
    if method == "zero_grad":
        fw = Framework.DEEPSPEED if role is Role.ENGINE else Framework.TORCH
        return [EventSpec(Kind.ZERO_GRAD, call, recv, fw, extra=label)]
    if method == "zero_" and _grad_target(recv):
        return [EventSpec(Kind.ZERO_GRAD, call, recv, extra=label)]
    if last_part(name) in CLIP_NAMES:
        fw = Framework.TORCH
        if role is Role.ACCELERATOR:
            fw = Framework.ACCELERATE
        elif name == "self.clip_gradients":
            fw = Framework.LIGHTNING
        elif role is Role.FABRIC:
            fw = Framework.FABRIC
        return [EventSpec(Kind.CLIP, call, recv, fw, extra=label)]
    if method == "unscale_":
        opt = dotted(arg(call, 0, "optimizer"))
        return [EventSpec(Kind.UNSCALE, call, recv, Framework.SCALER, optimizer=opt, extra=label)]
    if method == "update" and role is Role.SCALER and not positional(call):
        return [EventSpec(Kind.SCALER_UPDATE, call, recv, extra=label)]
    if (method in ("div_", "mul_") and _grad_target(recv)) or any(
        n in last_part(name) for n in RESCALE_NAMES
    ):
        return [EventSpec(Kind.GRAD_RESCALE, call, recv, extra=label)]
    return []


def _backward(
    call: cst.Call,
    recv_node: cst.BaseExpression | None,
    recv: str | None,
    facts: ModuleFacts,
    label: dict[str, object],
) -> EventSpec:
    # The loss a wrapper backpropagates: its first argument, or `loss=` (`booster.backward(loss=loss,
    # optimizer=optimizer)`); a tensor's own `backward()` takes none.
    first = positional(call)[0] if positional(call) else keyword(call, "loss")
    pos = [first] if first is not None else []
    role = facts.role(recv)
    if pos and role is Role.ACCELERATOR:
        return EventSpec(Kind.BACKWARD, call, recv, Framework.ACCELERATE, pos[0], extra=label)
    if pos and role is Role.FABRIC:
        return EventSpec(Kind.BACKWARD, call, recv, Framework.FABRIC, pos[0], extra=label)
    if pos and role is Role.ENGINE:
        return EventSpec(Kind.BACKWARD, call, recv, Framework.DEEPSPEED, pos[0], extra=label)
    if pos and (role is Role.OPTIMIZER or last_part(recv).endswith("booster")):
        # apex-style `FP16_Optimizer.backward(loss)`: scales by the loss scale, never by K; and
        # ColossalAI's `booster.backward(loss, optimizer)`, which calls its optimizer's backward.
        return EventSpec(Kind.BACKWARD, call, recv, Framework.TORCH, pos[0], extra=label)
    if pos and facts.uses_deepspeed and recv is not None:
        # `model.backward(loss)` where `model` came back from deepspeed.initialize elsewhere.
        return EventSpec(Kind.BACKWARD, call, recv, Framework.DEEPSPEED, pos[0], extra=label)
    if pos and isinstance(recv_node, cst.Name | cst.Attribute) and not _LOSS_WORDS.search(recv or ""):
        # `accumulator.backward(loss)`: a wrapper of a kind not known here (nanotron's gradient
        # accumulator, an amp handle). For a tensor the argument would be the incoming gradient
        # (`out.backward(grad_out)`), so which of the two is the loss, and whether the wrapper
        # divides it by K, is unknown: no value to trace, and no rule guesses.
        return EventSpec(Kind.BACKWARD, call, recv, Framework.TORCH, None, extra=label)
    # Tensor backward: `loss.backward()`, `scaler.scale(loss).backward()`.
    if recv_node is not None:
        recv_node = facts.cast_value(recv_node)
    value = recv_node
    scaler = None
    if isinstance(recv_node, cst.Call) and method_name(recv_node) in ("scale", "scale_loss"):
        inner = positional(recv_node)
        if inner:
            scaler = dotted(receiver(recv_node)) or "scaler"
            value = inner[0]
    return EventSpec(Kind.BACKWARD, call, recv, Framework.TORCH, value, scaler=scaler, extra=label)


def _scaler_helper(call: cst.Call, name: str, label: dict[str, object]) -> list[EventSpec]:
    """timm-style `loss_scaler(loss, opt, clip_grad=..., update_grad=flag)`: backward always,
    unscale + clip + step only when the flag is true (the walker adds that guard)."""
    loss = positional(call)[0]
    pos = positional(call)
    opt = dotted(pos[1]) if len(pos) > 1 else dotted(keyword(call, "optimizer"))
    flag = keyword(call, "update_grad")
    events = [EventSpec(Kind.BACKWARD, call, name, Framework.TORCH, loss, extra=label)]
    gated = {"name": name, "gate": flag}
    events.append(EventSpec(Kind.STEP, call, opt, Framework.TORCH, extra=gated))
    return events
