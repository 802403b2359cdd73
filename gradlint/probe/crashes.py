"""Crashes that are accumulation bugs: torch's GradScaler refuses two of them outright, on the
second micro-batch of a window, so the probe can name the rule instead of "could not run".
Pure Python: the child passes the exception's text and the innermost line of the user's script."""

from __future__ import annotations

from typing import Any

# (text torch raises, code, what it means)
_KNOWN = (
    ("unscale_() has already been called on this optimizer since the last update()", "GA009",
     "scaler.unscale_(optimizer) ran again before scaler.update(): it runs on micro-batches where the "
     "optimizer does not step, and GradScaler refuses a second unscale_ in one window; call it once per "
     "window, just before the clip and the step"),
    ("No inf checks were recorded prior to update", "GA008",
     "scaler.update() ran with no scaler.step(optimizer) since the last update: it runs on micro-batches "
     "where the optimizer does not step, and GradScaler refuses it; call it once per window, right after "
     "scaler.step(optimizer)"),
)


def explain(text: str, site: dict[str, Any] | None, steps: int) -> dict[str, Any] | None:
    """The finding record for a crash one of the rules explains, or None."""
    for needle, code, meaning in _KNOWN:
        if needle in text:
            where = site or {"filename": "?", "row": 0, "column": 1}
            return {"type": "finding", "code": code, "severity": "error",
                    "message": f"the script crashed at optimizer step {steps + 1}: {meaning}",
                    "filename": where["filename"], "row": where["row"], "column": where.get("column", 1),
                    "step": steps + 1, "optimizer": None}
    return None
