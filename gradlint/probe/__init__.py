"""Runtime probe: run a few real steps of a training script and check, at every optimizer step,
that the gradient the optimizer is about to use equals the gradient of the large batch it stands
for.

Importing this package never imports torch (the static linter imports nothing of torch); the
instrumentation is loaded when a probe actually runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gradlint.probe.model import Finding, ProbeReport, StepRow

if TYPE_CHECKING:
    from gradlint.probe.api import probe_train_step, run, watch

__all__ = ["Finding", "ProbeReport", "StepRow", "probe_train_step", "run", "watch"]


def __getattr__(name: str) -> Any:
    if name in ("run", "watch", "probe_train_step"):
        from gradlint.probe import api

        return getattr(api, name)
    raise AttributeError(f"module 'gradlint.probe' has no attribute {name!r}")
