"""Probe settings, shared by the parent (no torch) and the instrumented child."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ProbeOptions:
    steps: int = 4
    max_steps: int = 100
    until_epoch_end: bool = True
    timeout: float | None = 300.0
    sample: int | None = 4096  # elements per parameter tensor; None: every element (--full)
    seed: int = 0
