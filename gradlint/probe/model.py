"""The probe's results as plain data: step rows, findings, the report. No torch here: the parent
process (and `gradlint probe --output-format json` readers) only ever see these."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

# Same codes and names as the static rules, plus GA000 for a mismatch no rule explains.
RULE_NAMES: dict[str, str] = {
    "GA000": "large-batch-mismatch",
    "GA001": "zero-grad-every-micro-batch",
    "GA002": "loss-not-scaled",
    "GA003": "clip-before-accumulation-complete",
    "GA004": "missing-remainder-step",
    "GA005": "clip-without-unscale",
    "GA006": "zero-grad-before-step",
    "GA007": "scheduler-step-every-micro-batch",
    "GA008": "scaler-update-every-micro-batch",
    "GA009": "unscale-every-micro-batch",
    "GA010": "off-by-one-accumulation-gate",
    "GA011": "double-loss-scaling",
    "GA013": "token-mean-per-micro-batch",
    "GA014": "gradients-never-cleared",
    "GA016": "backward-after-micro-batch-loop",
    "GA100": "amp-step-skipped",
    "GA101": "constant-loss-weight",
}

SEVERITIES = ("error", "warning", "info")
EXIT_OK, EXIT_MISMATCH, EXIT_COULD_NOT_RUN = 0, 1, 2


@dataclass
class Finding:
    """One finding, possibly seen at several steps. JSON fields follow ruff's names."""

    code: str
    severity: str
    message: str
    filename: str
    row: int
    column: int = 1
    steps: list[int] = field(default_factory=list)
    optimizer: str | None = None

    @property
    def name(self) -> str:
        return RULE_NAMES.get(self.code, "")

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "message": self.message,
            "severity": self.severity,
            "filename": self.filename,
            "location": {"row": self.row, "column": self.column},
            "end_location": {"row": self.row, "column": self.column},
            "steps": self.steps,
            "optimizer": self.optimizer,
            "url": None,
            "fix": None,
            "noqa_row": self.row,
        }


@dataclass
class StepRow:
    """What the probe measured at one optimizer step (or one closure evaluation)."""

    step: int
    optimizer: str
    verdict: str  # ok | error | warning | info | skipped | unknown
    window: int = 0
    coefficients: list[float] = field(default_factory=list)
    counts: list[float | None] = field(default_factory=list)
    reference: str = "mean"  # token: token-weighted large batch; mean: equal-weight mean of micro-batches
    ratio: float | None = None  # ||actual|| / ||expected||, actual taken before any clip
    cosine: float | None = None
    rel_err: float | None = None
    clip: float | None = None  # the clip coefficient that was applied after the window, if any
    codes: list[str] = field(default_factory=list)
    summary: str = ""
    closure: int | None = None  # closure evaluation number, for optimizer.step(closure)
    site: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProbeReport:
    script: str
    args: list[str] = field(default_factory=list)
    rows: list[StepRow] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stop_reason: str = ""  # steps | script-end | timeout | max-steps | crash | no-steps
    steps: int = 0
    remainder_checked: bool = False
    error: str | None = None  # why the probe could not run (exit 2), with the script's own error
    script_output: str = ""  # the script's stdout+stderr when captured (API runs)
    duration_s: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_COULD_NOT_RUN
        return EXIT_MISMATCH if self.errors else EXIT_OK

    @property
    def ok(self) -> bool:
        """True when the probe ran and no step had an error (warnings and info allowed)."""
        return self.exit_code == EXIT_OK

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def text(self) -> str:
        from gradlint.probe.report import render_text

        return render_text(self)

    def findings_for(self, code: str) -> list[Finding]:
        return [f for f in self.findings if f.code == code]

    def to_json(self) -> dict[str, Any]:
        return {
            "script": self.script,
            "args": self.args,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "stop_reason": self.stop_reason,
            "optimizer_steps": self.steps,
            "remainder_checked": self.remainder_checked,
            "duration_s": round(self.duration_s, 3),
            "steps": [r.to_json() for r in self.rows],
            "findings": [f.to_json() for f in self.findings],
            "notes": self.notes,
            "error": self.error,
        }


def merge_findings(instances: list[dict[str, Any]]) -> list[Finding]:
    """One finding per (code, place, severity): the same bug at every step is reported once, with
    the steps it was seen at. The first instance's message (with its numbers) is kept."""
    merged: dict[tuple[Any, ...], Finding] = {}
    for inst in instances:
        shape = re.sub(r"[-+]?\d[\d.e+-]*", "#", inst["message"])  # same kind of finding, other numbers
        key = (inst["code"], inst["filename"], inst["row"], inst["severity"], inst.get("optimizer"), shape)
        found = merged.get(key)
        if found is None:
            found = merged[key] = Finding(
                code=inst["code"], severity=inst["severity"], message=inst["message"],
                filename=inst["filename"], row=inst["row"], column=inst.get("column", 1),
                optimizer=inst.get("optimizer"),
            )
        step = inst.get("step")
        if step is not None and step not in found.steps:
            found.steps.append(step)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(merged.values(), key=lambda f: (order.get(f.severity, 9), f.steps[:1] or [10**9], f.code))


def report_from_records(records: list[dict[str, Any]], script: str, args: list[str]) -> ProbeReport:
    """Build the report from the child's JSON-lines records."""
    report = ProbeReport(script=script, args=list(args))
    instances: list[dict[str, Any]] = []
    for rec in records:
        kind = rec.get("type")
        if kind == "row":
            data = {k: v for k, v in rec.items() if k != "type"}
            report.rows.append(StepRow(**data))
        elif kind == "finding":
            instances.append(rec)
        elif kind == "note":
            if rec["text"] not in report.notes:
                report.notes.append(rec["text"])
        elif kind == "end":
            report.stop_reason = rec.get("stop_reason", "")
            report.steps = rec.get("steps", 0)
            report.remainder_checked = rec.get("remainder_checked", False)
            report.duration_s = rec.get("duration_s", 0.0)
        elif kind == "error":
            report.error = rec["text"]
    report.findings = merge_findings(instances)
    return report
