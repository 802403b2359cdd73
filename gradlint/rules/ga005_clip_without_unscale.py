from __future__ import annotations

import re
from collections.abc import Iterator

import libcst as cst

from gradlint.fixes import ga005
from gradlint.model import Event, Framework, Kind, LoopKind, ModuleModel, When, traversal
from gradlint.model.syntax import code, method_name
from gradlint.rules.base import Finding, Rule, conditions, exclusive, show, via


class ClipWithoutUnscale(Rule):
    """
    ## What it does
    With a `GradScaler` (`scaler.scale(loss).backward()`), flags gradient clipping that runs
    without `scaler.unscale_(optimizer)` before it on the same path (missing, or after the clip).

    ## Why is this bad?
    Until `unscale_` runs, `.grad` holds gradients multiplied by the loss scale (65536 by default).
    Clipping them at `max_norm` clips at `max_norm / scale` of the real gradient: nearly every step
    is clipped to a tiny norm, which looks like a learning-rate problem, not a bug.

    Not flagged: `accelerator.clip_grad_norm_` and Lightning's `self.clip_gradients` (they unscale
    first), and an `unscale_` under the same condition as the clip (`if args.clip: unscale_; clip`)
    or under a mixed-precision condition (`if args.amp: scaler.unscale_(optimizer)`), nor a clip
    given the scale (`clip_grad_norm_(params, max_norm * scaler.get_scale())`: a scaled threshold
    for scaled gradients). An `unscale_` under another condition (`if args.log_grad_norm:`) does
    not cover a clip that runs without it.

    ## Example
    ```python
    for x, y in loader:
        with torch.autocast("cuda", dtype=torch.float16):
            loss = criterion(model(x), y)
        scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    for x, y in loader:
        with torch.autocast("cuda", dtype=torch.float16):
            loss = criterion(model(x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    ```

    ## Fix
    Safe: `scaler.unscale_(optimizer)` is inserted just before the clip (inside the clip's own `if`,
    if any), or an `unscale_` found after the clip in the same block is moved before it. Only where
    the clip runs once per step: `unscale_` twice before `scaler.update()` raises, so a clip on every
    micro-batch is first moved by GA003's fix. Unsafe in a helper function. No fix when another
    `unscale_` runs under another condition (it could then run twice), the clip runs in a loop of its
    own (once per parameter group), or the scaler or optimizer is ambiguous.
    """

    code = "GA005"
    name = "clip-without-unscale"

    def check(self, model: ModuleModel) -> Iterator[Finding]:
        for loop in model.loops:
            if loop.kind in (LoopKind.ACCELERATE, LoopKind.ENGINE):
                continue
            scalers = {e.spec.scaler for e in loop.of_kind(Kind.BACKWARD) if e.spec.scaler}
            if not scalers:
                continue
            for clip in loop.of_kind(Kind.CLIP):
                if clip.spec.framework is not Framework.TORCH or loop.when(clip) is When.EXCEPTIONAL:
                    continue
                scaled = [e for e in loop.of_kind(Kind.BACKWARD) if e.spec.scaler]
                if any(_covers(u, clip, scaled) for u in loop.of_kind(Kind.UNSCALE) if u.order < clip.order):
                    continue
                if all(exclusive(b, clip) for b in scaled):
                    continue  # `if use_amp: scaler.scale(loss).backward() ... else: loss.backward(); clip`
                if isinstance(clip.node, cst.Call) and _scaled_threshold(clip.node):
                    continue  # `max_norm * scaler.get_scale()`: the threshold is scaled with the gradients
                scaler = sorted(scalers)[0]
                reason = _reason(loop.of_kind(Kind.UNSCALE), clip, scaler)
                stepped = {e.spec.optimizer for e in loop.of_kind(Kind.STEP)
                           if e.spec.framework is Framework.SCALER and e.spec.receiver == scaler and e.spec.optimizer}
                optimizer = stepped.pop() if len(stepped) == 1 else "optimizer"
                yield Finding(
                    self.code,
                    clip.node,
                    f"{show(clip)}{via(clip, loop)} clips gradients still multiplied by the loss scale of "
                    f"`{scaler}` ({reason}): the threshold is effectively divided by the scale; call "
                    f"`{scaler}.unscale_({optimizer})` before clipping",
                    ga005.fix(model, loop, clip, scaler) if len(scalers) == 1 else None,
                )


# Conditions about mixed precision itself (`if args.amp:`, `if scaler is not None:`) hold
# whenever the scaler is live, so an unscale under one of them covers any clip.
_AMP_WORDS = re.compile(r"(?i)amp|scaler|fp16|half|mixed|precision|autocast")


def _scaled_threshold(call: cst.Call) -> bool:
    """A clip given the loss scale (`clip_grad_norm_(params, max_norm * scaler.get_scale())`, mmf's
    `clip_gradients(..., scale=scaler.get_scale())`): clipping scaled gradients at a scaled threshold
    is clipping the real ones at the threshold."""
    class GetScale(cst.CSTVisitor):
        found = False

        def visit_Call(self, node: cst.Call) -> None:
            self.found = self.found or method_name(node) == "get_scale"

    finder = GetScale()
    for arg in call.args:
        traversal.visit(arg.value, finder)
    return finder.found


def _covers(unscale: Event, clip: Event, scaled: list[Event]) -> bool:
    """The unscale runs whenever the clip sees scaled gradients: every condition it runs under also
    guards the clip, or guards every scaled backward too (`if self.do_grad_scaling:` around both:
    whatever was scaled is unscaled), or is about mixed precision (trusted to agree with the scaler)."""
    extra = conditions(unscale) - conditions(clip)
    return all(_AMP_WORDS.search(text) or all((text, negated) in conditions(b) for b in scaled)
               for text, negated in extra)


def _reason(unscales: list[Event], clip: Event, scaler: str) -> str:
    earlier = [u for u in unscales if u.order < clip.order]
    if earlier:
        missing = sorted(conditions(earlier[0]) - conditions(clip))[0]
        guard = next(g for g in earlier[0].guards if not g.exceptional and g.key == missing)
        condition = f"{'not ' if guard.negated else ''}{code(guard.expr)}"
        return f"the `{scaler}.unscale_()` before it runs only when `{condition}`"
    if unscales:
        return f"`{scaler}.unscale_()` only runs after it"
    return f"no `{scaler}.unscale_()` runs before it"
