from __future__ import annotations

from collections.abc import Iterator

from gradlint.model import Event, Framework, Kind, LoopKind, ModuleModel, When
from gradlint.model.syntax import code
from gradlint.rules.base import Finding, Rule, show, via


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
    first), and an `unscale_` under the same condition as the clip (`if args.clip: unscale_; clip`).

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
                if any(_covers(u, clip) for u in loop.of_kind(Kind.UNSCALE) if u.order < clip.order):
                    continue
                after = any(u.order > clip.order for u in loop.of_kind(Kind.UNSCALE))
                scaler = sorted(scalers)[0]
                reason = (f"`{scaler}.unscale_()` only runs after it" if after
                          else f"no `{scaler}.unscale_()` runs before it")
                yield Finding(
                    self.code,
                    clip.node,
                    f"{show(clip)}{via(clip)} clips gradients still multiplied by the loss scale of "
                    f"`{scaler}` ({reason}): the threshold is effectively divided by the scale; call "
                    f"`{scaler}.unscale_(optimizer)` before clipping",
                )


def _gates(event: Event) -> set[tuple[str, bool]]:
    return {(code(g.expr), g.negated) for g in event.guards if g.periodic is not None}


def _covers(unscale: Event, clip: Event) -> bool:
    """The unscale runs whenever the clip does, as far as window gates go (other conditions,
    like `if args.amp:`, are trusted to agree)."""
    return _gates(unscale) <= _gates(clip)
