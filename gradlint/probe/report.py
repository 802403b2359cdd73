"""Text rendering of a probe report (torch-free)."""

from __future__ import annotations

import json
import os

from gradlint.probe.model import ProbeReport, StepRow

STOP_REASONS = {
    "steps": "stopped after the requested steps",
    "script-end": "the script ran to its end",
    "timeout": "stopped by --timeout",
    "max-steps": "stopped by --max-steps",
    "stopped": "stopped",
}


def _list(values: list[float] | list[float | None], fmt: str = "{:.4g}") -> str:
    if not values:
        return "-"
    texts = ["?" if v is None else fmt.format(v) for v in values]
    if len(set(texts)) == 1 and len(texts) > 1:
        return f"{len(texts)} x {texts[0]}"
    joined = " ".join(texts)
    return joined if len(joined) <= 28 else joined[:25] + "..."


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _row(r: StepRow) -> str:
    step = f"{r.step}" + (f".{r.closure}" if r.closure else "")
    return (f"{step:>6}  {r.optimizer:<10} {r.window:>6}  {_list(r.coefficients):<28}  {_list(r.counts, '{:g}'):<20}"
            f" {_num(r.ratio, '{:.4f}'):>9} {_num(r.cosine, '{:.6f}'):>9} {_num(r.clip, '{:.3g}'):>7}  {r.verdict}"
            + (f" {','.join(r.codes)}" if r.codes else ""))


def render_text(report: ProbeReport) -> str:
    name = os.path.basename(report.script)
    lines: list[str] = []
    if report.error is not None and not report.rows:
        lines.append(f"gradlint probe: {name}: the probe could not run")
        lines.append(report.error.rstrip())
        if report.script_output.strip():
            lines.append("script output (last lines):")
            lines.extend("  " + line for line in report.script_output.rstrip().splitlines()[-20:])
        lines.append("result: could not run -> exit 2")
        return "\n".join(lines) + "\n"

    reason = STOP_REASONS.get(report.stop_reason, report.stop_reason or "stopped")
    lines.append(f"gradlint probe: {name} ({report.steps} optimizer step(s); {reason}; {report.duration_s:.1f} s)")
    lines.append("")
    lines.append(f"{'step':>6}  {'optimizer':<10} {'window':>6}  {'coefficients c=dL/dR':<28}  {'counts n':<20}"
                 f" {'|A|/|E|':>9} {'cosine':>9} {'clip':>7}  verdict")
    lines.extend(_row(r) for r in report.rows)
    if not report.rows:
        lines.append("  (no optimizer step was judged)")
    if report.findings:
        lines.append("")
        lines.append("findings:")
        for f in report.findings:
            steps = ""
            if f.steps:
                shown = ", ".join(str(s) for s in f.steps[:8]) + (", ..." if len(f.steps) > 8 else "")
                steps = f" (step{'s' if len(f.steps) > 1 else ''} {shown})"
            lines.append(f"  {f.filename}:{f.row}:{f.column}: {f.code} [{f.severity}] {f.message}{steps}")
    if report.notes:
        lines.append("")
        lines.append("notes:")
        lines.extend(f"  - {note}" for note in report.notes)
    if report.error is not None:
        lines.append("")
        lines.append(report.error.rstrip())
    counts = {sev: sum(1 for f in report.findings if f.severity == sev) for sev in ("error", "warning", "info")}
    lines.append("")
    lines.append(f"result: {counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info "
                 f"-> exit {report.exit_code}")
    return "\n".join(lines) + "\n"


def render_json(report: ProbeReport) -> str:
    return json.dumps(report.to_json(), indent=2) + "\n"
