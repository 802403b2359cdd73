"""The parent side: start the child, enforce the hard timeout, turn its records into a report.
Torch-free: the parent never imports torch."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import IO, Any

from gradlint.probe.model import ProbeReport, report_from_records
from gradlint.probe.options import ProbeOptions

TORCH_MISSING = "the probe needs torch: pip install 'gradlint[probe]'"
GRACE_S = 30.0  # the child stops itself at --timeout; the parent kills it this much later


def torch_available() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except (ValueError, ImportError):  # sys.modules["torch"] is None, or a broken install
        return False


def _read_records(path: str) -> list[dict[str, Any]]:
    records = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    with contextlib.suppress(json.JSONDecodeError):  # a line cut short by a kill
                        records.append(json.loads(line))
    except FileNotFoundError:
        pass
    return records


def run_script(script: str, args: Sequence[str] = (), options: ProbeOptions | None = None, *,
               capture_output: bool = True, output: IO[str] | None = None, disable_dynamo: bool = True,
               env: dict[str, str] | None = None) -> ProbeReport:
    """Probe `python script *args` in a child process. The script's output is captured into
    `report.script_output` (capture_output) or streamed to `output` (default: our stderr, so that
    the report on stdout stays clean)."""
    options = options or ProbeOptions()
    report = ProbeReport(script=script, args=list(args))
    if not os.path.isfile(script):
        report.error = f"{script}: no such file"
        return report
    if not torch_available():
        report.error = TORCH_MISSING
        return report

    child_env = dict(os.environ if env is None else env)
    if disable_dynamo:
        child_env.setdefault("TORCHDYNAMO_DISABLE", "1")  # compiled regions hide the loss calls
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gradlint-probe-") as tmp:
        results = os.path.join(tmp, "results.jsonl")
        config = os.path.join(tmp, "config.json")
        with open(config, "w", encoding="utf-8") as fh:
            json.dump({"script": script, "args": list(args), "results": results, "options": asdict(options)}, fh)
        stream: Any = subprocess.PIPE
        if not capture_output:
            target = output if output is not None else sys.stderr
            try:
                target.fileno()
                stream = target
            except (AttributeError, OSError, ValueError):
                stream = subprocess.PIPE
        proc = subprocess.Popen(
            [sys.executable, "-m", "gradlint.probe.child", config],
            stdout=stream, stderr=subprocess.STDOUT if stream is subprocess.PIPE else stream,
            stdin=subprocess.DEVNULL, env=child_env, text=True,
        )
        hard_limit = None if options.timeout is None else options.timeout + GRACE_S
        killed = False
        try:
            captured, _ = proc.communicate(timeout=hard_limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            captured, _ = proc.communicate()
            killed = True
        records = _read_records(results)

    report = report_from_records(records, script, list(args))
    report.duration_s = report.duration_s or (time.monotonic() - started)
    if captured:
        if capture_output:
            report.script_output = captured
        elif output is not None or stream is subprocess.PIPE:
            (output or sys.stderr).write(captured)
    _explain_outcome(report, records, proc.returncode, killed, options)
    return report


def _explain_outcome(report: ProbeReport, records: list[dict[str, Any]], returncode: int | None, killed: bool,
                     options: ProbeOptions) -> None:
    """Decide whether the probe ran (exit 0/1) or could not (exit 2), and say why."""
    if report.error is not None:
        return
    crash = next((r for r in records if r.get("type") == "crash"), None)
    ended = any(r.get("type") == "end" for r in records)
    judged = bool(report.rows)
    if crash is not None:
        if crash.get("explained"):  # a rule's bug (GradScaler refuses it): a finding, not a failure to run
            report.notes.append(f"the script failed after {crash.get('steps', 0)} optimizer step(s):\n"
                                + crash["text"].rstrip())
            report.stop_reason = "crash"
        elif crash.get("steps", 0) == 0 and not judged:
            report.error = "the script failed before its first optimizer step:\n" + crash["text"]
        else:
            report.notes.append(f"the script failed after {crash.get('steps', 0)} optimizer step(s):\n"
                                + crash["text"].rstrip())
        return
    if killed:
        if not judged:
            report.error = f"timeout: no optimizer step within {options.timeout:g} s (the child was killed)"
        else:
            report.stop_reason = "timeout"
            report.notes.append(f"the script did not stop within {options.timeout:g} s; the probe killed it")
        return
    if not ended:
        if not judged:
            report.error = f"the script exited (status {returncode}) before the probe could report a step"
        else:
            report.notes.append(f"the script exited abruptly (status {returncode}); rows up to then are shown")
        return
    if report.steps == 0 and not judged:
        if report.stop_reason == "timeout":
            report.error = f"timeout: no optimizer step within {options.timeout:g} s"
        else:
            report.error = ("no optimizer step was observed: the script ended without calling step() on a "
                            "torch.optim optimizer")
