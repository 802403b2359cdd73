"""The cheap text test every file passes before it is parsed.

Every loop a rule can report runs a backward *call* (`loss.backward(`, `accelerator.backward(`,
`self.manual_backward(`, `torch.autograd.backward(`: always a method or attribute called
`backward` or `manual_backward`) or a timm-style `update_grad=` helper, and
something step-like in the same module (`.step(`, `optimizer_step(`, `zero_grad`, a clip). A file
without both has no training loop to report on and is never parsed: in the installed torch package
and the standard library this keeps about 1 file in 190 (`benchmarks/lint_speed.py`). Defining
`def backward(ctx, ...)` (autograd Functions, thousands in torch itself) is not a call, and
`max_pool2d_backward(...)` is not a backward. A Lightning
`training_step` that mentions `accumulate_grad_batches` passes too: its backward is Lightning's; and
so does a module that calls `self.training_step(` and mentions `transformers` (a subclass of Hugging
Face's `Trainer` whose own loop calls the inherited `training_step`, which runs the backward).
"""

from __future__ import annotations

import re

# `.backward(` or `.manual_backward(`: the calls that can be backward events (`BACKWARD_CALLS` in
# gradlint/model/facts.py), always attribute calls. `def backward(` and `max_pool2d_backward(` are
# not. Whitespace (a newline, a backslash continuation) may stand between the dot and the name.
_BACKWARD_CALL = re.compile(r"backward\s*\(")  # a literal prefix: the regex engine skips fast
_BEFORE_NAME = re.compile(r"\.[\s\\]*(?:manual_)?\Z")
_STEP_LIKE = re.compile(r"step\s*\(|zero_grad|update_grad|clip_grad")


def _calls_backward(source: str) -> bool:
    for match in _BACKWARD_CALL.finditer(source):
        start = match.start()
        if _BEFORE_NAME.search(source, max(0, start - 64), start):
            return True
    return False


def may_have_training_loop(source: str) -> bool:
    if "update_grad" in source:
        return True
    if "training_step" in source and "accumulate_grad_batches" in source:
        return True  # Lightning automatic optimisation: the backward is the framework's (GA011)
    if "self.training_step(" in source and "transformers" in source:
        return True  # a copy of Hugging Face's `Trainer.train()`: the backward is the inherited training_step
    if "backward" not in source:
        return False
    return _calls_backward(source) and _STEP_LIKE.search(source) is not None
