"""The benchmark scripts run and report what they measure (their figures are not asserted: speed is
measured by running them, not by tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .conftest import FIXTURES

ROOT = Path(__file__).resolve().parent.parent


def test_stage_times_accounts_for_every_candidate() -> None:
    """Over the bug fixtures of two rules and the clean look-alikes: every candidate is in one group, the
    bug scripts among those with findings, and the stage rows add up to the total printed."""
    trees = [FIXTURES / "GA001", FIXTURES / "GA002", FIXTURES / "clean"]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "stage_times.py"), *map(str, trees)],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    out = proc.stdout
    modelled = int(re.search(r"(\d+) candidates modelled", out).group(1))  # type: ignore[union-attr]
    groups = dict(re.findall(r"^\| ([a-z][^|]*?) \| (\d+) \| [\d.]+ \| [\d.]+ \|$", out, re.M))
    assert sum(map(int, groups.values())) == modelled
    bug_scripts = len(list((FIXTURES / "GA001").glob("*.py")) + list((FIXTURES / "GA002").glob("*.py")))
    assert int(groups["findings"]) >= bug_scripts
    assert int(groups.get("training loops, no finding", 0)) > 0  # the clean look-alikes
    rows = [float(s) for s in re.findall(r"^\| [^*|][^|]* \| ([\d.]+) \|$", out, re.M)]
    total = float(re.search(r"\| \*\*total\*\* \| \*\*([\d.]+)\*\* \|", out).group(1))  # type: ignore[union-attr]
    assert abs(sum(rows) - total) <= 0.01 * len(rows)
    assert "findings: LibCST's parse" in out
